//! Wake-ups after the commit (`shared::db::wake`): a job's two durable commits (the
//! enqueue and the result) notify nobody, so that they never wait in PostgreSQL's one
//! line for notifying commits; the wake sent after each says what the trigger would
//! have; any other writer's commit still notifies; and the real binaries send each
//! wake once.
//!
//! Notifications arrive in commit order, so a marker sent after a commit arrives first
//! exactly when that commit sent nothing.

use crate::support::worker_env;
use serde_json::Value;
use shared::db::operations;
use shared::db::wake::{self, JOB_INSERTED, OPERATION_FINISHED, Wake};
use shared::domain::{OperationId, SessionId};
use shared::jobs::{Job, QuestionGenerationJob};
use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgNotification};
use std::time::Duration;
use testkit::client::signed_in_session;
use testkit::fixtures::*;
use testkit::llm::*;
use testkit::postgres::database_url;
use testkit::process::Process;
use wiremock::MockServer;

/// How long a notification may take to arrive: a safety net.
const ARRIVAL: Duration = Duration::from_secs(30);

async fn listener(pool: &PgPool) -> PgListener {
    let mut listener = PgListener::connect_with(pool).await.expect("listener");
    listener
        .listen_all([JOB_INSERTED, OPERATION_FINISHED])
        .await
        .expect("listen");
    listener
}

async fn next(listener: &mut PgListener) -> PgNotification {
    tokio::time::timeout(ARRIVAL, listener.recv())
        .await
        .expect("a notification in time")
        .expect("a notification")
}

/// Asserts that the commits before this call sent nothing yet unread on `listener`.
async fn nothing_pending(pool: &PgPool, listener: &mut PgListener) {
    sqlx::query("SELECT pg_notify($1, 'marker')")
        .bind(OPERATION_FINISHED)
        .execute(pool)
        .await
        .expect("marker");
    let first = next(listener).await;
    assert_eq!(
        (first.channel(), first.payload()),
        (OPERATION_FINISHED, "marker"),
        "a commit notified before the marker"
    );
}

/// A question's operation and job, written as the api writes them; its wake unsent.
async fn enqueued(pool: &PgPool) -> (OperationId, QuestionGenerationJob, Wake) {
    let (user, session) = session(pool, 0).await;
    let (id, wake) = enqueue_unwoken(pool, user, session, 3).await;
    (id, QuestionGenerationJob::new(id, session), wake)
}

#[sqlx::test(migrations = false)]
async fn a_jobs_commits_notify_nobody_and_their_wakes_say_what_the_triggers_would(pool: PgPool) {
    migrated(&pool).await;
    let mut listener = listener(&pool).await;

    // The enqueue's commit is quiet; its wake is apalis' insert notification.
    let (id, job, wake) = enqueued(&pool).await;
    nothing_pending(&pool, &mut listener).await;
    wake.send(&mut pool.acquire().await.expect("conn")).await;
    let woken = next(&mut listener).await;
    assert_eq!(woken.channel(), JOB_INSERTED);
    let ours: Value = serde_json::from_str(woken.payload()).expect("JSON");
    let task_id = job.task_id().to_string();
    assert_eq!(ours["job_type"], QuestionGenerationJob::TYPE.as_str());
    assert_eq!(ours["id"], task_id.as_str());

    // An insert by any other writer notifies in its commit, with the same fields.
    sqlx::query("INSERT INTO apalis.jobs (id, job_type, job) VALUES ($1, 'wake_test', '{}')")
        .bind(ulid::Ulid::generate().to_string())
        .execute(&pool)
        .await
        .expect("insert");
    let theirs = next(&mut listener).await;
    assert_eq!(theirs.channel(), JOB_INSERTED);
    let theirs: Value = serde_json::from_str(theirs.payload()).expect("JSON");
    assert_eq!(theirs["job_type"], "wake_test");
    for field in ours.as_object().expect("an object").keys() {
        assert!(theirs.get(field).is_some(), "{field} not in {theirs}");
    }

    // The result's commit is quiet; its wake is the trigger's notification.
    let mut tx = pool.begin().await.expect("tx");
    wake::after_commit(&mut tx).await.expect("quiet");
    operations::fail(&mut tx, id, "failed by the test")
        .await
        .expect("fail");
    tx.commit().await.expect("commit");
    nothing_pending(&pool, &mut listener).await;
    Wake::operation_finished(id)
        .send(&mut pool.acquire().await.expect("conn"))
        .await;
    let finished = next(&mut listener).await;
    assert_eq!(
        (finished.channel(), finished.payload()),
        (OPERATION_FINISHED, id.to_string().as_str())
    );

    // Any other finish notifies in its commit, as before.
    let (other_id, _, other_wake) = enqueued(&pool).await;
    other_wake
        .send(&mut pool.acquire().await.expect("conn"))
        .await;
    assert_eq!(next(&mut listener).await.channel(), JOB_INSERTED);
    operations::fail(&mut pool.acquire().await.expect("conn"), other_id, "failed")
        .await
        .expect("fail");
    let finished = next(&mut listener).await;
    assert_eq!(finished.payload(), other_id.to_string());

    // A job that waits wakes nobody.
    Wake::job(QuestionGenerationJob::TYPE.as_str(), &task_id, false)
        .send(&mut pool.acquire().await.expect("conn"))
        .await;
    nothing_pending(&pool, &mut listener).await;
}

