//! What both OpenAPI documents share: the problem schema and response, the API-key security
//! scheme, the quota (and for `/v1` deprecation) headers on every success, and the table of problem
//! types in the description. The paths and schemas come from the handlers and types of
//! [`crate::v1`] and [`crate::v2`], so the documents cannot drift from the code.

use std::fmt::Write;

use utoipa::{
    Modify, ToResponse, ToSchema,
    openapi::{
        ContentBuilder, Deprecated, OpenApi, Ref, RefOr, ResponseBuilder,
        header::{Header, HeaderBuilder},
        path::Operation,
        response::Response,
        schema::{ObjectBuilder, Type},
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
    },
};

use crate::{error::PROBLEM_TYPES, version::Version};

/// An RFC 9457 problem document: the body of every error.
#[derive(Debug, ToSchema)]
#[schema(as = Problem)]
#[expect(
    dead_code,
    reason = "documentation only; problems are built as server_kit::Problem"
)]
pub struct ProblemDoc {
    /// The problem type: `/vN/problems/<name>`, one of the types listed in the API description
    /// (or `about:blank` for errors outside any version). Branch on this.
    #[schema(rename = "type")]
    r#type: String,
    /// A short summary of the problem type.
    title: String,
    /// The HTTP status code.
    status: u16,
    /// What went wrong this time, for people.
    detail: Option<String>,
    /// `unorderable-products`: each product that cannot be ordered and why.
    products: Option<Vec<UnorderableDoc>>,
    /// `forbidden`: the scope the operation needs.
    required_scope: Option<String>,
    /// `service-unavailable`: which service behind the gateway failed.
    service: Option<String>,
}

/// A product of an order that cannot be ordered.
#[derive(Debug, ToSchema)]
#[schema(as = Unorderable)]
#[expect(
    dead_code,
    reason = "documentation only; see crate::error::Unorderable"
)]
pub struct UnorderableDoc {
    /// The product id of the line.
    product_id: String,
    /// `unknown`, `out_of_stock` or `insufficient_stock`.
    reason: String,
    /// Units available, when the product exists.
    available: Option<u64>,
}

/// The shared error response: `application/problem+json` with a [`ProblemDoc`].
#[derive(Debug)]
pub struct ProblemResponse;

impl<'s> utoipa::ToResponse<'s> for ProblemResponse {
    fn response() -> (&'s str, RefOr<Response>) {
        let response = ResponseBuilder::new()
            .description("An RFC 9457 problem; its `type` is one of the problem types listed in the API description")
            .content(
                server_kit::problem::PROBLEM_JSON,
                ContentBuilder::new()
                    .schema(Some(RefOr::Ref(Ref::from_schema_name("Problem"))))
                    .build(),
            )
            .build();
        ("Problem", RefOr::T(response))
    }
}

/// Fills in what every operation of a version shares.
#[derive(Debug)]
pub struct Common(pub Version);

impl Modify for Common {
    fn modify(&self, openapi: &mut OpenApi) {
        let version = self.0;
        openapi.info.description = Some(description(version));
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "Your API key, as `Authorization: Bearer <key>`. A missing or unknown key is a 401; a key without the operation's scope is a 403.",
                    ))
                    .build(),
            ),
        );
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.patch,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                decorate(operation, version);
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

/// Adds the quota headers to every success and to 429, `Retry-After` to 429 and 503,
/// `WWW-Authenticate` to 401, a `default` problem response for the rest (405, 413, 500, 502), and
/// in `/v1` the deprecation headers and flag.
fn decorate(operation: &mut Operation, version: Version) {
    if version == Version::V1 {
        operation.deprecated = Some(Deprecated::True);
    }
    let responses = &mut operation.responses.responses;
    responses.insert(
        "default".into(),
        RefOr::Ref(Ref::from_response_name("Problem")),
    );
    for (status, response) in responses.iter_mut() {
        let extra: &[(&str, &str)] = match status.as_str() {
            "401" => &[(
                "WWW-Authenticate",
                "`Bearer realm=\"partner-api\"`: how to authenticate",
            )],
            "429" => &[(
                "Retry-After",
                "Seconds until the quota allows another request",
            )],
            "503" => &[("Retry-After", "Seconds to wait before retrying")],
            _ => &[],
        };
        if !extra.is_empty() {
            let (_, RefOr::T(mut inline)) = ProblemResponse::response() else {
                continue;
            };
            for (name, description) in extra {
                inline.headers.insert((*name).into(), text(description));
            }
            *response = RefOr::T(inline);
        }
        let RefOr::T(response) = response else {
            continue;
        };
        if !status.starts_with('2') && status != "429" {
            continue;
        }
        response.headers.insert(
            "RateLimit-Policy".into(),
            text("The key's quota, e.g. `\"default\";q=20;w=2`: `q` requests per `w` seconds (a token bucket of `q` refilled over `w` seconds)"),
        );
        response.headers.insert(
            "RateLimit".into(),
            text("What is left, e.g. `\"default\";r=7;t=1`: `r` requests remain; the quota is whole again in `t` seconds"),
        );
        if version == Version::V1 {
            response.headers.insert(
                "Deprecation".into(),
                text("When /v1 was deprecated (RFC 9745), e.g. `@1767225600`"),
            );
            response.headers.insert(
                "Sunset".into(),
                text("When /v1 stops being served (RFC 8594), an HTTP-date"),
            );
        }
    }
}

/// The description of a version's document: authentication, quotas, paging and every problem
/// type.
fn description(version: Version) -> String {
    let mut text = String::new();
    text.push_str(match version {
        Version::V1 => "**Deprecated**: use `/v2`. Every `/v1` response carries `Deprecation` (RFC 9745), `Sunset` (RFC 8594) and `Link: </v2/…>; rel=\"successor-version\"`.\n\nThe original shape: prices are decimal strings with a separate currency, availability is a boolean.\n\n",
        Version::V2 => "The current shape: money as integer minor units with a currency, availability with a quantity, images, brand, category and attributes.\n\n",
    });
    text.push_str(
        "Authenticate with `Authorization: Bearer <key>`. Each key has a quota (a token bucket) described by the `RateLimit-Policy` and `RateLimit` headers (draft-ietf-httpapi-ratelimit-headers); over it, 429 with `Retry-After`. Unknown keys are limited per client address: past a small budget, every request from that address gets 429 with `Retry-After` for a while, whatever its key.\n\n\
         Lists are paged with opaque cursors: pass `next_cursor` back as `cursor` with the same filters, or follow `Link: <…>; rel=\"next\"`.\n\n\
         Errors are `application/problem+json` (RFC 9457). Problem types:\n\n\
         | type | status | title | meaning |\n|---|---|---|---|\n",
    );
    for kind in PROBLEM_TYPES {
        // Writing to a String cannot fail.
        let _ = writeln!(
            text,
            "| `{}` | {} | {} | {} |",
            kind.uri(version),
            kind.status,
            kind.title,
            kind.description
        );
    }
    text
}

/// `derived` (the document a version derives from its handlers and types, e.g.
/// `v2::ApiDoc::openapi()`) completed with what every document of `version` shares ([`Common`]),
/// as JSON.
pub fn document(version: Version, mut derived: OpenApi) -> serde_json::Value {
    Common(version).modify(&mut derived);
    serde_json::to_value(derived).unwrap_or_default()
}
