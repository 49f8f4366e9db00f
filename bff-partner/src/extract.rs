//! Extractors that reject in the API's own problem format instead of axum's plain text.
//!
//! [`Json`], [`Query`] and [`Path`] wrap axum's extractors and turn every rejection into an
//! [`ApiError`] (`invalid-body`, `invalid-request`, `unsupported-media-type`,
//! `payload-too-large`). [`Ctx`] builds the [`RequestContext`] propagated downstream, and
//! [`IdempotencyKeyHeader`] reads the `Idempotency-Key` of order creation.

use axum::{
    extract::{FromRequest, FromRequestParts, Request, rejection::JsonRejection},
    http::{StatusCode, request::Parts},
};
use serde::de::DeserializeOwned;
use shared_clients::{IdempotencyKey, RequestContext, RequestId, TraceParent};

use crate::{error::ApiError, service::AppState};

/// A JSON body of type `T`; any rejection is an [`ApiError`].
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(&rejection)),
        }
    }
}

/// Classifies a JSON body rejection.
fn json_rejection(rejection: &JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
        JsonRejection::BytesRejection(_) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge
        }
        // Syntax and data errors: axum's text names the position or the field path and what was
        // expected; it holds nothing but what the client itself sent.
        other => ApiError::InvalidBody(other.body_text()),
    }
}

/// A query string deserialized into `T`; any rejection is an `invalid-request` problem.
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| Self(value))
            .map_err(|rejection| ApiError::InvalidRequest(rejection.body_text()))
    }
}

/// Path parameters deserialized into `T`; any rejection is an `invalid-request` problem.
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| Self(value))
            .map_err(|rejection| ApiError::InvalidRequest(rejection.body_text()))
    }
}

/// The [`RequestContext`] of the inbound request: its `X-Request-Id` (set by the server
/// middleware, generated when absent), a valid `traceparent`, if any, and the request's deadline
/// (`downstream.deadline` from now), which bounds all of its downstream calls together.
#[derive(Debug, Clone)]
pub struct Ctx(pub RequestContext);

impl FromRequestParts<AppState> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let request_id = server_kit::http::request_id(parts)
            .and_then(|id| RequestId::parse(id).ok())
            .unwrap_or_else(RequestId::generate);
        let mut ctx = RequestContext::new()
            .with_request_id(request_id)
            .with_timeout_from_now(state.downstream.deadline());
        let traceparent = parts
            .headers
            .get("traceparent")
            .and_then(|value| value.to_str().ok())
            .and_then(|value| TraceParent::parse(value).ok());
        if let Some(traceparent) = traceparent {
            ctx = ctx.with_traceparent(traceparent);
        }
        Ok(Self(ctx))
    }
}

/// The `Idempotency-Key` header, required by order creation.
#[derive(Debug, Clone)]
pub struct IdempotencyKeyHeader(pub IdempotencyKey);

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKeyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all("idempotency-key").iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return Err(ApiError::IdempotencyKeyRequired(
                "send exactly one Idempotency-Key header",
            ));
        };
        value
            .to_str()
            .ok()
            .and_then(|value| IdempotencyKey::parse(value).ok())
            .map(Self)
            .ok_or(ApiError::IdempotencyKeyRequired(
                "the Idempotency-Key must be 1 to 255 visible ASCII characters",
            ))
    }
}
