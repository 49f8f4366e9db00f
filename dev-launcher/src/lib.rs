//! The development launcher: one command that runs the whole system locally.
//!
//! It starts six processes — the reference product, cart and order services
//! (`reference-services --service …`) and the gateways `bff-web`, `bff-mobile`, `bff-partner` —
//! from the binaries built next to its own executable, wires the gateways to the services through
//! `BFF_*` environment variables, waits until every `/health` answers, and prints where everything
//! is. Each child's log lines are prefixed with its name. Ctrl-C or SIGTERM stops all of them
//! gracefully (SIGTERM, then a kill after a grace period); if any child dies, the rest are stopped
//! too and the launcher exits non-zero.

use std::{
    path::{Path, PathBuf},
    process::{ExitCode, Stdio},
    time::Duration,
};

use clap::Parser;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    task::JoinSet,
};

/// The line printed once every process answers its health check (tests wait for it).
pub const READY_LINE: &str = "bff-dev: all services are up";

/// The seeded user the printed development token is for (has a cart and past orders).
pub const DEV_USER: &str = "u-0001";

/// The seeded partner the printed development API key belongs to (has past orders).
pub const DEV_PARTNER: &str = "partner-acme";

/// How long the printed development token is valid.
const DEV_TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// Credentials made up for one run of the stack, so nothing secret is built in.
#[derive(Debug, Clone)]
pub struct DevCredentials {
    /// The HS256 secret bff-web and bff-mobile verify user tokens with.
    pub jwt_secret: String,
    /// A token for [`DEV_USER`], signed with `jwt_secret`.
    pub user_token: String,
    /// An API key of [`DEV_PARTNER`] with every scope; bff-partner is given only its hash.
    pub partner_key: String,
}

impl DevCredentials {
    /// Fresh random credentials.
    pub fn generate() -> Result<Self, String> {
        // Starts with letters, so configuration never reads it as a number.
        let jwt_secret = format!(
            "dev-secret-{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let user = shared_clients::UserId::parse(DEV_USER)
            .map_err(|error| format!("bad development user id: {error}"))?;
        let user_token = server_kit::auth::dev_token(
            &server_kit::auth::Secret::new(jwt_secret.clone()),
            &user,
            DEV_TOKEN_TTL,
            None,
            None,
        )
        .map_err(|error| format!("cannot sign a development token: {error}"))?;
        let partner_key = format!("bffdev_{}", uuid::Uuid::new_v4().simple());
        Ok(Self {
            jwt_secret,
            user_token,
            partner_key,
        })
    }

    /// The `BFF_GATEWAY__KEYS` value that configures the development partner key.
    pub fn partner_keys_setting(&self) -> String {
        format!(
            "[{{sha256=\"{}\",partner_id=\"{DEV_PARTNER}\",scopes=[\"catalog:read\",\"orders:read\",\"orders:write\"]}}]",
            server_kit::auth::hash_api_key(&self.partner_key)
        )
    }
}

/// Command-line arguments of `bff-dev`.
#[derive(Debug, Clone, Parser)]
#[command(
    version,
    about = "Runs the reference services and the three BFF gateways locally"
)]
pub struct Args {
    /// Interface every process listens on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port of the reference product service.
    #[arg(long, default_value_t = 9101)]
    pub product_port: u16,
    /// Port of the reference cart service.
    #[arg(long, default_value_t = 9102)]
    pub cart_port: u16,
    /// Port of the reference order service.
    #[arg(long, default_value_t = 9103)]
    pub order_port: u16,
    /// Port of bff-web (GraphQL).
    #[arg(long, default_value_t = 8080)]
    pub web_port: u16,
    /// Port of bff-mobile (screen-shaped JSON).
    #[arg(long, default_value_t = 8081)]
    pub mobile_port: u16,
    /// Port of bff-partner (versioned REST).
    #[arg(long, default_value_t = 8082)]
    pub partner_port: u16,
    /// Port of bff-web's `/metrics` (kept off the clients' port).
    #[arg(long, default_value_t = 9180)]
    pub web_metrics_port: u16,
    /// Port of bff-mobile's `/metrics`.
    #[arg(long, default_value_t = 9181)]
    pub mobile_metrics_port: u16,
    /// Port of bff-partner's `/metrics`.
    #[arg(long, default_value_t = 9182)]
    pub partner_metrics_port: u16,
    /// Artificial latency added by the reference services to every call, e.g. `10ms`.
    #[arg(long, default_value = "0ms")]
    pub latency: String,
    /// Where the binaries are; by default, the directory of this executable (where cargo puts them).
    #[arg(long)]
    pub bin_dir: Option<PathBuf>,
    /// How long to wait for every process to answer `/health`, in seconds.
    #[arg(long, default_value_t = 60)]
    pub startup_timeout_secs: u64,
    /// Serve the three gateways from one process (`bff-all`, over one set of downstream clients
    /// and caches) instead of three, on the same ports.
    #[arg(long)]
    pub one_process: bool,
}

