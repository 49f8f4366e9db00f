//! A private `redis-server` on a free loopback port, for the tests, the benchmarks and the dev
//! launcher: nothing persisted, stopped when dropped. Never assumes a Redis on 6379.
//!
//! Also a local Redis Cluster ([`LocalRedisCluster`]) and a master behind Sentinel
//! ([`LocalRedisSentinel`]), and [`TestRedis`], any of the three as chosen by
//! `BFF_TEST_REDIS_TOPOLOGY` ([`RedisTopology::from_env`]), so the tests of shared behaviour run
//! over each topology with the same code.

use std::io;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// How long a started server gets to answer.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The program that is run.
const PROGRAM: &str = "redis-server";

/// A running `redis-server` of our own. Killed on drop.
#[derive(Debug)]
pub struct LocalRedis {
    /// Its loopback port.
    port: u16,
    /// The process, while it runs.
    child: Option<Child>,
    /// Arguments beyond the defaults (cluster mode, replication, sentinel).
    extra: Vec<String>,
}

impl Drop for LocalRedis {
    /// Kills the process and removes the snapshot file a replica may have written.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_file(std::env::temp_dir().join(snapshot_file(self.port)));
    }
}

impl LocalRedis {
    /// Starts `redis-server` on a free loopback port, with persistence off, and waits until it
    /// answers. Fails with a message that says how to install it when it is not on `PATH`.
    pub async fn start() -> io::Result<Self> {
        Self::start_with(free_port()?, Vec::new()).await
    }

    /// As [`LocalRedis::start`], on `port`, with `extra` arguments after the defaults.
    async fn start_with(port: u16, extra: Vec<String>) -> io::Result<Self> {
        let mut redis = Self {
            port,
            child: None,
            extra,
        };
        redis.spawn().await?;
        Ok(redis)
    }

