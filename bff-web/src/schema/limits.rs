//! Protection against expensive documents, and the codes of errors raised before execution.
//!
//! [`Limits`] is a schema extension. Before anything is resolved it refuses a document with more
//! aliases or root fields than allowed (`TOO_MANY_ALIASES`, `TOO_MANY_ROOT_FIELDS`), deeper
//! (`QUERY_TOO_DEEP`) or more complex (`QUERY_TOO_COMPLEX`) than allowed. Complexity counts one
//! per field, and list fields multiply what they select by their page size (`first`).
//!
//! It also gives the errors of the phases before execution their codes:
//! `GRAPHQL_PARSE_FAILED` for a document that does not parse, `GRAPHQL_VALIDATION_FAILED` for one
//! that does not fit the schema. And it marks the request as executed once execution starts, so
//! the transport can tell a request error (no `data`) from a field error.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use async_graphql::{
    ServerError, ServerResult, ValidationResult, Variables,
    extensions::{
        Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextValidation,
    },
    parser::types::{
        DocumentOperations, ExecutableDocument, OperationDefinition, OperationType, Selection,
        SelectionSet,
    },
};

/// Codes of errors raised before execution.
pub mod codes {
    /// The document does not parse.
    pub const PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
    /// The document does not fit the schema (unknown field, wrong argument type, …).
    pub const VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";
    /// Nested deeper than `limits.max_depth`.
    pub const TOO_DEEP: &str = "QUERY_TOO_DEEP";
    /// More complex than `limits.max_complexity`.
    pub const TOO_COMPLEX: &str = "QUERY_TOO_COMPLEX";
    /// More aliases than `limits.max_aliases`.
    pub const TOO_MANY_ALIASES: &str = "TOO_MANY_ALIASES";
    /// More root fields than `limits.max_root_fields`.
    pub const TOO_MANY_ROOT_FIELDS: &str = "TOO_MANY_ROOT_FIELDS";
}

/// The limits a document must respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of selections.
    pub max_depth: usize,
    /// Highest complexity.
    pub max_complexity: usize,
    /// Most aliases in the document.
    pub max_aliases: usize,
    /// Most fields at the root of the operation.
    pub max_root_fields: usize,
}

impl ExtensionFactory for Limits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(*self)
    }
}

/// Set once execution of a request starts; the transport keeps a clone.
#[derive(Debug, Clone, Default)]
pub struct Executed(Arc<AtomicBool>);

impl Executed {
    /// Whether execution started (so the response carries `data`).
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Marks execution as started.
    fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A pre-execution error with a code.
pub fn error(code: &'static str, message: impl Into<String>) -> ServerError {
    let mut error = ServerError::new(message, None);
    error
        .extensions
        .get_or_insert_with(Default::default)
        .set("code", code);
    error
}

/// Adds `code` to every error that has none yet.
fn with_code(mut error: ServerError, code: &'static str) -> ServerError {
    let extensions = error.extensions.get_or_insert_with(Default::default);
    if extensions.get("code").is_none() {
        extensions.set("code", code);
    }
    error
}

#[async_graphql::async_trait::async_trait]
impl Extension for Limits {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next
            .run(ctx, query, variables)
            .await
            .map_err(|e| with_code(e, codes::PARSE_FAILED))?;
        let depth = max_depth(&document);
        if depth > self.max_depth {
            return Err(error(
                codes::TOO_DEEP,
                format!(
                    "The document is nested {depth} levels deep; at most {} are allowed.",
                    self.max_depth
                ),
            ));
        }
        let aliases = count_aliases(&document);
        if aliases > self.max_aliases {
            return Err(error(
                codes::TOO_MANY_ALIASES,
                format!(
                    "The document has {aliases} aliases; at most {} are allowed.",
                    self.max_aliases
                ),
            ));
        }
        let roots = operations(&document)
            .map(|op| root_fields(&document, &op.selection_set.node))
            .max()
            .unwrap_or(0);
        if roots > self.max_root_fields {
            return Err(error(
                codes::TOO_MANY_ROOT_FIELDS,
                format!(
                    "The operation selects {roots} root fields; at most {} are allowed.",
                    self.max_root_fields
                ),
            ));
        }
        Ok(document)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|e| with_code(e, codes::VALIDATION_FAILED))
                .collect::<Vec<_>>()
        })?;
        if result.complexity > self.max_complexity {
            return Err(vec![error(
                codes::TOO_COMPLEX,
                format!(
                    "The document's complexity is {}; at most {} is allowed. Ask for smaller \
                     pages (`first`) or fewer fields.",
                    result.complexity, self.max_complexity
                ),
            )]);
        }
        Ok(result)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> async_graphql::Response {
        if let Some(executed) = ctx.data_opt::<Executed>() {
            executed.set();
        }
        next.run(ctx, operation_name).await
    }
}

/// Every operation of a document.
fn operations(document: &ExecutableDocument) -> impl Iterator<Item = &OperationDefinition> {
    let all: Vec<&OperationDefinition> = match &document.operations {
        DocumentOperations::Single(op) => vec![&op.node],
        DocumentOperations::Multiple(ops) => ops.values().map(|op| &op.node).collect(),
    };
    all.into_iter()
}

