//! [`AppState`]: what every handler reaches through `State`, built once by [`crate::build`].
//! It holds what must be one per gateway: the downstream facade, the token verifier, checkout,
//! the rendered product screens and the live-stream limiter.

use std::sync::Arc;

use axum::extract::FromRef;
use server_kit::{auth::Authenticator, live::LiveLimiter};
use shared_clients::{Downstream, OrderPlacement};

use crate::{BuildError, MobileSettings, caching::DetailMemo, config::MobileConfig};

/// The router state: one `Shared` behind an `Arc`, so the copy axum makes for each request
/// (and each extractor) is one reference count.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// What every request shares (reached through [`AppState`]'s methods).
struct Shared {
    /// The downstream facade (cached catalog, carts, orders), shared by every request.
    downstream: Downstream,
    /// Verifies bearer tokens; the shared extractors reach it through `FromRef`.
    auth: Authenticator,
    /// Checkout: pricing, stock checks and idempotency across retries.
    placement: OrderPlacement,
    /// Product detail screens already rendered, answered again while their product is the same.
    detail_memo: DetailMemo,
    /// Counts open order-tracking streams against `gateway.subscriptions`' limits (one per
    /// gateway, so the limits hold across every stream of this replica).
    live: LiveLimiter,
    /// This gateway's settings (limits, cache lifetimes, image widths).
    config: MobileConfig,
}

impl AppState {
    /// The state for `settings`, over an already built `downstream`.
    pub fn new(settings: &MobileSettings, downstream: Downstream) -> Result<Self, BuildError> {
        let config = settings.gateway.clone();
        let auth = Authenticator::new(&config.auth)?;
        let placement = OrderPlacement::new(downstream.clone(), &config.checkout);
        Ok(Self(Arc::new(Shared {
            downstream,
            auth,
            placement,
            detail_memo: DetailMemo::new(config.rendered_details),
            live: LiveLimiter::new(&config.subscriptions),
            config,
        })))
    }

    /// The downstream services.
    pub fn downstream(&self) -> &Downstream {
        &self.0.downstream
    }

    /// Checkout.
    pub fn placement(&self) -> &OrderPlacement {
        &self.0.placement
    }

    /// Rendered product detail screens.
    pub fn detail_memo(&self) -> &DetailMemo {
        &self.0.detail_memo
    }

    /// The limits of the order-tracking streams.
    pub fn live(&self) -> &LiveLimiter {
        &self.0.live
    }

    /// This gateway's settings.
    pub fn config(&self) -> &MobileConfig {
        &self.0.config
    }
}

impl FromRef<AppState> for Authenticator {
    fn from_ref(state: &AppState) -> Self {
        state.0.auth.clone()
    }
}
