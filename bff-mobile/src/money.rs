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
    fn the_first_currency_is_the_payloads_and_others_state_themselves() {
        let mut currency = Currency::new();
        assert_eq!(currency.own(&money(1, "EUR")), None);
        assert_eq!(currency.own(&money(2, "EUR")), None);
        assert_eq!(currency.own(&money(3, "USD")).as_deref(), Some("USD"));
        assert_eq!(currency.into_code().as_deref(), Some("EUR"));
    }
}
