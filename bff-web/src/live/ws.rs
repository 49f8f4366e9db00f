//! GraphQL over a WebSocket, with the `graphql-transport-ws` subprotocol (the protocol of the
//! `graphql-ws` library), on the endpoint's path.
//!
//! - The upgrade must offer the subprotocol (else `400`). A bearer token on the upgrade request is
//!   checked then (`401` when refused); the limits on open streams per replica and per client
//!   address are checked then too (`429` problem+json).
//! - The client has `gateway.subscriptions.init_timeout` to send `connection_init` (close 4408).
//!   Its payload may carry the token, `{"Authorization": "Bearer …"}` (what browsers must do:
//!   they cannot set headers on an upgrade); a refused token closes with 4403, a user with as
//!   many open streams as `max_streams_per_user` allows with 4429. Then `connection_ack`.
//! - `subscribe` runs any operation: a subscription pushes `next` per value and `complete` at its
//!   end; a query or mutation one `next` and `complete`. A document refused before execution
//!   (APQ, limits, validation) and a subscription that fails to start (`NOT_FOUND`,
//!   `UNAUTHENTICATED`) get `error`. Past `max_subscriptions_per_connection` operations at once,
//!   or `max_subscriptions` on the replica, `error` with code `TOO_MANY_SUBSCRIPTIONS` (the
//!   connection stays). The client's `complete` stops an operation.
//! - Protocol errors close the socket with the protocol's codes: 4400 (a message that is not
//!   one of the protocol, a binary frame), 4401 (`subscribe` before `connection_ack`), 4409 (an
//!   id already in use), 4429 (a second `connection_init`).
//! - `ping` is answered with `pong`; the server sends `ping` every `keep_alive`, and drops a
//!   client it has heard nothing from (not even a `pong`) for two of them.
//! - A `connection_init` token must name the same user as a token on the upgrade (else 4403);
//!   an operation id is 1 to 128 bytes (else 4400).
//! - A push the client does not take within `send_timeout` drops the connection: one message
//!   at most waits for a client that stopped reading, and the operations' producers wait with it
//!   (they produce only when the connection can send).
//! - Shutdown closes with 1001, token expiry with 4403.
//! - Trusted documents in `enforce` mode: the bypass header (with its secret) on the upgrade
//!   request, or under its name in the `connection_init` payload (where browsers and GraphiQL
//!   put headers), admits arbitrary documents for every operation of the socket.

use std::{collections::HashMap, net::IpAddr};

use axum::{
    extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade},
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};
use futures::{
    StreamExt,
    future::{AbortHandle, Abortable},
    stream::SelectAll,
};
use server_kit::{
    Readiness,
    live::{StreamPermit, SubscriptionPermit},
    metrics::Metrics,
};
use shared_clients::RequestContext;

use super::{Endpoint, Opener, keep_alive, scoped};
use crate::{
    error::TransportError,
    pipeline::{Prepared, prepare, request_from_json},
    response::Media,
    schema::Identity,
};

/// The subprotocol served.
pub const PROTOCOL: &str = "graphql-transport-ws";

/// Close codes of the protocol (and the WebSocket standard's "going away").
mod close {
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// A message that is not one of the protocol.
    pub const BAD_REQUEST: u16 = 4400;
    /// `subscribe` before `connection_ack`.
    pub const UNAUTHORIZED: u16 = 4401;
    /// `connection_init` refused (bad token), or the token expired.
    pub const FORBIDDEN: u16 = 4403;
    /// No `connection_init` in time.
    pub const INIT_TIMEOUT: u16 = 4408;
    /// An operation id already in use.
    pub const DUPLICATE_ID: u16 = 4409;
    /// A second `connection_init`, or too many streams for the user.
    pub const TOO_MANY: u16 = 4429;
}

/// Longest operation id accepted (it is repeated in every message of the operation).
const MAX_ID_BYTES: usize = 128;

/// Read buffer of a socket: an idle connection holds this much, not tungstenite's default
/// 128 KiB. Client messages are small (`subscribe` with a document, `pong`); a larger one
/// grows the buffer while it is read.
const READ_BUFFER: usize = 1024;

