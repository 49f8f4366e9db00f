//! The development launcher: one command that runs the whole system locally.
//!
//! It starts six processes — the reference product, cart and order services
//! (`reference-services --service …`) and the gateways `bff-web`, `bff-mobile`, `bff-partner` —
//! from the binaries built next to its own executable, wires the gateways to the services through
//! `BFF_*` environment variables, waits until every `/health` answers, and prints where everything
//! is. Each child's log lines are prefixed with its name. Ctrl-C or SIGTERM stops all of them
//! gracefully (SIGTERM, then a kill after a grace period); if any child dies, the rest are stopped
//! too and the launcher exits non-zero.
//!
//! `--one-process` serves the three gateways from one `bff-all` instead. `--replicas N` runs `N`
//! of each gateway process (of `bff-all` with `--one-process`), sharing a private `redis-server`;
//! the reference services then publish their change events to it (`REF_EVENTS_REDIS_URL`, streams
//! `bff:events:catalog|cart|order`), so the replicas can learn of changes at once.
//! `--redis-cluster` shares a local Redis Cluster instead (six nodes; `BFF_REDIS_CLUSTER_NODES`,
//! `REF_EVENTS_REDIS_CLUSTER_NODES`), with one replica too.
//!
//! Modules:
//! - this file: the arguments, the plan of processes ([`plan`]), running and stopping them
//!   ([`run`]) and the banner;
//! - [`replicas`]: where each replica listens and the Redis they share (`--replicas`).

use std::{
    path::{Path, PathBuf},
    process::{ExitCode, Stdio},
    time::Duration,
};

use clap::Parser;
use reference_services::TestRedis;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    task::JoinSet,
};

pub mod replicas;

pub use replicas::{Ports, ReplicaPorts, SharedRedis, Topology};

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
            "[{{sha256=\"{}\",partner_id=\"{DEV_PARTNER}\",scopes=[\"catalog:read\",\"orders:read\",\"orders:write\",\"webhooks:manage\"]}}]",
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
    /// Run this many replicas of each gateway process (of bff-all with --one-process), all
    /// sharing a private redis-server of this run (it must be installed:
    /// ./scripts/ensure-redis-server). Replica 1 uses the ports above, the others free ports; the
    /// banner prints them all.
    #[arg(
        long,
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=i64::from(replicas::MAX_REPLICAS))
    )]
    pub replicas: u32,
    /// Share the state (and publish the change events) through a local Redis Cluster of this
    /// run (six redis-server nodes: three masters with a replica each, created with redis-cli)
    /// instead of one redis-server; with one replica of each gateway too.
    #[arg(long)]
    pub redis_cluster: bool,
}

impl Args {
    /// The gateways' ports on the command line: those of replica 1.
    pub fn gateway_ports(&self) -> ReplicaPorts {
        let ports = |listen, metrics| Ports { listen, metrics };
        ReplicaPorts {
            web: ports(self.web_port, self.web_metrics_port),
            mobile: ports(self.mobile_port, self.mobile_metrics_port),
            partner: ports(self.partner_port, self.partner_metrics_port),
        }
    }

    /// The reference services' ports.
    fn service_ports(&self) -> [u16; 3] {
        [self.product_port, self.cart_port, self.order_port]
    }
}

/// One process of the stack.
#[derive(Debug, Clone)]
pub struct Component {
    /// What it is: the reference service's name or the gateway's binary.
    pub name: &'static str,
    /// How log prefixes and the banner name it: `name`, with the replica's number when several
    /// replicas run (`bff-web#2`).
    pub label: String,
    /// What it is, for the banner.
    pub role: &'static str,
    /// The binary to run (file name in the binary directory), or `None` for a gateway that
    /// another process serves (`bff-all`, with `--one-process`).
    pub binary: Option<&'static str>,
    /// Its command-line arguments.
    pub args: Vec<String>,
    /// Environment variables set for it (on top of the launcher's own environment).
    pub env: Vec<(String, String)>,
    /// Variables of the launcher's own environment it is not given, because they would override
    /// one of `env` (`BFF_SHARED__REDIS_URL` wins over `BFF_REDIS_URL`).
    pub unset: Vec<String>,
    /// Its base URL.
    pub url: String,
    /// Where a gateway serves `/metrics` (its own port, apart from the clients').
    pub metrics_url: Option<String>,
}

