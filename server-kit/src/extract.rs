//! Extractors every gateway's handlers use, written once: [`Ctx`] (the downstream context of a
//! request) and [`Json`] (a JSON body), plus [`request_context`] for handlers that read headers
//! themselves.
//!
//! They are generic over the gateway through its state ([`ApiState`]): the state says how long a
//! request's downstream calls may take and which error type rejections become, so a body that is
//! not JSON is refused in each gateway's own problem format while the classification
//! ([`BodyRejection`]) is made here, once.
//!
//! Numbers: JSON has one number type, and a JSON Schema `integer` includes `47.0`. A body whose
//! integer fields are written with a zero fraction (`{"quantity": 47.0}`) is accepted as if they
//! were written `47`; `47.5` is still refused. The common case pays nothing for this: the body is
//! first deserialized as it is, and only a body refused for its data is read again with
//! integral numbers normalised.

use std::time::Duration;

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request, rejection::JsonRejection},
    http::{HeaderMap, StatusCode, header, request::Parts},
    response::IntoResponse,
};
use serde::de::DeserializeOwned;
use serde_json::Value;
use shared_clients::{RequestContext, RequestId, TraceParent};

use crate::http::REQUEST_ID;

/// What the extractors of this module need from a gateway's state.
pub trait ApiState: Send + Sync {
    /// The gateway's error type, which rejections of [`Json`] become.
    type Rejection: From<BodyRejection> + IntoResponse;

    /// The time budget of one request's downstream calls, all together, from the moment the
    /// request's context is made.
    fn request_deadline(&self) -> Duration;
}

/// The downstream context of one request: its `X-Request-Id` (the middleware makes sure there is
/// one) and a valid `traceparent` to propagate, and its deadline ([`ApiState::request_deadline`]
/// from now), shared by every downstream call the request makes.
#[derive(Debug, Clone)]
pub struct Ctx(pub RequestContext);

impl<S: ApiState> FromRequestParts<S> for Ctx {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(request_context(
            &parts.headers,
            state.request_deadline(),
        )))
    }
}

/// The downstream context of a request with `headers`, whose downstream calls may take `budget`
/// from now (see [`Ctx`]).
pub fn request_context(headers: &HeaderMap, budget: Duration) -> RequestContext {
    let mut context = RequestContext::new().with_timeout_from_now(budget);
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    if let Some(id) = header(REQUEST_ID.as_str()).and_then(|id| RequestId::parse(id).ok()) {
        context = context.with_request_id(id);
    }
    if let Some(traceparent) = header("traceparent").and_then(|tp| TraceParent::parse(tp).ok()) {
        context = context.with_traceparent(traceparent);
    }
    context
}

/// Why a request body was refused: the one classification of body errors every gateway shares.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyRejection {
    /// The body was not declared `application/json` (or `…+json`): 415.
    #[error("send the body as application/json")]
    UnsupportedMediaType,
    /// The body is larger than `server.max_body_bytes`: 413.
    #[error("the body is larger than the limit")]
    TooLarge,
    /// The body is not JSON, or not JSON of the expected shape: 400. The text names the position
    /// or the field and what was expected; it holds nothing but what the client sent.
    #[error("{0}")]
    Invalid(String),
}

impl BodyRejection {
    /// The HTTP status the rejection calls for.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl From<&JsonRejection> for BodyRejection {
    fn from(rejection: &JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => Self::UnsupportedMediaType,
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::TooLarge,
            other => Self::Invalid(other.body_text()),
        }
    }
}

/// A JSON body of type `T`, refused as a [`BodyRejection`] turned into the gateway's error.
#[derive(Debug, Clone)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: ApiState> FromRequest<S> for Json<T> {
    type Rejection = S::Rejection;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(request.headers()) {
            return Err(BodyRejection::UnsupportedMediaType.into());
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                let rejection = JsonRejection::from(rejection);
                BodyRejection::from(&rejection)
            })?;
        parse(&bytes).map(Self).map_err(Into::into)
    }
}

/// `bytes` as a `T`: as written, or else with integral numbers written with a zero fraction read
/// as integers (see the module documentation).
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, BodyRejection> {
    match axum::Json::<T>::from_bytes(bytes) {
        Ok(axum::Json(value)) => Ok(value),
        Err(rejection @ JsonRejection::JsonDataError(_)) => serde_json::from_slice::<Value>(bytes)
            .ok()
            .and_then(|mut value| integral_numbers_as_integers(&mut value).then_some(value))
            .and_then(|value| T::deserialize(value).ok())
            .ok_or_else(|| BodyRejection::from(&rejection)),
        Err(rejection) => Err(BodyRejection::from(&rejection)),
    }
}

/// Rewrites every number in `value` with a zero fraction that fits an integer (`47.0`) as that
/// integer; returns whether any was rewritten. For gateways that read JSON themselves (GraphQL
/// variables), to accept what [`Json`] accepts.
pub fn integral_numbers_as_integers(value: &mut Value) -> bool {
    match value {
        Value::Number(number) if number.is_f64() => {
            let Some(float) = number.as_f64() else {
                return false;
            };
            if float.fract() != 0.0 || !float.is_finite() {
                return false;
            }
            // Within ±2^63 the conversion is exact for an integral float.
            let integer = if (0.0..18_446_744_073_709_551_616.0).contains(&float) {
                serde_json::Number::from(float as u64)
            } else if (-9_223_372_036_854_775_808.0..0.0).contains(&float) {
                serde_json::Number::from(float as i64)
            } else {
                return false;
            };
            *number = integer;
            true
        }
        Value::Array(items) => items.iter_mut().fold(false, |changed, item| {
            integral_numbers_as_integers(item) | changed
        }),
        Value::Object(fields) => fields.values_mut().fold(false, |changed, item| {
            integral_numbers_as_integers(item) | changed
        }),
        _ => false,
    }
}

/// Whether the request declares a JSON body (`application/json`, or `application/…+json`).
pub fn is_json(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Line {
        quantity: u32,
        ratio: Option<f64>,
        counts: Option<Vec<i64>>,
    }

    #[test]
    fn integers_written_with_a_zero_fraction_are_read_as_integers() {
        let line: Line =
            parse(br#"{"quantity": 47.0, "ratio": 2.0, "counts": [-3.0, 4]}"#).expect("accepted");
        assert_eq!(
            line,
            Line {
                quantity: 47,
                ratio: Some(2.0),
                counts: Some(vec![-3, 4]),
            }
        );
    }

    #[test]
    fn a_fraction_is_still_refused_with_the_original_explanation() {
        let refused = parse::<Line>(br#"{"quantity": 47.5}"#).expect_err("refused");
        let BodyRejection::Invalid(text) = refused else {
            panic!("{refused:?}");
        };
        assert!(text.contains("quantity"), "{text}");
        assert!(text.contains("47.5"), "{text}");
    }

    #[test]
    fn syntax_errors_and_out_of_range_numbers_are_refused() {
        assert!(matches!(
            parse::<Line>(b"{\"quantity\": "),
            Err(BodyRejection::Invalid(_))
        ));
        assert!(matches!(
            parse::<Line>(br#"{"quantity": 1e30}"#),
            Err(BodyRejection::Invalid(_))
        ));
        assert!(matches!(
            parse::<Line>(br#"{"quantity": -1.0}"#),
            Err(BodyRejection::Invalid(_))
        ));
    }

    #[test]
    fn json_media_types_are_recognised() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, value.parse().expect("header value"));
            is_json(&headers)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/jsonp"));
        assert!(!is_json(&HeaderMap::new()));
    }
}
