//! Integers wider than 32 bits as decimal strings, as in the rest of Bulwark's API (a JavaScript
//! client would round a JSON number above 2^53). Read from a strict decimal string (digits, no
//! sign, no leading zero, so one id has one spelling) or from a JSON integer up to `u64::MAX`.
//! Used with `#[serde(with = "dec")]`.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::Serializer;

pub trait Wide: Copy + FromStr + fmt::Display + TryFrom<u64> {}
impl Wide for u64 {}
impl Wide for u128 {}

pub fn serialize<T: Wide, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

pub fn deserialize<'de, T: Wide, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
    d.deserialize_any(WideVisitor(PhantomData))
}

/// Why `text` is not a decimal of `T`, in words a sender can act on.
pub fn parse_strict<T: Wide>(text: &str) -> Result<T, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{text}` is not a decimal integer (digits only)"));
    }
    if text.len() > 1 && text.starts_with('0') {
        return Err(format!("`{text}` has a leading zero"));
    }
    text.parse::<T>()
        .map_err(|_| format!("`{text}` is too large"))
}

struct WideVisitor<T>(PhantomData<T>);

impl<T: Wide> Visitor<'_> for WideVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an unsigned integer as a decimal string")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::try_from(v).map_err(|_| E::custom(format!("{v} is too large")))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        let v = u64::try_from(v).map_err(|_| E::custom(format!("{v} is negative")))?;
        self.visit_u64(v)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        Err(E::custom(format!(
            "{v} is not an integer, or too large for a JSON number: give it as a decimal string"
        )))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        parse_strict(v).map_err(E::custom)
    }
}

/// `Option<u64>` / `Option<u128>`: a decimal string or `null`.
pub mod option {
    use super::*;

    pub fn serialize<T: Wide, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T: Wide, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_option(OptionVisitor(PhantomData))
    }

    struct OptionVisitor<T>(PhantomData<T>);

    impl<'de, T: Wide> Visitor<'de> for OptionVisitor<T> {
        type Value = Option<T>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an unsigned integer as a decimal string, or null")
        }

        fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
            super::deserialize(d).map(Some)
        }
    }
}

/// A `u128` as exactly 32 hex characters (a cluster id): lowercase when written, either case
/// when read.
pub mod hex128 {
    use super::*;

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{v:032x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(de::Error::custom(format!(
                "`{text}` is not 32 hex characters"
            )));
        }
        u128::from_str_radix(&text, 16).map_err(de::Error::custom)
    }
}
