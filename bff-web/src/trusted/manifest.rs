//! The two manifest formats web tool chains write, read into one list of entries, and the
//! Apollo-format manifest `bff-web manifest DIR` writes from a folder of `.graphql` files.
//!
//! - Apollo's persisted query manifest (`@apollo/generate-persisted-query-manifest`):
//!   `{"format": "apollo-persisted-query-manifest", "version": 1, "operations": [{"id", "name",
//!   "type", "body"}]}`.
//! - The flat object of GraphQL Code Generator's client preset (`persistedDocuments`):
//!   `{"<id>": "<document>"}`, ids such as `sha256:<hex>` or bare hex.
//!
//! Ids are compared in one form ([`normalize_id`]): without a `sha256:` prefix, and hex in
//! lowercase.

use std::{fmt::Write as _, path::Path};

use async_graphql::parser::{
    parse_query,
    types::{DocumentOperations, ExecutableDocument, OperationType},
};
use serde::{Deserialize, Serialize};

/// The `format` of an Apollo persisted query manifest.
pub const APOLLO_FORMAT: &str = "apollo-persisted-query-manifest";

/// One document of a manifest, as written there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its id as written in the manifest.
    pub id: String,
    /// The operation's name in an Apollo manifest; `None` in the flat format (the document's
    /// own operation name is used then).
    pub name: Option<String>,
    /// The document's text.
    pub body: String,
}

/// An Apollo persisted query manifest.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApolloManifest {
    /// [`APOLLO_FORMAT`].
    format: String,
    /// 1, the only version there is.
    version: u32,
    /// Its documents, one operation each.
    operations: Vec<ApolloOperation>,
}

/// One operation of an Apollo manifest.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApolloOperation {
    /// How clients name it (the SHA-256 of `body` as Apollo's generator writes it).
    id: String,
    /// The operation's name.
    name: String,
    /// `query`, `mutation` or `subscription`.
    #[serde(rename = "type")]
    kind: String,
    /// The document, with the fragments it uses.
    body: String,
}

/// Reads a manifest of either format from its JSON text; says why not.
pub fn parse(text: &str) -> Result<Vec<Entry>, String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let serde_json::Value::Object(object) = value else {
        return Err(
            "must be a JSON object (an Apollo manifest or `{\"<id>\": \"<document>\"}`)".to_owned(),
        );
    };
    if object.contains_key("format") || object.contains_key("operations") {
        let manifest: ApolloManifest = serde_json::from_value(serde_json::Value::Object(object))
            .map_err(|e| format!("not an Apollo persisted query manifest: {e}"))?;
        if manifest.format != APOLLO_FORMAT || manifest.version != 1 {
            return Err(format!(
                "unknown manifest format `{}` version {} (expected `{APOLLO_FORMAT}` version 1)",
                manifest.format, manifest.version
            ));
        }
        return Ok(manifest
            .operations
            .into_iter()
            .map(|op| Entry {
                id: op.id,
                name: Some(op.name),
                body: op.body,
            })
            .collect());
    }
    object
        .into_iter()
        .map(|(id, body)| match body {
            serde_json::Value::String(body) => Ok(Entry {
                id,
                name: None,
                body,
            }),
            _ => Err(format!("{id}: the document must be a string")),
        })
        .collect()
}

/// An id in the form lookups use: without a `sha256:` prefix, hex digits in lowercase (other
/// ids as written).
pub fn normalize_id(id: &str) -> String {
    let bare = id.strip_prefix("sha256:").unwrap_or(id);
    if is_sha256_hex(bare) {
        bare.to_ascii_lowercase()
    } else {
        bare.to_owned()
    }
}

