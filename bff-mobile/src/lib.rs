//! `bff-mobile`: the compact, screen-shaped JSON gateway for the mobile apps.
//!
//! The binary (`main.rs`) only hands [`build`] to [`server_kit::run`]; everything a test needs
//! is here. Today the gateway serves the shared `/health` and `/ready` (see `server-kit`) over
//! the shared downstream clients; the screen endpoints arrive with the mobile issue.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Router;
use serde::{Deserialize, Serialize};
use server_kit::{GatewayConfig, Settings, server::Gateway};
use shared_clients::{BuildError, Downstream};

/// Settings of `bff-mobile` alone: the `[gateway]` section of its configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MobileConfig {}

impl GatewayConfig for MobileConfig {
    const DEFAULT_LISTEN_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8081);
}

/// Every setting of `bff-mobile`.
pub type MobileSettings = Settings<MobileConfig>;

/// Builds the gateway: its downstream clients (built once, shared by every request) and routes.
pub fn build(settings: &MobileSettings) -> Result<Gateway, BuildError> {
    let downstream = Downstream::new(&settings.downstream)?;
    Ok(Gateway::new(Router::new(), downstream))
}
