//! Connection limits and what a client's connection gives handlers, over raw TCP where a
//! well-behaved HTTP client cannot misbehave enough.

use std::{sync::atomic::Ordering, time::Duration};

use server_kit::ServerConfig;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

use crate::helpers::{BIG_RESPONSE_BYTES, StubProbe, TestApp, spawn};

/// Reads until the server closes the connection; what it sent, or `None` if it did not close it
/// within `within`.
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Option<String> {
    let mut received = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok()
        .map(|()| String::from_utf8_lossy(&received).into_owned())
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.addr).await.expect("connect")
}

#[tokio::test]
async fn a_client_that_sends_half_a_head_is_disconnected_after_the_header_read_timeout() {
    let config = ServerConfig {
        header_read_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let app = spawn(config, None).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("write");
    let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(answer.is_some(), "the slow client was disconnected");
    // The server itself keeps serving.
    assert_eq!(app.get("/health").await.status(), 200);
}

#[tokio::test]
async fn a_client_that_connects_and_sends_nothing_is_disconnected_after_the_header_read_timeout() {
    let config = ServerConfig {
        header_read_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_secs(3600),
        ..ServerConfig::default()
    };
    let app = spawn(config, None).await;
    let mut stream = connect(&app).await;
    let answer = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(answer.as_deref(), Some(""), "closed without a word");
}

#[tokio::test]
async fn a_head_sent_slowly_byte_by_byte_does_not_extend_the_header_timeout() {
    let config = ServerConfig {
        header_read_timeout: Duration::from_millis(500),
        ..ServerConfig::default()
    };
    let app = spawn(config, None).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\n")
        .await
        .expect("write");
    // Keep trickling header bytes, each well within the timeout, for far longer than it.
    let trickle = async {
        for _ in 0..40 {
            if stream.write_all(b"X").await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    let cut_off = trickle.await;
    let closed = cut_off
        || read_until_closed(&mut stream, Duration::from_secs(1))
            .await
            .is_some();
    assert!(
        closed,
        "a trickled head is cut off by the header read timeout"
    );
}

#[tokio::test]
async fn a_client_that_never_finishes_its_body_gets_408() {
    let config = ServerConfig {
        body_read_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let app = spawn(config, None).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"a\":",
        )
        .await
        .expect("write");
    let answer = read_until_closed(&mut stream, Duration::from_secs(10))
        .await
        .expect("the connection is closed after the answer");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    // Answered inside the middleware, like every other answer: it has a request id.
    assert!(
        answer.to_ascii_lowercase().contains("x-request-id: "),
        "{answer}"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_a_large_answer_is_disconnected_after_the_idle_timeout() {
    let config = ServerConfig {
        idle_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let app = spawn(config, None).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    // Read nothing for a while: the gateway's writes block, and it gives up on the client.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut received = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received += n,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the connection was closed");
    assert!(
        received < BIG_RESPONSE_BYTES,
        "cut off before the whole answer ({received} bytes received)"
    );
}

#[tokio::test]
async fn a_large_answer_read_slowly_but_steadily_is_never_cut_off_as_idle() {
    let config = ServerConfig {
        idle_timeout: Duration::from_millis(300),
        ..ServerConfig::default()
    };
    let app = spawn(config, None).await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    // About 1.5 s for the whole answer, five times the idle timeout, never pausing long.
    let mut received = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    let mut since_pause = 0usize;
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        received += n;
        since_pause += n;
        if since_pause >= 1024 * 1024 {
            since_pause = 0;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert!(
        received > BIG_RESPONSE_BYTES,
        "the whole answer arrived ({received} bytes)"
    );
}

#[tokio::test]
async fn a_head_larger_than_the_limit_gets_431() {
    let config = ServerConfig {
        max_header_bytes: 4096,
        ..ServerConfig::default()
    };
    let app = spawn(config, None).await;
    let big = "a".repeat(8 * 1024);
    let response = app
        .client
        .get(app.url("/health"))
        .header("x-big", &big)
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 431);
    // A head within the limit is fine.
    let response = app
        .client
        .get(app.url("/health"))
        .header("x-small", "a".repeat(1024))
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn more_header_fields_than_the_limit_get_431() {
    let config = ServerConfig {
        max_headers: 20,
        ..ServerConfig::default()
    };
    let app = spawn(config, None).await;
    let mut request = app.client.get(app.url("/health"));
    for index in 0..30 {
        request = request.header(format!("x-field-{index}"), "1");
    }
    assert_eq!(request.send().await.expect("an answer").status(), 431);
}

#[tokio::test]
async fn connections_past_the_limit_wait_until_one_closes() {
    let config = ServerConfig {
        max_connections: 1,
        ..ServerConfig::default()
    };
    let app = spawn(config, None).await;
    let mut first = connect(&app).await;
    first
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 1024];
    assert!(first.read(&mut buf).await.expect("read") > 0);

    // The first connection is kept alive and holds the only slot: a second one is not served.
    let mut second = connect(&app).await;
    second
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let early = tokio::time::timeout(Duration::from_millis(300), second.read(&mut buf)).await;
    assert!(early.is_err(), "the second connection waits for a slot");

    // Once the first closes, the second is served.
    drop(first);
    let answer = read_until_closed(&mut second, Duration::from_secs(10))
        .await
        .expect("served and closed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn handlers_see_the_clients_address() {
    let app = spawn(ServerConfig::default(), None).await;
    let peer = app.get("/peer").await.text().await.expect("text");
    let peer: std::net::SocketAddr = peer.parse().expect("an address");
    assert!(peer.ip().is_loopback(), "{peer}");
}

#[tokio::test]
async fn many_concurrent_readiness_probes_share_one_downstream_check() {
    let config = ServerConfig {
        ready_requires_downstream: true,
        ready_cache_ttl: Duration::from_secs(60),
        ..ServerConfig::default()
    };
    let probe = StubProbe::slow(Duration::from_millis(100));
    let calls = probe.calls.clone();
    let app = spawn(config, Some(probe)).await;
    let probes = (0..300).map(|_| async { app.get("/ready").await.status() });
    let statuses = futures::future::join_all(probes).await;
    assert!(statuses.iter().all(|status| *status == 200), "{statuses:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one check for 300 probes");
}