/// One process of the stack.
#[derive(Debug, Clone)]
pub struct Component {
    /// Short name used in log prefixes and the banner.
    pub name: &'static str,
    /// What it is, for the banner.
    pub role: &'static str,
    /// The binary to run (file name in the binary directory), or `None` for a gateway that
    /// another process serves (`bff-all`, with `--one-process`).
    pub binary: Option<&'static str>,
    /// Its command-line arguments.
    pub args: Vec<String>,
    /// Environment variables set for it (on top of the launcher's own environment).
    pub env: Vec<(String, String)>,
    /// Its base URL.
    pub url: String,
    /// Where a gateway serves `/metrics` (its own port, apart from the clients').
    pub metrics_url: Option<String>,
}

/// The six processes, their arguments and wiring, for `args` and this run's `credentials`.
pub fn plan(args: &Args, credentials: &DevCredentials) -> Vec<Component> {
    let url = |port: u16| format!("http://{}:{port}", args.host);
    let addr = |port: u16| format!("{}:{port}", args.host);
    let reference = |name: &'static str, role: &'static str, service: &str, port: u16| Component {
        name,
        role,
        binary: Some("reference-services"),
        args: vec![
            "--service".into(),
            service.into(),
            "--listen".into(),
            addr(port),
            "--latency".into(),
            args.latency.clone(),
        ],
        env: Vec::new(),
        url: url(port),
        metrics_url: None,
    };
    let gateway = |name: &'static str,
                   role: &'static str,
                   (port, metrics_port): (u16, u16),
                   extra: Vec<(String, String)>| {
        let mut env = vec![
            ("BFF_LISTEN_ADDR".into(), addr(port)),
            ("BFF_SERVER__METRICS_LISTEN_ADDR".into(), addr(metrics_port)),
            ("BFF_PRODUCT_URL".into(), url(args.product_port)),
            ("BFF_CART_URL".into(), url(args.cart_port)),
            ("BFF_ORDER_URL".into(), url(args.order_port)),
        ];
        env.extend(extra);
        Component {
            name,
            role,
            binary: Some(name),
            args: Vec::new(),
            env,
            url: url(port),
            metrics_url: Some(format!("{}/metrics", url(metrics_port))),
        }
    };
    let user_auth = || {
        vec![(
            "BFF_GATEWAY__AUTH__HS256_SECRET".to_owned(),
            credentials.jwt_secret.clone(),
        )]
    };
    let mut components = vec![
        reference(
            "product",
            "reference product service",
            "product",
            args.product_port,
        ),
        reference("cart", "reference cart service", "cart", args.cart_port),
        reference("order", "reference order service", "order", args.order_port),
        gateway(
            "bff-web",
            "GraphQL gateway for the web app",
            (args.web_port, args.web_metrics_port),
            user_auth(),
        ),
        gateway(
            "bff-mobile",
            "JSON gateway for the mobile apps",
            (args.mobile_port, args.mobile_metrics_port),
            user_auth(),
        ),
        gateway(
            "bff-partner",
            "versioned REST gateway for partners",
            (args.partner_port, args.partner_metrics_port),
            vec![(
                "BFF_GATEWAY__KEYS".to_owned(),
                credentials.partner_keys_setting(),
            )],
        ),
    ];
    if args.one_process {
        let all = one_process(&components[3..]);
        for gateway in &mut components[3..] {
            gateway.binary = None;
            gateway.env.clear();
        }
        components.push(all);
    }
    components
}

