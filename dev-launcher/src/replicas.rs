//! `--replicas N`: where each replica of the gateways listens, and the private Redis they share.
//!
//! Replica 1 keeps the ports of the command line (8080–8082, metrics 9180–9182 by default), so the
//! usual URLs answer whatever `N` is. Every further replica gets ports the operating system reports
//! free when the launcher starts: all of them held at once while they are picked (so no two are
//! the same) and none of them a port the command line names. A fixed offset (8090, 8100, …) could
//! land on a port the command line or another program uses; these cannot, short of another
//! program taking one in the moment before the gateway binds it (the gateway then fails to start
//! and the launcher says so). The banner prints every one.
//!
//! With more than one replica, every gateway process gets `BFF_REDIS_URL`, a `redis-server` of
//! this run ([`LocalRedis`]: loopback, a free port, nothing persisted, stopped with the stack), and
//! `BFF_SHARED__REPLICAS=N`. With one, neither is set and no Redis is needed. With
//! `--redis-cluster` (whatever `N`), they share a local Redis Cluster of this run instead
//! ([`LocalRedisCluster`]: six nodes, three masters with a replica each) through
//! `BFF_REDIS_CLUSTER_NODES`.

use std::{io, net::TcpListener};

use reference_services::{LocalRedis, LocalRedisCluster};

/// The most replicas `--replicas` accepts: enough to see anything shared across replicas, few
/// enough that a typo does not start hundreds of processes.
pub const MAX_REPLICAS: u32 = 16;

/// The two ports of one gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    /// Where clients call it (`server.listen_addr`).
    pub listen: u16,
    /// Where it serves `/metrics`, apart from the clients (`server.metrics_listen_addr`).
    pub metrics: u16,
}

/// The ports of one replica of each of the three gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaPorts {
    /// bff-web's (or, with `--one-process`, the web section of that replica's bff-all).
    pub web: Ports,
    /// bff-mobile's.
    pub mobile: Ports,
    /// bff-partner's.
    pub partner: Ports,
}

impl ReplicaPorts {
    /// Every port of the replica.
    pub fn all(&self) -> [u16; 6] {
        [
            self.web.listen,
            self.mobile.listen,
            self.partner.listen,
            self.web.metrics,
            self.mobile.metrics,
            self.partner.metrics,
        ]
    }
}

/// The Redis the replicas share, and where the reference services publish their events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedRedis {
    /// One `redis-server`: its URL.
    Server(String),
    /// A Redis Cluster: every node's URL (the seed list).
    Cluster(Vec<String>),
}

impl SharedRedis {
    /// The variable that gives it to a gateway (`BFF_REDIS_URL` or `BFF_REDIS_CLUSTER_NODES`,
    /// comma-separated) and its value.
    pub fn gateway_env(&self) -> (String, String) {
        match self {
            Self::Server(url) => ("BFF_REDIS_URL".to_owned(), url.clone()),
            Self::Cluster(nodes) => ("BFF_REDIS_CLUSTER_NODES".to_owned(), nodes.join(",")),
        }
    }

    /// The variables of the launcher's environment a gateway must not inherit, because they
    /// would name Redis too (one way only may be set, and the `BFF_SHARED__…` ones would win).
    pub fn gateway_unset(&self) -> Vec<String> {
        let mut unset = vec!["BFF_SHARED__REDIS_URL".to_owned()];
        if let Self::Cluster(_) = self {
            unset.extend(
                [
                    "BFF_REDIS_URL",
                    "BFF_SHARED__REDIS_CLUSTER_NODES",
                    "BFF_SHARED__REDIS_SENTINEL__MASTER_NAME",
                    "BFF_SHARED__REDIS_SENTINEL__SENTINELS",
                ]
                .map(str::to_owned),
            );
        }
        unset
    }

    /// The variable that makes a reference service publish its change events there
    /// (`REF_EVENTS_REDIS_URL` or `REF_EVENTS_REDIS_CLUSTER_NODES`) and its value.
    pub fn events_env(&self) -> (String, String) {
        match self {
            Self::Server(url) => ("REF_EVENTS_REDIS_URL".to_owned(), url.clone()),
            Self::Cluster(nodes) => ("REF_EVENTS_REDIS_CLUSTER_NODES".to_owned(), nodes.join(",")),
        }
    }

    /// The variables of the launcher's environment a reference service must not inherit (it
    /// refuses two ways to name its Redis).
    pub fn events_unset(&self) -> Vec<String> {
        match self {
            Self::Server(_) => Vec::new(),
            Self::Cluster(_) => [
                "REF_EVENTS_REDIS_URL",
                "REF_EVENTS_REDIS_SENTINEL_MASTER",
                "REF_EVENTS_REDIS_SENTINELS",
            ]
            .map(str::to_owned)
            .to_vec(),
        }
    }
}

/// How many replicas of each gateway run, where, and what they share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Each replica's ports, replica 1 first (never empty).
    pub replicas: Vec<ReplicaPorts>,
    /// The Redis every replica is given; `None` with one replica and no `--redis-cluster`
    /// (nothing to share).
    pub redis: Option<SharedRedis>,
}

