//! [`MobileConfig`]: the `[gateway]` section of `bff-mobile`'s settings (`BFF_GATEWAY__…` in the
//! environment). Every field has a default, so the gateway runs with no configuration at all
//! (except `auth`, without which every signed-in screen answers 401).
//!
//! `gateway.subscriptions` is the live-updates section every gateway shares
//! ([`server_kit::live::LiveConfig`], `BFF_GATEWAY__SUBSCRIPTIONS__POLL_INTERVAL` and so on); here
//! it configures the order-tracking stream (`GET /m/v1/orders/{order_id}/live`).

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use server_kit::{ConfigError, GatewayConfig, ServerConfig, auth::AuthConfig, live::LiveConfig};
use shared_clients::OrderPlacementConfig;

/// Largest page a client may ask for, whatever the configuration says (the downstream limit).
const DOWNSTREAM_MAX_PAGE: u32 = 100;

/// Settings of `bff-mobile` alone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MobileConfig {
    /// How end-user bearer tokens are verified (`[gateway.auth]`; the same settings as the web
    /// gateway's, so one token works for both). Set `hs256_secret` in development
    /// (`BFF_GATEWAY__AUTH__HS256_SECRET`) or `jwks_url` in production.
    pub auth: AuthConfig,
    /// The budget of one inbound screen request: every downstream call of a screen (including a
    /// concurrent fan-out) shares it, and nothing waits past it, so a slow service costs the
    /// phone at most this long. Unset: the shared `downstream.deadline`.
    #[serde(default, with = "humantime_serde::option")]
    pub request_deadline: Option<Duration>,
    /// The budget of a checkout, which makes several calls one after the other (read the cart,
    /// price, create the order, empty the cart) and is worth waiting a little longer for.
    #[serde(with = "humantime_serde")]
    pub checkout_deadline: Duration,
    /// `max-age` of catalog screens (home for anonymous users, product list, product detail):
    /// short, so prices and stock shown are never old, but long enough to absorb scrolling back.
    #[serde(with = "humantime_serde")]
    pub catalog_max_age: Duration,
    /// Page size of the product and order lists when the client does not ask for one.
    pub default_page_size: u32,
    /// Largest `limit` a client may ask for (at most 100); larger ones are refused with 400.
    pub max_page_size: u32,
    /// How many products the home screen features.
    pub home_featured: u32,
    /// How many top-level categories the home screen shows.
    pub home_categories: usize,
    /// No longer used: compression is the same for every gateway, `server.compression.min_size`
    /// (`BFF_SERVER__COMPRESSION__MIN_SIZE`). Still accepted, so that configurations written for
    /// it load; a value other than the old default is warned about at start-up.
    pub compression_min_bytes: u64,
    /// How many rendered product detail screens (one per product and image width) are kept to be
    /// answered again while the catalog cache serves the same product; `0` keeps none.
    pub rendered_details: u64,
    /// Largest request body accepted by the mobile endpoints, in bytes (the screens take small
    /// JSON bodies); larger bodies get 413.
    pub max_body_bytes: usize,
    /// Widths (CSS pixels) of the image slots of each screen, used when the client gives no
    /// hint; scaled by the `DPR` header.
    pub images: ImageWidths,
    /// How checkout remembers attempts, so a retried `Idempotency-Key` gets the same order.
    pub checkout: OrderPlacementConfig,
    /// The order-tracking stream (`/orders/{order_id}/live`): whether it is served, how changes
    /// are found without change events (`poll_interval`), how often an idle stream gets a
    /// keep-alive comment, and how many streams may be open (per replica, client address and
    /// user). The WebSocket-only settings (`init_timeout`, `max_subscriptions_per_connection`)
    /// and `send_timeout` do not apply to it: a client that stops reading is disconnected by the
    /// connection layer after `server.idle_timeout`.
    pub subscriptions: LiveConfig,
}

impl Default for MobileConfig {
    fn default() -> Self {
        Self {
            auth: AuthConfig::default(),
            request_deadline: None,
            checkout_deadline: Duration::from_secs(6),
            catalog_max_age: Duration::from_secs(30),
            default_page_size: 20,
            max_page_size: 50,
            home_featured: 6,
            home_categories: 8,
            compression_min_bytes: 512,
            rendered_details: 10_000,
            max_body_bytes: 16 * 1024,
            images: ImageWidths::default(),
            checkout: OrderPlacementConfig::default(),
            subscriptions: LiveConfig::default(),
        }
    }
}

/// The image slot of each kind of screen, in CSS pixels.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ImageWidths {
    /// Product cards in lists and on the home screen.
    pub card: u32,
    /// The product detail screen's hero image.
    pub detail: u32,
    /// Thumbnails on the cart and order screens.
    pub thumbnail: u32,
}

impl Default for ImageWidths {
    fn default() -> Self {
        Self {
            card: 160,
            detail: 400,
            thumbnail: 80,
        }
    }
}

