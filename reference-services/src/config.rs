//! [`Config`]: what a [`World`](crate::World) is seeded from, the fault knobs every service
//! starts with (they can be changed at runtime through the admin API, see [`crate::admin`]),
//! where change events go ([`EventsConfig`], see [`crate::events`]) and the fulfilment clock.

use std::time::Duration;

use crate::events::EventsConfig;

/// Everything that shapes the seeded data and the services' default behaviour.
///
/// Two worlds seeded from equal configs hold identical data, so separate processes (one per
/// service) agree on every id.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Seed of the data generator: same seed, same products, carts and orders.
    pub seed: u64,
    /// How many products to generate (at least [`Config::MIN_PRODUCTS`] are always generated, so
    /// that every kind of product a test needs exists).
    pub products: usize,
    /// How many users to generate (at least [`Config::MIN_USERS`]).
    pub users: usize,
    /// The `max-age` the product service puts in `Cache-Control` on product and category reads,
    /// i.e. how long gateways may cache them.
    pub max_age: Duration,
    /// Base latency added to every request (except `/health` and the admin API), to make the
    /// services behave like remote ones.
    pub latency: Duration,
    /// Up to this much more latency, uniformly random per request, on top of `latency`.
    pub jitter: Duration,
    /// Probability (0.0 to 1.0) that a request (except `/health` and the admin API) is answered
    /// with an injected 503 instead of being served.
    pub error_rate: f64,
    /// The extra latency of the `slow` fault mode.
    pub slow_latency: Duration,
    /// Where the services announce their changes (Redis Streams, `contracts/events.asyncapi.yaml`);
    /// `None` publishes nothing, and nothing else changes.
    pub events: Option<EventsConfig>,
    /// The fulfilment clock, for demos: every this often, the order service moves each order
    /// that is not delivered or cancelled one step along (pending → confirmed → shipped →
    /// delivered), as a warehouse would. `None` (the default): orders change only through the
    /// admin API.
    pub advance_orders_every: Option<Duration>,
}

impl Config {
    /// The smallest catalog generated, whatever [`Config::products`] says.
    pub const MIN_PRODUCTS: usize = 20;
    /// The fewest users generated, whatever [`Config::users`] says.
    pub const MIN_USERS: usize = 10;
}

impl Default for Config {
    /// 5,000 products, 300 users, `max-age=30`, no latency and no errors, no events, no
    /// fulfilment clock.
    fn default() -> Self {
        Config {
            seed: 42,
            products: 5_000,
            users: 300,
            max_age: Duration::from_secs(30),
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            error_rate: 0.0,
            slow_latency: Duration::from_secs(2),
            events: None,
            advance_orders_every: None,
        }
    }
}
