//! Extractors that reject in the mobile problem format, never with axum's `text/plain`:
//! [`Json`] (bodies) and [`Ctx`] (the downstream context of the request: request id, trace,
//! deadline), shared by every gateway (`server_kit::extract`, through [`ApiState`] below),
//! and this gateway's own: [`ApiQuery`] (query strings), [`IdParam`] (path ids),
//! [`CheckoutKey`] (`Idempotency-Key`), [`OptionalBody`] (a JSON body that may be absent),
//! [`User`] and [`MaybeUser`] (the shared bearer-token extractors, rejecting with our problem
//! types), [`SignedIn`] (the same, keeping the token's expiry, for a stream that outlives its
//! request) and [`ImageHint`] (which image width the client wants).

use std::{str::FromStr, time::Duration};

use axum::{
    extract::{FromRequest, FromRequestParts, Path, Query, Request},
    http::request::Parts,
};
use serde::{Deserialize, de::DeserializeOwned};
pub use server_kit::extract::{Ctx, Json};
use server_kit::{
    auth::{AuthenticatedUser, OptionalUser},
    extract::{ApiState, BodyRejection},
};
use shared_clients::{IdempotencyKey, UserId};
use utoipa::{
    IntoParams,
    openapi::{
        Required,
        path::{Parameter, ParameterBuilder, ParameterIn},
        schema::{ObjectBuilder, Type},
    },
};

use crate::{error::ApiError, state::AppState};

/// Largest DPR honoured: no phone needs more, and it bounds the image asked for.
const MAX_DPR: f32 = 4.0;

/// Largest image width (`?w=` in CSS pixels, `Width` in device pixels) accepted.
const MAX_IMAGE_WIDTH: u32 = 4096;

impl ApiState for AppState {
    type Rejection = ApiError;

    /// `gateway.request_deadline`, else `downstream.deadline`.
    fn request_deadline(&self) -> Duration {
        self.config()
            .request_deadline
            .unwrap_or_else(|| self.downstream().deadline())
    }
}

impl From<BodyRejection> for ApiError {
    fn from(rejection: BodyRejection) -> Self {
        match rejection {
            BodyRejection::UnsupportedMediaType => Self::UnsupportedMediaType,
            BodyRejection::TooLarge => Self::BodyTooLarge,
            BodyRejection::Invalid(detail) => Self::InvalidJson(detail),
        }
    }
}

/// A JSON body that may be left out entirely (no `Content-Type`, no bytes): `None` then.
#[derive(Debug, Clone)]
pub struct OptionalBody<T>(pub Option<T>);

impl<T: DeserializeOwned> FromRequest<AppState> for OptionalBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let headers = request.headers();
        let declared_empty = headers
            .get(axum::http::header::CONTENT_LENGTH)
            .is_none_or(|length| length == "0");
        if declared_empty && !headers.contains_key(axum::http::header::CONTENT_TYPE) {
            return Ok(Self(None));
        }
        let Json(value) = Json::from_request(request, state).await?;
        Ok(Self(Some(value)))
    }
}

/// The signed-in user; a missing or bad bearer token is 401 (`missing_token`, `invalid_token`…).
#[derive(Debug, Clone)]
pub struct User(pub UserId);

impl FromRequestParts<AppState> for User {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let user = AuthenticatedUser::from_request_parts(parts, state).await?;
        Ok(Self(user.into_user_id()))
    }
}

/// The signed-in user with what their token allows: a response that outlives its request (the
/// order-tracking stream) ends when the token expires. Rejects like [`User`].
#[derive(Debug, Clone)]
pub struct SignedIn(pub AuthenticatedUser);

impl FromRequestParts<AppState> for SignedIn {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(
            AuthenticatedUser::from_request_parts(parts, state).await?,
        ))
    }
}

/// The user of a screen that anonymous users see too: `None` without an `Authorization`
/// header. A present but bad token is still 401, never silently anonymous.
#[derive(Debug, Clone)]
pub struct MaybeUser(pub Option<UserId>);

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let user = OptionalUser::from_request_parts(parts, state).await?;
        Ok(Self(user.into_inner().map(AuthenticatedUser::into_user_id)))
    }
}

/// A query string; a bad value is 400 naming the parameter. Unknown parameters are ignored (an
/// app may add cache busters or analytics tags).
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| Self(value))
            .map_err(|rejection| ApiError::InvalidQuery(rejection.body_text()))
    }
}

/// The one id in a route's path (a product or order id), checked against the id pattern.
#[derive(Debug, Clone)]
pub struct IdParam<T>(pub T);

impl<S, T> FromRequestParts<S> for IdParam<T>
where
    S: Send + Sync,
    T: FromStr,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::InvalidId)?;
        raw.parse().map(Self).map_err(|_| ApiError::InvalidId)
    }
}

/// The `Idempotency-Key` of a checkout: required, 1 to 255 visible ASCII characters.
#[derive(Debug, Clone)]
pub struct CheckoutKey(pub IdempotencyKey);

