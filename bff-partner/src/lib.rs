//! `bff-partner`: the versioned REST gateway for partners.
//!
//! The binary (`main.rs`) only hands [`build`] to [`server_kit::run`]; everything a test needs
//! is here. Today the gateway serves the shared `/health` and `/ready` (see `server-kit`) over
//! the shared downstream clients; the `/v1` and `/v2` APIs arrive with the partner issue.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Router;
use serde::{Deserialize, Serialize};
use server_kit::{GatewayConfig, Settings, server::Gateway};
use shared_clients::{BuildError, Downstream};

/// Settings of `bff-partner` alone: the `[gateway]` section of its configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PartnerConfig {}

impl GatewayConfig for PartnerConfig {
    const DEFAULT_LISTEN_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8082);
}

/// Every setting of `bff-partner`.
pub type PartnerSettings = Settings<PartnerConfig>;

/// Builds the gateway: its downstream clients (built once, shared by every request) and routes.
pub fn build(settings: &PartnerSettings) -> Result<Gateway, BuildError> {
    let downstream = Downstream::new(&settings.downstream)?;
    Ok(Gateway::new(Router::new(), downstream))
}