impl GatewayConfig for MobileConfig {
    const DEFAULT_LISTEN_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8081);
    const DEFAULT_METRICS_ADDR: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9181);

    fn validate(&self) -> Result<(), ConfigError> {
        self.auth.validate("gateway.auth")?;
        self.subscriptions.validate("gateway.subscriptions")?;
        let positive = [
            (
                "request_deadline",
                self.request_deadline
                    .is_some_and(|deadline| deadline.is_zero()),
            ),
            ("checkout_deadline", self.checkout_deadline.is_zero()),
            ("default_page_size", self.default_page_size == 0),
            ("max_page_size", self.max_page_size == 0),
            ("home_featured", self.home_featured == 0),
            ("max_body_bytes", self.max_body_bytes == 0),
            ("images.card", self.images.card == 0),
            ("images.detail", self.images.detail == 0),
            ("images.thumbnail", self.images.thumbnail == 0),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, zero)| *zero) {
            return Err(ConfigError::invalid(
                format!("gateway.{name}"),
                "must be greater than 0",
            ));
        }
        if self.max_page_size > DOWNSTREAM_MAX_PAGE {
            return Err(ConfigError::invalid(
                "gateway.max_page_size",
                "must be at most 100 (the downstream services' limit)",
            ));
        }
        if self.default_page_size > self.max_page_size {
            return Err(ConfigError::invalid(
                "gateway.default_page_size",
                "must not exceed gateway.max_page_size",
            ));
        }
        if self.home_featured > DOWNSTREAM_MAX_PAGE {
            return Err(ConfigError::invalid(
                "gateway.home_featured",
                "must be at most 100",
            ));
        }
        Ok(())
    }

    fn warnings(&self, server: &ServerConfig) -> Vec<String> {
        let mut warnings = self.subscriptions.warnings("gateway.subscriptions", server);
        if self.compression_min_bytes != MobileConfig::default().compression_min_bytes {
            warnings.push(format!(
                "gateway.compression_min_bytes ({}) is no longer used: every gateway compresses \
                 answers of at least server.compression.min_size ({}) bytes",
                self.compression_min_bytes, server.compression.min_size
            ));
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_human_strings_and_unknown_keys_are_refused() {
        let config: MobileConfig =
            serde_json::from_str(r#"{"request_deadline": "750ms", "catalog_max_age": "1m"}"#)
                .expect("deserializes");
        assert_eq!(config.request_deadline, Some(Duration::from_millis(750)));
        assert_eq!(config.catalog_max_age, Duration::from_secs(60));
        assert_eq!(config.max_page_size, MobileConfig::default().max_page_size);
        assert!(serde_json::from_str::<MobileConfig>(r#"{"deadline": "1s"}"#).is_err());
        let live: MobileConfig =
            serde_json::from_str(r#"{"subscriptions": {"poll_interval": "100ms"}}"#)
                .expect("deserializes");
        assert_eq!(live.subscriptions.poll_interval, Duration::from_millis(100));
        assert!(live.subscriptions.enabled, "the rest keeps its defaults");
    }

    #[test]
    fn the_old_compression_setting_loads_and_is_warned_about() {
        let old: MobileConfig =
            serde_json::from_str(r#"{"compression_min_bytes": 2048}"#).expect("deserializes");
        let warnings = old.warnings(&ServerConfig::default());
        assert!(
            warnings
                .iter()
                .any(|warning| warning.contains("server.compression.min_size")),
            "{warnings:?}"
        );
        assert!(
            MobileConfig::default()
                .warnings(&ServerConfig::default())
                .is_empty()
        );
    }

    #[test]
    fn bad_values_are_refused_naming_the_setting() {
        let cases = [
            (
                MobileConfig {
                    max_page_size: 500,
                    ..MobileConfig::default()
                },
                "gateway.max_page_size",
            ),
            (
                MobileConfig {
                    default_page_size: 0,
                    ..MobileConfig::default()
                },
                "gateway.default_page_size",
            ),
            (
                MobileConfig {
                    request_deadline: Some(Duration::ZERO),
                    ..MobileConfig::default()
                },
                "gateway.request_deadline",
            ),
        ];
        let mut live = MobileConfig::default();
        live.subscriptions.poll_interval = Duration::ZERO;
        let cases = cases
            .into_iter()
            .chain([(live, "gateway.subscriptions.poll_interval")]);
        for (config, setting) in cases {
            let error = config.validate().expect_err(setting);
            assert!(error.to_string().contains(setting), "{error}");
        }
        MobileConfig::default()
            .validate()
            .expect("defaults are valid");
    }

    #[test]
    fn subscriptions_are_set_from_the_environment_and_validated_by_name() {
        let env = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
                .collect::<Vec<_>>()
        };
        let settings: server_kit::Settings<MobileConfig> = server_kit::config::load_from(
            None,
            env(&[
                ("BFF_GATEWAY__SUBSCRIPTIONS__POLL_INTERVAL", "250ms"),
                ("BFF_GATEWAY__SUBSCRIPTIONS__MAX_STREAMS_PER_USER", "3"),
            ]),
        )
        .expect("loads");
        let live = &settings.gateway.subscriptions;
        assert_eq!(live.poll_interval, Duration::from_millis(250));
        assert_eq!(live.max_streams_per_user, 3);
        let error = server_kit::config::load_from::<MobileConfig>(
            None,
            env(&[("BFF_GATEWAY__SUBSCRIPTIONS__MAX_STREAMS", "0")]),
        )
        .expect_err("zero streams");
        assert!(
            error
                .to_string()
                .contains("gateway.subscriptions.max_streams"),
            "{error}"
        );
    }
}
