//! A tiny gateway using the auth extractors, a JWKS server the tests control, and token minting.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{FromRef, State},
    http::StatusCode,
    response::IntoResponse,
    routing::get,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{
    Algorithm, EncodingKey, Header,
    jwk::{Jwk, JwkSet},
};
use serde_json::{Value, json};
use server_kit::{
    ServerConfig,
    auth::{AuthConfig, AuthError, AuthenticatedUser, Authenticator, OptionalUser, Secret},
    problem::PROBLEM_JSON,
};
use tokio::sync::watch;

/// The development secret of most tests (32 bytes or more).
pub const SECRET: &str = "test-secret-0123456789-abcdefghijklmnop";

/// Key ids the JWKS server publishes.
pub const RSA_KID: &str = "rsa-2024";
pub const ROTATED_KID: &str = "rsa-2025";
pub const EC_KID: &str = "ec-2024";

/// The identity provider's `iss` and the `aud` of the tokens it mints for the test gateway: what
/// [`jwks_config`] checks and [`claims`] carries.
pub const ISSUER: &str = "https://idp.example";
pub const AUDIENCE: &str = "bff-web";

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

pub fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&fixture("rsa_private.pem")).expect("RSA key")
}

pub fn rotated_rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(&fixture("rsa_rotated_private.pem")).expect("RSA key")
}

pub fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(&fixture("ec_private.pem")).expect("EC key")
}

/// The RSA public key as published in PEM, what an attacker would try as an HMAC secret.
pub fn rsa_public_pem() -> Vec<u8> {
    fixture("rsa_public.pem")
}

/// The public JWK of `key`, under `kid`.
pub fn jwk(key: &EncodingKey, algorithm: Algorithm, kid: &str) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(key, algorithm).expect("public JWK");
    jwk.common.key_id = Some(kid.to_owned());
    jwk
}

pub fn now() -> i64 {
    i64::try_from(jsonwebtoken::get_current_timestamp()).expect("a sane clock")
}

