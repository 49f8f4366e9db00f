//! Protection against expensive documents, and the codes of errors raised before execution.
//!
//! [`Limits::check`] refuses a parsed document with more aliases or root fields than allowed
//! (`TOO_MANY_ALIASES`, `TOO_MANY_ROOT_FIELDS`), nested deeper (`QUERY_TOO_DEEP`) or larger once
//! its fragments are expanded (`QUERY_TOO_COMPLEX`) than allowed. Every measure is linear in the
//! size of the document: fragments are measured once each, never expanded. The transport runs it
//! before the schema sees the document.
//!
//! [`Limits`] is also a schema extension. After validation it refuses a document more complex
//! than allowed (`QUERY_TOO_COMPLEX`): complexity counts one per field, and list fields multiply
//! what they select by the page they fetch (`first` clamped to the configured largest page, the
//! configured default page without it: [`counted_pages`]). It gives the errors of the phases before
//! execution their codes: `GRAPHQL_PARSE_FAILED` for a document that does not parse,
//! `GRAPHQL_VALIDATION_FAILED` for one that does not fit the schema. And it marks the request as
//! executed once execution starts, so the transport can tell a request error (no `data`) from a
//! field error.

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

use super::scope::{LiveScope, PageSizes, RequestScope, Services};
use crate::config::MAX_PAGE_SIZE;

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
    /// Most selections once fragments are expanded (see [`expanded_selections`]).
    pub max_expanded_selections: usize,
    /// The configured page sizes, so a list field's complexity is that of the page it fetches.
    pub pages: PageSizes,
}

impl ExtensionFactory for Limits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(*self)
    }
}

tokio::task_local! {
    /// The page sizes list fields are counted at while [`Limits`] validates a document.
    /// async-graphql computes a field's complexity with a plain function of its arguments that
    /// sees none of the schema's data, so the configured sizes reach it this way, for the
    /// validation of one document only.
    static COUNTED_PAGES: PageSizes;
}