#[sqlx::test(migrations = false)]
async fn the_binaries_wake_the_workers_and_the_long_polls_once_a_job(pool: PgPool) {
    migrated(&pool).await;
    let llm = MockServer::start().await;
    mount(&llm, 1, None, question("Woken once?", "technical")).await;
    let api = Process::start(
        "api",
        "wakes",
        &[
            ("DATABASE_URL", database_url(&pool)),
            ("JWT_SECRET", "wakes-test-signing-key-of-32-bytes".into()),
        ],
    )
    .await;
    let _worker = Process::start("worker", "wakes", &worker_env(&pool, &llm, &[])).await;
    let (token, session) = signed_in_session(&api.addr, "wakes@example.com").await;
    let mut listener = listener(&pool).await;

    let accepted: Value = reqwest::Client::new()
        .post(format!(
            "http://{}/api/v1/sessions/{session}/generate-question",
            api.addr
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("generate")
        .json()
        .await
        .expect("json");
    let id = OperationId(
        accepted["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .expect("an operation id"),
    );
    assert_eq!(finished(&pool, id).await.status.as_str(), "completed");

    // Each wake comes once: the api's after its commit, the worker's after its own.
    let task_id = QuestionGenerationJob::new(id, SessionId(session.parse().expect("a session id")))
        .task_id()
        .to_string();
    let mut seen = Vec::new();
    while !(seen.iter().any(|(c, _)| c == JOB_INSERTED)
        && seen.iter().any(|(c, _)| c == OPERATION_FINISHED))
    {
        let n = next(&mut listener).await;
        seen.push((n.channel().to_owned(), n.payload().to_owned()));
    }
    nothing_pending(&pool, &mut listener).await;
    let job_wakes: Vec<Value> = seen
        .iter()
        .filter(|(c, _)| c == JOB_INSERTED)
        .map(|(_, p)| serde_json::from_str(p).expect("JSON"))
        .collect();
    assert_eq!(job_wakes.len(), 1, "{seen:?}");
    assert_eq!(job_wakes[0]["id"], task_id.as_str(), "{seen:?}");
    assert_eq!(
        seen.iter()
            .filter(|(c, p)| c == OPERATION_FINISHED && *p == id.to_string())
            .count(),
        1,
        "{seen:?}"
    );
}

#[sqlx::test(migrations = false)]
async fn apalis_trigger_is_kept_quiet_only_while_it_is_the_body_apalis_ships(pool: PgPool) {
    migrated(&pool).await;
    let body = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT prosrc FROM pg_proc WHERE oid = 'apalis.notify_new_jobs()'::regprocedure",
        )
        .fetch_one(&pool)
        .await
        .expect("the trigger function")
    };
    let ours = body().await;
    assert!(ours.contains("interviewer.wake_after_commit"), "{ours}");
    // Every start runs the tuning again: nothing changes.
    migrated(&pool).await;
    assert_eq!(body().await, ours);

    // A later apalis' body is its own: left as it is (its enqueues notify in their
    // commit, as the first test would then show).
    let later = " BEGIN PERFORM pg_notify('apalis::job::insert', NEW.id); RETURN NEW; END; ";
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE OR REPLACE FUNCTION apalis.notify_new_jobs() RETURNS trigger
         LANGUAGE plpgsql AS $${later}$$"
    )))
    .execute(&pool)
    .await
    .expect("a later body");
    sqlx::query("SELECT queue_tuning()")
        .execute(&pool)
        .await
        .expect("tuning");
    assert_eq!(body().await, later);
}
