//! Tolerant decoding of the contract's integer fields.
//!
//! The contract follows JSON Schema: `26.0` *is* the integer 26, so an implementation may send it.
//! serde's integer types refuse floats, hence these `deserialize_with` helpers, which accept any
//! JSON number with no fractional part that fits the target type, and refuse everything else
//! (fractions, out-of-range values, strings).

use std::fmt;
use std::marker::PhantomData;

use serde::Deserializer;
use serde::de::{self, Visitor};

/// Largest float magnitude below which every integral `f64` converts to `i128` exactly.
const F64_INTEGRAL_LIMIT: f64 = 1.0e38;

/// Decodes an integer field, accepting integral floats such as `26.0`.
pub fn deserialize<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i128>,
{
    deserializer.deserialize_any(IntegerVisitor(PhantomData))
}

/// Decodes an optional (absent or `null`) integer field, accepting integral floats. Use with
/// `#[serde(default)]` so that an absent field is `None`.
pub fn option<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<i128>,
{
    deserializer.deserialize_option(OptionVisitor(PhantomData))
}

/// Turns any JSON number into a `T` when it is integral and in range.
struct IntegerVisitor<T>(PhantomData<T>);

impl<T: TryFrom<i128>> IntegerVisitor<T> {
    fn convert<E: de::Error>(value: i128) -> Result<T, E> {
        T::try_from(value).map_err(|_| {
            E::custom(format_args!(
                "integer {value} is out of range for this field"
            ))
        })
    }
}

impl<'de, T: TryFrom<i128>> Visitor<'de> for IntegerVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer (a number without a fractional part)")
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<T, E> {
        Self::convert(i128::from(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<T, E> {
        Self::convert(i128::from(value))
    }

    fn visit_i128<E: de::Error>(self, value: i128) -> Result<T, E> {
        Self::convert(value)
    }

    fn visit_u128<E: de::Error>(self, value: u128) -> Result<T, E> {
        let value = i128::try_from(value).map_err(|_| E::custom("integer out of range"))?;
        Self::convert(value)
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<T, E> {
        if value.is_finite() && value.fract() == 0.0 && value.abs() < F64_INTEGRAL_LIMIT {
            // Exact: the value is integral and well inside i128's range (checked above).
            Self::convert(value as i128)
        } else {
            Err(E::invalid_value(de::Unexpected::Float(value), &self))
        }
    }
}

/// [`IntegerVisitor`] behind `null`/absent handling.
struct OptionVisitor<T>(PhantomData<T>);

impl<'de, T: TryFrom<i128>> Visitor<'de> for OptionVisitor<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<T>, D::Error> {
        deserialize(deserializer).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Sample {
        #[serde(deserialize_with = "super::deserialize")]
        count: u32,
        #[serde(deserialize_with = "super::deserialize")]
        amount: i64,
        #[serde(default, deserialize_with = "super::option")]
        maybe: Option<u64>,
    }

    fn parse(json: &str) -> Result<Sample, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn integral_floats_are_integers() {
        let s = parse(r#"{"count": 26.0, "amount": -5, "maybe": 1e3}"#).unwrap();
        assert_eq!((s.count, s.amount, s.maybe), (26, -5, Some(1000)));
        let s = parse(r#"{"count": 0, "amount": 9007199254740993}"#).unwrap();
        assert_eq!((s.amount, s.maybe), (9_007_199_254_740_993, None));
        let s = parse(r#"{"count": 1, "amount": 1, "maybe": null}"#).unwrap();
        assert_eq!(s.maybe, None);
    }

    #[test]
    fn fractions_strings_and_out_of_range_values_are_refused() {
        for json in [
            r#"{"count": 26.5, "amount": 0}"#,
            r#"{"count": "26", "amount": 0}"#,
            r#"{"count": -1, "amount": 0}"#,
            r#"{"count": 4294967296, "amount": 0}"#,
            r#"{"count": 1, "amount": 1e300}"#,
            r#"{"count": 1, "amount": 0, "maybe": -1.0}"#,
        ] {
            assert!(parse(json).is_err(), "{json} should be refused");
        }
    }
}