impl<S: Send + Sync> FromRequestParts<S> for CheckoutKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get("idempotency-key")
            .ok_or(ApiError::MissingIdempotencyKey)?;
        let text = value
            .to_str()
            .map_err(|_| ApiError::InvalidIdempotencyKey)?;
        IdempotencyKey::parse(text)
            .map(Self)
            .map_err(|_| ApiError::InvalidIdempotencyKey)
    }
}

/// The `Idempotency-Key` header, in the OpenAPI document.
impl IntoParams for CheckoutKey {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            ParameterBuilder::new()
                .name("Idempotency-Key")
                .parameter_in(ParameterIn::Header)
                .required(Required::True)
                .description(Some(
                    "1 to 255 visible ASCII characters, e.g. a UUID; send the same key again to \
                     retry the same checkout (missing: `missing_idempotency_key`, unusable: \
                     `invalid_idempotency_key`).",
                ))
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .pattern(Some("^[!-~]{1,255}$")),
                ))
                .build(),
        ]
    }
}

/// Which image width the client wants, from `?w=` (CSS pixels of the slot), the `DPR` header
/// (device pixels per CSS pixel) and the `Width` header (device pixels of the slot). Responses
/// that use it say `Vary: DPR, Width`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageHint {
    /// `?w=`: the slot's width in CSS pixels, when the app says.
    css_width: Option<u32>,
    /// `DPR`: 1 when absent or unreadable, at most 4.
    dpr: f32,
    /// `Width`: the slot's width in device pixels, when the client sends the hint.
    device_width: Option<u32>,
}

/// The query parameter of [`ImageHint`].
#[derive(Debug, Deserialize)]
struct WidthParam {
    /// The slot's width in CSS pixels.
    w: Option<u32>,
}

impl ImageHint {
    /// The width in device pixels to pick a rendition for: `?w=` × DPR, else `Width`, else the
    /// screen's `default_css_width` × DPR.
    pub fn target(&self, default_css_width: u32) -> u32 {
        let scale = |css: u32| {
            // Bounded: css ≤ 4096 and 1 ≤ dpr ≤ 4, so the cast neither truncates nor wraps.
            (f64::from(css) * f64::from(self.dpr)).ceil() as u32
        };
        match (self.css_width, self.device_width) {
            (Some(css), _) => scale(css),
            (None, Some(device)) => device,
            (None, None) => scale(default_css_width),
        }
    }
}

/// `?w=`, `DPR` and `Width`, in the OpenAPI document.
impl IntoParams for ImageHint {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        let param = |name: &str, at: ParameterIn, description: &str, schema: ObjectBuilder| {
            ParameterBuilder::new()
                .name(name)
                .parameter_in(at)
                .required(Required::False)
                .description(Some(description))
                .schema(Some(schema))
                .build()
        };
        let width = || {
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .minimum(Some(1))
                .maximum(Some(MAX_IMAGE_WIDTH))
        };
        vec![
            param(
                "w",
                ParameterIn::Query,
                "The image slot's width in CSS pixels (scaled by `DPR`); else the `Width` header, \
                 else the screen's default slot.",
                width(),
            ),
            param(
                "DPR",
                ParameterIn::Header,
                "Client hint: device pixels per CSS pixel (1 to 4; an unreadable value is \
                 ignored).",
                ObjectBuilder::new().schema_type(Type::Number),
            ),
            param(
                "Width",
                ParameterIn::Header,
                "Client hint: the image slot's width in device pixels, used when `w` is absent.",
                width(),
            ),
        ]
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ImageHint {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ApiQuery(WidthParam { w }) = ApiQuery::from_request_parts(parts, state).await?;
        if let Some(w) = w
            && !(1..=MAX_IMAGE_WIDTH).contains(&w)
        {
            return Err(ApiError::InvalidQuery(format!(
                "w: must be an integer from 1 to {MAX_IMAGE_WIDTH}"
            )));
        }
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::trim)
        };
        // Client hints are advisory: an unreadable one is ignored, not refused.
        let dpr = header("dpr")
            .and_then(|value| value.parse::<f32>().ok())
            .filter(|dpr| dpr.is_finite() && *dpr > 0.0)
            .map_or(1.0, |dpr| dpr.clamp(1.0, MAX_DPR));
        let device_width = header("width")
            .and_then(|value| value.parse::<u32>().ok())
            .filter(|width| (1..=MAX_IMAGE_WIDTH).contains(width));
        Ok(Self {
            css_width: w,
            dpr,
            device_width,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_width_prefers_w_then_width_then_the_screen_default() {
        let hint = |css_width, dpr, device_width| ImageHint {
            css_width,
            dpr,
            device_width,
        };
        assert_eq!(hint(Some(100), 2.0, Some(900)).target(160), 200);
        assert_eq!(hint(None, 2.0, Some(900)).target(160), 900);
        assert_eq!(hint(None, 3.0, None).target(160), 480);
        assert_eq!(hint(None, 1.0, None).target(160), 160);
    }
}
