//! [`AppState`]: what every handler reaches through `State`, built once by [`crate::build`].

use std::sync::Arc;

use axum::extract::FromRef;
use server_kit::auth::Authenticator;
use shared_clients::{Downstream, OrderPlacement};

use crate::{BuildError, MobileSettings, config::MobileConfig, screens::DetailMemo};

/// The router state. Cheap to clone (every part is shared).
#[derive(Clone)]
pub struct AppState {
    /// The downstream facade (cached catalog, carts, orders), shared by every request.
    downstream: Downstream,
    /// Verifies bearer tokens; the shared extractors reach it through `FromRef`.
    auth: Authenticator,
    /// Checkout: pricing, stock checks and idempotency across retries.
    placement: OrderPlacement,
    /// Product detail screens already rendered, answered again while their product is the same.
    detail_memo: DetailMemo,
    /// This gateway's settings (limits, cache lifetimes, image widths).
    config: Arc<MobileConfig>,
}

impl AppState {
    /// The state for `settings`, over an already built `downstream`.
    pub fn new(settings: &MobileSettings, downstream: Downstream) -> Result<Self, BuildError> {
        let config = settings.gateway.clone();
        let auth = Authenticator::new(&config.auth)?;
        let placement = OrderPlacement::new(downstream.clone(), &config.checkout);
        Ok(Self {
            downstream,
            auth,
            placement,
            detail_memo: DetailMemo::new(config.rendered_details),
            config: Arc::new(config),
        })
    }

    /// The downstream services.
    pub fn downstream(&self) -> &Downstream {
        &self.downstream
    }

    /// Checkout.
    pub fn placement(&self) -> &OrderPlacement {
        &self.placement
    }

    /// Rendered product detail screens.
    pub fn detail_memo(&self) -> &DetailMemo {
        &self.detail_memo
    }

    /// This gateway's settings.
    pub fn config(&self) -> &MobileConfig {
        &self.config
    }
}

impl FromRef<AppState> for Authenticator {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}
