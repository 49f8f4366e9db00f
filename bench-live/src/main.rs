//! `bench-live`: the WebSocket load client of the live-updates section of `scripts/bench`.
//!
//! `bench-live --url ws://HOST:PORT/graphql --sockets N --products ID,ID,...` opens `N`
//! WebSockets to bff-web with the `graphql-transport-ws` subprotocol, at most `--concurrency`
//! handshakes at a time. Each sends `connection_init`, waits for `connection_ack` and subscribes
//! (operation id `1`) to `productUpdated` of one product: socket `i` follows product `i` mod the
//! number of products given (with `--no-subscribe`, it stops after `connection_ack`). Then it
//! holds them all, idle: it answers the server's `ping`s with
//! `pong` and records every `next` it receives (which socket, the pushed
//! `price.amountMinor`, and when it arrived, in microseconds since the Unix epoch on this
//! machine's wall clock, so that the harness can compare it with a Redis stream entry's id).
//!
//! It measures nothing about the gateway itself: the harness (`scripts/bench.py`) reads the
//! gateway's memory and CPU from `/proc`, makes the changes and decides what to report. The two
//! talk in lines. On stdout, one JSON object per line:
//! - `{"event":"subscribed",...}` once every socket is open and subscribed (or failed);
//! - `{"event":"stats",...}` for each `stats` line read on stdin;
//! - `{"event":"closed",...,"frames":[[socket,amountMinor,arrival_us],...]}` after `close` (or
//!   the end of stdin): every socket is closed (a close frame, then the TCP connection), the
//!   counters and every recorded `next` are printed, and the process exits.
//!
//! One thread (a current-thread runtime): the harness pins this client to a CPU of its own, and
//! one thread there wakes no other to hand a frame over.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use clap::Parser;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{net::TcpStream, sync::watch};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{
        Message,
        client::IntoClientRequest,
        http::{HeaderValue, header::SEC_WEBSOCKET_PROTOCOL},
        protocol::WebSocketConfig,
    },
};

/// The subprotocol bff-web serves subscriptions with.
const PROTOCOL: &str = "graphql-transport-ws";

/// The subscription every socket runs (the product id is a variable, so the gateway parses one
/// document for all of them).
const QUERY: &str =
    "subscription Live($id: ID!) { productUpdated(id: $id) { id price { amountMinor } } }";

/// Unexpected messages kept word for word in the report (the rest are only counted).
const SAMPLES: usize = 5;

/// How long one socket may take to open, be acknowledged and subscribe.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long closing every socket may take before the client gives up on the rest.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);

/// Command-line settings.
#[derive(Parser)]
#[command(
    about = "Holds many graphql-transport-ws subscriptions to productUpdated and records \
                   what they receive (see the crate documentation)"
)]
struct Args {
    /// The gateway's GraphQL endpoint, e.g. `ws://127.0.0.1:19120/graphql`.
    #[arg(long)]
    url: String,
    /// How many WebSockets to open, each with one subscription.
    #[arg(long)]
    sockets: usize,
    /// The products followed, comma-separated; socket `i` follows the `i mod len`-th.
    #[arg(long, value_delimiter = ',', required = true)]
    products: Vec<String>,
    /// Most handshakes in flight at once, so that opening does not overflow the listener's
    /// accept queue.
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Stop after `connection_ack`: sockets without a subscription, to tell what a connection
    /// costs the gateway from what its subscription adds.
    #[arg(long)]
    no_subscribe: bool,
}

/// One `next` received.
struct Frame {
    /// Which socket received it (its index, 0-based).
    socket: u32,
    /// The pushed `price.amountMinor`, which says which change it shows.
    amount_minor: i64,
    /// When it was read, in microseconds since the Unix epoch.
    arrived_us: u64,
}

/// What every socket adds to; printed by the harness's commands.
#[derive(Default)]
struct Tally {
    /// Sockets open and subscribed now (neither closed by the server nor failed since).
    open: AtomicU64,
    /// The server's `ping`s answered with `pong` (keep-alives).
    pings: AtomicU64,
    /// `next` messages carrying a price.
    nexts: AtomicU64,
    /// Any other message (an `error`, a `complete`, a `next` without a price, a binary frame):
    /// none is expected while a product exists.
    unexpected: AtomicU64,
    /// Sockets the server closed, or that failed, after they were subscribed.
    lost: AtomicU64,
    /// Every `next` with a price, in arrival order.
    frames: Mutex<Vec<Frame>>,
    /// The first few unexpected messages or losses, word for word.
    samples: Mutex<Vec<String>>,
}

