//! Showing amounts of money the same way in every gateway: exact decimal strings and display
//! strings, from integer minor units (never floats).

use crate::Money;

/// Currencies with no minor unit in use (ISO 4217 exponent 0).
const ZERO_DECIMAL: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
    "VUV", "XAF", "XOF", "XPF",
];

/// Currencies with three fraction digits (ISO 4217 exponent 3).
const THREE_DECIMAL: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];

impl Money {
    /// How many fraction digits the currency has (2 unless ISO 4217 says otherwise).
    pub fn exponent(&self) -> u32 {
        let currency = self.currency.as_str();
        if ZERO_DECIMAL.contains(&currency) {
            0
        } else if THREE_DECIMAL.contains(&currency) {
            3
        } else {
            2
        }
    }

    /// The amount as an exact decimal string in major units, e.g. `1299` EUR → `"12.99"`,
    /// `1500` JPY → `"1500"`, `1234` KWD → `"1.234"`.
    pub fn decimal(&self) -> String {
        let (sign, whole, fraction) = self.parts();
        match fraction {
            Some(fraction) => format!("{sign}{whole}.{fraction}"),
            None => format!("{sign}{whole}"),
        }
    }

    /// The amount ready to show: a symbol for common currencies (`€1,234.50`, `$5.00`, `£0.05`,
    /// `¥1,500`), else the code (`CHF 12.50`), with thousands grouped.
    pub fn display(&self) -> String {
        let (sign, whole, fraction) = self.parts();
        let whole = group_thousands(whole);
        let number = match fraction {
            Some(fraction) => format!("{whole}.{fraction}"),
            None => whole,
        };
        match symbol(&self.currency) {
            Some(symbol) => format!("{sign}{symbol}{number}"),
            None => format!("{sign}{} {number}", self.currency),
        }
    }

    /// This amount times `quantity`, in the same currency (saturating rather than overflowing;
    /// the contract bounds unit prices so that real orders never come near).
    #[must_use]
    pub fn times(&self, quantity: u32) -> Money {
        Money {
            amount_minor: self.amount_minor.saturating_mul(i64::from(quantity)),
            currency: self.currency.clone(),
        }
    }

    /// Sign, whole major units and the zero-padded fraction (if the currency has one).
    fn parts(&self) -> (&'static str, u64, Option<String>) {
        let sign = if self.amount_minor < 0 { "-" } else { "" };
        let magnitude = self.amount_minor.unsigned_abs();
        let exponent = self.exponent();
        if exponent == 0 {
            return (sign, magnitude, None);
        }
        let scale = 10_u64.pow(exponent);
        let width = exponent as usize;
        (
            sign,
            magnitude / scale,
            Some(format!("{:0width$}", magnitude % scale)),
        )
    }
}

/// The symbol shown instead of the code, for the currencies that have a well-known one.
fn symbol(currency: &str) -> Option<&'static str> {
    match currency {
        "EUR" => Some("€"),
        "USD" => Some("$"),
        "GBP" => Some("£"),
        "JPY" => Some("¥"),
        _ => None,
    }
}

/// `1234567` → `"1,234,567"`.
pub fn group_thousands(value: u64) -> String {
    let digits = value.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn money(amount_minor: i64, currency: &str) -> Money {
        Money {
            amount_minor,
            currency: currency.to_owned(),
        }
    }

    #[test]
    fn decimals_follow_the_currency_exponent() {
        assert_eq!(money(1299, "EUR").decimal(), "12.99");
        assert_eq!(money(5, "USD").decimal(), "0.05");
        assert_eq!(money(0, "EUR").decimal(), "0.00");
        assert_eq!(money(1500, "JPY").decimal(), "1500");
        assert_eq!(money(1234, "KWD").decimal(), "1.234");
        assert_eq!(money(-250, "EUR").decimal(), "-2.50");
    }

    #[test]
    fn display_strings_have_symbols_grouping_and_minor_digits() {
        assert_eq!(money(123_450, "EUR").display(), "€1,234.50");
        assert_eq!(money(5, "USD").display(), "$0.05");
        assert_eq!(money(-100_000_000, "GBP").display(), "-£1,000,000.00");
        assert_eq!(money(1200, "CHF").display(), "CHF 12.00");
        assert_eq!(money(1234, "JPY").display(), "¥1,234");
        assert_eq!(money(1_234_567, "KWD").display(), "KWD 1,234.567");
        assert_eq!(
            money(i64::MIN, "EUR").display(),
            "-€92,233,720,368,547,758.08"
        );
    }

    #[test]
    fn multiplying_saturates_instead_of_overflowing() {
        assert_eq!(money(250, "EUR").times(3), money(750, "EUR"));
        assert_eq!(money(i64::MAX, "EUR").times(2).amount_minor, i64::MAX);
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
        assert_eq!(group_thousands(1_234_567), "1,234,567");
    }
}
