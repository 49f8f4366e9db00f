//! Money as v1 shows it: a decimal string in the currency's major unit (`"12.99"`), with as many
//! fraction digits as ISO 4217 gives the currency.

/// Currencies with no minor unit (ISO 4217 exponent 0).
const ZERO_DECIMAL: &[&str] = &[
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
    "VUV", "XAF", "XOF", "XPF",
];

/// Currencies with three fraction digits (ISO 4217 exponent 3).
const THREE_DECIMAL: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];

/// How many fraction digits `currency` has (2 unless ISO 4217 says otherwise).
pub fn exponent(currency: &str) -> u32 {
    if ZERO_DECIMAL.contains(&currency) {
        0
    } else if THREE_DECIMAL.contains(&currency) {
        3
    } else {
        2
    }
}

/// `amount_minor` of `currency` as a decimal string, e.g. `1299` EUR → `"12.99"`.
pub fn decimal(amount_minor: i64, currency: &str) -> String {
    let digits = exponent(currency);
    let sign = if amount_minor < 0 { "-" } else { "" };
    let magnitude = amount_minor.unsigned_abs();
    if digits == 0 {
        return format!("{sign}{magnitude}");
    }
    let scale = 10u64.pow(digits);
    format!(
        "{sign}{}.{:0width$}",
        magnitude / scale,
        magnitude % scale,
        width = digits as usize
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_formatted_with_the_currency_exponent() {
        assert_eq!(decimal(1299, "EUR"), "12.99");
        assert_eq!(decimal(5, "USD"), "0.05");
        assert_eq!(decimal(0, "EUR"), "0.00");
        assert_eq!(decimal(1500, "JPY"), "1500");
        assert_eq!(decimal(1234, "KWD"), "1.234");
        assert_eq!(decimal(-250, "EUR"), "-2.50");
    }
}
