//! What the system tests share beyond testkit: the environment of a worker binary
//! pointed at a fake model, with short backoffs and a 3 s takeover window.

use sqlx::PgPool;
use testkit::postgres::database_url;

/// `DATABASE_URL` of `pool`, the model at `server`, and `extra` on top.
pub fn worker_env(
    pool: &PgPool,
    server: &wiremock::MockServer,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("DATABASE_URL", database_url(pool)),
        ("OPENAI_BASE_URL", format!("{}/v1", server.uri())),
        ("OPENAI_API_KEY", "sk-test".to_owned()),
        ("WORKER_CONCURRENCY", "8".to_owned()),
        ("LLM_BACKOFF_BASE_MS", "10".to_owned()),
        ("LLM_BACKOFF_MAX_MS", "50".to_owned()),
        ("WORKER_HEARTBEAT_SECS", "3".to_owned()),
    ];
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    env
}
