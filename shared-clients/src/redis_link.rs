//! Where Redis is and how commands reach it: one server (`shared.redis_url`), a Redis Cluster
//! (`shared.redis_cluster_nodes`) or a master found through Sentinel (`shared.redis_sentinel`).
//!
//! Everything else talks to a [`Link`], whatever the topology:
//! - **Standalone**: `redis::aio::ConnectionManager` (reconnects by itself).
//! - **Cluster**: the crate's own async cluster client (`redis::cluster_async`): it keeps the slot
//!   map, follows `MOVED`/`ASK` redirections and refreshes the topology after a failover or a
//!   resharding; nothing is routed by hand. Every key a script, pipeline or multi-key command
//!   touches together carries one hash tag (see `SharedState::key`), so no command is ever
//!   cross-slot.
//! - **Sentinel**: the crate's Sentinel client names the master; commands go to it through a
//!   `ConnectionManager`. A failure that says the master is gone (connection refused or dropped,
//!   or `READONLY` from a demoted master) drops that connection, and the next command asks the
//!   sentinels again (one command asks, concurrent ones wait for its answer, all within their
//!   command timeout), so a failover is followed without a restart.
//!
//! A connection of its own ([`Endpoint::dedicated`]) serves blocking reads (`XREAD BLOCK`),
//! which would stall the commands multiplexed on the shared ones.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelServerType};
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, Value};

/// Where Redis is: what the connections are made from.
#[derive(Clone)]
pub(crate) enum Endpoint {
    /// One server (the clients are boxed: each is hundreds of bytes, made once).
    Standalone(Box<redis::Client>),
    /// A Redis Cluster, from its seed nodes.
    Cluster(Box<ClusterClient>),
    /// A master watched by sentinels.
    Sentinel(Arc<Sentinels>),
}

/// How long the connections wait (from `shared.connect_timeout` and `shared.command_timeout`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    /// To make a connection.
    pub(crate) connect: Duration,
    /// For one answer.
    pub(crate) response: Duration,
    /// Longest pause between reconnection attempts.
    pub(crate) max_delay: Duration,
}

impl Endpoint {
    /// One server at `url`.
    pub(crate) fn standalone(url: &str) -> RedisResult<Self> {
        redis::Client::open(url).map(|client| Self::Standalone(Box::new(client)))
    }

    /// The cluster whose seed nodes are `urls` (any of them will do to learn the others).
    ///
    /// No overall timeout of the crate's own: a connection's settings replace the client's
    /// per-answer timeout but not its overall one, which would bound a dedicated connection's
    /// blocking reads (`XREAD BLOCK`, for longer than a command may take) by the command
    /// timeout, failing every one. Shared commands are bounded by `SharedState` instead.
    pub(crate) fn cluster(urls: &[&str], timeouts: Timeouts) -> RedisResult<Self> {
        ClusterClient::builder(urls.iter().copied())
            .connection_timeout(timeouts.connect)
            .response_timeout(timeouts.response)
            .overall_response_timeout(None)
            .retries(2)
            .build()
            .map(|client| Self::Cluster(Box::new(client)))
    }

    /// The master named `master_name` by the sentinels at `urls`.
    pub(crate) fn sentinel(master_name: &str, urls: &[&str]) -> RedisResult<Self> {
        let client =
            SentinelClient::build(urls.to_vec(), master_name, None, SentinelServerType::Master)?;
        Ok(Self::Sentinel(Arc::new(Sentinels {
            client: tokio::sync::Mutex::new(client),
        })))
    }

    /// A shared connection (commands from many tasks are multiplexed on it), made on first use:
    /// nothing is contacted here. Must be called within a tokio runtime.
    pub(crate) fn shared(&self, timeouts: Timeouts) -> RedisResult<Link> {
        Ok(match self {
            Self::Standalone(client) => Link::Manager(ConnectionManager::new_lazy_with_config(
                redis::Client::clone(client),
                manager_config(timeouts),
            )?),
            Self::Cluster(client) => Link::SharedCluster(Arc::new(LazyCluster {
                client: ClusterClient::clone(client),
                timeouts,
                connection: tokio::sync::OnceCell::new(),
            })),
            Self::Sentinel(sentinels) => Link::Sentinel(Arc::new(SentinelLink {
                sentinels: Arc::clone(sentinels),
                timeouts,
                current: Mutex::new(None),
                asking: tokio::sync::Mutex::new(()),
            })),
        })
    }

