//! `GET /m/v1/openapi.json`: the OpenAPI 3.1 document of the mobile endpoints, so an iOS or
//! Android team generates its models and calls instead of writing them from the README.
//!
//! The paths come from the handlers' `#[utoipa::path]` attributes (listed in `crate::routes`,
//! next to the routes) and the schemas from the types the handlers serialize
//! (`ToSchema`/`IntoParams` derives next to each type), so the document cannot drift from the
//! code; nothing here is hand-written JSON. This module holds what the screens' attributes name
//! (the problem response, the schemas of `shared_clients` types) and what every operation
//! shares, added by [`Common`]:
//! - the `bearer` security scheme (the end-user JWT as `Authorization: Bearer <token>`);
//! - `X-Request-Id` on every request (optional) and every response;
//! - on every screen answer: `Cache-Control`, `Vary` and `ETag`; on every `GET` of a screen,
//!   `If-None-Match` and its `304`;
//! - each error status as an `application/problem+json` response whose description lists the
//!   codes it comes with (from [`PROBLEM_CODES`]), `WWW-Authenticate` on 401, `Retry-After` on
//!   429 and 503, and a `default` problem for the rest (404 `route_not_found`, 405, 500);
//! - the description: authentication, payload rules, degrading, caching and the table of codes.
//!
//! The schemas of types from `shared_clients` (`OrderStatus`, `Address`) are described by
//! types of this module ([`OrderStatusDoc`], [`AddressDoc`]), and tests check they serialize
//! the same way.

use std::fmt::Write as _;

use utoipa::{
    Modify, ToResponse, ToSchema,
    openapi::{
        ContentBuilder, OpenApi as Document, Ref, RefOr, Required, ResponseBuilder,
        header::{Header, HeaderBuilder},
        path::{Operation, ParameterBuilder, ParameterIn},
        response::Response,
        schema::{ObjectBuilder, Type},
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use crate::error::{PROBLEM_CODES, TYPE_PREFIX};

/// An RFC 9457 problem document: the body of every error.
#[derive(Debug, ToSchema)]
#[schema(as = Problem)]
#[expect(
    dead_code,
    reason = "documentation only; problems are built as server_kit::Problem by ApiError"
)]
pub struct ProblemDoc {
    /// `urn:bff-mobile:problem:<code>` (the live streams' limit refusal has a type of its own,
    /// shared by every gateway).
    #[schema(rename = "type")]
    r#type: String,
    /// A short summary of the problem, for people; the same for every occurrence of a `code`.
    title: String,
    /// The HTTP status code.
    status: u16,
    /// What went wrong this time, safe to show; names the parameter or field of a 400.
    detail: Option<String>,
    /// What to branch on: one of the codes in the API description (listed with each error
    /// response too).
    code: String,
    /// `items_unavailable`: each product that cannot be ordered and why.
    items: Option<Vec<UnavailableDoc>>,
    /// `TOO_MANY_SUBSCRIPTIONS`: which limit refused (`streams`, `per_address`, `per_user`,
    /// `subscriptions`).
    limit: Option<String>,
}

/// A product of a checkout that cannot be ordered.
#[derive(Debug, ToSchema)]
#[schema(as = UnavailableItem)]
#[expect(
    dead_code,
    reason = "documentation only; see shared_clients::UnavailableProduct"
)]
pub struct UnavailableDoc {
    /// The product.
    product_id: String,
    /// `not_found`, `out_of_stock` or `insufficient_stock`.
    #[schema(pattern = "^(not_found|out_of_stock|insufficient_stock)$")]
    reason: String,
    /// Units available, when the product exists.
    available: Option<u64>,
}

/// Where an order is in its life cycle (`shared_clients::OrderStatus`).
#[derive(Debug, ToSchema)]
#[schema(as = OrderStatus)]
#[serde(rename_all = "snake_case")]
#[expect(
    dead_code,
    reason = "documentation only; see shared_clients::OrderStatus"
)]
pub enum OrderStatusDoc {
    /// Received, not yet confirmed.
    Pending,
    /// Accepted for fulfilment.
    Confirmed,
    /// Handed to the carrier.
    Shipped,
    /// Arrived.
    Delivered,
    /// Will not be fulfilled.
    Cancelled,
}