    /// Whether `redis-server` can be run here.
    pub fn is_installed() -> bool {
        std::process::Command::new(PROGRAM)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its URL, database 0: `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (as a crash would: nothing is kept) and waits for it to be gone.
    pub async fn stop(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// Starts it again on the same port, empty.
    pub async fn restart(&mut self) -> io::Result<()> {
        self.stop().await?;
        self.spawn().await
    }

    /// Runs one command (inline protocol: words separated by spaces, none with a space or a
    /// newline of its own) and returns the raw reply, for tests that look at what is stored.
    pub async fn command(&self, line: &str) -> io::Result<String> {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).await?;
        stream.write_all(format!("{line}\r\n").as_bytes()).await?;
        let mut reply = vec![0; 64 * 1024];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut reply))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "redis did not answer"))??;
        reply.truncate(read);
        Ok(String::from_utf8_lossy(&reply).into_owned())
    }

    /// Spawns a sentinel with `config` on `self.port` and waits until it answers.
    async fn spawn_sentinel(&mut self, config: &std::path::Path) -> io::Result<()> {
        let child = Command::new(PROGRAM)
            .arg(config)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        self.child = Some(child);
        self.wait_for_ping().await
    }

    /// Spawns the process on `self.port` and waits until it answers.
    async fn spawn(&mut self) -> io::Result<()> {
        let dir = std::env::temp_dir();
        // Nothing is saved, but a replica writes the snapshot it receives from its master to
        // this file, and a server loads the file at start: each port has its own, removed
        // first, so a server starts empty (a shared `dump.rdb` gave new cluster nodes keys).
        let snapshot = snapshot_file(self.port);
        match std::fs::remove_file(dir.join(&snapshot)) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
        let child = Command::new(PROGRAM)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "no"])
            // A replica synchronises at once (the default waits 5 s for more replicas to share
            // the transfer).
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&dir)
            .args(["--dbfilename", &snapshot])
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| {
                io::Error::new(
                    err.kind(),
                    format!(
                        "could not run {PROGRAM} ({err}); install it (Debian/Ubuntu: \
                         `apt-get install -y redis-server`, macOS: `brew install redis`)"
                    ),
                )
            })?;
        self.child = Some(child);
        self.wait_for_ping().await
    }

    /// Waits until the process answers, or fails when it exits or takes too long. The answer
    /// must come from this process (`process_id` of `INFO server`): a server another test
    /// started on the same port (when it was free at the time it was chosen) is not taken for
    /// ours.
    async fn wait_for_ping(&mut self) -> io::Result<()> {
        let started = tokio::time::Instant::now();
        let pid = self.child.as_ref().and_then(|child| child.id());
        loop {
            if let Ok(reply) = self.command("INFO server").await
                && let Some(answering) = reply
                    .lines()
                    .find_map(|line| line.strip_prefix("process_id:"))
            {
                if pid.is_none_or(|pid| answering.trim() == pid.to_string()) {
                    return Ok(());
                }
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "another {PROGRAM} (pid {}) answers on port {}",
                        answering.trim(),
                        self.port
                    ),
                ));
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                return Err(io::Error::other(format!(
                    "{PROGRAM} on port {} exited at start ({status})",
                    self.port
                )));
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{PROGRAM} on port {} did not answer", self.port),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// How long a local cluster or sentinel set-up gets to settle.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A Redis Cluster of our own on loopback: three masters, each with one replica (six
/// `redis-server --cluster-enabled yes`, joined with `redis-cli --cluster create`), nothing
/// persisted but each node's cluster state file. Every node is killed on drop.
///
/// A node's failure is noticed after 2 s (`cluster-node-timeout`), so a replica takes over a
/// killed master within a few seconds.
#[derive(Debug)]
pub struct LocalRedisCluster {
    /// The six nodes, the first three created as masters.
    nodes: Vec<LocalRedis>,
}

impl LocalRedisCluster {
    /// Starts six nodes on free ports, creates the cluster and waits until every node reports
    /// `cluster_state:ok`. Needs `redis-server` and `redis-cli` (Debian's `redis-server`
    /// package brings both).
    pub async fn start() -> io::Result<Self> {
        let mut nodes = Vec::with_capacity(6);
        for _ in 0..6 {
            let port = free_port()?;
            let state = std::env::temp_dir().join(format!("bff-cluster-nodes-{port}.conf"));
            // A state file left by an earlier node on this port would name another cluster.
            let _ = std::fs::remove_file(&state);
            let extra = vec![
                "--cluster-enabled".to_owned(),
                "yes".to_owned(),
                "--cluster-config-file".to_owned(),
                state.to_string_lossy().into_owned(),
                "--cluster-node-timeout".to_owned(),
                "2000".to_owned(),
                // The bus port is the client port + 10000 unless set: a free port's may not
                // exist (above 65535) or be taken.
                "--cluster-port".to_owned(),
                free_port()?.to_string(),
            ];
            nodes.push(LocalRedis::start_with(port, extra).await?);
        }
        let mut create = tokio::process::Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port));
        }
        let output = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|err| {
                io::Error::new(
                    err.kind(),
                    format!("could not run redis-cli ({err}); install Redis's tools"),
                )
            })?;
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&output.stdout)
            )));
        }
        let cluster = Self { nodes };
        cluster.wait_until_ok().await?;
        cluster.wait_until_replicated().await?;
        Ok(cluster)
    }

    /// Waits until every replica has synchronised with its master (a replica that never has is
    /// not eligible to replace it).
    async fn wait_until_replicated(&self) -> io::Result<()> {
        let started = tokio::time::Instant::now();
        loop {
            let mut synced = 0;
            for node in &self.nodes {
                let info = node.command("INFO replication").await.unwrap_or_default();
                if info.contains("role:slave") && info.contains("master_link_status:up") {
                    synced += 1;
                }
            }
            if synced == self.nodes.len() / 2 {
                return Ok(());
            }
            if started.elapsed() > SETTLE_TIMEOUT {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the local Redis Cluster's replicas did not synchronise",
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The seed URLs of every node (`redis://127.0.0.1:<port>`), as
    /// `shared.redis_cluster_nodes` takes them.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| format!("redis://127.0.0.1:{}", node.port))
            .collect()
    }

    /// The nodes (index 0 to 5), to send commands to one or kill it.
    pub fn node(&self, index: usize) -> Option<&LocalRedis> {
        self.nodes.get(index)
    }

