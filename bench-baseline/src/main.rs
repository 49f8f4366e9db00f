//! `bench-baseline`: the cheapest possible HTTP answer, for comparison with the gateways.
//!
//! `scripts/bench` saves each gateway's cached response to `DIR/<name>.body` (and its
//! `Content-Type` to `DIR/<name>.type`) and starts this server with
//! `bench-baseline <listen-addr> <DIR>`. Every request to `/<name>`, whatever its method, headers
//! or body, is answered `200` with exactly those bytes, read into memory once at start-up. No
//! middleware, no parsing, no allocation per request beyond what axum and hyper need: the
//! throughput of this server is the ceiling a gateway on the same machine is measured against.

use std::{collections::HashMap, path::Path, sync::Arc};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};

/// One canned answer.
struct Canned {
    /// The `Content-Type` the gateway sent with these bytes.
    content_type: HeaderValue,
    /// The gateway's response body, byte for byte.
    body: Bytes,
}

/// Canned answers by path (`/<name>`).
type Answers = Arc<HashMap<String, Canned>>;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(dir)) = (args.next(), args.next()) else {
        eprintln!("usage: bench-baseline <listen-addr> <dir with NAME.body and NAME.type files>");
        std::process::exit(2);
    };
    let answers = load(Path::new(&dir))?;
    eprintln!(
        "bench-baseline: {} answers on http://{listen}",
        answers.len()
    );
    let app = Router::new().fallback(answer).with_state(Arc::new(answers));
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    axum::serve(listener, app).await?;
    Ok(())
}

/// Reads every `NAME.body` of `dir` (with `NAME.type`, default `application/json`).
fn load(dir: &Path) -> std::io::Result<HashMap<String, Canned>> {
    let mut answers = HashMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("body") {
            continue;
        }
        let Some(name) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let body = Bytes::from(std::fs::read(&path)?);
        let content_type = std::fs::read_to_string(path.with_extension("type"))
            .ok()
            .and_then(|t| HeaderValue::from_str(t.trim()).ok())
            .unwrap_or(HeaderValue::from_static("application/json"));
        answers.insert(format!("/{name}"), Canned { content_type, body });
    }
    Ok(answers)
}

/// Answers `/<name>` with its canned bytes, anything else with 404.
async fn answer(State(answers): State<Answers>, uri: Uri) -> Response {
    match answers.get(uri.path()) {
        Some(canned) => (
            [(header::CONTENT_TYPE, canned.content_type.clone())],
            canned.body.clone(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
