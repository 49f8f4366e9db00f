//! GraphQL operations over long-lived connections: subscriptions (and queries and mutations)
//! over a WebSocket ([`ws`], the `graphql-transport-ws` protocol) and as server-sent events
//! ([`sse`], GraphQL over SSE, distinct connections mode), both on the endpoint's path.
//!
//! Both take a request through the same steps as a plain `POST` (APQ, document limits, the
//! schema), and both are bounded by `gateway.subscriptions` ([`server_kit::live`]): open streams
//! per replica, per client address and per user, subscriptions per replica and per WebSocket; a
//! push that the client does not take within `send_timeout` disconnects it. Each ends:
//! - when shutdown starts (`/ready` turns 503 first): a WebSocket closes with 1001, an event
//!   stream ends without `complete`, so clients reconnect to another replica;
//! - when the bearer token that authenticated it expires: a WebSocket closes with 4403, an event
//!   stream sends an `UNAUTHENTICATED` error (`reason: TOKEN_EXPIRED`) and `complete`.

pub mod sse;
pub mod ws;

use std::{sync::Arc, time::Duration};

use async_graphql::{Response, ServerError};
use server_kit::auth::{AuthError, AuthenticatedUser};
use tokio::time::Instant;

use crate::{
    pipeline::{ResponseBody, with_codes},
    schema::{self, Executed, Identity, LiveScope},
    state::AppState,
};

/// Who opened a stream, and until when that holds.
#[derive(Debug, Clone)]
pub(crate) struct Opener {
    /// Anonymous or a user.
    pub identity: Identity,
    /// When the token expires; `None` for anonymous streams.
    pub expires: Option<Instant>,
}

impl Opener {
    /// An anonymous opener.
    pub fn anonymous() -> Self {
        Self {
            identity: Identity::Anonymous,
            expires: None,
        }
    }

    /// The opener a verified token makes.
    pub fn user(user: AuthenticatedUser) -> Self {
        // An `exp` too far away to represent never comes.
        let expires = Instant::now().checked_add(user.expires_in());
        Self {
            identity: Identity::User(user.into_user_id()),
            expires,
        }
    }

    /// Completes when the token expires (never for anonymous streams).
    pub async fn expired(&self) {
        match self.expires {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    }
}

/// The error pushed when the token of a stream expires.
pub(crate) fn token_expired() -> ServerError {
    let error = schema::error::unauthenticated(AuthError::Expired);
    let mut server = ServerError::new(error.message, None);
    let mut extensions = async_graphql::ErrorExtensionValues::default();
    extensions.set("code", schema::error::Code::Unauthenticated.as_str());
    extensions.set("reason", AuthError::Expired.public_code());
    server.extensions = Some(extensions);
    server
}

/// A request with its per-operation data (scope and execution flag), for `execute_stream`. Each
/// value a subscription pushes is resolved in a scope of its own ([`LiveScope`]): a fresh
/// deadline and loader per value, however long the subscription lives.
pub(crate) fn scoped(
    endpoint: &AppState,
    request: async_graphql::Request,
    opener: &Opener,
    context: shared_clients::RequestContext,
) -> (async_graphql::Request, Executed) {
    let executed = Executed::default();
    // No request-wide `RequestScope` (its loader would be held for the operation's life):
    // every value gets its own when it is resolved, and a subscription's resolver starts from
    // the `LiveScope`.
    let live = LiveScope {
        context,
        identity: opener.identity.clone(),
        budget: endpoint.deadline,
    };
    (request.data(live).data(executed.clone()), executed)
}

/// One response of a stream, serialized as an execution result (`{data, errors, extensions}`),
/// its errors coded; `ran` says whether execution started (else there is no `data`).
pub(crate) fn payload(response: Response, ran: bool) -> (String, Vec<ServerError>) {
    let errors = with_codes(response.errors, ran);
    let body = ResponseBody {
        data: ran.then_some(&response.data),
        errors: &errors,
        extensions: &response.extensions,
    };
    // Values and errors always serialize; an empty object would only hide a bug.
    let text = serde_json::to_string(&body).unwrap_or_else(|_| "{}".to_owned());
    (text, errors)
}

/// Counts the errors each response of a live operation carries, under the operation's label
/// (the operation itself is counted once, when it starts).
#[derive(Clone)]
pub(crate) struct ErrorCounter {
    /// Where they are counted.
    metrics: server_kit::metrics::Metrics,
    /// The operation's label.
    label: String,
}

impl ErrorCounter {
    /// Counts the start of `operation` on `endpoint`, and returns what counts its errors;
    /// `None` without metrics.
    pub(crate) fn start(
        metrics: Option<&server_kit::metrics::Metrics>,
        endpoint: &AppState,
        operation: Option<&str>,
    ) -> Option<Self> {
        let metrics = metrics?;
        crate::pipeline::record_operation(metrics, &endpoint.metric_names, operation, &[]);
        Some(Self {
            metrics: metrics.clone(),
            label: endpoint.metric_names.label(operation),
        })
    }

    /// Counts `errors` (of one response).
    pub(crate) fn count(&self, errors: &[ServerError]) {
        crate::pipeline::record_errors(&self.metrics, &self.label, errors);
    }
}

/// The keep-alive interval, never zero.
pub(crate) fn keep_alive(endpoint: &AppState) -> Duration {
    endpoint
        .live
        .config()
        .keep_alive
        .max(Duration::from_millis(100))
}

/// The endpoint's live settings and state, shared by both transports.
pub(crate) type Endpoint = Arc<AppState>;