    /// The node serving as master for `slot` now, by index.
    pub async fn master_of_slot(&self, slot: u16) -> io::Result<usize> {
        for (index, node) in self.nodes.iter().enumerate() {
            if node.child.is_none() {
                continue;
            }
            let nodes = node.command("CLUSTER NODES").await.unwrap_or_default();
            // `<id> <addr> <flags> <master> <ping> <pong> <epoch> <link> <slot ranges…>`
            let Some(line) = nodes.lines().find(|line| line.contains("myself")) else {
                continue;
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            if !fields.get(2).is_some_and(|flags| flags.contains("master")) {
                continue;
            }
            let owns = fields.iter().skip(8).any(|range| {
                let mut bounds = range.split('-');
                let low = bounds.next().and_then(|b| b.parse::<u16>().ok());
                let high = bounds.next().and_then(|b| b.parse::<u16>().ok()).or(low);
                matches!((low, high), (Some(low), Some(high)) if low <= slot && slot <= high)
            });
            if owns {
                return Ok(index);
            }
        }
        Err(io::Error::other(format!("no master serves slot {slot}")))
    }

    /// Kills node `index` (as a crash would).
    pub async fn kill(&mut self, index: usize) -> io::Result<()> {
        match self.nodes.get_mut(index) {
            Some(node) => node.stop().await,
            None => Err(io::Error::other(format!("no node {index}"))),
        }
    }

    /// Kills every node (as a power cut would). Their cluster state files stay, so
    /// [`LocalRedisCluster::restart_all`] brings the same cluster back.
    pub async fn stop_all(&mut self) -> io::Result<()> {
        for node in &mut self.nodes {
            node.stop().await?;
        }
        Ok(())
    }

    /// Starts every node again on its port, empty; each rejoins the cluster from its state file
    /// with the role and slots it had. Waits until the cluster serves every slot and every
    /// replica has synchronised.
    pub async fn restart_all(&mut self) -> io::Result<()> {
        for node in &mut self.nodes {
            node.restart().await?;
        }
        self.wait_until_ok().await?;
        self.wait_until_replicated().await
    }

    /// The cluster's id of node `index` (`CLUSTER MYID`).
    pub async fn node_id(&self, index: usize) -> io::Result<String> {
        let node = self
            .node(index)
            .ok_or_else(|| io::Error::other(format!("no node {index}")))?;
        let reply = node.command("CLUSTER MYID").await?;
        reply
            .lines()
            .find(|line| !line.starts_with(['$', '+', '-']) && !line.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| io::Error::other(format!("CLUSTER MYID answered {reply:?}")))
    }

    /// The nodes serving as masters now (running, with slots), by index.
    pub async fn masters(&self) -> io::Result<Vec<usize>> {
        let mut masters = Vec::new();
        for (index, node) in self.nodes.iter().enumerate() {
            if node.child.is_none() {
                continue;
            }
            let nodes = node.command("CLUSTER NODES").await.unwrap_or_default();
            let mine = nodes.lines().find(|line| line.contains("myself"));
            if mine.is_some_and(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields.get(2).is_some_and(|flags| flags.contains("master")) && fields.len() > 8
            }) {
                masters.push(index);
            }
        }
        Ok(masters)
    }

