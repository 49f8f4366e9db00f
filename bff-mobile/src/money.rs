//! Prices as the apps draw them: integer minor units plus a ready-to-show display string, with
//! the currency stated once per payload ([`Currency`]); an amount in another currency (rare: a
//! few imported products) carries its own `currency` next to it.

use shared_clients::Money;

/// The currency of one payload: the first one seen. Amounts in it need no currency of their own.
#[derive(Debug, Default)]
pub struct Currency {
    /// The payload's currency, once an amount has been shaped.
    code: Option<String>,
}

impl Currency {
    /// A payload with no amounts yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The currency `money` must state itself: `None` when it is the payload's (the first amount
    /// fixes the payload's currency).
    pub fn own(&mut self, money: &Money) -> Option<String> {
        match &self.code {
            None => {
                self.code = Some(money.currency.clone());
                None
            }
            Some(code) if *code == money.currency => None,
            Some(_) => Some(money.currency.clone()),
        }
    }

    /// The payload's currency (absent when the payload has no amounts).
    pub fn into_code(self) -> Option<String> {
        self.code
    }
}

/// Minor units per major unit of a currency's display: 0 for the few currencies without
/// subunits in use, else 2.
fn exponent(currency: &str) -> u32 {
    match currency {
        "JPY" | "KRW" | "ISK" | "CLP" | "VND" => 0,
        _ => 2,
    }
}

/// The amount as the app shows it, e.g. `€1,234.99`, `$5.00`, `CHF 12.50`.
pub fn display(money: &Money) -> String {
    let symbol = match money.currency.as_str() {
        "EUR" => "€".to_owned(),
        "USD" => "$".to_owned(),
        "GBP" => "£".to_owned(),
        "JPY" => "¥".to_owned(),
        other => format!("{other} "),
    };
    let sign = if money.amount_minor < 0 { "-" } else { "" };
    let minor = money.amount_minor.unsigned_abs();
    let exponent = exponent(&money.currency);
    let unit = 10_u64.pow(exponent);
    let whole = group_thousands(minor / unit);
    if exponent == 0 {
        format!("{sign}{symbol}{whole}")
    } else {
        let fraction = minor % unit;
        let width = exponent as usize;
        format!("{sign}{symbol}{whole}.{fraction:0width$}")
    }
}

/// `1234567` → `1,234,567`.
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

/// `money` times `quantity`, in the same currency.
pub fn times(money: &Money, quantity: u32) -> Money {
    Money {
        amount_minor: money.amount_minor.saturating_mul(i64::from(quantity)),
        currency: money.currency.clone(),
    }
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
    fn amounts_display_with_symbol_decimals_and_grouping() {
        assert_eq!(display(&money(1999, "EUR")), "€19.99");
        assert_eq!(display(&money(123_456_700, "USD")), "$1,234,567.00");
        assert_eq!(display(&money(5, "GBP")), "£0.05");
        assert_eq!(display(&money(1500, "JPY")), "¥1,500");
        assert_eq!(display(&money(1250, "CHF")), "CHF 12.50");
    }

    #[test]
    fn the_first_currency_is_the_payloads_and_others_state_themselves() {
        let mut currency = Currency::new();
        assert_eq!(currency.own(&money(1, "EUR")), None);
        assert_eq!(currency.own(&money(2, "EUR")), None);
        assert_eq!(currency.own(&money(3, "USD")).as_deref(), Some("USD"));
        assert_eq!(currency.into_code().as_deref(), Some("EUR"));
    }
}