/// The `bff-all` process that serves `gateways` (as planned for their own binaries): each
/// gateway's `BFF_…` settings moved to its section (`BFF_LISTEN_ADDR` of bff-web becomes
/// `BFF_WEB__SERVER__LISTEN_ADDR`, `BFF_GATEWAY__…` `BFF_WEB__GATEWAY__…`), the downstream ones
/// kept once.
fn one_process(gateways: &[Component]) -> Component {
    let mut env: Vec<(String, String)> = Vec::new();
    for gateway in gateways {
        let section = gateway.name.trim_start_matches("bff-").to_ascii_uppercase();
        for (name, value) in &gateway.env {
            let name = match name.as_str() {
                "BFF_LISTEN_ADDR" => format!("BFF_{section}__SERVER__LISTEN_ADDR"),
                other => match other.strip_prefix("BFF_SERVER__") {
                    Some(rest) => format!("BFF_{section}__SERVER__{rest}"),
                    None => match other.strip_prefix("BFF_GATEWAY__") {
                        Some(rest) => format!("BFF_{section}__GATEWAY__{rest}"),
                        None => other.to_owned(),
                    },
                },
            };
            if !env.iter().any(|(known, _)| *known == name) {
                env.push((name, value.clone()));
            }
        }
    }
    Component {
        name: "bff-all",
        role: "the three gateways above, in one process",
        binary: Some("bff-all"),
        args: Vec::new(),
        env,
        url: gateways
            .first()
            .map_or_else(String::new, |web| web.url.clone()),
        metrics_url: None,
    }
}

/// Runs the stack until ctrl-c, SIGTERM or the death of any process.
pub async fn run(args: Args) -> ExitCode {
    let bin_dir = match args.bin_dir.clone().map_or_else(own_directory, Ok) {
        Ok(dir) => dir,
        Err(error) => {
            eprintln!("bff-dev: cannot find the binary directory: {error}");
            return ExitCode::FAILURE;
        }
    };
    let credentials = match DevCredentials::generate() {
        Ok(credentials) => credentials,
        Err(error) => {
            eprintln!("bff-dev: {error}");
            return ExitCode::FAILURE;
        }
    };
    let components = plan(&args, &credentials);
    let missing: Vec<_> = components
        .iter()
        .filter_map(|c| c.binary)
        .filter(|binary| !bin_dir.join(binary).is_file())
        .collect();
    if !missing.is_empty() {
        eprintln!(
            "bff-dev: missing binaries in {}: {}. Build them first: cargo build --workspace --bins \
             (or use ./scripts/dev, which does both)",
            bin_dir.display(),
            missing.join(", ")
        );
        return ExitCode::FAILURE;
    }

    let mut children = Vec::with_capacity(components.len());
    for component in components.iter().filter(|c| c.binary.is_some()) {
        match spawn(&bin_dir, component) {
            Ok(child) => children.push((component.name, child)),
            Err(error) => {
                eprintln!("bff-dev: cannot start {}: {error}", component.name);
                stop_all(&mut children).await;
                return ExitCode::FAILURE;
            }
        }
    }

    let timeout = Duration::from_secs(args.startup_timeout_secs);
    tokio::select! {
        result = wait_until_healthy(&components, timeout) => {
            if let Err(error) = result {
                eprintln!("bff-dev: {error}");
                stop_all(&mut children).await;
                return ExitCode::FAILURE;
            }
        }
        name = first_exit(&mut children) => {
            eprintln!("bff-dev: {name} exited during start-up; stopping the others");
            stop_all(&mut children).await;
            return ExitCode::FAILURE;
        }
    }
    print_banner(&components, &credentials);

    let code = tokio::select! {
        () = server_kit::shutdown::signal() => {
            eprintln!("bff-dev: stopping");
            ExitCode::SUCCESS
        }
        name = first_exit(&mut children) => {
            eprintln!("bff-dev: {name} exited; stopping the others");
            ExitCode::FAILURE
        }
    };
    stop_all(&mut children).await;
    code
}