/// A shipping address; every part is optional (`shared_clients::Address`).
#[derive(Debug, ToSchema)]
#[schema(as = Address)]
#[expect(dead_code, reason = "documentation only; see shared_clients::Address")]
pub struct AddressDoc {
    /// Recipient name, at most 200 characters.
    name: Option<String>,
    /// Street and number, at most 200 characters.
    line1: Option<String>,
    /// City, at most 200 characters.
    city: Option<String>,
    /// Postal code, at most 200 characters.
    postal_code: Option<String>,
    /// ISO-3166 alpha-2 country code, e.g. `DE`.
    #[schema(pattern = "^[A-Z]{2}$")]
    country: Option<String>,
}

/// The shared error response: `application/problem+json` with a [`ProblemDoc`].
#[derive(Debug)]
pub struct ProblemResponse;

impl<'s> ToResponse<'s> for ProblemResponse {
    fn response() -> (&'s str, RefOr<Response>) {
        (
            "Problem",
            RefOr::T(problem_response("A problem; branch on its `code`")),
        )
    }
}

/// A problem response described by `description`.
fn problem_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            server_kit::problem::PROBLEM_JSON,
            ContentBuilder::new()
                .schema(Some(RefOr::Ref(Ref::from_schema_name("Problem"))))
                .build(),
        )
        .header("X-Request-Id", text(REQUEST_ID))
        .build()
}

/// The description of `X-Request-Id`.
const REQUEST_ID: &str = "The request's id: the client's `X-Request-Id` when it is 1 to 128 characters of `[A-Za-z0-9._:-]`, else a new one. Quote it when reporting a problem.";

/// Fills in what every operation shares.
#[derive(Debug)]
pub struct Common;

impl Modify for Common {
    fn modify(&self, openapi: &mut Document) {
        openapi.info.description = Some(description());
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "The end-user token, as `Authorization: Bearer <JWT>` (the same token as the web gateway's; `sub` is the user id). Missing on a signed-in endpoint: 401 `missing_token`; bad: 401 `invalid_token`; expired: 401 `token_expired`. On the home screen it is optional, but a bad one is still a 401.",
                    ))
                    .build(),
            ),
        );
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                (true, &mut item.get),
                (false, &mut item.post),
                (false, &mut item.put),
                (false, &mut item.delete),
            ];
            for (is_get, operation) in operations {
                if let Some(operation) = operation {
                    decorate(operation, is_get);
                }
            }
        }
    }
}

/// A string header with a description.
fn text(description: &str) -> Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String))
        .description(Some(description))
        .build()
}

/// Whether a response is a screen: JSON (not the event stream, not a problem).
fn is_json(response: &Response) -> bool {
    response.content.contains_key("application/json")
}

/// Adds the request id, the caching headers of screens, `If-None-Match` and 304 to `GET`s of
/// screens, and the problem responses with their codes.
fn decorate(operation: &mut Operation, is_get: bool) {
    let parameters = operation.parameters.get_or_insert_with(Vec::new);
    parameters.push(
        ParameterBuilder::new()
            .name("X-Request-Id")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "An id for this request, echoed on the response and in the gateway's logs; 1 to 128 characters of `[A-Za-z0-9._:-]` (anything else is replaced by a new id).",
            ))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[A-Za-z0-9._:-]{1,128}$")),
            ))
            .build(),
    );
    let responses = &mut operation.responses.responses;
    let screen_get = is_get
        && responses
            .get("200")
            .is_some_and(|response| matches!(response, RefOr::T(response) if is_json(response)));
    if screen_get {
        parameters.push(
            ParameterBuilder::new()
                .name("If-None-Match")
                .parameter_in(ParameterIn::Header)
                .required(Required::False)
                .description(Some(
                    "The `ETag` of a copy the app holds (a list, `W/` tags and `*` are accepted): when it still matches, the answer is 304 with no body.",
                ))
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .build(),
        );
        responses.insert(
            "304".into(),
            RefOr::T(
                ResponseBuilder::new()
                    .description(
                        "The copy named in `If-None-Match` is still current: no body, and the same `ETag`, `Cache-Control` and `Vary`",
                    )
                    .header("ETag", text(ETAG))
                    .header("Cache-Control", text(CACHE_CONTROL))
                    .header("Vary", text(VARY))
                    .header("X-Request-Id", text(REQUEST_ID))
                    .build(),
            ),
        );
    }
    let statuses: Vec<String> = responses.keys().cloned().collect();
    for status in statuses {
        let Some(response) = responses.get_mut(&status) else {
            continue;
        };
        if let Ok(code) = status.parse::<u16>()
            && code >= 400
        {
            *response = RefOr::T(error_response(code));
            continue;
        }
        let RefOr::T(response) = response else {
            continue;
        };
        response
            .headers
            .insert("X-Request-Id".into(), text(REQUEST_ID));
        if status.starts_with('2') && is_json(response) {
            response.headers.insert("ETag".into(), text(ETAG));
            response
                .headers
                .insert("Cache-Control".into(), text(CACHE_CONTROL));
            response.headers.insert("Vary".into(), text(VARY));
        }
    }
    responses.insert(
        "default".into(),
        RefOr::Ref(Ref::from_response_name("Problem")),
    );
}