/// The type of the operation a request selects (`operation_name`, or the only one), if the
/// document has it.
pub fn operation_type(
    document: &ExecutableDocument,
    operation_name: Option<&str>,
) -> Option<OperationType> {
    match (&document.operations, operation_name) {
        (DocumentOperations::Single(op), _) => Some(op.node.ty),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name).map(|op| op.node.ty),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => {
            ops.values().next().map(|op| op.node.ty)
        }
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// How deeply the document's operations nest fields, looking through fragments.
///
/// Introspection (`__schema`, `__type`) is not counted: the standard introspection query that
/// tools such as GraphiQL send nests 15 levels deep over a finite schema, and turning
/// introspection off is its own setting. Fragment depths are memoized and cycles (which
/// validation refuses later) count as 0, so the walk is linear in the document's size.
fn max_depth(document: &ExecutableDocument) -> usize {
    struct Walk<'a> {
        document: &'a ExecutableDocument,
        memo: std::collections::HashMap<&'a str, usize>,
        visiting: std::collections::HashSet<&'a str>,
    }
    impl<'a> Walk<'a> {
        fn set(&mut self, set: &'a SelectionSet) -> usize {
            set.items
                .iter()
                .map(|item| match &item.node {
                    Selection::Field(field) => {
                        let name = field.node.name.node.as_str();
                        if name.starts_with("__") && name != "__typename" {
                            0
                        } else {
                            1 + self.set(&field.node.selection_set.node)
                        }
                    }
                    Selection::InlineFragment(fragment) => {
                        self.set(&fragment.node.selection_set.node)
                    }
                    Selection::FragmentSpread(spread) => {
                        self.fragment(spread.node.fragment_name.node.as_str())
                    }
                })
                .max()
                .unwrap_or(0)
        }

        fn fragment(&mut self, name: &'a str) -> usize {
            if let Some(depth) = self.memo.get(name) {
                return *depth;
            }
            let Some((key, fragment)) = self.document.fragments.get_key_value(name) else {
                return 0;
            };
            if !self.visiting.insert(key.as_str()) {
                return 0;
            }
            let depth = self.set(&fragment.node.selection_set.node);
            self.visiting.remove(key.as_str());
            self.memo.insert(key.as_str(), depth);
            depth
        }
    }
    let mut walk = Walk {
        document,
        memo: std::collections::HashMap::new(),
        visiting: std::collections::HashSet::new(),
    };
    operations(document)
        .map(|op| walk.set(&op.selection_set.node))
        .max()
        .unwrap_or(0)
}

/// Aliases anywhere in the document (operations and fragments).
fn count_aliases(document: &ExecutableDocument) -> usize {
    fn in_set(set: &SelectionSet) -> usize {
        set.items
            .iter()
            .map(|item| match &item.node {
                Selection::Field(field) => {
                    usize::from(field.node.alias.is_some()) + in_set(&field.node.selection_set.node)
                }
                Selection::InlineFragment(fragment) => in_set(&fragment.node.selection_set.node),
                Selection::FragmentSpread(_) => 0,
            })
            .sum()
    }
    operations(document)
        .map(|op| in_set(&op.selection_set.node))
        .chain(
            document
                .fragments
                .values()
                .map(|f| in_set(&f.node.selection_set.node)),
        )
        .sum()
}

/// Fields at the root of an operation, looking through fragments (one level of spreads deep per
/// spread, so fragment cycles, which validation refuses anyway, cannot loop).
fn root_fields(document: &ExecutableDocument, set: &SelectionSet) -> usize {
    fn count(document: &ExecutableDocument, set: &SelectionSet, spreads_left: usize) -> usize {
        set.items
            .iter()
            .map(|item| match &item.node {
                Selection::Field(_) => 1,
                Selection::InlineFragment(fragment) => {
                    count(document, &fragment.node.selection_set.node, spreads_left)
                }
                Selection::FragmentSpread(spread) if spreads_left > 0 => document
                    .fragments
                    .get(&spread.node.fragment_name.node)
                    .map_or(0, |f| {
                        count(document, &f.node.selection_set.node, spreads_left - 1)
                    }),
                Selection::FragmentSpread(_) => 0,
            })
            .sum()
    }
    count(document, set, 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str) -> ExecutableDocument {
        async_graphql::parser::parse_query(query).expect("parses")
    }

    #[test]
    fn depth_counts_through_fragments_but_not_introspection() {
        assert_eq!(max_depth(&parse("{ a { b { c } } }")), 3);
        assert_eq!(
            max_depth(&parse("{ a { ...F } } fragment F on T { b { c { d } } }")),
            4
        );
        assert_eq!(max_depth(&parse("{ a { ... on T { b } } }")), 2);
        assert_eq!(
            max_depth(&parse(
                "{ __schema { types { fields { type { ofType { ofType { name } } } } } } a }"
            )),
            1
        );
        assert_eq!(max_depth(&parse("{ a { __typename } }")), 2);
        // A cycle (refused by validation later) does not loop.
        assert_eq!(
            max_depth(&parse("{ a { ...F } } fragment F on T { b { ...F } }")),
            2
        );
    }

    #[test]
    fn aliases_and_root_fields_are_counted_through_fragments() {
        let doc = parse(
            "query { a: product(id: \"1\") { id } b: product(id: \"2\") { n: name } ...F }
             fragment F on Query { c: categories { id } categories { id } }",
        );
        assert_eq!(count_aliases(&doc), 4);
        let op = operations(&doc).next().unwrap();
        assert_eq!(root_fields(&doc, &op.selection_set.node), 4);
    }

    #[test]
    fn the_operation_type_follows_the_operation_name() {
        let doc = parse(
            "query A { categories { id } } mutation B { checkout(idempotencyKey: \"k\") { created } }",
        );
        assert_eq!(
            operation_type(&doc, Some("B")),
            Some(OperationType::Mutation)
        );
        assert_eq!(operation_type(&doc, Some("A")), Some(OperationType::Query));
        assert_eq!(operation_type(&doc, None), None);
        assert_eq!(
            operation_type(&parse("{ categories { id } }"), None),
            Some(OperationType::Query)
        );
    }
}