/// The page sizes list fields are counted at (see [`page_cost`](super::catalog::page_cost)): the
/// configured ones while [`Limits`] validates a document; elsewhere (a schema built without
/// [`Limits`]), the largest page any configuration allows.
pub fn counted_pages() -> PageSizes {
    COUNTED_PAGES.try_with(|pages| *pages).unwrap_or(PageSizes {
        default: MAX_PAGE_SIZE,
        max: MAX_PAGE_SIZE,
    })
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

/// In a request's data: validate the document and stop before executing it (trusted documents
/// are validated this way when loaded, whatever their operation type).
#[derive(Debug, Clone, Copy)]
pub struct ValidateOnly;

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

impl Limits {
    /// Checks a parsed document against every limit that can be measured without the schema:
    /// depth, expanded size, aliases and root fields. Linear in the size of the document, however
    /// its fragments spread one another.
    ///
    /// The transport calls it before handing the document to the schema, because async-graphql
    /// walks the document with its fragments expanded before any extension sees it (its recursion
    /// check, then validation): a few hundred bytes of fragments spreading one another many
    /// times would keep it busy for ever.
    pub fn check(&self, document: &ExecutableDocument) -> Result<(), ServerError> {
        let depth = max_depth(document);
        if depth > self.max_depth {
            return Err(error(
                codes::TOO_DEEP,
                format!(
                    "The document is nested {depth} levels deep; at most {} are allowed.",
                    self.max_depth
                ),
            ));
        }
        let expanded = expanded_selections(document);
        if expanded > u64::try_from(self.max_expanded_selections).unwrap_or(u64::MAX) {
            return Err(error(
                codes::TOO_COMPLEX,
                if expanded == u64::MAX {
                    format!(
                        "The document has too many selections to count once its fragments are \
                         expanded; at most {} are allowed.",
                        self.max_expanded_selections
                    )
                } else {
                    format!(
                        "The document has {expanded} selections once its fragments are expanded; \
                         at most {} are allowed.",
                        self.max_expanded_selections
                    )
                },
            ));
        }
        let aliases = count_aliases(document);
        if aliases > self.max_aliases {
            return Err(error(
                codes::TOO_MANY_ALIASES,
                format!(
                    "The document has {aliases} aliases; at most {} are allowed.",
                    self.max_aliases
                ),
            ));
        }
        let roots = operations(document)
            .map(|op| root_fields(document, &op.selection_set.node))
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
        Ok(())
    }
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
        next.run(ctx, query, variables)
            .await
            .map_err(|e| with_code(e, codes::PARSE_FAILED))
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let validated = COUNTED_PAGES.scope(self.pages, next.run(ctx));
        let result = validated.await.map_err(|errors| {
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
        if ctx.data_opt::<ValidateOnly>().is_some() {
            return async_graphql::Response::default();
        }
        if let Some(executed) = ctx.data_opt::<Executed>() {
            executed.set();
        }
        // A long-lived operation resolves each value in a scope of its own (a fresh deadline and
        // loader); the request's scope has no deadline.
        if let (Some(live), Some(services)) =
            (ctx.data_opt::<LiveScope>(), ctx.data_opt::<Services>())
        {
            let context = live.context.clone().with_timeout_from_now(live.budget);
            let scope = RequestScope::new(services, context, live.identity.clone());
            let mut data = async_graphql::Data::default();
            data.insert(scope);
            return next.run_with_data(ctx, operation_name, data).await;
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
    selected_operation(document, operation_name).map(|op| op.ty)
}

/// The operation a request selects (`operation_name`, or the only one), if the document has it.
pub fn selected_operation<'a>(
    document: &'a ExecutableDocument,
    operation_name: Option<&str>,
) -> Option<&'a OperationDefinition> {
    match (&document.operations, operation_name) {
        (DocumentOperations::Single(op), _) => Some(&op.node),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name).map(|op| &op.node),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => {
            ops.values().next().map(|op| &op.node)
        }
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// The first variable of `operation` whose type is non-null, that has no default and that the
/// request leaves out (or sends as `null`), as `(name, type)`: a request error the client must
/// fix, caught before execution (async-graphql would only notice it inside a resolver).
pub fn missing_variable(
    operation: &OperationDefinition,
    variables: &Variables,
) -> Option<(String, String)> {
    operation
        .variable_definitions
        .iter()
        .find_map(|definition| {
            let definition = &definition.node;
            let required = !definition.var_type.node.nullable && definition.default_value.is_none();
            let given = variables
                .get(&definition.name.node)
                .is_some_and(|value| !matches!(value, async_graphql::Value::Null));
            (required && !given).then(|| {
                (
                    definition.name.node.to_string(),
                    definition.var_type.node.to_string(),
                )
            })
        })
}

/// How deeply the document's operations nest fields, looking through fragments.
///
/// Introspection (`__schema`, `__type`) is not counted: the standard introspection query that
/// tools such as GraphiQL send nests 15 levels deep over a finite schema, and turning
/// introspection off is its own setting. Fragment depths are memoized and cycles (which
/// validation refuses later) count as 0, so the walk is linear in the document's size.
fn max_depth(document: &ExecutableDocument) -> usize {
    let mut walk = FragmentWalk::new(document, |walk: &mut FragmentWalk<'_>, set| {
        set.items
            .iter()
            .map(|item| match &item.node {
                Selection::Field(field) => {
                    let name = field.node.name.node.as_str();
                    if name.starts_with("__") && name != "__typename" {
                        0
                    } else {
                        1_u64.saturating_add(walk.set(&field.node.selection_set.node))
                    }
                }
                Selection::InlineFragment(fragment) => walk.set(&fragment.node.selection_set.node),
                Selection::FragmentSpread(spread) => {
                    walk.fragment(spread.node.fragment_name.node.as_str())
                }
            })
            .max()
            .unwrap_or(0)
    });
    let deepest = operations(document)
        .map(|op| walk.set(&op.selection_set.node))
        .max()
        .unwrap_or(0);
    usize::try_from(deepest).unwrap_or(usize::MAX)
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

/// Fields at the root of an operation, looking through fragments (each fragment counted once
/// and memoized; cycles, which validation refuses later, count as 0).
fn root_fields(document: &ExecutableDocument, set: &SelectionSet) -> usize {
    let mut walk = FragmentWalk::new(document, |walk: &mut FragmentWalk<'_>, set| {
        set.items
            .iter()
            .map(|item| match &item.node {
                Selection::Field(_) => 1,
                Selection::InlineFragment(fragment) => walk.set(&fragment.node.selection_set.node),
                Selection::FragmentSpread(spread) => {
                    walk.fragment(spread.node.fragment_name.node.as_str())
                }
            })
            .fold(0_u64, u64::saturating_add)
    });
    usize::try_from(walk.set(set)).unwrap_or(usize::MAX)
}

/// Selections (fields, introspection included, fragment spreads and inline fragments) the
/// operations and the fragment definitions hold once every fragment spread is expanded,
/// saturating: the work any walk over the expanded document does (async-graphql's recursion check
/// walks the operations, its validation every definition), computed in linear time without
/// expanding anything.
pub fn expanded_selections(document: &ExecutableDocument) -> u64 {
    let mut walk = FragmentWalk::new(document, |walk: &mut FragmentWalk<'_>, set| {
        set.items
            .iter()
            .map(|item| {
                let inner = match &item.node {
                    Selection::Field(field) => walk.set(&field.node.selection_set.node),
                    Selection::InlineFragment(fragment) => {
                        walk.set(&fragment.node.selection_set.node)
                    }
                    Selection::FragmentSpread(spread) => {
                        walk.fragment(spread.node.fragment_name.node.as_str())
                    }
                };
                1_u64.saturating_add(inner)
            })
            .fold(0_u64, u64::saturating_add)
    });
    // Fragment definitions count as roots too, used or not: validation visits each of them
    // (and what they spread) before it refuses an unused one.
    let fragments = document
        .fragments
        .keys()
        .map(|name| walk.fragment(name.as_str()))
        .fold(0_u64, u64::saturating_add);
    operations(document)
        .map(|op| walk.set(&op.selection_set.node))
        .fold(fragments, u64::saturating_add)
}

/// A walk over selection sets that evaluates each fragment at most once (memoized), treating a
/// fragment that spreads itself (directly or not) as 0, so any measure it computes is linear in
/// the size of the document.
struct FragmentWalk<'a> {
    /// The document whose fragments are looked up.
    document: &'a ExecutableDocument,
    /// The measure of one selection set; it recurses through the walk.
    measure: Measure<'a>,
    /// Fragments already measured.
    memo: std::collections::HashMap<&'a str, u64>,
    /// Fragments being measured (a spread of one of them is a cycle).
    visiting: std::collections::HashSet<&'a str>,
    /// Selection sets being measured, nested: the walk's recursion depth.
    depth: usize,
}

