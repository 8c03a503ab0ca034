//! A worker running in this process over the test's own database, fixtures written with
//! the same SQL the api uses, and a fake OpenAI-compatible server.

use serde_json::{Value, json};
use shared::db::{job_postings, operations, sessions, users};
use shared::domain::{OperationId, OperationStatus, SessionId, UserId};
use shared::jobs::{self, QuestionGenerationJob};
use sqlx::PgPool;
use std::time::Duration;
use tokio::sync::oneshot;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};
use worker::config::{Provider, WorkerConfig};

/// Test settings: `configure` adjusts the defaults of [`WorkerConfig::for_tests`].
pub fn config(configure: impl FnOnce(&mut WorkerConfig)) -> WorkerConfig {
    let mut config = WorkerConfig::for_tests("postgres://unused@127.0.0.1/unused");
    configure(&mut config);
    config
}

/// Settings pointing the `openai` provider at a fake server.
pub fn openai_config(
    server: &MockServer,
    configure: impl FnOnce(&mut WorkerConfig),
) -> WorkerConfig {
    config(|c| {
        c.llm_provider = Some(Provider::Openai);
        c.openai_base_url = Some(format!("{}/v1", server.uri()));
        c.openai_api_key = Some(shared::config::Secret::new("sk-test-key"));
        configure(c);
    })
}

/// A worker in this process; dropping it (or calling `stop`) shuts it down.
pub struct RunningWorker {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub metrics_addr: std::net::SocketAddr,
}

impl RunningWorker {
    pub async fn start(pool: &PgPool, config: WorkerConfig) -> Self {
        shared::tls::install_crypto_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let metrics_addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let pool = pool.clone();
        let task = tokio::spawn(async move {
            worker::work(&config, pool, listener, async {
                let _ = stopped.await;
            })
            .await
        });
        Self {
            stop: Some(stop),
            task,
            metrics_addr,
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = &mut self.task;
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("worker stops")
            .expect("join")
            .expect("worker ran");
    }
}

impl Drop for RunningWorker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn migrated(pool: &PgPool) {
    shared::tls::install_crypto_provider();
    shared::db::migrate(pool).await.expect("migrate");
}

/// A user with a resume, a job posting and an active session.
pub async fn session(pool: &PgPool, n: usize) -> (UserId, SessionId) {
    let mut conn = pool.acquire().await.expect("conn");
    let user = users::insert(
        &mut conn,
        &format!("user{n}-{}@example.com", uuid::Uuid::new_v4()),
        "hash",
        None,
    )
    .await
    .expect("user");
    shared::db::resumes::upsert(
        &mut conn,
        user.id,
        "Eight years building payment systems in Rust and Go",
    )
    .await
    .expect("resume");
    let posting = job_postings::insert(
        &mut conn,
        user.id,
        "Staff engineer",
        Some("Acme"),
        "Own the ledger service on PostgreSQL and Kafka",
    )
    .await
    .expect("posting");
    let session = sessions::insert_for_posting(&mut conn, user.id, posting.id)
        .await
        .expect("session")
        .expect("owned");
    (user.id, session.id)
}

/// Inserts an operation and its job in one transaction, exactly as the api does.
pub async fn enqueue(
    pool: &PgPool,
    user: UserId,
    session: SessionId,
    max_attempts: u32,
) -> OperationId {
    let mut tx = pool.begin().await.expect("tx");
    let id = OperationId::new();
    operations::insert_question_generation(&mut tx, id, user, session, None)
        .await
        .expect("insert")
        .expect("inserted");
    jobs::enqueue(
        &mut tx,
        &QuestionGenerationJob {
            operation_id: id,
            session_id: session,
        },
        max_attempts,
    )
    .await
    .expect("push");
    tx.commit().await.expect("commit");
    id
}

/// Polls until the operation is `completed` or `failed`, with a generous deadline.
pub async fn finished(pool: &PgPool, id: OperationId) -> operations::Operation {
    until(pool, id, |s| s.is_terminal()).await
}

/// Polls until the operation's status satisfies `wanted`.
pub async fn until(
    pool: &PgPool,
    id: OperationId,
    wanted: impl Fn(OperationStatus) -> bool,
) -> operations::Operation {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let mut conn = pool.acquire().await.expect("conn");
        let op = operations::find(&mut conn, id)
            .await
            .expect("find")
            .expect("exists");
        if wanted(op.status) {
            return op;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "operation {id} still {:?}",
            op.status
        );
        drop(conn);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn scalar(pool: &PgPool, sql: &'static str, id: uuid::Uuid) -> i64 {
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("scalar")
}

pub async fn question_count(pool: &PgPool, session: SessionId) -> i64 {
    scalar(
        pool,
        "SELECT count(*) FROM session_messages WHERE session_id = $1 AND message_type = 'question'",
        session.0,
    )
    .await
}

pub async fn counter(pool: &PgPool, session: SessionId) -> i64 {
    scalar(
        pool,
        "SELECT current_question_number::bigint FROM interview_sessions WHERE id = $1",
        session.0,
    )
    .await
}

pub async fn attempts(pool: &PgPool, op: OperationId) -> i64 {
    scalar(
        pool,
        "SELECT attempts::bigint FROM operations WHERE id = $1",
        op.0,
    )
    .await
}

/// A chat-completions reply whose message content is `content`.
pub fn completion(content: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "test-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop", "logprobs": null}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150}
    }))
}

/// A valid JSON question reply.
pub fn question(text: &str, kind: &str) -> ResponseTemplate {
    completion(&json!({"question_text": text, "question_type": kind}).to_string())
}

/// An OpenAI-style error reply.
pub fn error(status: u16) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({"error": {"message": "provider says no (secret detail)", "type": "error", "param": null, "code": null}}))
}

/// Mounts `reply` for chat completions, for at most `times` calls if given; earlier
/// mounts with a higher priority (lower number) answer first.
pub async fn mount(server: &MockServer, priority: u8, times: Option<u64>, reply: ResponseTemplate) {
    let mock = Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(reply)
        .with_priority(priority);
    match times {
        Some(n) => mock.up_to_n_times(n).mount(server).await,
        None => mock.mount(server).await,
    }
}

/// How many chat-completion calls the fake server received.
pub async fn calls(server: &MockServer) -> usize {
    server.received_requests().await.map_or(0, |r| r.len())
}

/// The bodies of the calls received, as JSON.
pub async fn call_bodies(server: &MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("JSON request"))
        .collect()
}

/// Polls until no job of the queue is waiting or running, and returns their statuses.
pub async fn settled_jobs(pool: &PgPool) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let statuses: Vec<String> =
            sqlx::query_scalar("SELECT status FROM apalis.jobs ORDER BY id")
                .fetch_all(pool)
                .await
                .expect("jobs");
        if statuses
            .iter()
            .all(|s| matches!(s.as_str(), "Done" | "Killed" | "Failed"))
        {
            return statuses;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "jobs still open: {statuses:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