/// Whether `text` is 64 hex digits (a SHA-256).
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The only operation of `document` with its name and type; says why when it has none, more
/// than one, or an anonymous one.
pub fn sole_operation(document: &ExecutableDocument) -> Result<(String, OperationType), String> {
    match &document.operations {
        DocumentOperations::Single(_) => {
            Err("the operation has no name (name it: the manifest names it)".to_owned())
        }
        DocumentOperations::Multiple(operations) if operations.len() == 1 => operations
            .iter()
            .next()
            .map(|(name, op)| (name.to_string(), op.node.ty))
            .ok_or_else(|| "no operation".to_owned()),
        DocumentOperations::Multiple(operations) => Err(format!(
            "{} operations in one file (one per file)",
            operations.len()
        )),
    }
}

/// The name GraphQL gives an operation type, as Apollo manifests write it.
pub fn type_name(kind: OperationType) -> &'static str {
    match kind {
        OperationType::Query => "query",
        OperationType::Mutation => "mutation",
        OperationType::Subscription => "subscription",
    }
}

/// The Apollo manifest of the `.graphql` files directly in `dir`, one named operation each
/// (with the fragments it uses), sorted by operation name: its JSON text, ending with a newline.
/// The id of each is the SHA-256 of the file's text exactly as written, which is what a client
/// sends.
pub fn generate(dir: &Path) -> Result<String, String> {
    let listing = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut paths = Vec::new();
    for entry in listing {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if path.extension().is_some_and(|ext| ext == "graphql") {
            paths.push(path);
        }
    }
    let mut operations = Vec::with_capacity(paths.len());
    for path in paths {
        let body =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let document = parse_query(&body).map_err(|e| format!("{}: {e}", path.display()))?;
        let (name, kind) =
            sole_operation(&document).map_err(|e| format!("{}: {e}", path.display()))?;
        operations.push(ApolloOperation {
            id: crate::apq::sha256_hex(&body),
            name,
            kind: type_name(kind).to_owned(),
            body,
        });
    }
    operations.sort_by(|a, b| a.name.cmp(&b.name));
    for pair in operations.windows(2) {
        if pair[0].name == pair[1].name {
            return Err(format!(
                "{}: two files define operation `{}`",
                dir.display(),
                pair[0].name
            ));
        }
    }
    let manifest = ApolloManifest {
        format: APOLLO_FORMAT.to_owned(),
        version: 1,
        operations,
    };
    let mut text = serde_json::to_string_pretty(&manifest).map_err(|e| e.to_string())?;
    let _ = writeln!(text);
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_read_into_entries() {
        let apollo = r#"{"format":"apollo-persisted-query-manifest","version":1,
            "operations":[{"id":"abc","name":"Q","type":"query","body":"query Q { a }"}]}"#;
        assert_eq!(
            parse(apollo).expect("apollo"),
            [Entry {
                id: "abc".to_owned(),
                name: Some("Q".to_owned()),
                body: "query Q { a }".to_owned()
            }]
        );
        let flat = r#"{"sha256:ABC": "{ a }"}"#;
        assert_eq!(
            parse(flat).expect("flat"),
            [Entry {
                id: "sha256:ABC".to_owned(),
                name: None,
                body: "{ a }".to_owned()
            }]
        );
    }

    #[test]
    fn other_shapes_are_refused_saying_why() {
        for (text, why) in [
            ("[1]", "must be a JSON object"),
            ("{", "not valid JSON"),
            (r#"{"q": 1}"#, "q: the document must be a string"),
            (
                r#"{"format":"x","version":1,"operations":[]}"#,
                "unknown manifest format",
            ),
            (
                r#"{"format":"x"}"#,
                "not an Apollo persisted query manifest",
            ),
        ] {
            let error = parse(text).expect_err(text);
            assert!(error.contains(why), "{text}: {error}");
        }
    }

    #[test]
    fn ids_are_compared_without_prefix_and_in_lowercase() {
        let hex = "AB".repeat(32);
        assert_eq!(normalize_id(&format!("sha256:{hex}")), "ab".repeat(32));
        assert_eq!(normalize_id(&hex), "ab".repeat(32));
        assert_eq!(normalize_id("MyQuery"), "MyQuery");
    }
}
