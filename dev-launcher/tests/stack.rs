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

/// The launcher's flags that set the nine ports of the stack, in the order of [`StackPorts`].
const PORT_FLAGS: [&str; 9] = [
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

/// Nine free ports for the stack: the three services, the three gateways, their three metrics.
struct StackPorts(Vec<u16>);

impl StackPorts {
    fn free() -> Self {
        Self((0..PORT_FLAGS.len()).map(|_| free_port()).collect())
    }

    /// The launcher's arguments that put the stack on these ports.
    fn args(&self) -> Vec<String> {
        PORT_FLAGS
            .iter()
            .zip(&self.0)
            .flat_map(|(flag, port)| [(*flag).to_owned(), port.to_string()])
            .collect()
    }

    fn services(&self) -> &[u16] {
        &self.0[..3]
    }

    fn gateways(&self) -> &[u16] {
        &self.0[3..6]
    }

    fn metrics(&self) -> &[u16] {
        &self.0[6..]
    }
}

/// A running `bff-dev` whose stack is up, and what it printed until then.
struct Launcher {
    child: tokio::process::Child,
    banner: String,
}

impl Launcher {
    /// Starts `bff-dev` with `args`, `env` on top of this process's environment, and waits for
    /// its ready line.
    async fn start(args: &[String], env: &[(String, String)]) -> Self {
        bin_dir();
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_bff-dev"));
        command
            .args(args)
            .envs(env.iter().map(|(name, value)| (name, value)))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("start bff-dev");
        let stdout = child.stdout.take().expect("stdout");
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
        Self { child, banner }
    }

    /// The rest of the banner line that starts with `prefix` (after spaces).
    fn value_of(&self, prefix: &str) -> String {
        self.banner
            .lines()
            .find_map(|line| line.trim().strip_prefix(prefix))
            .map(|rest| rest.trim().to_owned())
            .unwrap_or_else(|| panic!("banner prints {prefix}:\n{}", self.banner))
    }

    /// The URLs of the banner lines naming `label` (the clients' URL, then the metrics URL).
    fn urls_of(&self, label: &str) -> Vec<String> {
        self.banner
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                (words.next() == Some(label))
                    .then(|| words.next())
                    .flatten()
                    .map(str::to_owned)
            })
            .collect()
    }

    /// Sends SIGTERM and checks that the launcher stops everything and exits cleanly in time.
    async fn stop(mut self) {
        let pid = self.child.id().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("signal bff-dev");
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("bff-dev stops in time")
            .expect("exit status");
        assert!(status.success(), "{status}");
    }
}

/// Whether something accepts connections on `port` of 127.0.0.1.
fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