/// The processes, their arguments and wiring, for `args`, this run's `credentials` and the
/// replicas of `topology`: the three reference services, then each replica's three gateways
/// (replica 1 first), then, with `--one-process`, the `bff-all` serving each replica's three.
/// Without `--replicas` that is six processes (seven entries with `--one-process`, whose three
/// gateways are served by bff-all).
pub fn plan(args: &Args, credentials: &DevCredentials, topology: &Topology) -> Vec<Component> {
    let url = |port: u16| format!("http://{}:{port}", args.host);
    let addr = |port: u16| format!("{}:{port}", args.host);
    // With a Redis (several replicas, or a cluster), the services announce their changes on it.
    let events: Vec<(String, String)> =
        topology.redis.iter().map(SharedRedis::events_env).collect();
    let events_unset: Vec<String> = topology
        .redis
        .iter()
        .flat_map(SharedRedis::events_unset)
        .collect();
    let reference = |name: &'static str, role: &'static str, service: &str, port: u16| Component {
        name,
        label: name.to_owned(),
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
        env: events.clone(),
        unset: events_unset.clone(),
        url: url(port),
        metrics_url: None,
    };
    let count = topology.count();
    let label = |name: &'static str, replica: usize| {
        if count == 1 {
            name.to_owned()
        } else {
            format!("{name}#{replica}")
        }
    };
    // What every replica of every gateway shares, when several run.
    let (shared, unset): (Vec<(String, String)>, Vec<String>) = match &topology.redis {
        Some(redis) => (
            vec![
                redis.gateway_env(),
                ("BFF_SHARED__REPLICAS".into(), count.to_string()),
                // The reference services publish their change events to this Redis, so catalog
                // entries and pages may stay fresh while the events vouch for them.
                (
                    "BFF_DOWNSTREAM__CACHE__EVENT_DRIVEN_MAX_TTL".into(),
                    "10m".to_owned(),
                ),
            ],
            redis.gateway_unset(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    let gateway = |name: &'static str,
                   role: &'static str,
                   replica: usize,
                   ports: Ports,
                   extra: Vec<(String, String)>| {
        let mut env = vec![
            ("BFF_LISTEN_ADDR".into(), addr(ports.listen)),
            (
                "BFF_SERVER__METRICS_LISTEN_ADDR".into(),
                addr(ports.metrics),
            ),
            ("BFF_PRODUCT_URL".into(), url(args.product_port)),
            ("BFF_CART_URL".into(), url(args.cart_port)),
            ("BFF_ORDER_URL".into(), url(args.order_port)),
        ];
        env.extend(extra);
        env.extend(shared.iter().cloned());
        Component {
            name,
            label: label(name, replica),
            role,
            binary: Some(name),
            args: Vec::new(),
            env,
            unset: unset.clone(),
            url: url(ports.listen),
            metrics_url: Some(format!("{}/metrics", url(ports.metrics))),
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
    ];
    let mut one_processes = Vec::new();
    for (index, ports) in topology.replicas.iter().enumerate() {
        let replica = index + 1;
        let mut gateways = [
            gateway(
                "bff-web",
                "GraphQL gateway for the web app",
                replica,
                ports.web,
                user_auth()
                    .into_iter()
                    .chain(web_trusted_documents())
                    .collect(),
            ),
            gateway(
                "bff-mobile",
                "JSON gateway for the mobile apps",
                replica,
                ports.mobile,
                user_auth(),
            ),
            gateway(
                "bff-partner",
                "versioned REST gateway for partners",
                replica,
                ports.partner,
                vec![
                    (
                        "BFF_GATEWAY__KEYS".to_owned(),
                        credentials.partner_keys_setting(),
                    ),
                    // Webhooks (with Redis) may target the developer's own loopback receiver.
                    (
                        "BFF_GATEWAY__WEBHOOKS__ALLOW_INSECURE_TARGETS".to_owned(),
                        "true".to_owned(),
                    ),
                ],
            ),
        ];
        if args.one_process {
            let mut all = one_process(&gateways);
            all.label = label(all.name, replica);
            if count > 1 {
                all.role = "the three gateways of its replica, in one process";
            }
            one_processes.push(all);
            for gateway in &mut gateways {
                gateway.binary = None;
                gateway.env.clear();
                gateway.unset.clear();
            }
        }
        components.extend(gateways);
    }
    components.extend(one_processes);
    components
}

/// The web app's operations (`bff-web/operations`), trusted in `allow` mode: they run by id as
/// in production, and GraphiQL's arbitrary documents still run.
pub const WEB_MANIFEST: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../bff-web/operations/manifest.json"
);

/// bff-web's `BFF_GATEWAY__TRUSTED_DOCUMENTS__…` settings under the launcher.
fn web_trusted_documents() -> [(String, String); 2] {
    [
        (
            "BFF_GATEWAY__TRUSTED_DOCUMENTS__MODE".to_owned(),
            "allow".to_owned(),
        ),
        (
            "BFF_GATEWAY__TRUSTED_DOCUMENTS__MANIFESTS".to_owned(),
            format!("[{WEB_MANIFEST:?}]"),
        ),
    ]
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
    let mut unset: Vec<String> = gateways.iter().flat_map(|g| g.unset.clone()).collect();
    unset.sort();
    unset.dedup();
    Component {
        name: "bff-all",
        label: "bff-all".to_owned(),
        role: "the three gateways above, in one process",
        binary: Some("bff-all"),
        args: Vec::new(),
        env,
        unset,
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
    // The same binaries run whatever the replicas: check them before starting anything.
    let single = Topology::single(args.gateway_ports());
    let mut missing: Vec<_> = plan(&args, &credentials, &single)
        .iter()
        .filter_map(|c| c.binary)
        .filter(|binary| !bin_dir.join(binary).is_file())
        .collect();
    missing.dedup();
    if !missing.is_empty() {
        eprintln!(
            "bff-dev: missing binaries in {}: {}. Build them first: cargo build --workspace --bins \
             (or use ./scripts/dev, which does both)",
            bin_dir.display(),
            missing.join(", ")
        );
        return ExitCode::FAILURE;
    }
    // The private Redis of `--replicas` is killed when dropped, on every return below.
    let (redis, topology) = match topology(&args).await {
        Ok(shared) => shared,
        Err(error) => {
            eprintln!("bff-dev: {error}");
            return ExitCode::FAILURE;
        }
    };
    let components = plan(&args, &credentials, &topology);

    let width = components
        .iter()
        .map(|c| c.label.len())
        .max()
        .unwrap_or_default();
    let mut children = Vec::with_capacity(components.len());
    for component in components.iter().filter(|c| c.binary.is_some()) {
        match spawn(&bin_dir, component, width) {
            Ok(child) => children.push((component.label.clone(), child)),
            Err(error) => {
                eprintln!("bff-dev: cannot start {}: {error}", component.label);
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
    print_banner(&components, &credentials, &topology);

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
    if let Some(mut redis) = redis {
        redis.stop().await.ok();
    }
    code
}

/// Where the gateways' replicas listen, and the private Redis they share when `--replicas` asks
/// for more than one or `--redis-cluster` for a cluster (`None` otherwise: nothing to share).
async fn topology(args: &Args) -> Result<(Option<TestRedis>, Topology), String> {
    let first = args.gateway_ports();
    let mut taken = args.service_ports().to_vec();
    let (redis, shared) = if args.redis_cluster {
        let cluster = replicas::start_redis_cluster().await?;
        let urls = cluster.urls();
        taken.extend(urls.iter().filter_map(|url| {
            url.rsplit(':')
                .next()
                .and_then(|port| port.parse::<u16>().ok())
        }));
        (TestRedis::Cluster(cluster), SharedRedis::Cluster(urls))
    } else if args.replicas > 1 {
        let redis = replicas::start_redis(args.replicas).await?;
        taken.push(redis.port());
        let url = redis.url();
        (TestRedis::Standalone(redis), SharedRedis::Server(url))
    } else {
        return Ok((None, Topology::single(first)));
    };
    let topology = Topology::replicated(first, args.replicas, shared, &args.host, &taken).map_err(
        |error| {
            format!(
                "cannot find free ports on {} for the replicas: {error}",
                args.host
            )
        },
    )?;
    Ok((Some(redis), topology))
}

fn own_directory() -> std::io::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| std::io::Error::other("the executable has no parent directory"))
}

/// Starts `component`, its output forwarded with its label (right-aligned to `width`) in front.
fn spawn(bin_dir: &Path, component: &Component, width: usize) -> std::io::Result<Child> {
    let binary = component
        .binary
        .ok_or_else(|| std::io::Error::other("served by another process"))?;
    let mut command = Command::new(bin_dir.join(binary));
    for name in &component.unset {
        command.env_remove(name);
    }
    let mut child = command
        .args(&component.args)
        .envs(component.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(forward_lines(component.label.clone(), width, stdout));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(forward_lines(component.label.clone(), width, stderr));
    }
    Ok(child)
}

/// Copies a child's output to our stderr, one prefixed line at a time.
async fn forward_lines(label: String, width: usize, stream: impl tokio::io::AsyncRead + Unpin) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        eprintln!("[{label:>width$}] {line}");
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
        let name = component.label.clone();
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

/// Completes with the label of the first child that exits.
async fn first_exit(children: &mut [(String, Child)]) -> String {
    if children.is_empty() {
        return std::future::pending().await;
    }
    let waits = children.iter_mut().map(|(label, child)| {
        Box::pin(async move {
            child.wait().await.ok();
            label.clone()
        })
    });
    futures::future::select_all(waits).await.0
}

/// Asks every child to stop (SIGTERM), waits for them, and kills whatever is still running after
/// a grace period.
async fn stop_all(children: &mut [(String, Child)]) {
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

fn print_banner(components: &[Component], credentials: &DevCredentials, topology: &Topology) {
    // The first replica of `name`.
    let url_of = |name: &str| {
        components
            .iter()
            .find(|c| c.name == name)
            .map_or_else(String::new, |c| c.url.clone())
    };
    let width = components
        .iter()
        .map(|c| c.label.len() + 1)
        .max()
        .unwrap_or_default()
        .max(12);
    println!();
    println!("BFF gateway stack (Ctrl-C stops everything):");
    for component in components {
        println!(
            "  {:<width$} {:<26} {}",
            component.label, component.url, component.role
        );
    }
    println!();
    println!("Metrics (Prometheus, not on the clients' ports):");
    for component in components {
        if let Some(metrics_url) = &component.metrics_url {
            println!("  {:<width$} {metrics_url}", component.label);
        }
    }
    println!();
    if let Some(redis) = &topology.redis {
        let count = topology.count();
        let (gateway_var, value) = redis.gateway_env();
        let (events_var, _) = redis.events_env();
        match redis {
            SharedRedis::Server(redis_url) => {
                println!("Shared state ({count} replicas of each gateway, one Redis):");
                println!(
                    "  {:<width$} {redis_url:<26} private to this run, nothing persisted",
                    "redis"
                );
            }
            SharedRedis::Cluster(nodes) => {
                println!(
                    "Shared state ({count} replica(s) of each gateway, a Redis Cluster: three masters with a replica each):"
                );
                for (index, node) in nodes.iter().enumerate() {
                    println!(
                        "  {:<width$} {node:<26} private to this run, nothing persisted",
                        format!("redis-node{}", index + 1)
                    );
                }
                println!("  e.g. redis-cli -c -p <port> cluster nodes");
            }
        }
        println!("  every gateway process has {gateway_var}={value} BFF_SHARED__REPLICAS={count}");
        println!(
            "  the reference services publish change events there ({events_var}): streams bff:events:catalog|cart|order"
        );
        println!(
            "  the gateways drop what the events make stale at once, and keep catalog entries fresh up to 10m while they vouch for them (BFF_DOWNSTREAM__CACHE__EVENT_DRIVEN_MAX_TTL)"
        );
        println!();
    }
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
    if let Some(second) = components.iter().filter(|c| c.name == "bff-mobile").nth(1) {
        println!(
            "  curl -H \"Authorization: Bearer $TOKEN\" {}/m/v1/cart   # the same cart, through {}",
            second.url, second.label
        );
    }
    println!();
    println!(
        "Live updates: open {}/graphql in a browser (GraphiQL), run",
        url_of("bff-web")
    );
    println!(
        "  subscription {{ productUpdated(id: \"p-00001\") {{ name price {{ formatted }} }} }}"
    );
    println!("then change its price (a different amount each time) and watch the new one arrive:");
    println!(
        "  curl -X PATCH {}/__admin/products/p-00001 -H 'content-type: application/json' \\\n       -d '{{\"price\":{{\"amount_minor\":999,\"currency\":\"EUR\"}}}}'",
        url_of("product")
    );
    println!();
    if topology.redis.is_some() {
        println!(
            "Webhooks: start a receiver that prints each delivery (port 9999), register it, move an order:"
        );
        println!(
            "  python3 -c $'import http.server as h\\nclass R(h.BaseHTTPRequestHandler):\\n def do_POST(s):\\n  b=s.rfile.read(int(s.headers[\"content-length\"]));print(s.headers[\"webhook-id\"],s.headers[\"webhook-signature\"],b.decode(),flush=True);s.send_response(204);s.end_headers()\\nh.HTTPServer((\"127.0.0.1\",9999),R).serve_forever()' &"
        );
        println!(
            "  curl -H \"Authorization: Bearer $PARTNER_KEY\" -H 'content-type: application/json' \\\n       -d '{{\"url\":\"http://127.0.0.1:9999/hook\",\"events\":[\"order.created\",\"order.status_changed\"]}}' {}/v2/webhooks",
            url_of("bff-partner")
        );
        println!(
            "  curl -X POST {}/__admin/orders/advance   # {DEV_PARTNER}'s orders move: one signed POST each",
            url_of("order")
        );
    } else {
        println!(
            "Webhooks (bff-partner /v2/webhooks) need Redis: run with --replicas 2 to try them."
        );
    }
    println!();
    println!("{READY_LINE}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        Args::parse_from(std::iter::once("bff-dev").chain(extra.iter().copied()))
    }

    fn credentials() -> DevCredentials {
        DevCredentials::generate().expect("credentials")
    }

    fn env_of<'a>(component: &'a Component, name: &str) -> Option<&'a str> {
        component
            .env
            .iter()
            .find(|(known, _)| known == name)
            .map(|(_, value)| value.as_str())
    }

    fn two_replicas(args: &Args) -> Topology {
        Topology::replicated(
            args.gateway_ports(),
            2,
            SharedRedis::Server("redis://127.0.0.1:6399/0".to_owned()),
            "127.0.0.1",
            &args.service_ports(),
        )
        .expect("free ports")
    }

    #[test]
    fn without_replicas_the_plan_is_six_processes_with_no_redis() {
        let args = args(&[]);
        let plan = plan(
            &args,
            &credentials(),
            &Topology::single(args.gateway_ports()),
        );
        let labels: Vec<_> = plan.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "product",
                "cart",
                "order",
                "bff-web",
                "bff-mobile",
                "bff-partner"
            ]
        );
        assert_eq!(plan[3].url, "http://127.0.0.1:8080");
        for component in &plan {
            assert_eq!(env_of(component, "BFF_REDIS_URL"), None);
            assert_eq!(env_of(component, "BFF_SHARED__REPLICAS"), None);
            assert_eq!(env_of(component, "REF_EVENTS_REDIS_URL"), None);
            assert!(component.unset.is_empty());
        }
    }

    #[test]
    fn bff_web_trusts_the_web_apps_operations_in_allow_mode() {
        let args = args(&[]);
        let plan = plan(
            &args,
            &credentials(),
            &Topology::single(args.gateway_ports()),
        );
        let web = &plan[3];
        assert_eq!(web.name, "bff-web");
        assert_eq!(
            env_of(web, "BFF_GATEWAY__TRUSTED_DOCUMENTS__MODE"),
            Some("allow")
        );
        let manifests = env_of(web, "BFF_GATEWAY__TRUSTED_DOCUMENTS__MANIFESTS").expect("set");
        assert_eq!(manifests, format!("[\"{WEB_MANIFEST}\"]"));
        assert!(
            std::path::Path::new(WEB_MANIFEST).is_file(),
            "{WEB_MANIFEST} is missing"
        );
        for other in &plan[4..] {
            assert_eq!(env_of(other, "BFF_GATEWAY__TRUSTED_DOCUMENTS__MODE"), None);
        }
    }

    #[test]
    fn replicas_are_numbered_and_every_gateway_is_given_the_redis_and_the_count() {
        let args = args(&["--replicas", "2"]);
        let plan = plan(&args, &credentials(), &two_replicas(&args));
        let labels: Vec<_> = plan.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "product",
                "cart",
                "order",
                "bff-web#1",
                "bff-mobile#1",
                "bff-partner#1",
                "bff-web#2",
                "bff-mobile#2",
                "bff-partner#2"
            ]
        );
        assert_eq!(plan[3].url, "http://127.0.0.1:8080", "replica 1 keeps 8080");
        assert_ne!(plan[6].url, plan[3].url);
        for gateway in &plan[3..] {
            assert_eq!(
                env_of(gateway, "BFF_REDIS_URL"),
                Some("redis://127.0.0.1:6399/0")
            );
            assert_eq!(env_of(gateway, "BFF_SHARED__REPLICAS"), Some("2"));
            assert_eq!(
                env_of(gateway, "BFF_DOWNSTREAM__CACHE__EVENT_DRIVEN_MAX_TTL"),
                Some("10m")
            );
            assert_eq!(gateway.unset, ["BFF_SHARED__REDIS_URL"], "it would win");
        }
        for service in &plan[..3] {
            assert_eq!(
                env_of(service, "REF_EVENTS_REDIS_URL"),
                Some("redis://127.0.0.1:6399/0"),
                "{} publishes its changes to the shared Redis",
                service.label
            );
        }
    }

    #[test]
    fn replicas_with_one_process_run_one_bff_all_per_replica_on_its_own_ports() {
        let args = args(&["--replicas", "2", "--one-process"]);
        let plan = plan(&args, &credentials(), &two_replicas(&args));
        let running: Vec<_> = plan.iter().filter(|c| c.binary.is_some()).collect();
        let labels: Vec<_> = running.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(
            labels,
            ["product", "cart", "order", "bff-all#1", "bff-all#2"]
        );
        let (first, second) = (running[3], running[4]);
        for (all, web) in [(first, &plan[3]), (second, &plan[6])] {
            let listen = web.url.trim_start_matches("http://");
            assert_eq!(
                env_of(all, "BFF_WEB__SERVER__LISTEN_ADDR"),
                Some(listen),
                "{}",
                all.label
            );
            assert_eq!(
                env_of(all, "BFF_REDIS_URL"),
                Some("redis://127.0.0.1:6399/0")
            );
            assert_eq!(env_of(all, "BFF_SHARED__REPLICAS"), Some("2"));
            assert_eq!(all.unset, ["BFF_SHARED__REDIS_URL"]);
        }
    }

    #[test]
    fn with_a_redis_cluster_every_gateway_and_service_is_given_its_nodes() {
        let args = args(&["--redis-cluster"]);
        assert!(args.redis_cluster);
        let nodes = vec![
            "redis://127.0.0.1:7001".to_owned(),
            "redis://127.0.0.1:7002".to_owned(),
        ];
        let topology = Topology::replicated(
            args.gateway_ports(),
            1,
            SharedRedis::Cluster(nodes),
            "127.0.0.1",
            &args.service_ports(),
        )
        .expect("ports");
        let plan = plan(&args, &credentials(), &topology);
        let labels: Vec<_> = plan.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "product",
                "cart",
                "order",
                "bff-web",
                "bff-mobile",
                "bff-partner"
            ]
        );
        let seeds = "redis://127.0.0.1:7001,redis://127.0.0.1:7002";
        for gateway in &plan[3..] {
            assert_eq!(env_of(gateway, "BFF_REDIS_CLUSTER_NODES"), Some(seeds));
            assert_eq!(env_of(gateway, "BFF_REDIS_URL"), None);
            assert_eq!(env_of(gateway, "BFF_SHARED__REPLICAS"), Some("1"));
            assert!(
                gateway.unset.iter().any(|name| name == "BFF_REDIS_URL"),
                "one way to name Redis only"
            );
        }
        for service in &plan[..3] {
            assert_eq!(
                env_of(service, "REF_EVENTS_REDIS_CLUSTER_NODES"),
                Some(seeds)
            );
            assert_eq!(env_of(service, "REF_EVENTS_REDIS_URL"), None);
            assert!(
                service
                    .unset
                    .iter()
                    .any(|name| name == "REF_EVENTS_REDIS_URL")
            );
        }
    }

    #[test]
    fn replicas_must_be_from_1_to_the_maximum() {
        for bad in ["0", "17"] {
            assert!(Args::try_parse_from(["bff-dev", "--replicas", bad]).is_err());
        }
        assert_eq!(args(&[]).replicas, 1);
    }
}