impl Topology {
    /// One replica on `first`: the stack as it is without `--replicas`.
    pub fn single(first: ReplicaPorts) -> Self {
        Self {
            replicas: vec![first],
            redis: None,
        }
    }

    /// `count` replicas sharing `redis`: the first on `first`, the others on ports of `host`
    /// that are free now and not in `taken` (the other ports of the stack).
    pub fn replicated(
        first: ReplicaPorts,
        count: u32,
        redis: SharedRedis,
        host: &str,
        taken: &[u16],
    ) -> io::Result<Self> {
        let extra = usize::try_from(count.saturating_sub(1)).map_err(io::Error::other)?;
        let mut avoid: Vec<u16> = taken.to_vec();
        avoid.extend(first.all());
        let mut ports = free_ports(host, extra * 6, &avoid)?.into_iter();
        let mut next = || {
            ports
                .next()
                .ok_or_else(|| io::Error::other("too few free ports"))
        };
        let mut replicas = vec![first];
        for _ in 0..extra {
            let mut gateway = || -> io::Result<Ports> {
                Ok(Ports {
                    listen: next()?,
                    metrics: next()?,
                })
            };
            replicas.push(ReplicaPorts {
                web: gateway()?,
                mobile: gateway()?,
                partner: gateway()?,
            });
        }
        Ok(Self {
            replicas,
            redis: Some(redis),
        })
    }

    /// How many replicas of each gateway run.
    pub fn count(&self) -> usize {
        self.replicas.len()
    }
}

/// `count` different ports of `host` that nothing listens on now, none of them in `avoid`.
fn free_ports(host: &str, count: usize, avoid: &[u16]) -> io::Result<Vec<u16>> {
    // Every listener stays open until all are picked, so the system hands out no port twice.
    let mut held = Vec::with_capacity(count);
    let mut ports = Vec::with_capacity(count);
    while ports.len() < count {
        let listener = TcpListener::bind((host, 0))?;
        let port = listener.local_addr()?.port();
        if !avoid.contains(&port) {
            ports.push(port);
        }
        held.push(listener);
    }
    Ok(ports)
}

/// Starts the private Redis Cluster the replicas share (`--redis-cluster`). Fails with how to
/// install Redis when `redis-server` is missing.
pub async fn start_redis_cluster() -> Result<LocalRedisCluster, String> {
    if !LocalRedis::is_installed() {
        return Err(
            "--redis-cluster needs redis-server and redis-cli, and redis-server is not on PATH. \
             Install them with ./scripts/ensure-redis-server (or: apt-get install -y \
             redis-server, brew install redis)"
                .to_owned(),
        );
    }
    LocalRedisCluster::start()
        .await
        .map_err(|error| format!("cannot start a local Redis Cluster: {error}"))
}

/// Starts the private Redis the replicas share. Fails with how to install `redis-server` when it
/// is not on `PATH`.
pub async fn start_redis(replicas: u32) -> Result<LocalRedis, String> {
    if !LocalRedis::is_installed() {
        return Err(format!(
            "--replicas {replicas} needs redis-server (the replicas share their state through a \
             private one), and it is not on PATH. Install it with ./scripts/ensure-redis-server \
             (or: apt-get install -y redis-server, brew install redis), or run without --replicas"
        ));
    }
    LocalRedis::start()
        .await
        .map_err(|error| format!("cannot start redis-server for --replicas {replicas}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first() -> ReplicaPorts {
        let ports = |listen, metrics| Ports { listen, metrics };
        ReplicaPorts {
            web: ports(8080, 9180),
            mobile: ports(8081, 9181),
            partner: ports(8082, 9182),
        }
    }

    #[test]
    fn further_replicas_get_ports_all_different_and_none_the_stack_uses() {
        let taken = [9101, 9102, 9103];
        let topology = Topology::replicated(
            first(),
            4,
            SharedRedis::Server("redis://127.0.0.1:1/0".to_owned()),
            "127.0.0.1",
            &taken,
        )
        .expect("free ports");
        assert_eq!(topology.count(), 4);
        assert_eq!(
            topology.replicas[0],
            first(),
            "replica 1 keeps the given ports"
        );
        let mut every: Vec<u16> = topology
            .replicas
            .iter()
            .flat_map(ReplicaPorts::all)
            .collect();
        every.extend(taken);
        let total = every.len();
        every.sort_unstable();
        every.dedup();
        assert_eq!(every.len(), total, "no port is used twice: {every:?}");
        assert_eq!(
            topology.redis,
            Some(SharedRedis::Server("redis://127.0.0.1:1/0".to_owned()))
        );
    }

    #[test]
    fn one_replica_needs_no_redis_and_keeps_the_given_ports() {
        let topology = Topology::single(first());
        assert_eq!(topology.replicas, vec![first()]);
        assert_eq!(topology.redis, None);
    }
}
