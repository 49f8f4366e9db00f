//! GraphiQL at `GET /graphql` for browsers, working with no internet access.
//!
//! async-graphql's `GraphiQLSource` loads React and GraphiQL from a CDN, which fails offline. Here
//! the page loads the same assets from the gateway itself: GraphiQL 3 and React 18 (UMD builds,
//! MIT licensed) are vendored under `vendor/graphiql/` and compiled into the binary. Asset URLs
//! carry the GraphiQL version, so they are cached as immutable.
//!
//! Headers typed in the page (a pasted bearer token) are never saved in the browser:
//! `shouldPersistHeaders` is false, which also hides GraphiQL's "Persist headers" setting and,
//! on load, clears headers an earlier page left in `localStorage`. Queries and variables are
//! still kept across reloads.

use axum::{
    extract::Path,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};

/// The vendored GraphiQL version; part of every asset URL.
pub const GRAPHIQL_VERSION: &str = "3.8.3";

/// One vendored file: its name in URLs, media type and bytes.
struct Asset {
    /// File name under `{endpoint}/graphiql/{version}/`.
    name: &'static str,
    /// Its `Content-Type`.
    media_type: &'static str,
    /// The file itself.
    bytes: &'static [u8],
}

/// Every file the page loads.
const ASSETS: &[Asset] = &[
    Asset {
        name: "graphiql.min.css",
        media_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../vendor/graphiql/graphiql.min.css"),
    },
    Asset {
        name: "graphiql.min.js",
        media_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../vendor/graphiql/graphiql.min.js"),
    },
    Asset {
        name: "react.production.min.js",
        media_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../vendor/graphiql/react.production.min.js"),
    },
    Asset {
        name: "react-dom.production.min.js",
        media_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../vendor/graphiql/react-dom.production.min.js"),
    },
];

/// The asset named `name`, as `(media type, bytes)`.
pub fn asset(name: &str) -> Option<(&'static str, &'static [u8])> {
    ASSETS
        .iter()
        .find(|asset| asset.name == name)
        .map(|asset| (asset.media_type, asset.bytes))
}

/// `GET {path}/graphiql/{version}/{name}`: a vendored GraphiQL file, cacheable for good (the
/// version is in the URL).
pub async fn get_asset(Path(name): Path<String>) -> Response {
    match asset(&name) {
        Some((media_type, bytes)) => (
            [
                (header::CONTENT_TYPE, media_type),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            bytes,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// Where the assets of the page for `endpoint` live: `{endpoint}/graphiql/{version}`.
pub fn assets_path(endpoint: &str) -> String {
    format!(
        "{}/graphiql/{GRAPHIQL_VERSION}",
        endpoint.trim_end_matches('/')
    )
}

/// The GraphiQL page for `endpoint` (a path on this gateway).
pub fn page(endpoint: &str) -> String {
    // JSON-encoded for the script, with `<` escaped so it cannot close the script tag; the assets
    // path is made of the same (already validated) endpoint path.
    let script_endpoint = serde_json::to_string(endpoint)
        .unwrap_or_else(|_| "\"/graphql\"".to_owned())
        .replace('<', "\\u003c");
    let assets = html_escape(&assets_path(endpoint));
    PAGE.replace("__ASSETS__", &assets)
        .replace("__ENDPOINT__", &script_endpoint)
}

/// Escapes text for an HTML attribute value.
fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The page template: `__ASSETS__` is the assets path, `__ENDPOINT__` the JSON-encoded endpoint.
const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bff-web · GraphiQL</title>
<link rel="stylesheet" href="__ASSETS__/graphiql.min.css">
<style>body { margin: 0; } #graphiql { height: 100vh; }</style>
</head>
<body>
<div id="graphiql">Loading GraphiQL…</div>
<script src="__ASSETS__/react.production.min.js"></script>
<script src="__ASSETS__/react-dom.production.min.js"></script>
<script src="__ASSETS__/graphiql.min.js"></script>
<script>
const endpoint = __ENDPOINT__;
const fetcher = GraphiQL.createFetcher({ url: new URL(endpoint, window.location.href).toString() });
const defaultQuery = `# Catalog queries work without a token. For viewer { … } and mutations, add a
# header in the Headers tab: {"Authorization": "Bearer <token printed by ./scripts/dev>"}
# (headers are not saved: after a reload, paste it again)
query Home {
  categories { id name parent { id } }
  products(first: 5) {
    nodes { id name brand price { formatted } availability { status } }
    pageInfo { hasNextPage endCursor }
  }
}
`;
ReactDOM.createRoot(document.getElementById("graphiql")).render(
  React.createElement(GraphiQL, {
    fetcher,
    defaultQuery,
    defaultEditorToolsVisibility: true,
    isHeadersEditorEnabled: true,
    shouldPersistHeaders: false,
  }),
);
</script>
</body>
</html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_page_loads_is_served() {
        let page = page("/graphql");
        for asset in ASSETS {
            let url = format!("/graphql/graphiql/{GRAPHIQL_VERSION}/{}", asset.name);
            assert!(page.contains(&url), "{url} is on the page");
            assert!(!asset.bytes.is_empty());
        }
        assert!(asset("nope.js").is_none());
    }

    #[test]
    fn the_endpoint_cannot_break_out_of_the_page() {
        let page = page("/g\"></script><script>alert(1)</script>");
        assert!(!page.contains("</script><script>alert(1)"));
    }
}