/// The description of `ETag`.
const ETAG: &str = "A strong tag of the answer's JSON bytes, made weak (`W/\"…\"`) on a compressed answer; send it back in `If-None-Match` to revalidate (either form matches).";

/// The description of `Cache-Control`.
const CACHE_CONTROL: &str = "`public, max-age=<gateway.catalog_max_age>` for catalog screens (home when anonymous, product list, product detail); `private, no-store` for anything with user data; `no-cache` for a catalog screen with `degraded` or `stale` parts.";

/// The description of `Vary`.
const VARY: &str = "`Accept-Encoding`, plus the request headers the screen read (`Authorization` on home, `DPR, Width` on screens with images).";

/// The problem response of `status`, its description listing the codes it comes with, with the
/// headers of that status.
fn error_response(status: u16) -> Response {
    let mut description = String::from("A problem; `code` is one of:");
    for listed in PROBLEM_CODES
        .iter()
        .filter(|listed| listed.status == status)
    {
        // Writing to a String cannot fail.
        let _ = write!(description, "\n- `{}`: {}", listed.code, listed.when);
    }
    let mut response = problem_response(&description);
    match status {
        401 => {
            response.headers.insert(
                "WWW-Authenticate".into(),
                text("`Bearer` (no token) or `Bearer error=\"invalid_token\"` (RFC 6750)"),
            );
        }
        429 | 503 => {
            response.headers.insert(
                "Retry-After".into(),
                text("Seconds to wait before retrying"),
            );
        }
        _ => {}
    }
    response
}

/// The description of the document: authentication, payloads, degrading, caching and every
/// problem code.
fn description() -> String {
    let mut text = String::from(
        "One request per screen: the smallest JSON that draws it, nothing left to compute on the phone, cheap revalidation.\n\n\
         **Authentication**: signed-in endpoints need `Authorization: Bearer <JWT>` (the `bearer` scheme); the home screen takes it optionally.\n\n\
         **Payloads**: only the fields a screen draws. No `null`s, no empty arrays or objects, no field equal to its default: an absent field means its default (`degraded`/`stale`: nothing missing or old; `count`/`cart_count`: 0; `stock`: in stock; `was`: not on sale; `next`: last page; `items`/`lines`/`orders`: none; `cart_cleared`: true). Prices are integer minor units with a ready-to-show `…_text`; `currency` is stated once per payload, and an amount in another currency carries its own. One image URL per product, the rendition that fits `?w=` × `DPR`, else `Width`, else the screen's default slot.\n\n\
         **Degraded screens**: a screen never fails because an optional part failed. Parts that could not be loaded are named in `degraded`; parts shown from an older copy because a service failed are named in `stale` (each screen's schema lists the names it may use). Either makes a catalog screen `Cache-Control: no-cache`.\n\n\
         **Caching**: every screen answer has an `ETag` (weak, `W/\"…\"`, when the answer is compressed); `If-None-Match` with a matching tag, in either form, gets 304 with no body. `Vary` always names `Accept-Encoding`. Answers are compressed (`br`, `gzip`) as `Accept-Encoding` negotiates.\n\n\
         **Errors** are `application/problem+json` (RFC 9457) with a stable `code` (and `type` ",
    );
    text.push_str(TYPE_PREFIX);
    text.push_str(
        "<code>`); branch on `code`, never on `title` or `detail`. Codes:\n\n\
         | code | status | when |\n|---|---|---|\n",
    );
    for listed in PROBLEM_CODES {
        // Writing to a String cannot fail.
        let _ = writeln!(
            text,
            "| `{}` | {} | {} |",
            listed.code, listed.status, listed.when
        );
    }
    text
}