/// Claims of a token the identity provider minted for `sub` and the test gateway ([`ISSUER`],
/// [`AUDIENCE`]), valid for 5 minutes.
pub fn claims(sub: &str) -> Value {
    json!({ "sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now(), "exp": now() + 300 })
}

/// Signs `claims` with `key` (HS256 with a secret, RS256 / ES256 with a private key).
pub fn sign(algorithm: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("token")
}

pub fn hs256(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        None,
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
}

/// A token assembled by hand: any header, any claims, any signature.
pub fn raw_token(header: &Value, claims: &Value, signature: &str) -> String {
    let encode = |value: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("json"));
    format!("{}.{}.{signature}", encode(header), encode(claims))
}

pub fn hs256_config() -> AuthConfig {
    AuthConfig {
        hs256_secret: Some(Secret::new(SECRET)),
        ..AuthConfig::default()
    }
}

/// Production-like: keys from `jwks`, tokens of [`ISSUER`] for [`AUDIENCE`] only.
pub fn jwks_config(jwks: &JwksServer) -> AuthConfig {
    AuthConfig {
        jwks_url: Some(jwks.url()),
        issuer: Some(ISSUER.to_owned()),
        audience: Some(AUDIENCE.to_owned()),
        ..AuthConfig::default()
    }
}

/// Moves tokio's clock forward by `by` without sleeping. The clock runs normally before and
/// after, so real HTTP in the test is unaffected; the JWKS cache's timing (on `tokio::time`)
/// sees the jump.
pub async fn advance(by: Duration) {
    tokio::time::pause();
    tokio::time::advance(by).await;
    tokio::time::resume();
}

/// The state of the test gateway: what a real gateway's state needs for the extractors.
#[derive(Clone)]
struct AppState {
    auth: Authenticator,
}

impl FromRef<AppState> for Authenticator {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

async fn me(user: AuthenticatedUser) -> String {
    user.user_id().to_string()
}

async fn maybe(user: OptionalUser) -> String {
    user.user_id()
        .map_or_else(|| "anonymous".to_owned(), ToString::to_string)
}

/// A gateway on port 0 with `GET /me` (a user is required) and `GET /maybe` (anonymous allowed),
/// behind the common middleware.
pub struct TestApp {
    pub auth: Authenticator,
    base: String,
    client: reqwest::Client,
}

impl TestApp {
    pub async fn spawn(config: &AuthConfig) -> Self {
        let auth = Authenticator::new(config).expect("valid auth config");
        let router = Router::new()
            .route("/me", get(me))
            .route("/maybe", get(maybe))
            .with_state(AppState { auth: auth.clone() });
        let router = server_kit::http::apply(router, &ServerConfig::default());
        let addr = serve(router).await;
        Self {
            auth,
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
        }
    }

    /// `GET path` with `Authorization: <authorization>` when given.
    pub async fn get_with(&self, path: &str, authorization: Option<&str>) -> reqwest::Response {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request.send().await.expect("request")
    }

    /// `GET path` with `Authorization: Bearer <token>`.
    pub async fn get(&self, path: &str, token: &str) -> reqwest::Response {
        self.get_with(path, Some(&format!("Bearer {token}"))).await
    }

    /// Asserts `/me` with `token` answers 200 with `user`.
    pub async fn assert_accepted(&self, token: &str, user: &str) {
        let response = self.get("/me", token).await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.expect("body"), user);
    }

    /// Asserts `token` is refused for `expected` by the authenticator, and with a 401 over HTTP.
    pub async fn assert_refused(&self, token: &str, expected: AuthError) {
        assert_eq!(
            self.auth.verify(token).await.err(),
            Some(expected),
            "verify() of {token:?}"
        );
        let response = self.get("/me", token).await;
        assert_unauthorized(response, expected.public_code()).await;
    }
}

/// Asserts a 401 problem with a Bearer challenge and the public `code`.
pub async fn assert_unauthorized(response: reqwest::Response, code: &str) {
    assert_eq!(response.status(), 401);
    let challenge = response.headers()["www-authenticate"]
        .to_str()
        .expect("ascii")
        .to_owned();
    if code == "missing_token" {
        assert_eq!(challenge, "Bearer");
    } else {
        assert!(
            challenge.starts_with(r#"Bearer error="invalid_token""#),
            "{challenge}"
        );
    }
    assert_eq!(response.headers()["content-type"], PROBLEM_JSON);
    let body: Value = response.json().await.expect("problem JSON");
    assert_eq!(body["status"], 401);
    assert_eq!(body["code"], code, "{body}");
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

/// How the JWKS server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwksMode {
    Up,
    Down,
    Hanging,
}

struct JwksState {
    document: Mutex<JwkSet>,
    mode: Mutex<JwksMode>,
    /// Fetches received, counted as they arrive (before any hold).
    fetches: watch::Sender<usize>,
    /// While `true`, answers wait (see [`JwksServer::hold`]).
    held: watch::Sender<bool>,
}

/// An identity provider's JWKS endpoint that counts its fetches.
pub struct JwksServer {
    state: Arc<JwksState>,
    addr: SocketAddr,
}

impl JwksServer {
    /// Serves the RSA and EC test keys.
    pub async fn start() -> Self {
        let keys = vec![
            jwk(&rsa_key(), Algorithm::RS256, RSA_KID),
            jwk(&ec_key(), Algorithm::ES256, EC_KID),
        ];
        let state = Arc::new(JwksState {
            document: Mutex::new(JwkSet { keys }),
            mode: Mutex::new(JwksMode::Up),
            fetches: watch::Sender::new(0),
            held: watch::Sender::new(false),
        });
        let router = Router::new()
            .route("/.well-known/jwks.json", get(jwks))
            .with_state(Arc::clone(&state));
        let addr = serve(router).await;
        Self { state, addr }
    }

    pub fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    pub fn fetches(&self) -> usize {
        *self.state.fetches.borrow()
    }

    /// Waits until `count` fetches have arrived (those held included); fails the test after 10 s
    /// rather than hanging.
    pub async fn wait_for_fetches(&self, count: usize) {
        let mut fetches = self.state.fetches.subscribe();
        tokio::time::timeout(Duration::from_secs(10), fetches.wait_for(|n| *n >= count))
            .await
            .unwrap_or_else(|_| panic!("{count} JWKS fetches never arrived"))
            .expect("server alive");
    }

    pub fn set_mode(&self, mode: JwksMode) {
        *self.state.mode.lock().expect("mode") = mode;
    }

    /// Makes fetches wait, counted but unanswered, until [`JwksServer::release`]: a slow
    /// identity provider whose timing the test decides.
    pub fn hold(&self) {
        self.state.held.send_replace(true);
    }

    /// Lets held and later fetches be answered.
    pub fn release(&self) {
        self.state.held.send_replace(false);
    }

    /// Removes the key `kid` from the published set (a key the identity provider retired).
    pub fn remove(&self, kid: &str) {
        self.state
            .document
            .lock()
            .expect("document")
            .keys
            .retain(|jwk| jwk.common.key_id.as_deref() != Some(kid));
    }

    /// Adds the rotated RSA key to the published set.
    pub fn rotate(&self) {
        self.state.document.lock().expect("document").keys.push(jwk(
            &rotated_rsa_key(),
            Algorithm::RS256,
            ROTATED_KID,
        ));
    }
}

async fn jwks(State(state): State<Arc<JwksState>>) -> axum::response::Response {
    state.fetches.send_modify(|n| *n += 1);
    let mut held = state.held.subscribe();
    held.wait_for(|held| !held).await.expect("server alive");
    let mode = *state.mode.lock().expect("mode");
    match mode {
        JwksMode::Up => Json(state.document.lock().expect("document").clone()).into_response(),
        JwksMode::Down => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        JwksMode::Hanging => std::future::pending().await,
    }
}