/// `GET` with `Upgrade: websocket` on the endpoint.
pub async fn upgrade(
    endpoint: Endpoint,
    metrics: Option<Metrics>,
    readiness: Option<Readiness>,
    peer: IpAddr,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if !endpoint.live.config().enabled {
        return TransportError::BadRequest(
            "Live updates are turned off on this server (`gateway.subscriptions.enabled`).",
        )
        .respond(Media::Json);
    }
    let offered = ws.requested_protocols().any(|protocol| {
        protocol
            .as_bytes()
            .eq_ignore_ascii_case(PROTOCOL.as_bytes())
    });
    if !offered {
        return TransportError::BadRequest(
            "Offer the WebSocket subprotocol `graphql-transport-ws` (Sec-WebSocket-Protocol).",
        )
        .respond(Media::Json);
    }
    let opener = match endpoint.auth.authenticate(&headers).await {
        Ok(Some(user)) => Some(Opener::user(user)),
        Ok(None) => None,
        Err(refused) => return TransportError::Unauthenticated(refused).respond(Media::Json),
    };
    let user = opener.as_ref().and_then(|opener| match &opener.identity {
        Identity::User(user) => Some(user),
        Identity::Anonymous => None,
    });
    let permit = match endpoint
        .live
        .open(endpoint.live.config().client_address(&headers, peer), user)
    {
        Ok(permit) => permit,
        Err(refusal) => {
            refusal.count(metrics.as_ref());
            return refusal.into_response();
        }
    };
    let context = server_kit::extract::request_context(&headers, endpoint.deadline);
    let bypass = endpoint.trusted.admits_bypass(&headers);
    let max_message = endpoint.max_message_bytes;
    let endpoint_send_timeout = endpoint.live.config().send_timeout;
    let connection = Connection {
        endpoint,
        metrics,
        readiness,
        permit,
        opener,
        context,
        bypass,
        operations: HashMap::new(),
        send_timeout: endpoint_send_timeout,
        outputs: SelectAll::new(),
    };
    ws.protocols([PROTOCOL])
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(max_message.saturating_mul(2).max(64 * 1024))
        .max_message_size(max_message)
        .max_frame_size(max_message)
        .on_upgrade(move |socket| connection.run(socket))
}

/// What one operation sends.
enum Output {
    /// A `next` payload (an execution result).
    Next(String),
    /// An `error` payload (a list of errors): the operation is over.
    Error(String),
    /// The operation ended.
    Complete,
}

/// One operation running on a connection.
struct Operation {
    /// Stops its stream.
    abort: AbortHandle,
    /// Its place among the replica's subscriptions (subscriptions only).
    _permit: Option<SubscriptionPermit>,
}

/// A message from the client.
#[derive(serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    /// The first message.
    ConnectionInit {
        /// May carry the token.
        #[serde(default)]
        payload: Option<serde_json::Value>,
    },
    /// A keep-alive the server answers.
    Ping {},
    /// An answer to the server's `ping`.
    Pong {},
    /// Runs an operation.
    Subscribe {
        /// Chosen by the client, unique among its running operations.
        id: String,
        /// `{query, operationName, variables, extensions}`.
        payload: serde_json::Map<String, serde_json::Value>,
    },
    /// Stops an operation.
    Complete {
        /// Which.
        id: String,
    },
}

/// One accepted WebSocket.
struct Connection {
    /// The gateway.
    endpoint: Endpoint,
    /// Where operations are counted.
    metrics: Option<Metrics>,
    /// Says when shutdown starts.
    readiness: Option<Readiness>,
    /// Its place among open streams.
    permit: StreamPermit,
    /// Who opened it, once known (the upgrade's token, or `connection_init`'s).
    opener: Option<Opener>,
    /// The upgrade request's context (request id, trace).
    context: RequestContext,
    /// Whether the upgrade carried the trusted documents' bypass header with its secret (then
    /// every operation of the socket may send any document in `enforce` mode).
    bypass: bool,
    /// Running operations by id.
    operations: HashMap<String, Operation>,
    /// `gateway.subscriptions.send_timeout`.
    send_timeout: std::time::Duration,
    /// What the running operations send.
    outputs: SelectAll<futures::stream::BoxStream<'static, (String, Output)>>,
}

/// Why the loop stopped.
enum End {
    /// Close with this code and reason.
    Close(u16, String),
    /// The client is gone or does not read: drop the socket.
    Drop,
}