    /// A connection of its own, made now (for blocking reads). Its answers may take
    /// `timeouts.response`.
    pub(crate) async fn dedicated(&self, timeouts: Timeouts) -> RedisResult<Link> {
        match self {
            Self::Standalone(client) => client
                .get_multiplexed_async_connection_with_config(&connection_config(timeouts))
                .await
                .map(Link::Multiplexed),
            Self::Cluster(client) => client
                .get_async_connection_with_config(
                    redis::cluster::ClusterConfig::new()
                        .set_connection_timeout(timeouts.connect)
                        .set_response_timeout(timeouts.response),
                )
                .await
                .map(Link::Cluster),
            Self::Sentinel(sentinels) => sentinels
                .master()
                .await?
                .get_multiplexed_async_connection_with_config(&connection_config(timeouts))
                .await
                .map(Link::Multiplexed),
        }
    }
}

/// The sentinels of one master.
pub(crate) struct Sentinels {
    /// The crate's client; asking it for the master needs it exclusively.
    client: tokio::sync::Mutex<SentinelClient>,
}

impl Sentinels {
    /// A client for the master the sentinels name now.
    async fn master(&self) -> RedisResult<redis::Client> {
        self.client.lock().await.async_get_client().await
    }
}

/// A connection to Redis, whatever the topology. Cheap to clone (clones share the connection).
#[derive(Clone)]
pub(crate) enum Link {
    /// One server, reconnected by itself.
    Manager(ConnectionManager),
    /// One server, one connection (dedicated links).
    Multiplexed(MultiplexedConnection),
    /// A Redis Cluster (dedicated links).
    Cluster(ClusterConnection),
    /// A Redis Cluster, connected on first use (shared links).
    SharedCluster(Arc<LazyCluster>),
    /// The master named by sentinels.
    Sentinel(Arc<SentinelLink>),
}

/// One node to send a command to: a cluster master by address, or `None` for "the" server.
pub(crate) type Node = Option<(String, u16)>;

/// A cluster connection made on first use: connecting learns the slot map before any command is
/// sent (a connection still learning it would send a transaction to any node, refused there).
pub(crate) struct LazyCluster {
    /// The cluster.
    client: ClusterClient,
    /// For the connection.
    timeouts: Timeouts,
    /// The connection, once made (a failed attempt is retried by the next command).
    connection: tokio::sync::OnceCell<ClusterConnection>,
}

impl LazyCluster {
    /// The connection, made now if it was not yet.
    async fn connection(&self) -> RedisResult<ClusterConnection> {
        self.connection
            .get_or_try_init(|| {
                self.client.get_async_connection_with_config(
                    redis::cluster::ClusterConfig::new()
                        .set_connection_timeout(self.timeouts.connect)
                        .set_response_timeout(self.timeouts.response),
                )
            })
            .await
            .cloned()
    }
}

impl Link {
    /// The cluster connection, when this is a cluster link.
    async fn cluster(&self) -> RedisResult<Option<ClusterConnection>> {
        match self {
            Self::Cluster(conn) => Ok(Some(conn.clone())),
            Self::SharedCluster(lazy) => lazy.connection().await.map(Some),
            _ => Ok(None),
        }
    }

    /// The nodes each holding part of the keys: every master of a cluster, else the one server
    /// (`None`). For commands that see one node's keys only (`SCAN`).
    pub(crate) async fn key_holders(&mut self) -> RedisResult<Vec<Node>> {
        let Some(mut cluster) = self.cluster().await? else {
            return Ok(vec![None]);
        };
        let nodes: String = cluster
            .route_command(
                redis::cmd("CLUSTER").arg("NODES").clone(),
                redis::cluster_routing::RoutingInfo::SingleNode(
                    redis::cluster_routing::SingleNodeRoutingInfo::RandomPrimary,
                ),
            )
            .await
            .and_then(|value| redis::from_redis_value(value).map_err(RedisError::from))?;
        Ok(masters(&nodes).into_iter().map(Some).collect())
    }

