//! The gateways' own API test suites, served through one process (feature `test-util`): with
//! `BFF_TEST_ONE_PROCESS=1`, each gateway's test helpers start [`spawn_gateway`] instead of the
//! gateway alone, so the same tests run against the three gateways built and served together
//! over one `Downstream`, as `bff-all` serves them.

use server_kit::{
    GatewayConfig, Layered, Settings,
    testing::{TestGateway, serve},
};

use crate::{AllSettings, GatewaySection, MobileConfig, PartnerConfig, WebConfig, build};

/// Whether the gateways' tests run through one process (`BFF_TEST_ONE_PROCESS` set to `1`).
pub fn one_process() -> bool {
    std::env::var_os("BFF_TEST_ONE_PROCESS").is_some_and(|value| value == "1")
}

/// A gateway that has a section in [`AllSettings`].
pub trait InAll: GatewayConfig {
    /// Its place among what [`build`] returns.
    const INDEX: usize;

    /// Puts `settings` into `all`: its own section, and the shared sections (which the test
    /// may have changed).
    fn place(settings: Settings<Self>, all: &mut AllSettings);
}

/// `all`'s shared sections from `settings`, and its section from the rest.
fn shared_and<X: GatewayConfig>(settings: Settings<X>, all: &mut AllSettings) -> GatewaySection<X> {
    all.telemetry = settings.telemetry;
    all.downstream = settings.downstream;
    GatewaySection {
        server: settings.server,
        gateway: settings.gateway,
    }
}

impl InAll for WebConfig {
    const INDEX: usize = 0;

    fn place(settings: Settings<Self>, all: &mut AllSettings) {
        all.web = shared_and(settings, all);
    }
}

impl InAll for MobileConfig {
    const INDEX: usize = 1;

    fn place(settings: Settings<Self>, all: &mut AllSettings) {
        all.mobile = shared_and(settings, all);
    }
}

impl InAll for PartnerConfig {
    const INDEX: usize = 2;

    fn place(settings: Settings<Self>, all: &mut AllSettings) {
        all.partner = shared_and(settings, all);
    }
}

/// The default settings of `bff-all`, every listener on a free loopback port, over `services`.
pub fn on_free_ports(services: &reference_services::Spawned) -> AllSettings {
    let free = "127.0.0.1:0".parse().expect("an address");
    let mut all = AllSettings::default();
    for server in [
        &mut all.web.server,
        &mut all.mobile.server,
        &mut all.partner.server,
    ] {
        server.listen_addr = free;
        server.metrics_listen_addr = Some(free);
    }
    all.downstream.product.url.clone_from(&services.product_url);
    all.downstream.cart.url.clone_from(&services.cart_url);
    all.downstream.order.url.clone_from(&services.order_url);
    all
}

/// Like `server_kit::testing::spawn_gateway`, but the gateway of `X` is built and served with
/// the two others in one process over one `Downstream` (their listeners on free ports too), as
/// `bff-all` serves them; returns the one of `X`.
pub async fn spawn_gateway<X: InAll>(
    services: reference_services::Config,
    configure: impl FnOnce(&mut Settings<X>),
) -> TestGateway<X> {
    let services = reference_services::spawn_all(services)
        .await
        .expect("the reference services start");
    let mut all = on_free_ports(&services);
    let mut settings = Settings::<X>::default();
    settings.server.clone_from(&all.web.server);
    settings.downstream.clone_from(&all.downstream);
    configure(&mut settings);
    X::place(settings.clone(), &mut all);
    all.check().expect("valid test settings");
    let mut served = build(&all).expect("the gateways build");
    let mut ours = None;
    for (index, gateway) in served.drain(..).enumerate() {
        let listening = serve(&gateway.server, gateway.gateway).await;
        if index == X::INDEX {
            ours = Some(listening);
        }
    }
    let listening = ours.expect("the gateway is among those served");
    TestGateway {
        base: listening.base,
        metrics_url: listening.metrics_url,
        services,
        settings,
    }
}