impl Connection {
    /// Serves the socket until it closes.
    async fn run(mut self, mut socket: WebSocket) {
        // Boxed: an idle socket then holds only the serving loop's state, not that of the
        // handshake (token verification) it went through.
        let end = match Box::pin(self.init(&mut socket)).await {
            Ok(()) => self.serve(&mut socket).await,
            Err(end) => end,
        };
        if let End::Close(code, reason) = end {
            let frame = CloseFrame {
                code,
                reason: Utf8Bytes::from(truncate(&reason, 123)),
            };
            let send = socket.send(Message::Close(Some(frame)));
            let _ = tokio::time::timeout(self.endpoint.live.config().send_timeout, send).await;
        }
    }

    /// Waits for `connection_init`, authenticates it and acknowledges.
    async fn init(&mut self, socket: &mut WebSocket) -> Result<(), End> {
        let deadline = tokio::time::Instant::now() + self.endpoint.live.config().init_timeout;
        loop {
            let message = match tokio::time::timeout_at(deadline, socket.next()).await {
                Err(_) => {
                    return Err(End::Close(
                        close::INIT_TIMEOUT,
                        "Connection initialisation timeout".to_owned(),
                    ));
                }
                Ok(None | Some(Err(_))) => return Err(End::Drop),
                Ok(Some(Ok(message))) => message,
            };
            match parse(message)? {
                None => continue,
                Some(ClientMessage::ConnectionInit { payload }) => {
                    self.authenticate(payload).await?;
                    send(
                        socket,
                        r#"{"type":"connection_ack"}"#.to_owned(),
                        self.send_timeout,
                    )
                    .await?;
                    return Ok(());
                }
                Some(ClientMessage::Ping {}) => {
                    send(socket, r#"{"type":"pong"}"#.to_owned(), self.send_timeout).await?;
                }
                Some(ClientMessage::Pong {}) => {}
                Some(ClientMessage::Subscribe { .. }) => {
                    return Err(End::Close(close::UNAUTHORIZED, "Unauthorized".to_owned()));
                }
                Some(ClientMessage::Complete { .. }) => {}
            }
        }
    }

    /// Authenticates `connection_init`'s token, if it has one, and counts the stream for its
    /// user.
    async fn authenticate(&mut self, payload: Option<serde_json::Value>) -> Result<(), End> {
        let forbidden = || End::Close(close::FORBIDDEN, "Forbidden".to_owned());
        if let Some(payload) = &payload
            && self.endpoint.trusted.admits_bypass_in(payload)
        {
            self.bypass = true;
        }
        let token = payload.as_ref().and_then(|payload| {
            payload
                .get("Authorization")
                .or_else(|| payload.get("authorization"))
        });
        if let Some(token) = token {
            let token = token.as_str().ok_or_else(forbidden)?;
            let mut headers = HeaderMap::new();
            let value = HeaderValue::from_str(token).map_err(|_| forbidden())?;
            headers.insert(header::AUTHORIZATION, value);
            let user = match self.endpoint.auth.authenticate(&headers).await {
                Ok(Some(user)) => user,
                Ok(None) | Err(_) => return Err(forbidden()),
            };
            // A socket acts for one user: a payload token for another user than the upgrade's
            // would act as one user while counted for the other.
            if let Some(Opener {
                identity: Identity::User(upgraded),
                ..
            }) = &self.opener
                && upgraded != user.user_id()
            {
                return Err(End::Close(
                    close::FORBIDDEN,
                    "Forbidden: the tokens of the upgrade and of connection_init name different users"
                        .to_owned(),
                ));
            }
            self.opener = Some(Opener::user(user));
        }
        if let Some(Opener {
            identity: Identity::User(user),
            ..
        }) = &self.opener
            && let Err(refusal) = self.permit.set_user(user)
        {
            refusal.count(self.metrics.as_ref());
            return Err(End::Close(close::TOO_MANY, refusal.to_string()));
        }
        Ok(())
    }

    /// Serves operations until the client leaves, shutdown starts or the token expires.
    async fn serve(&mut self, socket: &mut WebSocket) -> End {
        let opener = self.opener.clone().unwrap_or_else(Opener::anonymous);
        let expired = opener.expired();
        tokio::pin!(expired);
        let shutdown = self.readiness.clone();
        let shutdown = async move {
            match shutdown {
                Some(readiness) => readiness.shutdown_started().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(shutdown);
        let period = keep_alive(&self.endpoint);
        let mut pings = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        // A conforming client answers every `ping` at once: one that sends nothing for two
        // keep-alive periods is gone (a vanished peer would otherwise hold its place until TCP
        // gives up, many minutes later).
        let mut heard = tokio::time::Instant::now();
        loop {
            let step = tokio::select! {
                () = &mut shutdown => {
                    return End::Close(close::GOING_AWAY, "The server is restarting".to_owned());
                }
                () = &mut expired => {
                    return End::Close(close::FORBIDDEN, "Forbidden: the token expired".to_owned());
                }
                message = socket.next() => match message {
                    None | Some(Err(_)) => return End::Drop,
                    Some(Ok(message)) => {
                        heard = tokio::time::Instant::now();
                        // Boxed: handling a message (APQ, parsing, limits) needs far more
                        // state than waiting does; an idle socket should not carry it.
                        Box::pin(self.on_message(socket, message, &opener)).await
                    }
                },
                Some((id, output)) = self.outputs.next(), if !self.outputs.is_empty() => {
                    Box::pin(self.on_output(socket, id, output)).await
                }
                _ = pings.tick() => {
                    if heard.elapsed() > period * 2 {
                        tracing::debug!("dropping a WebSocket whose client stopped answering pings");
                        return End::Drop;
                    }
                    send(socket, r#"{"type":"ping"}"#.to_owned(), self.send_timeout).await
                }
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Handles one message from the client.
    async fn on_message(
        &mut self,
        socket: &mut WebSocket,
        message: Message,
        opener: &Opener,
    ) -> Result<(), End> {
        match parse(message)? {
            None | Some(ClientMessage::Pong {}) => Ok(()),
            Some(ClientMessage::Ping {}) => {
                send(socket, r#"{"type":"pong"}"#.to_owned(), self.send_timeout).await
            }
            Some(ClientMessage::ConnectionInit { .. }) => Err(End::Close(
                close::TOO_MANY,
                "Too many initialisation requests".to_owned(),
            )),
            Some(ClientMessage::Complete { id }) => {
                if let Some(operation) = self.operations.remove(&id) {
                    operation.abort.abort();
                }
                Ok(())
            }
            Some(ClientMessage::Subscribe { id, payload }) => {
                if id.is_empty() || id.len() > MAX_ID_BYTES {
                    return Err(End::Close(
                        close::BAD_REQUEST,
                        format!("Operation ids are 1 to {MAX_ID_BYTES} bytes"),
                    ));
                }
                if self.operations.contains_key(&id) {
                    let reason = format!("Subscriber for {} already exists", truncate(&id, 80));
                    return Err(End::Close(close::DUPLICATE_ID, reason));
                }
                match self.start(&id, payload, opener).await {
                    Ok(()) => Ok(()),
                    Err(errors) => {
                        let text = format!(
                            r#"{{"id":{},"type":"error","payload":{errors}}}"#,
                            json_string(&id)
                        );
                        send(socket, text, self.send_timeout).await
                    }
                }
            }
        }
    }

    /// Starts operation `id`, or says why not (an `error` payload).
    async fn start(
        &mut self,
        id: &str,
        payload: serde_json::Map<String, serde_json::Value>,
        opener: &Opener,
    ) -> Result<(), String> {
        let endpoint = &self.endpoint;
        let config = endpoint.live.config();
        if self.operations.len() >= config.max_subscriptions_per_connection {
            let refusal = server_kit::live::Refusal::PerConnection;
            refusal.count(self.metrics.as_ref());
            return Err(refused(refusal.code(), &refusal.to_string()));
        }
        let mut request = request_from_json(payload).map_err(|e| transport_errors(&e))?;
        if self.bypass {
            request = crate::trusted::TrustedDocuments::mark_bypassed(request);
        }
        let Prepared {
            request,
            operation,
            kind,
            ..
        } = prepare(endpoint, self.metrics.as_ref(), request, false)
            .await
            .map_err(|e| transport_errors(&e))?;
        let subscription = kind == Some(async_graphql::parser::types::OperationType::Subscription);
        let permit = if subscription {
            match endpoint.live.subscribe() {
                Ok(permit) => Some(permit),
                Err(refusal) => {
                    refusal.count(self.metrics.as_ref());
                    return Err(refused(refusal.code(), &refusal.to_string()));
                }
            }
        } else {
            None
        };
        let errors_counted =
            super::ErrorCounter::start(self.metrics.as_ref(), endpoint, operation.as_deref());
        // A subscription's reads take a deadline each; another operation has one in all.
        let context = if subscription {
            self.context.clone().without_deadline()
        } else {
            self.context
                .clone()
                .with_timeout_from_now(endpoint.deadline)
        };
        let (request, executed) = scoped(endpoint, request, opener, context);
        let responses = endpoint
            .schema
            .execute_stream_with_session_data(request, Default::default());
        let outputs = responses
            .map(move |response| {
                let ran = executed.get();
                let (text, errors) = super::payload(response, ran);
                if let Some(counter) = &errors_counted {
                    counter.count(&errors);
                }
                if ran {
                    Output::Next(text)
                } else {
                    let errors = serde_json::to_string(&errors).unwrap_or_else(|_| "[]".into());
                    Output::Error(errors)
                }
            })
            .chain(futures::stream::once(async { Output::Complete }));
        let (abort, registration) = AbortHandle::new_pair();
        let owned = id.to_owned();
        let stream =
            Abortable::new(outputs, registration).map(move |output| (owned.clone(), output));
        self.outputs.push(stream.boxed());
        self.operations.insert(
            id.to_owned(),
            Operation {
                abort,
                _permit: permit,
            },
        );
        Ok(())
    }

    /// Sends what an operation produced.
    async fn on_output(
        &mut self,
        socket: &mut WebSocket,
        id: String,
        output: Output,
    ) -> Result<(), End> {
        if !self.operations.contains_key(&id) {
            // Stopped by the client, or ended by an error already sent.
            return Ok(());
        }
        let id_json = json_string(&id);
        let text = match output {
            Output::Next(payload) => {
                format!(r#"{{"id":{id_json},"type":"next","payload":{payload}}}"#)
            }
            Output::Error(errors) => {
                if let Some(operation) = self.operations.remove(&id) {
                    operation.abort.abort();
                }
                format!(r#"{{"id":{id_json},"type":"error","payload":{errors}}}"#)
            }
            Output::Complete => {
                self.operations.remove(&id);
                format!(r#"{{"id":{id_json},"type":"complete"}}"#)
            }
        };
        send(socket, text, self.send_timeout).await
    }
}

/// Sends `text`, or gives up on a client that does not take it within `timeout`.
async fn send(
    socket: &mut WebSocket,
    text: String,
    timeout: std::time::Duration,
) -> Result<(), End> {
    {
        match tokio::time::timeout(timeout, socket.send(Message::Text(text.into()))).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(End::Drop),
            Err(_) => {
                tracing::debug!("dropping a WebSocket whose client stopped reading");
                Err(End::Drop)
            }
        }
    }
}

/// A client message, `None` for frames the protocol ignores (WebSocket pings and pongs);
/// anything else closes with 4400.
fn parse(message: Message) -> Result<Option<ClientMessage>, End> {
    match message {
        Message::Text(text) => serde_json::from_str::<ClientMessage>(text.as_str())
            .map(Some)
            .map_err(|_| End::Close(close::BAD_REQUEST, "Invalid message received".to_owned())),
        Message::Binary(_) => Err(End::Close(
            close::BAD_REQUEST,
            "Binary messages are not supported".to_owned(),
        )),
        Message::Ping(_) | Message::Pong(_) => Ok(None),
        Message::Close(_) => Err(End::Drop),
    }
}

/// An `error` payload of one error with `code`.
fn refused(code: &str, message: &str) -> String {
    serde_json::json!([{ "message": message, "extensions": { "code": code } }]).to_string()
}

/// The `error` payload of a request refused before execution.
fn transport_errors(error: &TransportError) -> String {
    error.errors().to_string()
}

/// `value` as a JSON string.
fn json_string(value: &str) -> String {
    serde_json::Value::from(value).to_string()
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}