    /// Moves `slots` slots (with their keys) from master `from` to master `to` while the
    /// cluster serves: `redis-cli --cluster reshard … --cluster-yes`. Returns once it is done.
    pub async fn reshard(&self, from: usize, to: usize, slots: u32) -> io::Result<()> {
        let (from_id, to_id) = (self.node_id(from).await?, self.node_id(to).await?);
        let port = self.nodes[from].port;
        let output = tokio::process::Command::new("redis-cli")
            .args(["--cluster", "reshard", &format!("127.0.0.1:{port}")])
            .args(["--cluster-from", &from_id, "--cluster-to", &to_id])
            .args(["--cluster-slots", &slots.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .await?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() || stdout.contains("[ERR]") {
            return Err(io::Error::other(format!(
                "redis-cli --cluster reshard failed: {stdout}{}",
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(())
    }

    /// Runs one command (inline, as [`LocalRedis::command`]) on the master of its key (the
    /// second word), or of slot 0 for a command without one; the raw reply.
    pub async fn command(&self, line: &str) -> io::Result<String> {
        let slot =
            match line.split_whitespace().nth(1) {
                Some(key) => {
                    let any = self
                        .nodes
                        .iter()
                        .find(|node| node.child.is_some())
                        .ok_or_else(|| io::Error::other("every node is down"))?;
                    let reply = any.command(&format!("CLUSTER KEYSLOT {key}")).await?;
                    reply.trim().trim_start_matches(':').parse().map_err(|_| {
                        io::Error::other(format!("CLUSTER KEYSLOT answered {reply:?}"))
                    })?
                }
                None => 0,
            };
        let master = self.master_of_slot(slot).await?;
        self.nodes[master].command(line).await
    }

    /// Waits until every running node reports `cluster_state:ok` (all slots served).
    pub async fn wait_until_ok(&self) -> io::Result<()> {
        let started = tokio::time::Instant::now();
        loop {
            let mut ok = true;
            for node in self.nodes.iter().filter(|node| node.child.is_some()) {
                let info = node.command("CLUSTER INFO").await.unwrap_or_default();
                ok &= info.contains("cluster_state:ok");
            }
            if ok {
                return Ok(());
            }
            if started.elapsed() > SETTLE_TIMEOUT {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the local Redis Cluster did not reach cluster_state:ok",
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A Redis behind Sentinel on loopback: one master, one replica and three sentinels watching
/// them under the name [`LocalRedisSentinel::MASTER_NAME`]; a master is judged down after 1 s,
/// so a killed one is replaced within a few seconds. Every process is killed on drop.
#[derive(Debug)]
pub struct LocalRedisSentinel {
    /// Master first, then its replica.
    servers: Vec<LocalRedis>,
    /// The three sentinels.
    sentinels: Vec<LocalRedis>,
}

impl LocalRedisSentinel {
    /// The master name the sentinels watch.
    pub const MASTER_NAME: &'static str = "bffmaster";

    /// Starts the master, its replica and three sentinels, and waits until the sentinels
    /// agree on the master and know its replica.
    pub async fn start() -> io::Result<Self> {
        let master = LocalRedis::start().await?;
        let replica = LocalRedis::start_with(
            free_port()?,
            vec![
                "--replicaof".to_owned(),
                "127.0.0.1".to_owned(),
                master.port.to_string(),
            ],
        )
        .await?;
        let mut sentinels = Vec::with_capacity(3);
        for _ in 0..3 {
            let port = free_port()?;
            let config = std::env::temp_dir().join(format!("bff-sentinel-{port}.conf"));
            let text = format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\n\
                 sentinel monitor {name} 127.0.0.1 {master} 2\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} 3000\n\
                 sentinel parallel-syncs {name} 1\n",
                name = Self::MASTER_NAME,
                master = master.port,
            );
            std::fs::write(&config, text)?;
            // `redis-server <file> --sentinel`: the file first, as Redis requires.
            let mut sentinel = LocalRedis {
                port,
                child: None,
                extra: Vec::new(),
            };
            sentinel.spawn_sentinel(&config).await?;
            sentinels.push(sentinel);
        }
        let setup = Self {
            servers: vec![master, replica],
            sentinels,
        };
        setup.wait_until_watched().await?;
        Ok(setup)
    }

    /// The sentinels' URLs (`redis://127.0.0.1:<port>`), as `shared.redis_sentinel` takes
    /// them.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|sentinel| format!("redis://127.0.0.1:{}", sentinel.port))
            .collect()
    }

    /// The master (0) and the replica (1) as started (roles change after a failover).
    pub fn server(&self, index: usize) -> Option<&LocalRedis> {
        self.servers.get(index)
    }

    /// Kills server `index` (as a crash would).
    pub async fn kill(&mut self, index: usize) -> io::Result<()> {
        match self.servers.get_mut(index) {
            Some(server) => server.stop().await,
            None => Err(io::Error::other(format!("no server {index}"))),
        }
    }

    /// Kills the master and its replica (the sentinels keep watching).
    pub async fn stop_servers(&mut self) -> io::Result<()> {
        for server in &mut self.servers {
            server.stop().await?;
        }
        Ok(())
    }

    /// Starts the master and its replica again on their ports, empty, and waits until the
    /// sentinels name the master and the replica has synchronised.
    pub async fn restart_servers(&mut self) -> io::Result<()> {
        for server in &mut self.servers {
            server.restart().await?;
        }
        self.wait_until_watched().await
    }

    /// Runs one command (inline, as [`LocalRedis::command`]) on the master the sentinels name
    /// now; the raw reply.
    pub async fn command(&self, line: &str) -> io::Result<String> {
        let port = self.master_port().await?;
        let master = self
            .servers
            .iter()
            .find(|server| server.port == port)
            .ok_or_else(|| io::Error::other(format!("no server of ours on port {port}")))?;
        master.command(line).await
    }

    /// The port of the master the sentinels name now.
    pub async fn master_port(&self) -> io::Result<u16> {
        for sentinel in &self.sentinels {
            let reply = sentinel
                .command(&format!(
                    "SENTINEL get-master-addr-by-name {}",
                    Self::MASTER_NAME
                ))
                .await
                .unwrap_or_default();
            if let Some(port) = reply
                .lines()
                .filter(|line| !line.starts_with(['*', '$']))
                .nth(1)
                .and_then(|port| port.trim().parse().ok())
            {
                return Ok(port);
            }
        }
        Err(io::Error::other("no sentinel names a master"))
    }

    /// Waits until every sentinel names the master and knows its replica, and the replica has
    /// synchronised.
    async fn wait_until_watched(&self) -> io::Result<()> {
        let started = tokio::time::Instant::now();
        loop {
            let mut ready = true;
            for sentinel in &self.sentinels {
                let reply = sentinel
                    .command(&format!("SENTINEL replicas {}", Self::MASTER_NAME))
                    .await
                    .unwrap_or_default();
                ready &= reply.starts_with("*1");
            }
            // A replica that never synchronised is not eligible to replace the master.
            let replication = self.servers[1]
                .command("INFO replication")
                .await
                .unwrap_or_default();
            ready &= replication.contains("master_link_status:up");
            if ready {
                return Ok(());
            }
            if started.elapsed() > SETTLE_TIMEOUT {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the local sentinels did not come to watch the master and its replica",
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Which Redis the tests of shared behaviour run over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisTopology {
    /// One `redis-server` ([`LocalRedis`]).
    Standalone,
    /// Six nodes of a Redis Cluster ([`LocalRedisCluster`]).
    Cluster,
    /// A master and its replica behind three sentinels ([`LocalRedisSentinel`]).
    Sentinel,
}

impl RedisTopology {
    /// The environment variable that chooses it: `standalone` (the default), `cluster` or
    /// `sentinel`. `./scripts/test` runs the shared-state suites once more with each.
    pub const ENV: &'static str = "BFF_TEST_REDIS_TOPOLOGY";

    /// The topology [`RedisTopology::ENV`] names; standalone when unset or empty.
    ///
    /// # Errors
    ///
    /// Any other value, with what is accepted (a typo must not run the standalone suite
    /// unnoticed).
    pub fn from_env() -> io::Result<RedisTopology> {
        match std::env::var(Self::ENV).unwrap_or_default().trim() {
            "" | "standalone" => Ok(RedisTopology::Standalone),
            "cluster" => Ok(RedisTopology::Cluster),
            "sentinel" => Ok(RedisTopology::Sentinel),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}={other:?}: expected standalone, cluster or sentinel",
                    Self::ENV
                ),
            )),
        }
    }
}

/// How clients reach a [`TestRedis`]: the values of the gateways' `shared.redis_url`,
/// `shared.redis_cluster_nodes` or `shared.redis_sentinel`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisEndpoint {
    /// One server's URL.
    Standalone(String),
    /// The cluster's seed URLs (every node).
    Cluster(Vec<String>),
    /// The master's name and the sentinels' URLs.
    Sentinel {
        /// [`LocalRedisSentinel::MASTER_NAME`].
        master_name: String,
        /// Every sentinel.
        sentinels: Vec<String>,
    },
}

/// A private Redis of any [`RedisTopology`], with what the tests do to it on every topology:
/// name it to clients, publish the reference services' events to it, run a command on the
/// right node, and stop and restart it whole (an outage). Every process is killed on drop.
#[derive(Debug)]
pub enum TestRedis {
    /// One server.
    Standalone(LocalRedis),
    /// A local cluster.
    Cluster(LocalRedisCluster),
    /// A local master behind sentinels.
    Sentinel(LocalRedisSentinel),
}

impl TestRedis {
    /// Starts a Redis of `topology`.
    pub async fn start(topology: RedisTopology) -> io::Result<TestRedis> {
        Ok(match topology {
            RedisTopology::Standalone => TestRedis::Standalone(LocalRedis::start().await?),
            RedisTopology::Cluster => TestRedis::Cluster(LocalRedisCluster::start().await?),
            RedisTopology::Sentinel => TestRedis::Sentinel(LocalRedisSentinel::start().await?),
        })
    }

    /// Starts a Redis of the topology `BFF_TEST_REDIS_TOPOLOGY` names.
    pub async fn from_env() -> io::Result<TestRedis> {
        TestRedis::start(RedisTopology::from_env()?).await
    }

    /// Its topology.
    pub fn topology(&self) -> RedisTopology {
        match self {
            TestRedis::Standalone(_) => RedisTopology::Standalone,
            TestRedis::Cluster(_) => RedisTopology::Cluster,
            TestRedis::Sentinel(_) => RedisTopology::Sentinel,
        }
    }

    /// How clients reach it.
    pub fn endpoint(&self) -> RedisEndpoint {
        match self {
            TestRedis::Standalone(redis) => RedisEndpoint::Standalone(redis.url()),
            TestRedis::Cluster(cluster) => RedisEndpoint::Cluster(cluster.urls()),
            TestRedis::Sentinel(setup) => RedisEndpoint::Sentinel {
                master_name: LocalRedisSentinel::MASTER_NAME.to_owned(),
                sentinels: setup.sentinel_urls(),
            },
        }
    }

    /// The reference services' events published to it, on the contract's streams.
    pub fn events_config(&self) -> crate::EventsConfig {
        match self.endpoint() {
            RedisEndpoint::Standalone(url) => crate::EventsConfig::new(url),
            RedisEndpoint::Cluster(nodes) => crate::EventsConfig::cluster(nodes),
            RedisEndpoint::Sentinel {
                master_name,
                sentinels,
            } => crate::EventsConfig::sentinel(master_name, sentinels),
        }
    }

    /// Runs one command (inline, as [`LocalRedis::command`]) where its key lives: the server,
    /// the master of its key's slot, or the master Sentinel names; the raw reply.
    pub async fn command(&self, line: &str) -> io::Result<String> {
        match self {
            TestRedis::Standalone(redis) => redis.command(line).await,
            TestRedis::Cluster(cluster) => cluster.command(line).await,
            TestRedis::Sentinel(setup) => setup.command(line).await,
        }
    }

    /// A client connection (`redis` crate) that reaches every key: to the server, the cluster,
    /// or the master Sentinel names now.
    pub async fn connection(&self) -> redis::RedisResult<TestConnection> {
        match self {
            TestRedis::Standalone(redis) => redis::Client::open(redis.url())?
                .get_multiplexed_async_connection()
                .await
                .map(TestConnection::Single),
            TestRedis::Cluster(cluster) => redis::cluster::ClusterClient::new(cluster.urls())?
                .get_async_connection()
                .await
                .map(|connection| TestConnection::Cluster(Box::new(connection))),
            TestRedis::Sentinel(setup) => {
                let port = setup.master_port().await.map_err(redis::RedisError::from)?;
                redis::Client::open(format!("redis://127.0.0.1:{port}/0"))?
                    .get_multiplexed_async_connection()
                    .await
                    .map(TestConnection::Single)
            }
        }
    }

    /// Kills every server holding data (every cluster node; the master and its replica, the
    /// sentinels staying), as an outage would.
    pub async fn stop(&mut self) -> io::Result<()> {
        match self {
            TestRedis::Standalone(redis) => redis.stop().await,
            TestRedis::Cluster(cluster) => cluster.stop_all().await,
            TestRedis::Sentinel(setup) => setup.stop_servers().await,
        }
    }

    /// Starts them again, empty, on the same ports (a cluster rejoins as it was), and waits
    /// until it serves.
    pub async fn restart(&mut self) -> io::Result<()> {
        match self {
            TestRedis::Standalone(redis) => redis.restart().await,
            TestRedis::Cluster(cluster) => cluster.restart_all().await,
            TestRedis::Sentinel(setup) => setup.restart_servers().await,
        }
    }

    /// Kills one master as a crash would (a cluster: the master of slot 0; Sentinel: the
    /// master the sentinels name), leaving its replica to be promoted; returns which (the
    /// cluster node's index, or the old master's port). A standalone Redis has no replica:
    /// an error.
    pub async fn kill_a_master(&mut self) -> io::Result<usize> {
        match self {
            TestRedis::Standalone(_) => Err(io::Error::other(
                "a standalone Redis has no replica to promote",
            )),
            TestRedis::Cluster(cluster) => {
                let master = cluster.master_of_slot(0).await?;
                cluster.kill(master).await?;
                Ok(master)
            }
            TestRedis::Sentinel(setup) => {
                let port = setup.master_port().await?;
                let index = setup
                    .servers
                    .iter()
                    .position(|server| server.port == port)
                    .ok_or_else(|| io::Error::other(format!("no server of ours on {port}")))?;
                setup.kill(index).await?;
                Ok(usize::from(port))
            }
        }
    }

    /// Waits until a replica has replaced the master `killed` (what
    /// [`TestRedis::kill_a_master`] returned): another node serves slot 0 and the cluster every
    /// slot, or the sentinels name the replica.
    pub async fn wait_failed_over(&self, killed: usize) -> io::Result<()> {
        let started = tokio::time::Instant::now();
        loop {
            let replaced = match self {
                TestRedis::Standalone(_) => {
                    return Err(io::Error::other(
                        "a standalone Redis has no replica to promote",
                    ));
                }
                TestRedis::Cluster(cluster) => {
                    cluster
                        .master_of_slot(0)
                        .await
                        .is_ok_and(|master| master != killed)
                        && cluster.wait_until_ok().await.is_ok()
                }
                TestRedis::Sentinel(setup) => setup
                    .master_port()
                    .await
                    .is_ok_and(|port| usize::from(port) != killed),
            };
            if replaced {
                return Ok(());
            }
            if started.elapsed() > SETTLE_TIMEOUT {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no replica replaced the killed master",
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A connection to a [`TestRedis`] (`redis::aio::ConnectionLike`).
#[derive(Clone)]
pub enum TestConnection {
    /// To one server (standalone, or the master Sentinel named).
    Single(redis::aio::MultiplexedConnection),
    /// To a cluster (boxed: large).
    Cluster(Box<redis::cluster_async::ClusterConnection>),
}

impl redis::aio::ConnectionLike for TestConnection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            TestConnection::Single(connection) => connection.req_packed_command(cmd),
            TestConnection::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            TestConnection::Single(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
            TestConnection::Cluster(connection) => {
                connection.req_packed_commands(pipeline, offset, count)
            }
        }
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// The name of the snapshot file of the server on `port` (in the temporary folder).
fn snapshot_file(port: u16) -> String {
    format!("bff-redis-{port}.rdb")
}

/// A loopback port nothing listens on right now, and never handed out before in this process:
/// tests run side by side, and one that stops a server and starts it again on its port must not
/// find that port taken by a server another test started meanwhile.
fn free_port() -> io::Result<u16> {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return Ok(port);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starts_answers_stops_and_restarts_empty() {
        let mut redis = LocalRedis::start().await.expect("redis-server runs");
        assert!(redis.url().starts_with("redis://127.0.0.1:"));
        assert!(redis.command("SET k v").await.unwrap().starts_with("+OK"));
        assert!(redis.command("GET k").await.unwrap().contains('v'));
        redis.stop().await.unwrap();
        assert!(redis.command("PING").await.is_err());
        redis.restart().await.unwrap();
        // Nothing was kept.
        assert!(redis.command("GET k").await.unwrap().starts_with("$-1"));
    }

    #[tokio::test]
    async fn a_local_cluster_forms_and_a_replica_takes_over_a_killed_master() {
        let mut cluster = LocalRedisCluster::start().await.expect("a local cluster");
        assert_eq!(cluster.urls().len(), 6);
        let first = cluster.master_of_slot(0).await.expect("slot 0 is served");
        cluster.kill(first).await.expect("killed");
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        loop {
            if let Ok(now) = cluster.master_of_slot(0).await
                && now != first
            {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "no failover");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        cluster
            .wait_until_ok()
            .await
            .expect("the cluster is whole again");
    }

    /// On `topology`: commands reach their key's node, a stopped Redis answers nothing, and a
    /// restarted one serves again, empty, on every node.
    async fn stops_and_restarts_whole(topology: RedisTopology) {
        let mut redis = TestRedis::start(topology).await.expect("started");
        assert_eq!(redis.topology(), topology);
        for n in 0..8 {
            let set = redis.command(&format!("SET {{k{n}}}:v {n}")).await;
            assert!(set.expect("answered").starts_with("+OK"), "{topology:?}");
        }
        redis.stop().await.expect("stopped");
        assert!(redis.command("GET {k0}:v").await.is_err(), "{topology:?}");
        redis.restart().await.expect("restarted");
        for n in 0..8 {
            let get = redis.command(&format!("GET {{k{n}}}:v")).await;
            assert!(get.expect("answered").starts_with("$-1"), "{topology:?}");
            let set = redis.command(&format!("SET {{k{n}}}:v {n}")).await;
            assert!(set.expect("answered").starts_with("+OK"), "{topology:?}");
        }
        let mut conn = redis.connection().await.expect("connects");
        let value: u32 = redis::cmd("GET")
            .arg("{k7}:v")
            .query_async(&mut conn)
            .await
            .expect("read");
        assert_eq!(value, 7);
    }

    #[tokio::test]
    async fn a_standalone_test_redis_stops_and_restarts() {
        stops_and_restarts_whole(RedisTopology::Standalone).await;
    }

    #[tokio::test]
    async fn a_test_cluster_stops_and_restarts_whole() {
        stops_and_restarts_whole(RedisTopology::Cluster).await;
    }

    #[tokio::test]
    async fn a_test_sentinel_setup_stops_and_restarts_whole() {
        stops_and_restarts_whole(RedisTopology::Sentinel).await;
    }

    #[tokio::test]
    async fn a_reshard_moves_slots_and_their_keys() {
        let cluster = LocalRedisCluster::start().await.expect("a local cluster");
        let masters = cluster.masters().await.expect("masters");
        assert_eq!(masters.len(), 3);
        let slot =
            |reply: String| -> u16 { reply.trim().trim_start_matches(':').parse().unwrap_or(0) };
        let keyslot = slot(cluster.command("CLUSTER KEYSLOT a").await.expect("slot"));
        let from = cluster.master_of_slot(keyslot).await.expect("served");
        let to = masters
            .into_iter()
            .find(|&m| m != from)
            .expect("another master");
        for n in 0..50 {
            cluster
                .command(&format!("SET {{a}}:{n} {n}"))
                .await
                .expect("set");
        }
        cluster.reshard(from, to, 16384).await.expect("resharded");
        assert_eq!(cluster.master_of_slot(keyslot).await.expect("served"), to);
        let value = cluster.command("GET {a}:49").await.expect("read");
        assert!(value.contains("49"), "{value}");
    }

    #[tokio::test]
    async fn sentinels_watch_the_master_and_promote_its_replica_when_it_dies() {
        let mut setup = LocalRedisSentinel::start().await.expect("sentinels");
        let master = setup.server(0).expect("master").port();
        let replica = setup.server(1).expect("replica").port();
        assert_eq!(setup.master_port().await.expect("named"), master);
        assert_eq!(setup.sentinel_urls().len(), 3);
        setup.kill(0).await.expect("killed");
        let deadline = tokio::time::Instant::now() + SETTLE_TIMEOUT;
        while setup.master_port().await.ok() != Some(replica) {
            assert!(tokio::time::Instant::now() < deadline, "no failover");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
