//! `bff-mobile`: the compact, screen-shaped JSON gateway for the mobile apps.
//!
//! One request per screen, the smallest payload that draws it, nothing left to compute on the
//! device, cheap revalidation. The binary (`main.rs`) only hands [`build`] to
//! [`server_kit::run`]; everything a test needs is here.
//!
//! Modules (the skeleton every gateway shares first, then this gateway's own):
//! - [`config`]: [`MobileConfig`], the `[gateway]` section (auth, deadline, limits, caching,
//!   image widths, checkout memory, live streams), and its `impl GatewayConfig`.
//! - `state`: the one router state, [`AppState`] (downstream, authenticator, checkout, rendered
//!   product screens, live-stream limits, settings), reached by the shared extractors through
//!   `FromRef`.
//! - [`error`]: [`ApiError`], the one error type, answered as `application/problem+json` with a
//!   stable `type` and `code`; its `//!` says which problem is used when.
//! - `routes`: [`router`], every route under [`PREFIX`] and the layers around them (body limit,
//!   `ETag`/304; compression is the shared server stack's), built from one list of routes that [`endpoints`] reads.
//! - `openapi`: `GET /m/v1/openapi.json`, the OpenAPI 3.1 document derived from the handlers'
//!   `#[utoipa::path]` attributes and the types they serialize, completed with what every
//!   operation shares (bearer auth, `X-Request-Id`, caching headers, problem codes).
//! - `screens`: one file per screen (`home`, `products`, `product`, `cart`, `checkout`,
//!   `orders`, `order`), each with a `Query`/body type, the payload type and its handler; `card`
//!   for the parts several screens share; `order_live`, the order screen as a stream of
//!   server-sent events, pushed at each change of the order (`gateway.subscriptions`).
//! - `extract`: extractors that reject in the mobile problem format (JSON bodies, query strings,
//!   path ids, `Idempotency-Key`), the per-request downstream context and the image hint.
//! - `caching`: `Cache-Control`/`Vary` of a screen ([`Screen`]), the rendered screens kept for
//!   answering again, and the middleware that adds a strong `ETag` to every successful GET and
//!   answers a matching `If-None-Match` with 304.
//! - `money`: prices as integer minor units plus a display string, the currency once per payload.
//! - `image`: picking the one image rendition that fits the client's hint.

pub mod config;
pub mod error;

mod caching;
mod extract;
mod image;
mod money;
mod openapi;
mod routes;
mod screens;
mod state;

use server_kit::server::Gateway;
use shared_clients::Downstream;

pub use caching::Screen;
pub use config::MobileConfig;
pub use error::ApiError;
pub use routes::{endpoints, router};
pub use state::AppState;

/// Every setting of `bff-mobile`.
pub type MobileSettings = server_kit::Settings<MobileConfig>;

/// The versioned prefix of every mobile endpoint.
pub const PREFIX: &str = "/m/v1";

/// Why the gateway cannot be built from its settings.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A downstream client could not be created (e.g. a bad URL).
    #[error(transparent)]
    Downstream(#[from] shared_clients::BuildError),
    /// The authentication settings are unusable.
    #[error(transparent)]
    Auth(#[from] server_kit::ConfigError),
}

/// Builds the gateway: its downstream clients (built once, shared by every request) and routes.
pub fn build(settings: &MobileSettings) -> Result<Gateway, BuildError> {
    build_over(
        settings,
        Downstream::new_shared(&settings.downstream, &settings.shared)?,
    )
}

/// The gateway over `downstream` (clients and caches it may share with other gateways in one
/// process) instead of clients built from `settings.downstream`, per `settings`.
pub fn build_over(
    settings: &MobileSettings,
    downstream: Downstream,
) -> Result<Gateway, BuildError> {
    let state = AppState::new(settings, downstream.clone())?;
    Ok(Gateway::over("bff-mobile", router(state), downstream))
}
