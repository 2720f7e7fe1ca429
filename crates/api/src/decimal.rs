//! Integers wider than 32 bits in JSON: ids, amounts, balances, `user_data_128`/`_64` and
//! timestamps. A JavaScript client reads every JSON number as a double and silently rounds
//! anything above 2^53, so answers always give these fields as decimal strings (`"12"`). Requests
//! may give them as strings or as JSON integers; an integer above `u64::MAX` must be a string,
//! since a JSON parser may already have rounded it (this one reads it as a double).
//!
//! A string is digits only, with no sign, spaces or leading zero, so that `"1"`, `"01"` and
//! `"+1"` are never three spellings of one id.

use std::fmt;
use std::marker::PhantomData;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// A `u64` or `u128` field, read from a JSON integer or a decimal string, written as a string.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dec<T>(pub T);

pub trait DecimalInt: Copy + FromStr + fmt::Display + TryFrom<u64> + 'static {
    const MAX: Self;
}

impl DecimalInt for u64 {
    const MAX: Self = u64::MAX;
}

impl DecimalInt for u128 {
    const MAX: Self = u128::MAX;
}

/// Why `text` is not a decimal of `T`, in words a client can act on.
pub fn parse_strict<T: DecimalInt>(text: &str) -> Result<T, String> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits {
        return Err(format!(
            "`{}` is not a decimal integer (digits only, no sign or spaces)",
            crate::quoted(text)
        ));
    }
    if text.len() > 1 && text.starts_with('0') {
        return Err(format!("`{}` has a leading zero", crate::quoted(text)));
    }
    text.parse::<T>().map_err(|_| {
        format!(
            "`{}` is above the largest value, {}",
            crate::quoted(text),
            T::MAX
        )
    })
}

impl<T: DecimalInt> Serialize for Dec<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

struct DecVisitor<T>(PhantomData<T>);

impl<T: DecimalInt> Visitor<'_> for DecVisitor<T> {
    type Value = Dec<T>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "an integer from 0 to {} as a decimal string, or as a JSON integer up to {}",
            T::MAX,
            u64::MAX
        )
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        T::try_from(v)
            .map(Dec)
            .map_err(|_| E::custom(format!("{v} is above the largest value, {}", T::MAX)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::custom(format!("{v} is negative; the field is unsigned"))),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Err(E::custom(if v.fract() == 0.0 && v >= u64::MAX as f64 {
            format!(
                "an integer above {} must be given as a decimal string (\"...\"): a JSON \
                 number that large may already have been rounded",
                u64::MAX
            )
        } else {
            format!("{v} is not an integer")
        }))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        parse_strict(v).map(Dec).map_err(E::custom)
    }
}

impl<'de, T: DecimalInt> Deserialize<'de> for Dec<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DecVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read<T: DecimalInt>(json: &str) -> Result<T, String> {
        serde_json::from_str::<Dec<T>>(json)
            .map(|d| d.0)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn reads_integers_and_strict_decimal_strings() {
        assert_eq!(read::<u128>("7"), Ok(7));
        assert_eq!(read::<u128>("18446744073709551615"), Ok(u64::MAX.into()));
        assert_eq!(
            read::<u128>("\"340282366920938463463374607431768211455\""),
            Ok(u128::MAX)
        );
        assert_eq!(read::<u128>("\"0\""), Ok(0));
        assert_eq!(read::<u64>("\"18446744073709551615\""), Ok(u64::MAX));
        for (bad, words) in [
            ("\"01\"", "leading zero"),
            ("\"+1\"", "digits only"),
            ("\" 1\"", "digits only"),
            ("\"\"", "digits only"),
            ("\"1e3\"", "digits only"),
            ("-1", "negative"),
            ("1.5", "not an integer"),
            ("18446744073709551616", "decimal string"),
            (
                "\"340282366920938463463374607431768211456\"",
                "above the largest",
            ),
            ("true", "expected an integer"),
        ] {
            let err = read::<u128>(bad).expect_err(bad);
            assert!(err.contains(words), "{bad}: {err}");
        }
        let err = read::<u64>("\"18446744073709551616\"").unwrap_err();
        assert!(err.contains("above the largest value"), "{err}");
    }

    #[test]
    fn writes_a_decimal_string() {
        assert_eq!(
            serde_json::to_string(&Dec(u128::MAX)).unwrap(),
            "\"340282366920938463463374607431768211455\""
        );
        assert_eq!(serde_json::to_string(&Dec(0u64)).unwrap(), "\"0\"");
    }
}
