//! Extractors that reject in the API's own problem format instead of axum's plain text.
//!
//! [`Json`] (bodies) and [`Ctx`] (the [`RequestContext`](shared_clients::RequestContext)
//! propagated downstream) are shared by every gateway (`server_kit::extract`, through
//! [`ApiState`] below); their rejections become `invalid-body`, `unsupported-media-type` and
//! `payload-too-large` problems. [`Query`] and [`Path`] wrap axum's extractors and turn every
//! rejection into an `invalid-request` [`ApiError`], and [`IdempotencyKeyHeader`] reads the
//! `Idempotency-Key` of order creation.

use std::time::Duration;

use axum::{extract::FromRequestParts, http::request::Parts};
use serde::de::DeserializeOwned;
use server_kit::extract::{ApiState, BodyRejection};
pub use server_kit::extract::{Ctx, Json};
use shared_clients::IdempotencyKey;

use crate::{error::ApiError, state::AppState};

impl ApiState for AppState {
    type Rejection = ApiError;

    /// `downstream.deadline`.
    fn request_deadline(&self) -> Duration {
        self.downstream.deadline()
    }
}

impl From<BodyRejection> for ApiError {
    fn from(rejection: BodyRejection) -> Self {
        match rejection {
            BodyRejection::UnsupportedMediaType => Self::UnsupportedMediaType,
            BodyRejection::TooLarge => Self::PayloadTooLarge,
            // Syntax and data errors: the text names the position or the field path and what
            // was expected; it holds nothing but what the client itself sent.
            BodyRejection::Invalid(detail) => Self::InvalidBody(detail),
        }
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
