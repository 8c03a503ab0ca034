//! Metrics as an operator sees them: scraped from the real binaries after real work, and
//! checked against the contract and against what the dashboard and alerts query.

use serde_json::Value;
use sqlx::PgPool;
use std::collections::BTreeSet;
use std::path::PathBuf;
use testkit::fixtures::*;
use testkit::postgres::database_url;
use testkit::process::Process;

use crate::support::{scrape_showing, value};

/// Whether `name` (a metric, or a histogram's `_bucket`/`_sum`/`_count`) is exported.
fn exports(scraped: &str, name: &str) -> bool {
    scraped.lines().any(|line| {
        !line.starts_with('#')
            && (line.starts_with(&format!("{name}{{")) || line.starts_with(&format!("{name} ")))
    })
}

fn deploy_file(path: &str) -> String {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The PromQL expressions of the Grafana dashboard.
fn dashboard_exprs() -> Vec<String> {
    let dashboard: Value =
        serde_json::from_str(&deploy_file("grafana/dashboards/interviewer.json"))
            .expect("dashboard JSON");
    dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|panel| panel["targets"].as_array().cloned().unwrap_or_default())
        .map(|target| target["expr"].as_str().expect("expr").to_owned())
        .collect()
}

/// The `expr:` of each alert rule, inline or as a `|` block.
fn alert_exprs() -> Vec<String> {
    let text = deploy_file("prometheus/alerts.yml");
    let mut exprs = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if rest == "|" || rest == ">" {
            let indent = line.len() - line.trim_start().len();
            let mut block = String::new();
            while let Some(next) = lines.peek() {
                if next.trim().is_empty() || next.len() - next.trim_start().len() <= indent {
                    break;
                }
                block.push_str(next.trim());
                block.push(' ');
                lines.next();
            }
            exprs.push(block);
        } else {
            exprs.push(rest.to_owned());
        }
    }
    exprs
}

/// The metric names a PromQL expression reads: identifiers that are not functions,
/// keywords, label names (inside `{}` or `by (...)`), ranges or numbers.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
    ];
    const KEYWORDS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "offset",
        "bool",
        "inf",
        "nan",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let (mut i, mut depth_braces, mut in_string, mut after_grouping) = (0, 0, false, false);
    while i < chars.len() {
        let c = chars[i];
        if in_string {
            in_string = c != '"';
            i += 1;
            continue;
        }
        match c {
            '"' => in_string = true,
            '{' | '[' => depth_braces += 1,
            '}' | ']' => depth_braces -= 1,
            _ if c.is_ascii_digit() && depth_braces == 0 => {
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '-')
                {
                    i += 1;
                }
                continue;
            }
            _ if (c.is_ascii_alphabetic() || c == '_') && depth_braces == 0 => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace());
                if KEYWORDS.contains(&word.as_str()) {
                    after_grouping = matches!(
                        word.as_str(),
                        "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
                    );
                } else if next == Some(&'(') || AGGREGATIONS.contains(&word.as_str()) {
                    // A function call.
                } else if !after_grouping {
                    names.insert(word);
                }
                continue;
            }
            ')' => after_grouping = false,
            _ => {}
        }
        i += 1;
    }
    names
}

#[test]
fn the_promql_reader_finds_metric_names_only() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le, route) (rate(http_request_duration_seconds_bucket{status=~"5.."}[5m]))) / clamp_min(sum(rate(llm_requests_total[10m])), 1e-9) > 0.2"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["http_request_duration_seconds_bucket", "llm_requests_total"]
    );
}

