//! [`AppState`]: what every handler and middleware reaches through `State`, built once by
//! [`crate::build_over`]. The operations both versions run on it (listing, pricing and creating
//! orders) are in [`crate::service`].

use std::sync::Arc;

use shared_clients::{Derived, Downstream, OrderPlacement, Product, ProductId};

use crate::{
    auth::ApiKeys,
    auth_throttle::AuthThrottle,
    config::PartnerConfig,
    rate_limit::{self, RateLimiter},
    response::ProductBody,
    version::{Deprecation, Version},
    webhooks::{
        ssrf::{Resolver, SystemResolver},
        store::{StoreSettings, WebhookStore},
    },
};

/// Everything a request handler needs, shared by all requests: one [`Services`] behind an
/// `Arc`, so the copy axum makes for each request (and each extractor) is one reference count.
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    /// The state over `services`.
    pub fn new(services: Services) -> Self {
        Self(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

/// What every request shares (reached through [`AppState`]).
pub struct Services {
    /// The downstream clients and the catalog cache.
    pub downstream: Downstream,
    /// Prices and places orders, remembering attempts so a retry gets the same order.
    pub placement: OrderPlacement,
    /// The `[gateway]` settings.
    pub config: Arc<PartnerConfig>,
    /// The configured API keys.
    pub keys: Arc<ApiKeys>,
    /// The failed-authentication budgets of client addresses.
    pub auth_throttle: AuthThrottle,
    /// The quota keeper.
    pub limiter: Arc<dyn RateLimiter>,
    /// The `/v1` deprecation headers.
    pub deprecation: Deprecation,
    /// Product bodies already serialized, with their `ETag`, by API version and product
    /// (`gateway.rendered_products` at most), answered again while the catalog cache serves the
    /// very same product value (a refreshed or evicted product is a new value: its body is made
    /// anew). A product body is public catalog data, the same for every partner, so sharing it
    /// is safe; nothing per partner (orders) is ever kept here.
    pub product_bodies: Derived<(Version, ProductId), Product, ProductBody>,
    /// Partners' webhook endpoints and deliveries, in Redis (disabled without it).
    pub webhooks: WebhookStore,
    /// Looks webhook targets' hosts up for the SSRF check: the system's resolver but in tests
    /// ([`Services::with_resolver`]).
    pub resolver: Arc<dyn Resolver>,
}

impl Services {
    /// The services of a gateway configured by `config`, over `downstream` (clients and caches
    /// it may share with other gateways in one process): its keys, quotas (shared by every replica
    /// when `downstream` has Redis, see [`rate_limit::limiter`]) and remembered order creations.
    pub fn new(config: &PartnerConfig, downstream: Downstream) -> Self {
        Self {
            placement: OrderPlacement::new(downstream.clone(), &config.checkout),
            limiter: rate_limit::limiter(downstream.shared()),
            webhooks: WebhookStore::new(
                downstream.shared().clone(),
                StoreSettings {
                    max_endpoints: config.webhooks.max_endpoints_per_partner,
                    deliveries_kept: config.webhooks.deliveries_kept,
                },
            ),
            downstream,
            keys: Arc::new(ApiKeys::new(config)),
            auth_throttle: AuthThrottle::new(config),
            deprecation: Deprecation::new(&config.deprecation),
            product_bodies: Derived::new(config.rendered_products),
            config: Arc::new(config.clone()),
            resolver: Arc::new(SystemResolver),
        }
    }

    /// These services, looking webhook targets' hosts up with `resolver`.
    pub fn with_resolver(self, resolver: Arc<dyn Resolver>) -> Self {
        Self { resolver, ..self }
    }
}