impl Tally {
    /// Counts an unexpected message or a loss, keeping its text if few are kept yet.
    fn sample(&self, counter: &AtomicU64, text: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        if samples.len() < SAMPLES {
            samples.push(text);
        }
    }

    /// The counters, as the `stats` line (and the start of the `closed` one) shows them.
    fn counters(&self, event: &str) -> serde_json::Map<String, Value> {
        let mut map = serde_json::Map::new();
        map.insert("event".into(), event.into());
        for (name, counter) in [
            ("open", &self.open),
            ("pings", &self.pings),
            ("nexts", &self.nexts),
            ("unexpected", &self.unexpected),
            ("lost", &self.lost),
        ] {
            map.insert(name.into(), counter.load(Ordering::Relaxed).into());
        }
        map
    }
}

/// A client WebSocket over plain TCP.
type Socket = WebSocketStream<TcpStream>;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let tally = Arc::new(Tally::default());
    let (close_tx, close_rx) = watch::channel(false);

    // Open and subscribe every socket, `concurrency` at a time; each then lives in a task.
    let started = Instant::now();
    let products = Arc::new(args.products);
    let url = Arc::new(args.url);
    let subscribe = !args.no_subscribe;
    let mut failures: Vec<String> = Vec::new();
    let mut failed = 0usize;
    let mut holders = Vec::with_capacity(args.sockets);
    let mut opening = futures::stream::iter(0..args.sockets)
        .map(|i| {
            let product = products[i % products.len()].clone();
            let url = Arc::clone(&url);
            async move {
                let opened =
                    tokio::time::timeout(OPEN_TIMEOUT, open(&url, &product, subscribe)).await;
                (i, opened.unwrap_or_else(|_| Err("timed out".to_owned())))
            }
        })
        .buffer_unordered(args.concurrency.max(1));
    while let Some((i, opened)) = opening.next().await {
        match opened {
            Ok(socket) => {
                tally.open.fetch_add(1, Ordering::Relaxed);
                let socket_no = u32::try_from(i).unwrap_or(u32::MAX);
                holders.push(tokio::spawn(hold(
                    socket,
                    socket_no,
                    Arc::clone(&tally),
                    close_rx.clone(),
                )));
            }
            Err(why) => {
                failed += 1;
                if failures.len() < SAMPLES {
                    failures.push(format!("socket {i}: {why}"));
                }
            }
        }
    }
    drop(opening);
    print_line(&json!({
        "event": "subscribed",
        "requested": args.sockets,
        "subscribed": args.sockets - failed,
        "failed": failed,
        "failures": failures,
        "seconds": started.elapsed().as_secs_f64(),
    }));

    // Then serve the harness's commands until `close` or the end of stdin.
    let mut commands = commands();
    while let Some(command) = commands.recv().await {
        match command.trim() {
            "stats" => print_line(&Value::Object(tally.counters("stats"))),
            "close" => break,
            "" => {}
            other => eprintln!("bench-live: unknown command {other:?} (stats, close)"),
        }
    }

    let closing = Instant::now();
    let open_before = tally.open.load(Ordering::Relaxed);
    let _ = close_tx.send(true);
    let all = futures::future::join_all(holders);
    let timed_out = tokio::time::timeout(CLOSE_TIMEOUT, all).await.is_err();
    let mut report = tally.counters("closed");
    report.insert("open_before_close".into(), open_before.into());
    report.insert("close_timed_out".into(), timed_out.into());
    report.insert(
        "close_seconds".into(),
        closing.elapsed().as_secs_f64().into(),
    );
    let samples =
        std::mem::take(&mut *tally.samples.lock().unwrap_or_else(PoisonError::into_inner));
    report.insert("samples".into(), samples.into());
    let frames = std::mem::take(&mut *tally.frames.lock().unwrap_or_else(PoisonError::into_inner));
    let frames: Vec<Value> = frames
        .into_iter()
        .map(|f| json!([f.socket, f.amount_minor, f.arrived_us]))
        .collect();
    report.insert("frames".into(), frames.into());
    print_line(&Value::Object(report));
}

