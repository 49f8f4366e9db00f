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
    for binary in [
        "reference-services",
        "bff-web",
        "bff-mobile",
        "bff-partner",
        "bff-all",
    ] {
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
    launch_check_and_stop(&[]).await;
}

#[tokio::test]
async fn with_one_process_the_three_gateways_are_served_by_bff_all_wired_together() {
    launch_check_and_stop(&["--one-process"]).await;
}

/// Runs `bff-dev` with `extra` arguments on free ports, checks that every process answers and
/// is wired to the others, then stops it and checks that every port is closed.
async fn launch_check_and_stop(extra: &[&str]) {
    bin_dir();
    let ports: Vec<u16> = (0..9).map(|_| free_port()).collect();
    let names = [
        "--product-port",
        "--cart-port",
        "--order-port",
        "--web-port",
        "--mobile-port",
        "--partner-port",
        "--web-metrics-port",
        "--mobile-metrics-port",
        "--partner-metrics-port",
    ];
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_bff-dev"));
    for (flag, port) in names.iter().zip(&ports) {
        command.arg(flag).arg(port.to_string());
    }
    command.args(extra);
    // Every gateway's /ready then checks its three downstream services: proof of the wiring.
    // (bff-all reads each gateway's server settings in the gateway's own section.)
    let sections: &[&str] = if extra.contains(&"--one-process") {
        &["WEB__", "MOBILE__", "PARTNER__"]
    } else {
        &[""]
    };
    for section in sections {
        command
            .env(
                format!("BFF_{section}SERVER__READY_REQUIRES_DOWNSTREAM"),
                "true",
            )
            .env(format!("BFF_{section}SERVER__READY_TIMEOUT"), "2s");
    }
    command
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
    }
    // Each gateway's metrics are on its metrics port, and not on the port clients use.
    for (port, metrics_port) in ports[3..6].iter().zip(&ports[6..]) {
        let scrape = client
            .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
            .send()
            .await
            .expect("metrics answer");
        assert_eq!(scrape.status(), 200, "metrics port {metrics_port}");
        let public = client
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .expect("the gateway answers");
        assert_eq!(public.status(), 404, "no metrics on client port {port}");
    }
    for port in &ports[..6] {
        let health = client
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
            .expect("health answers");
        assert_eq!(health.status(), 200, "port {port}");
    }
    for port in &ports[3..6] {
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
    for port in &ports[..6] {
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

/// The words of `bff-web`'s warning about introspection on a non-loopback address.
const INTROSPECTION_WARNING: &str = "gateway.introspection is on";

#[test]
fn bff_web_check_config_warns_when_introspection_is_on_beyond_loopback() {
    let (code, text) = run_gateway(
        "bff-web",
        &["--check-config"],
        &[("BFF_LISTEN_ADDR", "0.0.0.0:8080")],
    );
    assert_eq!(code, 0, "a warning is not an error: {text}");
    assert!(text.contains("configuration is valid"), "{text}");
    assert!(
        text.contains("bff-web: warning: ") && text.contains(INTROSPECTION_WARNING),
        "{text}"
    );
    assert!(text.contains("0.0.0.0:8080"), "names the address: {text}");
    for env in [
        &[
            ("BFF_LISTEN_ADDR", "0.0.0.0:8080"),
            ("BFF_GATEWAY__INTROSPECTION", "false"),
        ][..],
        &[("BFF_LISTEN_ADDR", "127.0.0.1:8080")],
        &[("BFF_LISTEN_ADDR", "[::1]:8080")],
        &[],
    ] {
        let (code, text) = run_gateway("bff-web", &["--check-config"], env);
        assert_eq!(code, 0, "{env:?}: {text}");
        assert!(!text.contains("warning"), "{env:?}: {text}");
    }
}

#[tokio::test]
async fn bff_web_logs_the_introspection_warning_at_start_up() {
    let port = free_port();
    let mut child = tokio::process::Command::new(bin_dir().join("bff-web"))
        .env_remove("BFF_CONFIG")
        .env("BFF_LISTEN_ADDR", format!("0.0.0.0:{port}"))
        .env("BFF_SERVER__METRICS_LISTEN_ADDR", "127.0.0.1:0")
        .env("BFF_TELEMETRY__FILTER", "info")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start bff-web");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read stderr") {
            let listening = line.contains("listening");
            seen.push(line);
            if listening {
                break;
            }
        }
    })
    .await
    .expect("bff-web logs that it listens");
    child.kill().await.ok();
    assert!(
        seen.iter()
            .any(|line| line.contains("WARN") && line.contains(INTROSPECTION_WARNING)),
        "{seen:#?}"
    );
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

