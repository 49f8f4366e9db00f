//! `bff-all`: the three gateways (`bff-web`, `bff-mobile`, `bff-partner`) in one process, each on
//! its own listeners, over **one** [`Downstream`]: one catalog cache, one connection pool and one
//! set of breakers per service. A product cached for the web app is a hit for mobile and
//! partners too. This is the modular monolith to start with; the same crates split into three
//! deployments (their own binaries) when teams or load ask for it.
//!
//! Configuration has the shape of the gateways' own, with a section per gateway
//! ([`AllSettings`]): the shared `[telemetry]`, `[downstream]` and `[shared]`, then `[web.server]` and
//! `[web.gateway]`, `[mobile.server]`, `[mobile.gateway]`, `[partner.server]`,
//! `[partner.gateway]` — in the environment `BFF_WEB__SERVER__LISTEN_ADDR`,
//! `BFF_PARTNER__GATEWAY__KEYS`, … Each gateway listens where its own binary would by default
//! (8080, 8081, 8082, metrics on 9180, 9181, 9182).
//!
//! Metrics: each gateway keeps its own series on its own metrics listener. The clients' and
//! caches' series (`bff_downstream_*`, `bff_cache_*`) describe the one shared `Downstream`, so
//! each gateway's listener shows the same values (the calls of all three): in a dashboard, read
//! them from one gateway of a `bff-all` process, not summed over its three.
//!
//! Modules: this file (settings and [`build`]), `testing` (feature `test-util`: the gateways'
//! API test suites served through one process).

use serde::{Deserialize, Serialize};
use server_kit::{
    ConfigError, GatewayConfig, Layered, Served, ServerConfig, Settings, TelemetryConfig,
    config::{validate_downstream, validate_shared},
};
use shared_clients::{Downstream, DownstreamConfig, SharedConfig};

#[cfg(feature = "test-util")]
pub mod testing;

pub use bff_mobile::MobileConfig;
pub use bff_partner::PartnerConfig;
pub use bff_web::WebConfig;

/// One gateway's part of [`AllSettings`]: its server and its own settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default, bound = "X: GatewayConfig")]
pub struct GatewaySection<X> {
    /// Its listeners, limits, readiness and shutdown, as `[server]` of its own binary.
    pub server: ServerConfig,
    /// Its own settings, as `[gateway]` of its own binary.
    pub gateway: X,
}

impl<X: GatewayConfig> Default for GatewaySection<X> {
    fn default() -> Self {
        Self {
            server: ServerConfig {
                listen_addr: X::DEFAULT_LISTEN_ADDR,
                metrics_listen_addr: Some(X::DEFAULT_METRICS_ADDR),
                ..ServerConfig::default()
            },
            gateway: X::default(),
        }
    }
}

impl<X: GatewayConfig> GatewaySection<X> {
    /// The settings this gateway's own binary would have, with the shared sections of `all`.
    fn settings(&self, all: &AllSettings) -> Settings<X> {
        Settings {
            server: self.server.clone(),
            telemetry: all.telemetry.clone(),
            downstream: all.downstream.clone(),
            shared: all.shared.clone(),
            gateway: self.gateway.clone(),
        }
    }

    /// Its checks, as its own binary makes them.
    fn check(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.gateway.validate()
    }
}

/// The settings of `bff-all`: the shared sections once, and a section per gateway.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AllSettings {
    /// Logging and trace export, for the whole process.
    pub telemetry: TelemetryConfig,
    /// The downstream services and the caches, shared by the three gateways.
    pub downstream: DownstreamConfig,
    /// What every replica shares in Redis, for the three gateways (one connection).
    pub shared: SharedConfig,
    /// bff-web: `[web.server]`, `[web.gateway]`.
    pub web: GatewaySection<WebConfig>,
    /// bff-mobile: `[mobile.server]`, `[mobile.gateway]`.
    pub mobile: GatewaySection<MobileConfig>,
    /// bff-partner: `[partner.server]`, `[partner.gateway]`.
    pub partner: GatewaySection<PartnerConfig>,
}

impl AllSettings {
    /// bff-web's settings as its own binary would have them.
    pub fn web_settings(&self) -> Settings<WebConfig> {
        self.web.settings(self)
    }

    /// bff-mobile's settings as its own binary would have them.
    pub fn mobile_settings(&self) -> Settings<MobileConfig> {
        self.mobile.settings(self)
    }

    /// bff-partner's settings as its own binary would have them.
    pub fn partner_settings(&self) -> Settings<PartnerConfig> {
        self.partner.settings(self)
    }
}

impl Layered for AllSettings {
    fn check(&self) -> Result<(), ConfigError> {
        self.telemetry.validate()?;
        validate_downstream(&self.downstream)?;
        validate_shared(&self.shared)?;
        self.web.check()?;
        self.mobile.check()?;
        self.partner.check()?;
        let addresses = [
            ("web.server.listen_addr", self.web.server.listen_addr),
            ("mobile.server.listen_addr", self.mobile.server.listen_addr),
            (
                "partner.server.listen_addr",
                self.partner.server.listen_addr,
            ),
        ];
        for (index, (setting, addr)) in addresses.iter().enumerate() {
            let taken = addresses[..index]
                .iter()
                .any(|(_, other)| other == addr && addr.port() != 0);
            if taken {
                return Err(ConfigError::invalid(
                    *setting,
                    format!("{addr} is another gateway's address"),
                ));
            }
        }
        Ok(())
    }

    fn telemetry(&self) -> &TelemetryConfig {
        &self.telemetry
    }

    fn warnings(&self) -> Vec<String> {
        let mut warnings = self.web.gateway.warnings(&self.web.server);
        warnings.extend(self.mobile.gateway.warnings(&self.mobile.server));
        warnings.extend(self.partner.gateway.warnings(&self.partner.server));
        warnings
    }
}

/// Why the gateways cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The shared downstream clients.
    #[error(transparent)]
    Downstream(#[from] shared_clients::BuildError),
    /// bff-web.
    #[error("web: {0}")]
    Web(#[from] bff_web::BuildError),
    /// bff-mobile.
    #[error("mobile: {0}")]
    Mobile(#[from] bff_mobile::BuildError),
    /// bff-partner.
    #[error("partner: {0}")]
    Partner(shared_clients::BuildError),
}

/// The three gateways over one [`Downstream`], each with its server settings.
pub fn build(settings: &AllSettings) -> Result<Vec<Served>, BuildError> {
    let downstream = Downstream::new_shared(&settings.downstream, &settings.shared)?;
    build_over(settings, &downstream)
}

/// [`build`] over a `downstream` that already exists.
pub fn build_over(
    settings: &AllSettings,
    downstream: &Downstream,
) -> Result<Vec<Served>, BuildError> {
    let web = bff_web::build_over(&settings.web_settings(), downstream.clone())?;
    let mobile = bff_mobile::build_over(&settings.mobile_settings(), downstream.clone())?;
    let partner = bff_partner::build_over(&settings.partner_settings(), downstream.clone())
        .map_err(BuildError::Partner)?;
    Ok(vec![
        Served {
            section: "web.server",
            server: settings.web.server.clone(),
            gateway: web,
        },
        Served {
            section: "mobile.server",
            server: settings.mobile.server.clone(),
            gateway: mobile,
        },
        Served {
            section: "partner.server",
            server: settings.partner.server.clone(),
            gateway: partner,
        },
    ])
}