/// Runs `bff-dev` with `extra` arguments on free ports, checks that every process answers and
/// is wired to the others, then stops it and checks that every port is closed.
async fn launch_check_and_stop(extra: &[&str]) {
    let ports = StackPorts::free();
    let mut args = ports.args();
    args.extend(extra.iter().map(|arg| (*arg).to_owned()));
    // Every gateway's /ready then checks its three downstream services: proof of the wiring.
    // (bff-all reads each gateway's server settings in the gateway's own section.)
    let sections: &[&str] = if extra.contains(&"--one-process") {
        &["WEB__", "MOBILE__", "PARTNER__"]
    } else {
        &[""]
    };
    let mut env = Vec::new();
    for section in sections {
        env.push((
            format!("BFF_{section}SERVER__READY_REQUIRES_DOWNSTREAM"),
            "true".to_owned(),
        ));
        env.push((
            format!("BFF_{section}SERVER__READY_TIMEOUT"),
            "2s".to_owned(),
        ));
    }
    let launcher = Launcher::start(&args, &env).await;
    let banner = &launcher.banner;

    let client = reqwest::Client::new();
    for port in &ports.0 {
        assert!(banner.contains(&format!("127.0.0.1:{port}")), "{banner}");
    }
    // One replica: no Redis is started or given to the gateways.
    assert!(!banner.contains("redis://"), "{banner}");
    // Each gateway's metrics are on its metrics port, and not on the port clients use.
    for (port, metrics_port) in ports.gateways().iter().zip(ports.metrics()) {
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
    for port in ports.services().iter().chain(ports.gateways()) {
        let health = client
            .get(format!("http://127.0.0.1:{port}/health"))
            .send()
            .await
            .expect("health answers");
        assert_eq!(health.status(), 200, "port {port}");
    }
    for port in ports.gateways() {
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
    let token = launcher.value_of("TOKEN=");
    let partner_key = launcher.value_of("PARTNER_KEY=");
    let cart = client
        .get(format!("http://127.0.0.1:{}/m/v1/cart", ports.0[4]))
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
        .post(format!("http://127.0.0.1:{}/graphql", ports.0[3]))
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
        .get(format!(
            "http://127.0.0.1:{}/v2/products?limit=1",
            ports.0[5]
        ))
        .bearer_auth(&partner_key)
        .send()
        .await
        .expect("partner products answer");
    assert_eq!(
        products.status(),
        200,
        "the dev key is accepted by bff-partner"
    );

    launcher.stop().await;
    for port in ports.services().iter().chain(ports.gateways()) {
        assert!(!listening(*port), "port {port} is closed after shutdown");
    }
}

/// The body of `base`'s `/ready` once it answers `status`, within 10 s (a replica connects to
/// Redis only when it first needs it, and reuses a readiness result for a second).
async fn ready_body(client: &reqwest::Client, base: &str, status: u16) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ready = client
            .get(format!("{base}/ready"))
            .send()
            .await
            .expect("ready answers");
        let answered = ready.status();
        let body: serde_json::Value = ready.json().await.expect("json");
        if answered == status {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{base}/ready is not {status}: {answered} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn with_two_replicas_every_gateway_runs_twice_and_every_replica_uses_the_printed_redis() {
    use tokio::io::AsyncWriteExt as _;
    let ports = StackPorts::free();
    let mut args = ports.args();
    args.extend(["--replicas".to_owned(), "2".to_owned()]);
    // /ready then checks Redis too: each replica shows it reaches one. A generous command
    // timeout, so that a busy test machine cannot make a PING miss it.
    let env = [
        ("BFF_SHARED__REDIS_REQUIRED".to_owned(), "true".to_owned()),
        ("BFF_SHARED__COMMAND_TIMEOUT".to_owned(), "2s".to_owned()),
    ];
    let launcher = Launcher::start(&args, &env).await;
    let banner = &launcher.banner;
    let client = reqwest::Client::new();

    let redis_url = launcher
        .urls_of("redis")
        .first()
        .cloned()
        .unwrap_or_else(|| {
            panic!("the banner prints the Redis URL:\n{banner}");
        });
    let redis_port: u16 = redis_url
        .trim_start_matches("redis://127.0.0.1:")
        .trim_end_matches("/0")
        .parse()
        .unwrap_or_else(|_| panic!("a loopback Redis URL: {redis_url}"));
    assert!(
        banner.contains(&format!("BFF_REDIS_URL={redis_url} BFF_SHARED__REPLICAS=2")),
        "{banner}"
    );

    let mut replica_bases = Vec::new();
    for (gateway, (port, metrics_port)) in ["bff-web", "bff-mobile", "bff-partner"]
        .into_iter()
        .zip(ports.gateways().iter().zip(ports.metrics()))
    {
        // Replica 1 is on the ports asked for; replica 2 on others, all printed.
        let first = launcher.urls_of(&format!("{gateway}#1"));
        assert_eq!(
            first,
            [
                format!("http://127.0.0.1:{port}"),
                format!("http://127.0.0.1:{metrics_port}/metrics"),
            ],
            "{banner}"
        );
        let second = launcher.urls_of(&format!("{gateway}#2"));
        assert_eq!(second.len(), 2, "{gateway}#2 and its metrics:\n{banner}");
        assert_ne!(second, first);
        assert!(launcher.urls_of(&format!("{gateway}#3")).is_empty());
        for (base, metrics_url) in [first, second].iter().map(|urls| (&urls[0], &urls[1])) {
            let health = client
                .get(format!("{base}/health"))
                .send()
                .await
                .expect("health answers");
            assert_eq!(health.status(), 200, "{base}");
            let body = ready_body(&client, base, 200).await;
            assert_eq!(
                body["checks"],
                serde_json::json!([{"name": "redis", "up": true}]),
                "{base}"
            );
            let scrape = client
                .get(metrics_url)
                .send()
                .await
                .expect("metrics answer")
                .text()
                .await
                .expect("metrics text");
            assert!(
                scrape.contains("bff_redis_commands_total"),
                "{metrics_url} counts its Redis commands:\n{scrape}"
            );
            replica_bases.push(base.clone());
        }
    }

    // And it is the banner's Redis they share: once it is gone, every replica's /ready says so
    // (while every replica still answers: Redis is never needed to serve).
    let mut redis = tokio::net::TcpStream::connect(("127.0.0.1", redis_port))
        .await
        .expect("connect to the banner's Redis");
    redis
        .write_all(b"SHUTDOWN NOSAVE\r\n")
        .await
        .expect("shut Redis down");
    assert!(closed_by_server(&mut redis).await);
    for base in &replica_bases {
        let body = ready_body(&client, base, 503).await;
        assert_eq!(
            body["checks"],
            serde_json::json!([{"name": "redis", "up": false}]),
            "{base}"
        );
        let health = client
            .get(format!("{base}/health"))
            .send()
            .await
            .expect("health answers");
        assert_eq!(health.status(), 200, "{base} serves without Redis");
    }

    // Redis' death did not stop the stack, which still stops cleanly.
    launcher.stop().await;
    for base in &replica_bases {
        let port = base.rsplit(':').next().expect("a port");
        let port: u16 = port.parse().expect("a port number");
        assert!(!listening(port), "{base} is closed after shutdown");
    }
}

#[tokio::test]
async fn replicas_without_redis_server_installed_fail_saying_how_to_install_it() {
    bin_dir();
    let empty = std::env::temp_dir().join(format!("bff-dev-no-redis-{}", std::process::id()));
    std::fs::create_dir_all(&empty).expect("temp dir");
    let ports = StackPorts::free();
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_bff-dev"))
        .args(ports.args())
        .args(["--replicas", "3"])
        // No redis-server on this PATH (nor anything else).
        .env("PATH", &empty)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run bff-dev");
    std::fs::remove_dir_all(&empty).ok();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("--replicas 3 needs redis-server")
            && stderr.contains("./scripts/ensure-redis-server")
            && stderr.contains("apt-get install -y redis-server")
            && stderr.contains("brew install redis"),
        "{stderr}"
    );
    for port in &ports.0 {
        assert!(!listening(*port), "nothing was started on {port}");
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
