//! [`MoneyView`]: amounts of money as the web app shows them (formatting is shared:
//! [`shared_clients::money`]).

use async_graphql::Object;
use shared_clients::Money;

/// An amount of money in the schema (`Money`).
pub struct MoneyView(pub Money);

/// An amount of money. Amounts are exact: integer minor units, never floats.
#[Object(name = "Money")]
impl MoneyView {
    /// The amount in minor units (cents for EUR), exact, for arithmetic in the client.
    async fn amount_minor(&self) -> i64 {
        self.0.amount_minor
    }

    /// The amount as a decimal string in major units (`"1234.50"`), exact.
    async fn amount(&self) -> String {
        self.0.decimal()
    }

    /// The ISO-4217 currency code, e.g. `EUR`.
    async fn currency(&self) -> &str {
        &self.0.currency
    }

    /// Ready to display, e.g. `€1,234.50` (symbol for common currencies, else the code).
    async fn formatted(&self) -> String {
        self.0.display()
    }
}