#[sqlx::test(migrations = false)]
async fn both_binaries_export_the_contract_metrics_and_all_that_dashboards_and_alerts_query(
    pool: PgPool,
) {
    migrated(&pool).await;
    let db = database_url(&pool);
    let api = Process::start(
        "api",
        "metrics",
        &[
            ("DATABASE_URL", db.clone()),
            ("JWT_SECRET", "metrics-test-signing-key-32-bytes".into()),
        ],
    )
    .await;
    let (user, session) = session(&pool, 1).await;
    let op = enqueue(&pool, user, session, 5).await;
    // Some traffic on the api, so its HTTP series exist.
    reqwest::get(format!("http://{}/api/v1/sessions", api.addr))
        .await
        .expect("request");

    // Queued, no worker yet: the api reports it from the database.
    let before = scrape_showing(
        &api.addr,
        &[
            (r#"question_jobs{state="pending"}"#, 1.0),
            (r#"operations{status="pending"}"#, 1.0),
        ],
    )
    .await;
    assert_eq!(
        value(&before, r#"question_jobs{state="pending"}"#),
        Some(1.0),
        "{before}"
    );
    assert_eq!(value(&before, r#"operations{status="pending"}"#), Some(1.0));

    let worker = Process::start(
        "worker",
        "metrics",
        &[
            ("DATABASE_URL", db),
            ("LLM_PROVIDER", "offline".into()),
            // With a cap, so that its share is reported (llm_cap_share is absent
            // without one), and prices, so that its cost is (llm_cost_total likewise).
            ("LLM_MAX_IN_FLIGHT", "8".into()),
            ("LLM_PRICE_PER_MILLION_PROMPT_TOKENS", "0.15".into()),
            ("LLM_PRICE_PER_MILLION_COMPLETION_TOKENS", "0.60".into()),
        ],
    )
    .await;
    finished(&pool, op).await;
    settled_jobs(&pool).await;
    let settled = [
        (r#"question_jobs{state="pending"}"#, 0.0),
        (r#"question_jobs{state="done"}"#, 1.0),
        (r#"operations{status="completed"}"#, 1.0),
    ];
    let api_after = scrape_showing(&api.addr, &settled).await;
    let worker_after = scrape_showing(&worker.addr, &settled).await;
    for scraped in [&api_after, &worker_after] {
        assert_eq!(
            value(scraped, r#"question_jobs{state="pending"}"#),
            Some(0.0),
            "{scraped}"
        );
        assert_eq!(
            value(scraped, r#"question_jobs{state="done"}"#),
            Some(1.0),
            "{scraped}"
        );
        assert_eq!(
            value(scraped, r#"operations{status="completed"}"#),
            Some(1.0),
            "{scraped}"
        );
        let age = value(scraped, "question_worker_heartbeat_age_seconds");
        assert!(
            age.is_some_and(|age| age < 300.0),
            "heartbeat age {age:?} in {scraped}"
        );
    }
    // The contract's metrics, each where the contract puts it.
    for name in [
        "question_job_duration_seconds_bucket",
        "llm_request_duration_seconds_bucket",
        "llm_requests_total",
        "question_job_retries_total",
        "question_jobs_in_flight",
        "question_jobs_finished_total",
        "llm_in_flight",
        "llm_cap_share",
        "llm_wait_seconds_bucket",
        "llm_breaker_open",
        "llm_tokens_total",
        "llm_cost_total",
        "llm_tokens_per_question_bucket",
    ] {
        assert!(
            exports(&worker_after, name),
            "worker does not export {name}:\n{worker_after}"
        );
    }
    for scraped in [&api_after, &worker_after] {
        let build = format!(
            r#"build_info{{version="{}",commit="{}"}}"#,
            shared::build::VERSION,
            shared::build::COMMIT
        );
        assert_eq!(value(scraped, &build), Some(1.0), "{build} in {scraped}");
    }
    for name in [
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "question_jobs_oldest_pending_age_seconds",
    ] {
        assert!(
            exports(&api_after, name),
            "api does not export {name}:\n{api_after}"
        );
    }
    assert!(
        api_after.contains(r#"route="/api/v1/sessions""#),
        "HTTP metrics are labelled by route template"
    );
    assert_eq!(
        value(&worker_after, r#"llm_requests_total{outcome="ok"}"#),
        Some(1.0)
    );

    // Nothing on the dashboard or in the alerts may query a metric that does not exist.
    let both = format!("{api_after}\n{worker_after}");
    let exprs: Vec<String> = dashboard_exprs().into_iter().chain(alert_exprs()).collect();
    assert!(exprs.len() >= 15, "found only {} expressions", exprs.len());
    for expr in &exprs {
        for name in metric_names(expr) {
            assert!(
                exports(&both, &name),
                "{name} (in `{expr}`) is not exported by either binary"
            );
        }
    }
}