/// Opens one socket, initialises it and (if `subscribe`) subscribes it to `product`.
async fn open(url: &str, product: &str, subscribe: bool) -> Result<Socket, String> {
    let mut request = url.into_client_request().map_err(|e| e.to_string())?;
    request
        .headers_mut()
        .insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(PROTOCOL));
    let authority = request
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .ok_or("the URL has no host")?;
    let tcp = TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    // Small buffers, as the gateway's own: ten thousand idle sockets should not cost the client
    // tungstenite's default 128 KiB read buffer each.
    let config = WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0);
    let (mut socket, response) =
        tokio_tungstenite::client_async_with_config(request, tcp, Some(config))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
    let agreed = response
        .headers()
        .get(SEC_WEBSOCKET_PROTOCOL)
        .is_some_and(|p| p.as_bytes() == PROTOCOL.as_bytes());
    if !agreed {
        return Err("the server did not agree to graphql-transport-ws".to_owned());
    }
    send(
        &mut socket,
        json!({"type": "connection_init", "payload": {}}),
    )
    .await?;
    loop {
        let message = match socket.next().await {
            Some(Ok(message)) => message,
            Some(Err(e)) => return Err(format!("before connection_ack: {e}")),
            None => return Err("closed before connection_ack".to_owned()),
        };
        let Message::Text(text) = message else {
            if let Message::Close(frame) = message {
                return Err(format!("closed before connection_ack: {frame:?}"));
            }
            continue;
        };
        let value: Value = serde_json::from_str(text.as_str()).map_err(|e| e.to_string())?;
        match value.get("type").and_then(Value::as_str) {
            Some("connection_ack") => break,
            Some("ping") => send(&mut socket, json!({"type": "pong"})).await?,
            _ => return Err(format!("expected connection_ack, got {text}")),
        }
    }
    if subscribe {
        let message = json!({
            "id": "1",
            "type": "subscribe",
            "payload": {"query": QUERY, "variables": {"id": product}},
        });
        send(&mut socket, message).await?;
    }
    Ok(socket)
}

/// Holds a subscribed socket: answers `ping`s, records `next`s, until told to close.
async fn hold(
    mut socket: Socket,
    socket_no: u32,
    tally: Arc<Tally>,
    mut close: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = close.changed() => {
                let _ = tokio::time::timeout(Duration::from_secs(5), socket.close(None)).await;
                tally.open.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            message = socket.next() => {
                let lost = match message {
                    Some(Ok(Message::Text(text))) => {
                        on_text(&mut socket, socket_no, &tally, text.as_str()).await.err()
                    }
                    Some(Ok(Message::Close(frame))) => Some(format!("closed by the server: {frame:?}")),
                    Some(Ok(Message::Binary(_))) => {
                        tally.sample(&tally.unexpected, format!("socket {socket_no}: a binary frame"));
                        None
                    }
                    Some(Ok(_)) => None,
                    Some(Err(e)) => Some(format!("read: {e}")),
                    None => Some("the connection ended".to_owned()),
                };
                if let Some(why) = lost {
                    tally.open.fetch_sub(1, Ordering::Relaxed);
                    tally.sample(&tally.lost, format!("socket {socket_no}: {why}"));
                    return;
                }
            }
        }
    }
}

/// Handles one text message of a subscribed socket; `Err` when the socket is lost.
async fn on_text(
    socket: &mut Socket,
    socket_no: u32,
    tally: &Tally,
    text: &str,
) -> Result<(), String> {
    let arrived_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    match value.get("type").and_then(Value::as_str) {
        Some("ping") => {
            tally.pings.fetch_add(1, Ordering::Relaxed);
            send(socket, json!({"type": "pong"})).await
        }
        Some("pong") => Ok(()),
        Some("next") => {
            let amount = value
                .pointer("/payload/data/productUpdated/price/amountMinor")
                .and_then(Value::as_i64);
            match amount {
                Some(amount_minor) => {
                    tally.nexts.fetch_add(1, Ordering::Relaxed);
                    tally
                        .frames
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(Frame {
                            socket: socket_no,
                            amount_minor,
                            arrived_us,
                        });
                }
                None => tally.sample(&tally.unexpected, format!("socket {socket_no}: {text}")),
            }
            Ok(())
        }
        _ => {
            tally.sample(&tally.unexpected, format!("socket {socket_no}: {text}"));
            Ok(())
        }
    }
}

/// Sends one protocol message.
async fn send(socket: &mut Socket, message: Value) -> Result<(), String> {
    socket
        .send(Message::text(message.to_string()))
        .await
        .map_err(|e| format!("send: {e}"))
}

/// The harness's commands, one per line of stdin; `close` at the end of input. Read by a thread
/// of its own (blocking reads), handed over through a channel.
fn commands() -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                return;
            }
        }
        let _ = tx.send("close".to_owned());
    });
    rx
}

/// Prints one JSON line on stdout and flushes it (the harness waits for whole lines).
fn print_line(value: &Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}
