//! What the system tests share beyond testkit: the environment of a worker binary
//! pointed at a fake model, with short backoffs and a 3 s takeover window, and reading
//! a binary's metrics.

use sqlx::PgPool;
use testkit::postgres::database_url;

/// `DATABASE_URL` of `pool`, the model at `server`, and `extra` on top.
pub fn worker_env(
    pool: &PgPool,
    server: &wiremock::MockServer,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    worker_env_at(pool, &format!("{}/v1", server.uri()), extra)
}

/// [`worker_env`] for a model at `base_url` (`…/v1`).
pub fn worker_env_at(
    pool: &PgPool,
    base_url: &str,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("DATABASE_URL", database_url(pool)),
        ("OPENAI_BASE_URL", base_url.to_owned()),
        ("OPENAI_API_KEY", "sk-test".to_owned()),
        ("WORKER_CONCURRENCY", "8".to_owned()),
        ("LLM_BACKOFF_BASE_MS", "10".to_owned()),
        ("LLM_BACKOFF_MAX_MS", "50".to_owned()),
        ("WORKER_HEARTBEAT_SECS", "3".to_owned()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    env
}

pub async fn scrape(addr: &str) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text")
}

/// A scrape in which every `(series, value)` reads as given: the database gauges are
/// refreshed every few seconds, not at the scrape, so the first scrapes may be older.
pub async fn scrape_showing(addr: &str, expected: &[(&str, f64)]) -> String {
    testkit::eventually(
        format_args!("{addr}/metrics to show {expected:?}"),
        std::time::Duration::from_secs(60),
        || async {
            let scraped = scrape(addr).await;
            expected
                .iter()
                .all(|(series, want)| value(&scraped, series) == Some(*want))
                .then_some(scraped)
        },
    )
    .await
}

/// The value of the series `name{labels}` (labels as rendered, e.g. `state="pending"`).
pub fn value(scraped: &str, series: &str) -> Option<f64> {
    scraped
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}
