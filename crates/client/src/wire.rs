//! The server's way with wide integers: answers give every integer wider than 32 bits as a
//! decimal string (a JavaScript client would round a JSON number above 2^53); requests take
//! either form, and the client always sends strings, the one form valid for every value.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::Serializer;

/// `#[serde(with = "dec")]` for `u64` and `u128` fields (and the id newtypes through them).
pub(crate) mod dec {
    use super::*;

    pub fn serialize<T: fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr + TryFrom<u64>,
        D: Deserializer<'de>,
    {
        d.deserialize_any(DecVisitor::<T>(PhantomData))
    }
}

/// The same for an optional field (a cursor that is absent on the last page).
pub(crate) mod opt_dec {
    use super::*;

    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr + TryFrom<u64>,
        D: Deserializer<'de>,
    {
        d.deserialize_option(OptVisitor::<T>(PhantomData))
    }

    struct OptVisitor<T>(PhantomData<T>);

    impl<'de, T: FromStr + TryFrom<u64>> Visitor<'de> for OptVisitor<T> {
        type Value = Option<T>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("null or a decimal integer")
        }
        fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
            dec::deserialize(d).map(Some)
        }
    }
}

struct DecVisitor<T>(PhantomData<T>);

impl<T: FromStr + TryFrom<u64>> Visitor<'_> for DecVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a decimal integer, as a string or a JSON integer")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse()
            .map_err(|_| E::custom(format!("`{v}` is not a decimal integer in range")))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::custom(format!("{v} is out of range")))
    }
}