fn own_directory() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| std::io::Error::other("the executable has no parent directory"))
}

fn spawn(bin_dir: &Path, component: &Component) -> std::io::Result<Child> {
    let binary = component
        .binary
        .ok_or_else(|| std::io::Error::other("served by another process"))?;
    let mut child = Command::new(bin_dir.join(binary))
        .args(&component.args)
        .envs(component.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let name = component.name;
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(forward_lines(name, stdout));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(forward_lines(name, stderr));
    }
    Ok(child)
}

/// Copies a child's output to our stderr, one prefixed line at a time.
async fn forward_lines(name: &'static str, stream: impl tokio::io::AsyncRead + Unpin) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("[{name:>11}] {line}");
    }
}

async fn wait_until_healthy(components: &[Component], timeout: Duration) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .map_err(|error| format!("cannot build an HTTP client: {error}"))?;
    let mut checks = JoinSet::new();
    for component in components {
        let client = client.clone();
        let url = format!("{}/health", component.url);
        let name = component.name;
        checks.spawn(async move {
            let poll = async {
                loop {
                    if let Ok(response) = client.get(&url).send().await
                        && response.status().is_success()
                    {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            };
            tokio::time::timeout(timeout, poll)
                .await
                .map_err(|_| format!("{name} did not answer {url} within {timeout:?}"))
        });
    }
    while let Some(result) = checks.join_next().await {
        result.map_err(|error| format!("health check task failed: {error}"))??;
    }
    Ok(())
}

/// Completes with the name of the first child that exits.
async fn first_exit(children: &mut [(&'static str, Child)]) -> &'static str {
    if children.is_empty() {
        return std::future::pending().await;
    }
    let waits = children.iter_mut().map(|(name, child)| {
        Box::pin(async move {
            child.wait().await.ok();
            *name
        })
    });
    futures::future::select_all(waits).await.0
}

/// Asks every child to stop (SIGTERM), waits for them, and kills whatever is still running after
/// a grace period.
async fn stop_all(children: &mut [(&'static str, Child)]) {
    for (_, child) in children.iter() {
        if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) {
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            )
            .ok();
        }
    }
    for (name, child) in children.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(15), child.wait())
            .await
            .is_err()
        {
            eprintln!("bff-dev: {name} did not stop in time; killing it");
            child.kill().await.ok();
        }
    }
}

fn print_banner(components: &[Component], credentials: &DevCredentials) {
    let url_of = |name: &str| {
        components
            .iter()
            .find(|c| c.name == name)
            .map_or_else(String::new, |c| c.url.clone())
    };
    println!();
    println!("BFF gateway stack (Ctrl-C stops everything):");
    for component in components {
        println!(
            "  {:<12} {:<26} {}",
            component.name, component.url, component.role
        );
    }
    println!();
    println!("Metrics (Prometheus, not on the clients' ports):");
    for component in components {
        if let Some(metrics_url) = &component.metrics_url {
            println!("  {:<12} {metrics_url}", component.name);
        }
    }
    println!();
    println!("Development user token ({DEV_USER}, valid 24h, this run only):");
    println!("  TOKEN={}", credentials.user_token);
    println!("Development partner API key ({DEV_PARTNER}, every scope, this run only):");
    println!("  PARTNER_KEY={}", credentials.partner_key);
    println!();
    println!("Try:");
    println!("  curl {}/health", url_of("bff-web"));
    println!(
        "  curl -H \"Authorization: Bearer $TOKEN\" {}/m/v1/cart",
        url_of("bff-mobile")
    );
    println!("  curl {}/m/v1/products/p-00001", url_of("bff-mobile"));
    println!(
        "  curl -H 'content-type: application/json' -H \"Authorization: Bearer $TOKEN\" \\\n       -d '{{\"query\":\"{{ viewer {{ cart {{ itemCount }} }} }}\"}}' {}/graphql",
        url_of("bff-web")
    );
    println!(
        "  curl -H \"Authorization: Bearer $PARTNER_KEY\" {}/v2/products?limit=2",
        url_of("bff-partner")
    );
    println!("  curl {}/__admin/stats", url_of("product"));
    println!();
    println!("{READY_LINE}");
}