    /// Runs `cmd` on `node` (one of [`Link::key_holders`]).
    pub(crate) async fn query_on(&mut self, node: &Node, cmd: &Cmd) -> RedisResult<Value> {
        match (self.cluster().await?, node) {
            (Some(mut cluster), Some((host, port))) => {
                let routing = redis::cluster_routing::RoutingInfo::SingleNode(
                    redis::cluster_routing::SingleNodeRoutingInfo::ByAddress {
                        host: host.clone(),
                        port: *port,
                    },
                );
                cluster.route_command(cmd.clone(), routing).await
            }
            _ => self.req_packed_command(cmd).await,
        }
    }
}

impl Link {
    /// Runs independent commands, each on `key` (or keys of `key`'s hash tag), in as few
    /// round trips as the topology allows: one pipeline on one server; on a cluster one per slot,
    /// concurrently (a pipeline may not span slots). The answers in the order of `commands`.
    pub(crate) async fn batch(&mut self, commands: &[(String, Cmd)]) -> RedisResult<Vec<Value>> {
        let Some(cluster) = self.cluster().await? else {
            let mut pipe = redis::pipe();
            for (_, cmd) in commands {
                pipe.add_command(cmd.clone());
            }
            return pipe.query_async(self).await;
        };
        let mut groups: std::collections::BTreeMap<u16, Vec<usize>> =
            std::collections::BTreeMap::new();
        for (index, (key, _)) in commands.iter().enumerate() {
            groups.entry(slot_of(key)).or_default().push(index);
        }
        let runs = groups.into_values().map(|indices| {
            let mut conn = cluster.clone();
            let mut pipe = redis::pipe();
            for &index in &indices {
                pipe.add_command(commands[index].1.clone());
            }
            async move {
                let answers: Vec<Value> = pipe.query_async(&mut conn).await?;
                Ok::<_, RedisError>((indices, answers))
            }
        });
        let mut ordered = vec![Value::Nil; commands.len()];
        for outcome in futures::future::join_all(runs).await {
            let (indices, answers) = outcome?;
            for (index, answer) in indices.into_iter().zip(answers) {
                ordered[index] = answer;
            }
        }
        Ok(ordered)
    }
}

/// The Redis Cluster slot of `key`: CRC16 (XMODEM) of its hash tag, or of the whole key when it
/// has none, modulo 16384 (the Redis Cluster specification's `HASH_SLOT`).
pub(crate) fn slot_of(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let close = bytes[open + 1..].iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &bytes[open + 1..open + 1 + close])
        })
        .unwrap_or(bytes);
    crc16_xmodem(tagged) % 16384
}

