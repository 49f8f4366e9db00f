//! The query page served at `GET /graphql` to browsers: a small, self-contained GraphiQL-like
//! page (editor, variables, bearer token, result, schema browser) with no external assets.
//!
//! Why not GraphiQL itself: async-graphql's `GraphiQLSource` loads React and GraphiQL from a CDN,
//! which fails without internet access, and vendoring GraphiQL means committing about 2 MB of
//! minified third-party JavaScript (React, GraphiQL, CodeMirror) plus their licences. This page is
//! a few kilobytes of our own HTML and JavaScript, inlined, so it works offline and adds nothing
//! to audit. It sends the same requests any client would (POST, JSON).

/// The page, posting to `endpoint`.
pub fn page(endpoint: &str) -> String {
    // JSON-encode the path for the script, with `<` escaped so it cannot close the script tag.
    let endpoint = serde_json::to_string(endpoint)
        .unwrap_or_else(|_| "\"/graphql\"".to_owned())
        .replace('<', "\\u003c");
    PAGE.replace("__ENDPOINT__", &endpoint)
}

/// The page template; `__ENDPOINT__` is replaced by the JSON-encoded endpoint path.
const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>bff-web · GraphQL</title>
<style>
  body { margin: 0; font: 14px system-ui, sans-serif; display: grid; grid-template-rows: auto 1fr; height: 100vh; }
  header { display: flex; gap: .5rem; align-items: center; padding: .5rem; background: #1e293b; color: #fff; }
  header input { flex: 1; font: inherit; padding: .25rem; }
  button { font: inherit; padding: .3rem .8rem; cursor: pointer; }
  main { display: grid; grid-template-columns: 1fr 1fr 18rem; min-height: 0; }
  section { display: flex; flex-direction: column; min-height: 0; border-right: 1px solid #ccc; }
  textarea, pre { flex: 1; margin: 0; padding: .5rem; font: 13px ui-monospace, monospace; border: 0; resize: none; overflow: auto; }
  #variables { flex: 0 0 8rem; border-top: 1px solid #ccc; }
  h2 { margin: 0; padding: .3rem .5rem; font-size: 12px; background: #f1f5f9; }
  #docs { overflow: auto; padding: .5rem; font-size: 12px; }
  #docs details { margin-bottom: .25rem; } #docs small { color: #64748b; }
</style>
</head>
<body>
<header>
  <strong>bff-web</strong>
  <input id="token" placeholder="Bearer token (optional; needed for viewer and mutations)" autocomplete="off">
  <button id="run" title="Ctrl+Enter">Run ▶</button>
</header>
<main>
  <section>
    <h2>Query</h2>
    <textarea id="query" spellcheck="false">query Home {
  categories { id name parent { id } }
  products(first: 5) {
    nodes { id name brand price { formatted } availability { status } }
    pageInfo { hasNextPage endCursor }
  }
}</textarea>
    <h2>Variables (JSON)</h2>
    <textarea id="variables" spellcheck="false">{}</textarea>
  </section>
  <section><h2>Response</h2><pre id="result"></pre></section>
  <section><h2>Schema</h2><div id="docs">Loading…</div></section>
</main>
<script>
const endpoint = __ENDPOINT__;
const $ = (id) => document.getElementById(id);
$("token").value = localStorage.getItem("bff-web-token") || "";
$("token").addEventListener("change", () => localStorage.setItem("bff-web-token", $("token").value.trim()));
async function send(query, variables) {
  const headers = { "content-type": "application/json", "accept": "application/graphql-response+json, application/json" };
  const token = $("token").value.trim();
  if (token) headers.authorization = "Bearer " + token.replace(/^Bearer\s+/i, "");
  const response = await fetch(endpoint, { method: "POST", headers, body: JSON.stringify({ query, variables }) });
  return { status: response.status, body: await response.json().catch(() => null) };
}
async function run() {
  let variables;
  try { variables = JSON.parse($("variables").value || "{}"); }
  catch (e) { $("result").textContent = "Variables are not valid JSON: " + e.message; return; }
  $("result").textContent = "…";
  try {
    const { status, body } = await send($("query").value, variables);
    $("result").textContent = "HTTP " + status + "\n" + JSON.stringify(body, null, 2);
  } catch (e) { $("result").textContent = "Request failed: " + e.message; }
}
$("run").addEventListener("click", run);
document.addEventListener("keydown", (e) => { if ((e.ctrlKey || e.metaKey) && e.key === "Enter") run(); });
function typeName(t) { return t.kind === "NON_NULL" ? typeName(t.ofType) + "!" : t.kind === "LIST" ? "[" + typeName(t.ofType) + "]" : t.name; }
(async () => {
  const q = "{ __schema { types { name kind description fields { name description args { name type { kind name ofType { kind name ofType { kind name } } } } type { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } } }";
  const { body } = await send(q, {}).catch(() => ({ body: null }));
  const types = body && body.data && body.data.__schema ? body.data.__schema.types : null;
  if (!types) { $("docs").textContent = "Introspection is turned off."; return; }
  const docs = $("docs"); docs.textContent = "";
  for (const t of types.filter((t) => !t.name.startsWith("__") && t.fields)) {
    const d = document.createElement("details");
    const s = document.createElement("summary"); s.textContent = t.name; d.appendChild(s);
    for (const f of t.fields) {
      const p = document.createElement("div");
      const args = f.args.length ? "(" + f.args.map((a) => a.name + ": " + typeName(a.type)).join(", ") + ")" : "";
      p.textContent = f.name + args + ": " + typeName(f.type);
      if (f.description) { const s = document.createElement("small"); s.textContent = " — " + f.description.split("\n")[0]; p.appendChild(s); }
      d.appendChild(p);
    }
    docs.appendChild(d);
  }
})();
</script>
</body>
</html>
"#;