/// Deepest the walk recurses (selection sets inside fields, inline fragments and spread
/// fragments, together) before it gives up and reports the saturated measure, so a long chain of
/// fragments spreading one another (the text limit does not bound it: each is at top level)
/// cannot overflow the stack. Real documents stay far below it; async-graphql itself refuses
/// recursion deeper than 32.
const MAX_WALK_DEPTH: usize = 256;

/// How a [`FragmentWalk`] measures one selection set.
type Measure<'a> = fn(&mut FragmentWalk<'a>, &'a SelectionSet) -> u64;

impl<'a> FragmentWalk<'a> {
    fn new(document: &'a ExecutableDocument, measure: Measure<'a>) -> Self {
        Self {
            document,
            measure,
            memo: std::collections::HashMap::new(),
            visiting: std::collections::HashSet::new(),
            depth: 0,
        }
    }

    fn set(&mut self, set: &'a SelectionSet) -> u64 {
        if self.depth >= MAX_WALK_DEPTH {
            return u64::MAX;
        }
        self.depth += 1;
        let measure = self.measure;
        let value = measure(self, set);
        self.depth -= 1;
        value
    }

    fn fragment(&mut self, name: &'a str) -> u64 {
        if let Some(value) = self.memo.get(name) {
            return *value;
        }
        let Some((key, fragment)) = self.document.fragments.get_key_value(name) else {
            return 0;
        };
        if !self.visiting.insert(key.as_str()) {
            return 0;
        }
        let value = self.set(&fragment.node.selection_set.node);
        self.visiting.remove(key.as_str());
        self.memo.insert(key.as_str(), value);
        value
    }
}

/// Deepest nesting of brackets a query text may have (selection sets, lists, objects,
/// arguments together); real queries stay far below it.
pub const MAX_TEXT_NESTING: usize = 64;

