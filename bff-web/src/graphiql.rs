//! GraphiQL at `GET /graphql` for browsers, working with no internet access.
//!
//! async-graphql's `GraphiQLSource` loads React and GraphiQL from a CDN, which fails offline. Here
//! the page loads the same assets from the gateway itself: GraphiQL 3 and React 18 (UMD builds,
//! MIT licensed) are vendored under `vendor/graphiql/` and compiled into the binary. Asset URLs
//! carry the GraphiQL version, so they are cached as immutable.
//!
//! Subscriptions run in the page too, over a WebSocket (`graphql-transport-ws`) on the endpoint's
//! own path (`ws:`/`wss:` after the page's scheme). Nothing more is vendored for them: the GraphiQL
//! bundle carries @graphiql/toolkit's fetcher and the `graphql-ws` client it uses. Given a
//! `subscriptionUrl`, that fetcher opens one lazy client per subscription run and sends the Headers
//! tab's JSON as the `connection_init` payload, so `{"Authorization": "Bearer <token>"}` there
//! authenticates a subscription exactly as it does a query (read at every run, so a token pasted
//! later counts). Given a `wsClient` instead, it would drop those headers. Queries and mutations
//! still go over HTTP `POST`.
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
<link rel="icon" href="data:,">
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
const url = new URL(endpoint, window.location.href);
// Subscriptions: graphql-ws on the same path; the Headers tab is the connection_init payload.
const subscriptionUrl = new URL(url);
subscriptionUrl.protocol = url.protocol === "https:" ? "wss:" : "ws:";
const fetcher = GraphiQL.createFetcher({
  url: url.toString(),
  subscriptionUrl: subscriptionUrl.toString(),
});
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

# Live updates, over a WebSocket: run Price, then change
# the price (./scripts/dev prints the curl that does it);
# each new value shows up here
subscription Price {
  productUpdated(id: "p-00001") {
    name price { formatted }
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
    fn subscriptions_go_over_a_websocket_on_the_endpoint_path() {
        let page = page("/api/graphql");
        assert!(page.contains("const endpoint = \"/api/graphql\";"));
        assert!(page.contains(
            "subscriptionUrl.protocol = url.protocol === \"https:\" ? \"wss:\" : \"ws:\";"
        ));
        assert!(page.contains("subscriptionUrl: subscriptionUrl.toString(),"));
        // `wsClient` would make the toolkit drop the Headers tab (and with it the token).
        assert!(!page.contains("wsClient"));
    }

    #[test]
    fn the_vendored_bundle_sends_the_headers_tab_as_the_websocket_payload() {
        // What the page relies on instead of vendoring a client of its own: the bundle carries
        // graphql-ws, and its fetcher hands GraphiQL's headers to `connection_init`. An upgrade
        // of GraphiQL that changes either fails here.
        let (_, bundle) = asset("graphiql.min.js").expect("the bundle");
        let bundle = std::str::from_utf8(bundle).expect("UTF-8");
        assert!(bundle.contains("GRAPHQL_TRANSPORT_WS_PROTOCOL = 'graphql-transport-ws'"));
        assert!(bundle.contains(
            "createWebsocketsFetcherFromUrl(options.subscriptionUrl, (0, _chunkLMOQIXV.__spreadValues)((0, _chunkLMOQIXV.__spreadValues)({}, options.wsConnectionParams), fetcherOpts == null ? void 0 : fetcherOpts.headers))"
        ));
    }

    #[test]
    fn the_endpoint_cannot_break_out_of_the_page() {
        let page = page("/g\"></script><script>alert(1)</script>");
        assert!(!page.contains("</script><script>alert(1)"));
    }
}
