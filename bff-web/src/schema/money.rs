//! [`MoneyView`]: amounts of money as the web app shows them, formatted once, here.

use async_graphql::Object;
use shared_clients::Money;

/// An amount of money: exact minor units, the currency, and a display string.
pub struct MoneyView(pub Money);

/// Digits after the decimal point of a currency (ISO 4217), for the few that do not use two.
fn minor_digits(currency: &str) -> u32 {
    match currency {
        "JPY" | "KRW" | "ISK" | "CLP" | "VND" => 0,
        "BHD" | "KWD" | "OMR" | "JOD" | "TND" => 3,
        _ => 2,
    }
}

/// The symbol shown before an amount, for common currencies; others show their code.
fn symbol(currency: &str) -> Option<&'static str> {
    match currency {
        "EUR" => Some("€"),
        "USD" => Some("$"),
        "GBP" => Some("£"),
        "JPY" => Some("¥"),
        _ => None,
    }
}

/// `amount_minor` as a decimal string (`"1234.50"` for 123450 with two digits).
pub fn decimal(amount_minor: i64, currency: &str) -> String {
    let digits = minor_digits(currency);
    let sign = if amount_minor < 0 { "-" } else { "" };
    let abs = amount_minor.unsigned_abs();
    if digits == 0 {
        return format!("{sign}{abs}");
    }
    let scale = 10_u64.pow(digits);
    format!(
        "{sign}{}.{:0width$}",
        abs / scale,
        abs % scale,
        width = digits as usize
    )
}

/// A display string: symbol or code, thousands separated with `,` (`€1,234.50`, `CHF 12.00`).
pub fn formatted(amount_minor: i64, currency: &str) -> String {
    let plain = decimal(amount_minor, currency);
    let (sign, unsigned) = match plain.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", plain.as_str()),
    };
    let (int, frac) = match unsigned.split_once('.') {
        Some((int, frac)) => (int, Some(frac)),
        None => (unsigned, None),
    };
    let mut grouped = String::with_capacity(int.len() + int.len() / 3);
    for (i, digit) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    let number = match frac {
        Some(frac) => format!("{grouped}.{frac}"),
        None => grouped,
    };
    match symbol(currency) {
        Some(symbol) => format!("{sign}{symbol}{number}"),
        None => format!("{sign}{currency} {number}"),
    }
}

/// An amount of money. Amounts are exact: integer minor units, never floats.
#[Object(name = "Money")]
impl MoneyView {
    /// The amount in minor units (cents for EUR), exact, for arithmetic in the client.
    async fn amount_minor(&self) -> i64 {
        self.0.amount_minor
    }

    /// The amount as a decimal string in major units (`"1234.50"`), exact.
    async fn amount(&self) -> String {
        decimal(self.0.amount_minor, &self.0.currency)
    }

    /// The ISO-4217 currency code, e.g. `EUR`.
    async fn currency(&self) -> &str {
        &self.0.currency
    }

    /// Ready to display, e.g. `€1,234.50` (symbol for common currencies, else the code).
    async fn formatted(&self) -> String {
        formatted(self.0.amount_minor, &self.0.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_formatted_with_symbol_grouping_and_minor_digits() {
        assert_eq!(formatted(123_450, "EUR"), "€1,234.50");
        assert_eq!(formatted(5, "USD"), "$0.05");
        assert_eq!(formatted(-100_000_000, "GBP"), "-£1,000,000.00");
        assert_eq!(formatted(1200, "CHF"), "CHF 12.00");
        assert_eq!(formatted(1234, "JPY"), "¥1,234");
        assert_eq!(decimal(1234, "KWD"), "1.234");
    }
}