/// Deepest nesting of `{`, `[` and `(` in a query text, outside strings and comments, counted
/// without parsing: the parser recurses on nested list and object values, so a few kilobytes of
/// `[[[[…` would overflow its stack before any other limit is checked.
pub fn text_nesting(query: &str) -> usize {
    let bytes = query.as_bytes();
    let (mut depth, mut deepest, mut index) = (0_usize, 0_usize, 0_usize);
    while index < bytes.len() {
        match bytes[index] {
            b'#' => {
                // A comment ends at a line terminator: `\n` or `\r`.
                while index < bytes.len() && !matches!(bytes[index], b'\n' | b'\r') {
                    index += 1;
                }
            }
            b'"' if bytes[index..].starts_with(b"\"\"\"") => {
                index += 3;
                while index < bytes.len() && !bytes[index..].starts_with(b"\"\"\"") {
                    index += if bytes[index..].starts_with(b"\\\"\"\"") {
                        4
                    } else {
                        1
                    };
                }
                index += 2;
            }
            b'"' => {
                index += 1;
                while index < bytes.len() && !matches!(bytes[index], b'"' | b'\n' | b'\r') {
                    index += if bytes[index] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        index += 1;
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &str) -> ExecutableDocument {
        async_graphql::parser::parse_query(query).expect("parses")
    }

    /// `{ ...F1 }` where each fragment spreads the next one `fanout` times, `levels` deep.
    fn exponential_fragments(levels: usize, fanout: usize) -> String {
        let mut query = String::from("{ ...F1 }\n");
        for level in 1..levels {
            let spreads = vec![format!("...F{}", level + 1); fanout].join(" ");
            query.push_str(&format!("fragment F{level} on Query {{ {spreads} }}\n"));
        }
        query.push_str(&format!(
            "fragment F{levels} on Query {{ categories {{ id }} }}\n"
        ));
        query
    }

    #[test]
    fn expanded_selections_are_counted_in_linear_time_and_saturate() {
        // {...F1}: 1 spread; F1..F8 each 10 spreads; F9 = categories { id } (2 selections).
        let document = parse(&exponential_fragments(9, 10));
        // F9 = `categories { id }` = 2; F(k) = 10 × (1 + F(k+1)); the operation = 1 + F1, and
        // every fragment definition counts once more as a root.
        let mut sizes = vec![2_u64];
        for _ in 1..9 {
            let next = sizes.last().unwrap();
            sizes.push(10 * (1 + next));
        }
        let f1 = *sizes.last().unwrap();
        let fragments: u64 = sizes.iter().sum();
        assert_eq!(expanded_selections(&document), 1 + f1 + fragments);
        let huge = parse(&exponential_fragments(40, 20));
        assert_eq!(expanded_selections(&huge), u64::MAX);
        assert_eq!(expanded_selections(&parse("{ a { b c } d }")), 4);
        // Introspection and inline fragments are work too.
        assert_eq!(
            expanded_selections(&parse("{ __schema { types { name } } ... on Query { a } }")),
            5
        );
        // A cycle (refused by validation later) does not loop. F counts as a root too (2).
        assert_eq!(
            expanded_selections(&parse("{ a { ...F } } fragment F on T { b { ...F } }")),
            6
        );
        // An unused fragment is work for validation all the same.
        let unused = "{ __typename } fragment F on T { a b c } \
                      fragment U on Query { x { ...F } y { ...F } }";
        assert_eq!(expanded_selections(&parse(unused)), 1 + 3 + 2 * (1 + 1 + 3));
    }

    #[test]
    fn a_long_chain_of_fragments_saturates_instead_of_recursing_without_bound() {
        let mut query = String::from("{ ...F0 }\n");
        for i in 0..5000 {
            query.push_str(&format!("fragment F{i} on Query {{ ...F{} }}\n", i + 1));
        }
        query.push_str("fragment F5000 on Query { __typename }\n");
        let document = parse(&query);
        assert_eq!(expanded_selections(&document), u64::MAX);
        assert_eq!(max_depth(&document), usize::MAX);
        let op = operations(&document).next().unwrap();
        assert_eq!(root_fields(&document, &op.selection_set.node), usize::MAX);
    }

    #[test]
    fn root_fields_are_counted_through_deep_fragment_chains() {
        let document = parse(&exponential_fragments(12, 3));
        let op = operations(&document).next().expect("operation");
        assert_eq!(
            root_fields(&document, &op.selection_set.node),
            3_usize.pow(11)
        );
    }

    #[test]
    fn text_nesting_ignores_brackets_in_strings_and_comments() {
        assert_eq!(text_nesting("{ a(x: [1, [2]]) { b } }"), 4);
        assert_eq!(text_nesting("{ a(x: \"[[[[\") }"), 2);
        assert_eq!(text_nesting("{ a # [[[[[\n }"), 1);
        // `\r` alone ends a comment too: what follows it is counted.
        assert_eq!(text_nesting("{ a(x: #\r[[[1]]]) }"), 5);
        assert_eq!(text_nesting("{ a(x: \"ab\r[[[1]]]) }"), 5);
        assert_eq!(text_nesting("{ a(x: \"\"\" {{{ \\\"\"\" [[ \"\"\") }"), 2);
        assert_eq!(text_nesting("{ a(x: \"\\\"[[\") }"), 2);
        let deep = format!("{{ a(x: {}1{}) }}", "[".repeat(5000), "]".repeat(5000));
        assert_eq!(text_nesting(&deep), 5002);
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
