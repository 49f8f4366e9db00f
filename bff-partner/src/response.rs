//! Building the answers of both versions' handlers: JSON bodies with `Age` when they come from a
//! cache, pages with `Link: rel="next"`, `201 Created` with `Location`, product bodies serialized
//! once per product and version with their `ETag` (and `304 Not Modified` for a matching
//! `If-None-Match`), and `Cache-Control: private, no-store` for the order routes.

use std::{convert::Infallible, sync::Arc};

use axum::{
    body::{Body, Bytes},
    extract::FromRequestParts,
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use server_kit::http::{entity_tag, etag_matches};
use shared_clients::{Creation, Derived, Product, ProductId, Served};

use crate::{error::ApiError, params::next_page_query, version::Version};

/// A 200 with a JSON body.
pub fn json<T: Serialize>(body: &T) -> Response {
    axum::Json(body).into_response()
}

/// A 200 with a JSON body made from a possibly cached value: `Age` states how many seconds ago
/// the value was fetched when it did not come from the service for this request.
pub fn json_served<V, T: Serialize>(served: &Served<V>, body: &T) -> Response {
    let mut response = json(body);
    with_age(&mut response, served);
    response
}

/// Adds `Age` when `served` did not come from the service for this request.
fn with_age<V>(response: &mut Response, served: &Served<V>) {
    let age = served.age();
    if served.is_stale() || !age.is_zero() {
        response
            .headers_mut()
            .insert(header::AGE, HeaderValue::from(age.as_secs()));
    }
}

/// A product body as one version shapes it, serialized once: its bytes and their strong entity
/// tag, kept together in [`Services::product_bodies`](crate::state::Services::product_bodies)
/// beside the product value they were made from, and dropped with it. Cheap to clone (both are
/// shared bytes).
#[derive(Debug, Clone)]
pub struct ProductBody {
    /// The JSON bytes, the same for every partner (public catalog data).
    bytes: Bytes,
    /// `ETag` of the bytes, computed once (the shared compression sends it weak, `W/"…"`, on a
    /// compressed answer).
    etag: HeaderValue,
}

impl ProductBody {
    /// The body of `bytes`, tagged.
    pub fn new(bytes: Vec<u8>) -> Self {
        let etag = entity_tag(&bytes);
        Self {
            bytes: Bytes::from(bytes),
            etag,
        }
    }
}

/// The request's `If-None-Match` lines, copied alone (none: nothing allocated).
#[derive(Debug, Default)]
pub struct IfNoneMatch(Vec<HeaderValue>);

impl IfNoneMatch {
    /// Whether `tag` is named (weak comparison, or `*`): answer 304.
    fn matches(&self, tag: &HeaderValue) -> bool {
        !self.0.is_empty() && etag_matches(&self.0, tag)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IfNoneMatch {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(Self(
            parts
                .headers
                .get_all(header::IF_NONE_MATCH)
                .iter()
                .cloned()
                .collect(),
        ))
    }
}

/// A product as `version` shapes it: 200 with a JSON body, its `ETag`, and `Age` as
/// [`json_served`] says; `304 Not Modified` without a body when `if_none_match` names the tag.
///
/// The body and its tag are made once per product value and version, then answered from
/// `bodies` ([`Services::product_bodies`](crate::state::Services::product_bodies)) for as long as the
/// catalog cache serves that same value: a hit serializes and hashes nothing. `serialize` shapes
/// and serializes the product, e.g. `|p| serde_json::to_vec(&v2::Product::from(p))`.
pub async fn product_served(
    bodies: &Derived<(Version, ProductId), Product, ProductBody>,
    version: Version,
    id: ProductId,
    product: &Served<Arc<Product>>,
    if_none_match: &IfNoneMatch,
    serialize: impl FnOnce(&Product) -> serde_json::Result<Vec<u8>>,
) -> Result<Response, ApiError> {
    let body = bodies
        .get_or_derive((version, id), product, |product| {
            serialize(product)
                .map(ProductBody::new)
                .map_err(|error| ApiError::Internal(error.to_string()))
        })
        .await?;
    let mut response = if if_none_match.matches(&body.etag) {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        let mut response = Response::new(Body::from(body.bytes));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    };
    response.headers_mut().insert(header::ETAG, body.etag);
    with_age(&mut response, product);
    Ok(response)
}

/// A page: 200 with a JSON body and, when there is a next page, `Link: <…>; rel="next"` to it.
/// `query` is the request's own (valid) filters, which the next page repeats.
pub fn page<T: Serialize>(
    version: Version,
    resource: &str,
    query: &[(&str, Option<String>)],
    next_cursor: Option<&str>,
    body: &T,
) -> Response {
    let mut response = json(body);
    if let Some(cursor) = next_cursor {
        let link = format!(
            "</{}/{resource}?{}>; rel=\"next\"",
            version.as_str(),
            next_page_query(query, cursor)
        );
        if let Ok(link) = HeaderValue::from_str(&link) {
            response.headers_mut().append(header::LINK, link);
        }
    }
    response
}

/// The answer to an order creation: 201 with `Location` for a new order, 200 for a replay.
pub fn created<T: Serialize>(
    version: Version,
    creation: Creation,
    order_id: &str,
    body: &T,
) -> Response {
    let mut response = json(body);
    if creation == Creation::Created {
        *response.status_mut() = StatusCode::CREATED;
        let location = format!("/{}/orders/{order_id}", version.as_str());
        if let Ok(location) = HeaderValue::from_str(&location) {
            response.headers_mut().insert(header::LOCATION, location);
        }
    }
    response
}

/// Marks a response as private to one partner and not to be stored by any cache.
pub async fn private_no_store(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-store"),
    );
    response
}
