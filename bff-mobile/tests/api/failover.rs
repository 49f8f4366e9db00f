//! A master of the shared Redis dies under load and its replica is promoted (a Redis Cluster,
//! and a master behind Sentinel): no request fails, the replicas count their fallbacks while
//! it lasts, and share again by themselves afterwards. These tests choose their topology (a
//! standalone Redis has no replica to promote), so the suite's reruns per topology
//! (`BFF_TEST_REDIS_TOPOLOGY`) leave this module out.

use reference_services::{RedisTopology, TestRedis};

use crate::shared_reads::load_through;

/// Kills a master of a `topology` Redis during the load, then waits for its replica to take
/// over.
async fn a_master_dies_under_load(topology: RedisTopology) {
    let redis = TestRedis::start(topology).await.expect("a private Redis");
    load_through(redis, async |redis: &mut TestRedis| {
        let killed = redis.kill_a_master().await.expect("a master is killed");
        redis
            .wait_failed_over(killed)
            .await
            .expect("a replica takes over");
    })
    .await;
}

#[tokio::test]
async fn a_cluster_master_killed_under_load_fails_no_request_and_sharing_comes_back() {
    a_master_dies_under_load(RedisTopology::Cluster).await;
}

#[tokio::test]
async fn a_sentinel_master_killed_under_load_fails_no_request_and_sharing_comes_back() {
    a_master_dies_under_load(RedisTopology::Sentinel).await;
}