/// CRC16/XMODEM (polynomial 0x1021, initial 0), the checksum of Redis Cluster slots.
fn crc16_xmodem(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for byte in bytes {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The masters that serve slots, from `CLUSTER NODES`: `(host, port)`.
fn masters(nodes: &str) -> Vec<(String, u16)> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            if !flags.split(',').any(|flag| flag == "master")
                || flags.contains("fail")
                || fields.len() < 9
            {
                return None;
            }
            // `host:port@bus-port[,hostname]`
            let address = fields.get(1)?.split(['@', ',']).next()?;
            let (host, port) = address.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect()
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Manager(conn) => conn.req_packed_command(cmd),
            Self::Multiplexed(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
            Self::SharedCluster(lazy) => Box::pin(async move {
                let mut conn = lazy.connection().await?;
                conn.req_packed_command(cmd).await
            }),
            Self::Sentinel(link) => Box::pin(async move {
                let mut conn = link.connection().await?;
                let answer = conn.req_packed_command(cmd).await;
                link.check(&answer);
                answer
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Manager(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Multiplexed(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => {
                Box::pin(cluster_pipeline(conn.clone(), pipeline, offset, count))
            }
            Self::SharedCluster(lazy) => Box::pin(async move {
                let conn = lazy.connection().await?;
                cluster_pipeline(conn, pipeline, offset, count).await
            }),
            Self::Sentinel(link) => Box::pin(async move {
                let mut conn = link.connection().await?;
                let answer = conn.req_packed_commands(pipeline, offset, count).await;
                link.check(&answer);
                answer
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Manager(conn) => conn.get_db(),
            Self::Multiplexed(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
            Self::SharedCluster(_) | Self::Sentinel(_) => 0,
        }
    }
}

/// Runs `pipeline` on a cluster. A transaction refused as a whole (`EXECABORT`: its commands
/// went to a node that no longer serves their slot, as after a failover or a resharding) is
/// not redirected by the client, whose slot map would then stay stale for that slot: one
/// plain command on the transaction's key follows the redirection and updates the map, and
/// the transaction is sent once more.
async fn cluster_pipeline(
    mut conn: ClusterConnection,
    pipeline: &Pipeline,
    offset: usize,
    count: usize,
) -> RedisResult<Vec<Value>> {
    let answer = conn.req_packed_commands(pipeline, offset, count).await;
    let aborted = matches!(&answer, Err(err)
        if err.kind() == ErrorKind::Server(redis::ServerErrorKind::ExecAbort));
    let key = pipeline
        .cmd_iter()
        .next()
        .and_then(|cmd| cmd.args_iter().nth(1))
        .and_then(|arg| match arg {
            redis::Arg::Simple(bytes) => Some(bytes.to_vec()),
            _ => None,
        });
    match (aborted, key) {
        (true, Some(key)) => {
            let _ = conn
                .req_packed_command(&redis::cmd("EXISTS").arg(key).clone())
                .await;
            conn.req_packed_commands(pipeline, offset, count).await
        }
        _ => answer,
    }
}

/// The shared connection to the master sentinels name.
pub(crate) struct SentinelLink {
    /// Who names the master.
    sentinels: Arc<Sentinels>,
    /// For the connections made.
    timeouts: Timeouts,
    /// The connection to the master last named, until it fails.
    current: Mutex<Option<ConnectionManager>>,
    /// Held while the sentinels are asked (once at a time).
    asking: tokio::sync::Mutex<()>,
}

impl SentinelLink {
    /// The connection to the current master, asking the sentinels first when there is none
    /// (the first command, the first after a failover); one caller asks, the others wait for
    /// its answer. The caller's command timeout bounds the wait.
    async fn connection(&self) -> RedisResult<ConnectionManager> {
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let _asking = self.asking.lock().await;
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        let client = self.sentinels.master().await?;
        let conn = ConnectionManager::new_lazy_with_config(client, manager_config(self.timeouts))?;
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
        Ok(conn)
    }

    /// The connection to the master last named, if it has not failed since.
    fn current(&self) -> Option<ConnectionManager> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Forgets the master after an answer that says it is gone or no longer the master.
    fn check<T>(&self, answer: &RedisResult<T>) {
        let Err(err) = answer else { return };
        let gone = err.is_connection_refusal()
            || err.is_connection_dropped()
            || err.is_io_error()
            || err.kind() == ErrorKind::Server(redis::ServerErrorKind::ReadOnly);
        if gone {
            *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }
}

/// The `ConnectionManager` settings for `timeouts`.
fn manager_config(timeouts: Timeouts) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeouts.connect))
        .set_response_timeout(Some(timeouts.response.max(Duration::from_millis(1))))
        .set_number_of_retries(1)
        .set_max_delay(timeouts.max_delay.max(Duration::from_millis(100)))
}

/// The settings of a dedicated connection for `timeouts`.
fn connection_config(timeouts: Timeouts) -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeouts.connect))
        .set_response_timeout(Some(timeouts.response))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_computed_as_redis_computes_them() {
        // The specification's check value, and `CLUSTER KEYSLOT` answers.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("bff:{u:42}:gen"), slot_of("u:42"));
        assert_eq!(slot_of("{user1000}.following"), slot_of("user1000"));
        // An empty tag is no tag: the whole key counts.
        assert_eq!(slot_of("a{}b"), crc16_xmodem(b"a{}b") % 16384);
    }

    #[test]
    fn the_masters_that_serve_slots_are_read_from_cluster_nodes() {
        let nodes = "\
a 127.0.0.1:7001@17001 myself,master - 0 0 1 connected 0-5460
b 127.0.0.1:7002@17002 master - 0 0 2 connected 5461-10922
c 127.0.0.1:7003@17003,node-c master,fail - 0 0 3 disconnected 10923-16383
d 127.0.0.1:7004@17004 slave a 0 0 1 connected
e 10.0.0.5:7005@17005 master - 0 0 4 connected 10923-16383
f 127.0.0.1:7006@17006 master - 0 0 5 connected
";
        assert_eq!(
            masters(nodes),
            vec![
                ("127.0.0.1".to_owned(), 7001),
                ("127.0.0.1".to_owned(), 7002),
                ("10.0.0.5".to_owned(), 7005),
            ]
        );
    }
}
