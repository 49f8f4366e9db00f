//! The middleware in front of every API route's handlers: who may make a request, and how often.
//!
//! [`authenticate`] wraps each route's handlers (not the route's method fallback, so a method a
//! route does not have is 405 with `Allow`, key or no key). In order:
//! 1. a client address that sent too many unknown keys is refused with 429 before this
//!    request's key is looked at ([`crate::auth_throttle`]; counted in
//!    `bff_partner_auth_throttled_total`);
//! 2. a missing or unknown key is a 401 ([`crate::auth::ApiKeys::authenticate`]); an unknown one
//!    is charged to the address and counted in `bff_partner_auth_failures_total`;
//! 3. the key's quota ([`crate::rate_limit`]) is a 429 once spent; either way the response
//!    carries `RateLimit-Policy` and `RateLimit`, and the request is counted per partner id
//!    (`bff_partner_requests_total`, `bff_partner_rate_limited_total`).
//!
//! The authenticated [`Partner`](crate::auth::Partner) is left in the request's extensions, for
//! the [`Authorized`](crate::auth::Authorized) extractor of each handler.

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use server_kit::metrics::Metrics;

use crate::{error::ApiError, rate_limit, state::AppState};

/// Shows the series of this module in `metrics` from the start, at zero: the requests and 429s
/// of each configured partner (`partners`) and the unlabelled auth failures, so that the
/// dashboard's panels and any rule on them read series that exist before the first request.
pub fn show_from_start<'a>(metrics: &Metrics, partners: impl IntoIterator<Item = &'a str>) {
    let partners: Vec<String> = partners
        .into_iter()
        .map(|partner| metrics.bounded("partner", partner))
        .collect();
    metrics.record(|| {
        for partner in partners {
            metrics::counter!("bff_partner_requests_total", "partner" => partner.clone())
                .increment(0);
            metrics::counter!("bff_partner_rate_limited_total", "partner" => partner).increment(0);
        }
        metrics::counter!("bff_partner_auth_throttled_total").increment(0);
        metrics::counter!("bff_partner_auth_failures_total").increment(0);
    });
}

/// Counts an authenticated request of `partner` (never per key: partner ids are configured, so
/// the label is bounded), and whether its quota refused it with 429.
fn record(metrics: &Metrics, partner: &str, allowed: bool) {
    let partner = metrics.bounded("partner", partner);
    metrics.record(|| {
        metrics::counter!("bff_partner_requests_total", "partner" => partner.clone()).increment(1);
        if !allowed {
            metrics::counter!("bff_partner_rate_limited_total", "partner" => partner).increment(1);
        }
    });
}

/// Counts a request with an unknown key (`throttled` false), or one refused because its address
/// sent too many (`throttled` true). No label: addresses are unbounded and keys secret.
fn record_auth_failure(metrics: &Metrics, throttled: bool) {
    metrics.record(|| {
        if throttled {
            metrics::counter!("bff_partner_auth_throttled_total").increment(1);
        } else {
            metrics::counter!("bff_partner_auth_failures_total").increment(1);
        }
    });
}

/// Refuses a client address that sent too many unknown keys (before looking at this request's
/// key), authenticates the key (charging the address for an unknown one), takes a token from
/// the key's bucket, and adds the quota headers.
pub async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let client = state.auth_throttle.key(&parts);
    if let Err(retry_after) = state.auth_throttle.check(client) {
        if let Some(metrics) = parts.extensions.get::<Metrics>() {
            record_auth_failure(metrics, true);
        }
        return ApiError::AuthThrottled { retry_after }.into_response();
    }
    let partner = match state.keys.authenticate(&parts) {
        Ok(partner) => partner,
        Err(error) => {
            if matches!(error, ApiError::UnknownKey) {
                state.auth_throttle.charge(client);
                if let Some(metrics) = parts.extensions.get::<Metrics>() {
                    record_auth_failure(metrics, false);
                }
            }
            return error.into_response();
        }
    };
    let quota = partner.rate_limit;
    let decision = state.limiter.acquire(&partner.key_id, quota).await;
    if let Some(metrics) = parts.extensions.get::<Metrics>() {
        record(metrics, partner.id.as_str(), decision.allowed);
    }
    let mut response = if decision.allowed {
        parts.extensions.insert(partner);
        next.run(Request::from_parts(parts, body)).await
    } else {
        ApiError::RateLimited {
            retry_after: decision.retry_after,
        }
        .into_response()
    };
    rate_limit::add_headers(response.headers_mut(), quota, &decision);
    response
}