/// A gateway binary running on a free port, killed when dropped.
struct RunningGateway {
    child: tokio::process::Child,
    port: u16,
}

impl RunningGateway {
    /// Starts `binary` on a free port with `env`, and waits until its `/health` answers.
    async fn start(binary: &str, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let child = tokio::process::Command::new(bin_dir().join(binary))
            .env_remove("BFF_CONFIG")
            .env("BFF_LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("BFF_SERVER__METRICS_LISTEN_ADDR", "127.0.0.1:0")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start the gateway");
        let gateway = Self { child, port };
        let client = reqwest::Client::new();
        tokio::time::timeout(Duration::from_secs(30), async {
            while client.get(gateway.url("/health")).send().await.is_err() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the gateway answers /health");
        gateway
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// Lets this test process hold many sockets at once (the soft limit may be 1024).
fn raise_open_file_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    }
}

/// Whether the server has closed `stream`: a read returns end of file or an error (a reset).
async fn closed_by_server(stream: &mut tokio::net::TcpStream) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return true,
            // A response (e.g. 408/431) before the close is fine; keep reading to the end.
            Ok(_) => {}
        }
    }
}

#[tokio::test]
async fn slowloris_clients_are_disconnected_and_do_not_stop_the_gateway_from_answering() {
    use tokio::io::AsyncWriteExt as _;
    raise_open_file_limit();
    let gateway = RunningGateway::start(
        "bff-mobile",
        &[
            ("BFF_SERVER__HEADER_READ_TIMEOUT", "2s"),
            ("BFF_SERVER__IDLE_TIMEOUT", "60s"),
        ],
    )
    .await;

    // A thousand clients each send half a request head, then nothing.
    let mut slow = Vec::new();
    for _ in 0..1000 {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", gateway.port))
            .await
            .expect("connect");
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: gateway\r\nX-Slow: a")
            .await
            .expect("write half a head");
        slow.push(stream);
    }

    // Meanwhile the gateway still answers everyone else.
    let client = reqwest::Client::new();
    for _ in 0..20 {
        let health = tokio::time::timeout(
            Duration::from_secs(10),
            client.get(gateway.url("/health")).send(),
        )
        .await
        .expect("/health answers while 1000 slow clients are connected")
        .expect("/health answers");
        assert_eq!(health.status(), 200);
    }

    // And every slow client is disconnected once its head is overdue (2 s), not minutes later.
    let all_closed = tokio::time::timeout(Duration::from_secs(30), async {
        for stream in &mut slow {
            assert!(closed_by_server(stream).await);
        }
    })
    .await;
    assert!(
        all_closed.is_ok(),
        "every slow client was disconnected by the header read timeout"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let gateway = RunningGateway::start(
        "bff-partner",
        &[
            ("BFF_SERVER__HEADER_READ_TIMEOUT", "30s"),
            ("BFF_SERVER__IDLE_TIMEOUT", "1s"),
        ],
    )
    .await;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", gateway.port))
        .await
        .expect("connect");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .await
        .expect("write a request");
    let mut buf = [0u8; 4096];
    let read = stream.read(&mut buf).await.expect("read the response");
    let head = String::from_utf8_lossy(&buf[..read]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "the connection is kept alive after the response: {head}"
    );
    // Then nothing is sent: the gateway closes the connection after its idle timeout (1 s),
    // well before the header read timeout (30 s) would.
    let closed = tokio::time::timeout(Duration::from_secs(15), closed_by_server(&mut stream)).await;
    assert!(
        closed.is_ok(),
        "the idle connection was closed by the idle timeout"
    );
    drop(gateway.child);
}
