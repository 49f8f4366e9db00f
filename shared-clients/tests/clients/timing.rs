//! Moving time in HTTP tests without sleeping: jumping the (tokio) clock ahead between requests,
//! and waiting for background work to show at the downstream.

use std::future::Future;
use std::time::Duration;

/// Jumps the tokio clock `by` ahead (cache ages, breaker timers), between requests only: the
/// clock is frozen, advanced and resumed, so no request in flight sees a frozen clock.
pub async fn jump(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

/// Waits until `condition` holds (checked every 10 ms, for at most 10 s), for effects of
/// background work such as a cache refresh reaching the downstream. Panics naming `what` when it
/// never holds.
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..1_000 {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}
