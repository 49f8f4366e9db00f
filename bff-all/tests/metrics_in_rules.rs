//! No rule watches a metric that does not exist: every metric the alert and recording rules
//! (`deploy/prometheus/bff-rules.yaml`) and the Grafana dashboards (`deploy/grafana/*.json`) read
//! is exported by freshly started gateways, before their first request (a series that appears
//! only after its first event would leave an alert silent and a panel empty until then).
//!
//! The three gateways run as `bff-all` runs them, with every feature that exports series on:
//! Redis (shared state, change events), webhooks, trusted documents, a partner's key.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use bff_all::{AllSettings, build};
use server_kit::{
    config::load_layered,
    testing::{scrape, serve},
};

/// The workspace's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// PromQL functions and aggregation operators are followed by `(`; these words are not (or not
/// always): the aggregation operators (`sum by (x) (…)`), binary operators and modifiers.
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "and",
    "or",
    "unless",
    "atan2",
    "bool",
    "offset",
    "inf",
    "nan",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The keywords followed by a list of label names in parentheses.
const LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names a PromQL expression reads: identifiers standing alone or followed by `{` or
/// `[`, not function names (followed by `(`), keywords, label names (inside `{…}` and after `by`,
/// `on`, …), strings, numbers, durations or Grafana variables (`$gateway`). Recording rules'
/// names (with a `:`) are included; the caller tells them apart.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    // The index just past the group closed by `close`, from `i` on the opening character,
    // skipping strings inside it.
    let skip_group = |mut i: usize, close: char| {
        i += 1;
        while i < chars.len() && chars[i] != close {
            i = if matches!(chars[i], '"' | '\'' | '`') {
                skip_string(&chars, i)
            } else {
                i + 1
            };
        }
        i + 1
    };
    let next_non_space = |mut i: usize| {
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        (i, chars.get(i).copied())
    };
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&chars, i);
        } else if c == '{' {
            i = skip_group(i, '}');
        } else if c == '[' {
            i = skip_group(i, ']');
        } else if c.is_ascii_digit() || c == '.' {
            // A number or a duration (`5m`, `1e3`, `0x1f`).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c == '$' {
            // A Grafana variable: `$name` or `${name}`.
            i += 1;
            if chars.get(i) == Some(&'{') {
                i = skip_group(i, '}');
            }
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let (next, after) = next_non_space(i);
            if LABEL_LISTS.contains(&word.as_str()) {
                if after == Some('(') {
                    i = skip_group(next, ')');
                }
            } else if after != Some('(') && !KEYWORDS.contains(&word.to_lowercase().as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// The index just past the string opening at `i` (backslash escapes inside it).
fn skip_string(chars: &[char], mut i: usize) -> usize {
    let quote = chars[i];
    i += 1;
    while i < chars.len() && chars[i] != quote {
        if chars[i] == '\\' && quote != '`' {
            i += 1;
        }
        i += 1;
    }
    i + 1
}

/// The expressions and the recording rules' names of the rules file (written by
/// `scripts/gen-prometheus-rules` with each `expr:` one JSON-quoted string on one line).
fn rules() -> (Vec<String>, BTreeSet<String>) {
    let path = root().join("deploy/prometheus/bff-rules.yaml");
    let text = std::fs::read_to_string(&path).expect("the rules file");
    let mut exprs = Vec::new();
    let mut records = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim_start().trim_start_matches("- ");
        if let Some(expr) = line.strip_prefix("expr: ") {
            exprs.push(
                serde_json::from_str::<String>(expr).unwrap_or_else(|error| {
                    panic!(
                        "{}: expr not one JSON string ({error}): {expr}",
                        path.display()
                    )
                }),
            );
        } else if let Some(record) = line.strip_prefix("record: ") {
            records.insert(record.trim_matches('"').to_owned());
        }
    }
    assert!(
        exprs.len() > 10 && !records.is_empty(),
        "{}: no rules read",
        path.display()
    );
    (exprs, records)
}

/// Every `expr` of every dashboard under `deploy/grafana` (panels, rows' panels, anything).
fn dashboard_exprs() -> Vec<String> {
    fn collect(value: &serde_json::Value, out: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, item) in map {
                    match (key.as_str(), item) {
                        ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                        _ => collect(item, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|item| collect(item, out)),
            _ => {}
        }
    }
    let mut exprs = Vec::new();
    let dir = root().join("deploy/grafana");
    for entry in std::fs::read_dir(&dir).expect("deploy/grafana") {
        let path = entry.expect("an entry").path();
        if path.extension().is_some_and(|ext| ext == "json") {
            let text = std::fs::read_to_string(&path).expect("a dashboard");
            let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
            collect(&dashboard, &mut exprs);
        }
    }
    assert!(
        exprs.len() > 10,
        "no dashboard queries read in {}",
        dir.display()
    );
    exprs
}

/// The metric names in an exposition text: each sample's name, and each histogram's own name
/// (its samples are `_bucket`, `_count`, `_sum`).
fn exported(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" histogram") {
                names.insert(name.to_owned());
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// `name` as a histogram's own name, when it is one of its series (`x_bucket` → `x`).
fn histogram_of(name: &str) -> &str {
    ["_bucket", "_count", "_sum"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
}

#[test]
fn metric_names_are_read_from_promql_without_functions_labels_or_numbers() {
    let expr = r#"histogram_quantile(0.99, sum by (gateway, le) (rate(a_bucket{route!~"/x|{y}",le="0.5"}[5m])))
        / on (instance) group_left(pod) b offset 5m > 1e3 and ignoring(state) c:rate5m
        or max without (stream) (d) == bool 0 unless sum(rate(e[$__rate_interval])) > $threshold
        or label_replace(f, "dst", "$1", "src", "(.*)") * Inf"#;
    assert_eq!(
        metric_names(expr),
        ["a_bucket", "b", "c:rate5m", "d", "e", "f"]
            .map(str::to_owned)
            .into()
    );
}

#[tokio::test]
async fn every_metric_the_rules_and_the_dashboards_read_is_exported_before_any_request() {
    let redis = reference_services::LocalRedis::start()
        .await
        .expect("a private redis-server starts (./scripts/ensure-redis-server installs it)");
    let services = reference_services::Config {
        events: Some(reference_services::EventsConfig::new(redis.url())),
        ..reference_services::Config::default()
    };
    let services = reference_services::spawn_all(services)
        .await
        .expect("the reference services start");
    let mut settings = bff_all::testing::on_free_ports(&services);
    settings.shared.redis_url = Some(shared_clients::shared_state::RedisUrl::new(redis.url()));
    // bff-web with its trusted documents (the repository's manifest), as deployed.
    let manifest = root().join("bff-web/operations/manifest.json");
    let configured: AllSettings = load_layered(
        None,
        [
            (
                "BFF_WEB__GATEWAY__TRUSTED_DOCUMENTS__MODE",
                "allow".to_owned(),
            ),
            (
                "BFF_WEB__GATEWAY__TRUSTED_DOCUMENTS__MANIFESTS",
                format!("[{:?}]", manifest.display().to_string()),
            ),
        ]
        .map(|(name, value)| (name.to_owned(), value)),
    )
    .expect("the trusted documents settings load");
    settings.web.gateway = configured.web.gateway;
    // bff-partner with a partner's key (its series are per configured partner).
    settings.partner.gateway.keys = vec![bff_partner::config::KeyConfig {
        sha256: bff_partner::config::hash_key("mK4v9Qx2-metrics-in-rules-test-Lr7Tz3Wp"),
        partner_id: shared_clients::PartnerId::parse("partner-acme").expect("a partner id"),
        scopes: vec![bff_partner::config::Scope::CatalogRead],
        rate_limit: None,
    }];
    let mut gateways = Vec::new();
    for served in build(&settings).expect("the gateways build") {
        let name = served.section.trim_end_matches(".server").to_owned();
        gateways.push((
            name,
            serve(&served.server, served.gateway).await.metrics_url,
        ));
    }

    // The first thing each gateway answers: its /metrics.
    let client = reqwest::Client::new();
    let mut by_gateway = BTreeMap::new();
    for (name, metrics_url) in &gateways {
        by_gateway.insert(name.clone(), exported(&scrape(&client, metrics_url).await));
    }
    let all: BTreeSet<&String> = by_gateway.values().flatten().collect();

    let (rule_exprs, records) = rules();
    let mut missing = BTreeMap::<String, BTreeSet<&str>>::new();
    let mut unknown_records = BTreeSet::new();
    for (source, exprs) in [
        ("deploy/prometheus/bff-rules.yaml", rule_exprs),
        ("deploy/grafana", dashboard_exprs()),
    ] {
        for expr in &exprs {
            for name in metric_names(expr) {
                if name.contains(':') {
                    if !records.contains(&name) {
                        unknown_records.insert(name);
                    }
                } else if !all.contains(&name) && !all.contains(&histogram_of(&name).to_owned()) {
                    missing.entry(name).or_default().insert(source);
                }
            }
        }
    }
    assert!(
        missing.is_empty(),
        "read by a rule or a panel, but not exported by a fresh gateway: {missing:#?}"
    );
    assert!(
        unknown_records.is_empty(),
        "recording rules read but not defined: {unknown_records:?}"
    );
    // The SLOs are per gateway: every gateway exports their series.
    for (name, exported) in &by_gateway {
        for series in [
            "bff_http_requests_total",
            "bff_http_request_duration_seconds",
        ] {
            assert!(exported.contains(series), "{name} does not export {series}");
        }
    }
}
