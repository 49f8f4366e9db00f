//! The one-command stack and the gateway binaries, run as real processes.
//!
//! These tests run the binaries cargo built next to `bff-dev` (`./scripts/test` builds them all
//! first with `cargo build --workspace --bins`).

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use tokio::io::{AsyncBufReadExt, BufReader};

fn bin_dir() -> PathBuf {
    let launcher = PathBuf::from(env!("CARGO_BIN_EXE_bff-dev"));
    let dir = launcher.parent().expect("bin dir").to_path_buf();
    for binary in ["reference-services", "bff-web", "bff-mobile", "bff-partner"] {
        assert!(
            dir.join(binary).is_file(),
            "{binary} is not built in {}: run `cargo build --workspace --bins` (./scripts/test does)",
            dir.display()
        );
    }
    dir
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("addr").port()
}

#[tokio::test]
async fn the_launcher_brings_up_six_healthy_processes_wired_together_and_stops_them() {
    bin_dir();
    let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
    let names = [
        "--product-port",
        "--cart-port",
        "--order-port",
        "--web-port",
        "--mobile-port",
        "--partner-port",
    ];
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_bff-dev"));
    for (flag, port) in names.iter().zip(&ports) {
        command.arg(flag).arg(port.to_string());
    }
    // Every gateway's /ready then checks its three downstream services: proof of the wiring.
    command
        .env("BFF_SERVER__READY_REQUIRES_DOWNSTREAM", "true")
        .env("BFF_SERVER__READY_TIMEOUT", "2s")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut launcher = command.spawn().expect("start bff-dev");
    let stdout = launcher.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut banner = String::new();
    let up = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            banner.push_str(&line);
            banner.push('\n');
            if line == dev_launcher::READY_LINE {
                return true;
            }
        }
        false
    })
    .await
    .expect("the stack starts in time");
    assert!(up, "bff-dev exited before the stack was up:\n{banner}");

    let client = reqwest::Client::new();
    for port in &ports {
        assert!(banner.contains(&format!("127.0.0.1:{port}")), "{banner}");
        let health = client
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
            .expect("health answers");
        assert_eq!(health.status(), 200, "port {port}");
    }
    for port in &ports[3..] {
        let ready = client
            .get(format!("http://127.0.0.1:{port}/ready"))
            .send()
            .await
            .expect("ready answers");
        let status = ready.status();
        let body: serde_json::Value = ready.json().await.expect("json");
        assert_eq!(
            status, 200,
            "gateway on {port} reaches its services: {body}"
        );
        assert_eq!(body["checks"].as_array().map(Vec::len), Some(3), "{body}");
    }

    // The printed development credentials work against the gateways.
    let value_of = |prefix: &str| {
        banner
            .lines()
            .find_map(|line| line.trim().strip_prefix(prefix))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("banner prints {prefix}:\n{banner}"))
    };
    let token = value_of("TOKEN=");
    let partner_key = value_of("PARTNER_KEY=");
    let cart = client
        .get(format!("http://127.0.0.1:{}/m/v1/cart", ports[4]))
        .bearer_auth(&token)
        .send()
        .await
        .expect("mobile cart answers");
    assert_eq!(
        cart.status(),
        200,
        "the dev token is accepted by bff-mobile"
    );
    let graphql: serde_json::Value = client
        .post(format!("http://127.0.0.1:{}/graphql", ports[3]))
        .bearer_auth(&token)
        .json(&serde_json::json!({"query": "{ viewer { cart { itemCount } } }"}))
        .send()
        .await
        .expect("graphql answers")
        .json()
        .await
        .expect("graphql json");
    assert!(
        graphql["data"]["viewer"]["cart"]["itemCount"].is_number(),
        "the dev token is accepted by bff-web: {graphql}"
    );
    let products = client
        .get(format!("http://127.0.0.1:{}/v2/products?limit=1", ports[5]))
        .bearer_auth(&partner_key)
        .send()
        .await
        .expect("partner products answer");
    assert_eq!(
        products.status(),
        200,
        "the dev key is accepted by bff-partner"
    );

    let pid = launcher.id().expect("running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal bff-dev");
    let status = tokio::time::timeout(Duration::from_secs(30), launcher.wait())
        .await
        .expect("bff-dev stops in time")
        .expect("exit status");
    assert!(status.success(), "{status}");
    for port in &ports {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", *port)).is_err(),
            "port {port} is closed after shutdown"
        );
    }
}

fn run_gateway(binary: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let output = Command::new(bin_dir().join(binary))
        .args(args)
        .env_remove("BFF_CONFIG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run gateway binary");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code().unwrap_or(-1), text)
}

#[test]
fn every_gateway_refuses_a_bad_listen_address_naming_the_setting() {
    for binary in ["bff-web", "bff-mobile", "bff-partner"] {
        let (code, text) = run_gateway(binary, &[], &[("BFF_LISTEN_ADDR", "not-an-address")]);
        assert_eq!(code, 2, "{binary}: {text}");
        assert!(text.contains("listen_addr"), "{binary}: {text}");
    }
}

#[test]
fn every_gateway_refuses_a_downstream_url_that_is_not_http() {
    for binary in ["bff-web", "bff-mobile", "bff-partner"] {
        let (code, text) = run_gateway(
            binary,
            &["--check-config"],
            &[("BFF_ORDER_URL", "ftp://orders")],
        );
        assert_eq!(code, 2, "{binary}: {text}");
        assert!(text.contains("downstream.order.url"), "{binary}: {text}");
    }
}

#[test]
fn check_config_accepts_the_defaults_without_binding_a_port() {
    for binary in ["bff-web", "bff-mobile", "bff-partner"] {
        let (code, text) = run_gateway(binary, &["--check-config"], &[]);
        assert_eq!(code, 0, "{binary}: {text}");
        assert!(text.contains("configuration is valid"), "{binary}: {text}");
    }
}

#[test]
fn a_config_file_is_read_and_its_errors_are_reported() {
    let dir = std::env::temp_dir().join(format!("bff-dev-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[server]\nmax_body_bytes = \"lots\"\n").expect("write");
    let path_arg = path.to_str().expect("utf-8 path");
    let (code, text) = run_gateway(
        "bff-partner",
        &["--check-config", "--config", path_arg],
        &[],
    );
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("max_body_bytes"), "{text}");
    std::fs::remove_dir_all(&dir).ok();
}