/// The document served at `/m/v1/openapi.json`: `derived` (what the handlers and types derive,
/// `crate::routes::ApiDoc`) completed with what every operation shares ([`Common`]), as JSON.
pub fn document(mut derived: Document) -> serde_json::Value {
    Common.modify(&mut derived);
    // An `OpenApi` value is plain data (strings, maps, numbers): serializing it cannot fail.
    let mut document = serde_json::to_value(derived).unwrap_or_default();
    forbid_null(&mut document);
    document
}

/// The payload rule "no `null`s", in the schemas: every `Option` field of this API is left out
/// when `None` (`skip_serializing_if`), never sent as `null`, but the derived schemas allow
/// `null` for each. Removes `null` from every `type` list and every `oneOf`, so a `null` in an
/// answer fails validation and generated models need not handle it.
fn forbid_null(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(object) => {
            if let Some(Value::Array(types)) = object.get_mut("type") {
                types.retain(|kind| kind != "null");
                if let [only] = types.as_slice() {
                    let only = only.clone();
                    object.insert("type".into(), only);
                }
            }
            if let Some(Value::Array(alternatives)) = object.get_mut("oneOf") {
                alternatives.retain(|alternative| {
                    alternative.get("type").is_none_or(|kind| kind != "null")
                });
                if let [only] = alternatives.as_slice() {
                    let Value::Object(only) = only.clone() else {
                        return;
                    };
                    object.remove("oneOf");
                    for (key, part) in only {
                        object.entry(key).or_insert(part);
                    }
                }
            }
            object.values_mut().for_each(forbid_null);
        }
        Value::Array(items) => items.iter_mut().for_each(forbid_null),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};
    use shared_clients::{Address, OrderStatus};
    use utoipa::PartialSchema;

    use super::*;

    /// The schema of `T`, as JSON.
    fn schema<T: PartialSchema>() -> Value {
        serde_json::to_value(T::schema()).expect("serializes")
    }

    #[test]
    fn no_schema_allows_null() {
        let mut problem = schema::<ProblemDoc>();
        assert!(
            problem.to_string().contains(r#""null""#),
            "derived with nulls"
        );
        forbid_null(&mut problem);
        assert!(!problem.to_string().contains(r#""null""#), "{problem}");
        assert_eq!(problem["properties"]["detail"]["type"], "string");
    }

    #[test]
    fn the_documented_order_statuses_are_those_the_screens_serialize() {
        let serialized: Vec<Value> = [
            OrderStatus::Pending,
            OrderStatus::Confirmed,
            OrderStatus::Shipped,
            OrderStatus::Delivered,
            OrderStatus::Cancelled,
        ]
        .iter()
        .map(|status| serde_json::to_value(status).expect("serializes"))
        .collect();
        assert_eq!(schema::<OrderStatusDoc>()["enum"], json!(serialized));
    }

    #[test]
    fn the_documented_address_has_the_fields_of_the_address_read() {
        let documented = schema::<AddressDoc>();
        let mut documented: Vec<&String> = documented["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .collect();
        documented.sort();
        let full = Address {
            name: Some("a".into()),
            line1: Some("b".into()),
            city: Some("c".into()),
            postal_code: Some("d".into()),
            country: Some("DE".into()),
        };
        let serialized = serde_json::to_value(full).expect("serializes");
        let mut read: Vec<&String> = serialized.as_object().expect("object").keys().collect();
        read.sort();
        assert_eq!(documented, read);
    }
}
