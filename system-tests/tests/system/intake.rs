//! The intake switch on two worker binaries: paused, they finish what they hold and
//! claim nothing new through further beats, while the api still accepts (with a longer
//! Retry-After); resumed, the waiting work starts within a beat and nothing is lost.

use crate::support::worker_env;
use shared::db::intake;
use shared::domain::OperationId;
use sqlx::PgPool;
use std::time::Duration;
use testkit::fixtures::*;
use testkit::llm::*;
use testkit::process::Process;

/// How many of `ops` are in `status`.
async fn in_status(pool: &PgPool, ops: &[OperationId], status: &str) -> usize {
    let ids: Vec<uuid::Uuid> = ops.iter().map(|op| op.0).collect();
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM operations WHERE id = ANY($1) AND status = $2")
            .bind(&ids)
            .bind(status)
            .fetch_one(pool)
            .await
            .expect("count");
    n as usize
}

/// Waits until `workers` workers have published `paused` at a beat, and then for a
/// further beat of each: a whole interval has passed with the switch applied.
async fn workers_applied(pool: &PgPool, workers: usize, paused: bool) {
    let beats: Vec<f64> = testkit::eventually(
        format!("{workers} workers to apply paused = {paused}"),
        Duration::from_secs(30),
        || async {
            let rows: Vec<(bool, f64)> = sqlx::query_as(
                "SELECT s.paused, extract(epoch FROM s.updated_at)::float8 FROM worker_state s
                 JOIN apalis.workers w ON w.id = s.worker_id
                 WHERE w.last_seen > now() - interval '5 seconds'",
            )
            .fetch_all(pool)
            .await
            .expect("state");
            (rows.len() == workers && rows.iter().all(|(p, _)| *p == paused))
                .then(|| rows.into_iter().map(|(_, at)| at).collect())
        },
    )
    .await;
    let latest = beats.into_iter().fold(f64::MIN, f64::max);
    testkit::eventually(
        "a further beat of each worker",
        Duration::from_secs(30),
        || async {
            let oldest: Option<f64> = sqlx::query_scalar(
                "SELECT extract(epoch FROM min(s.updated_at))::float8 FROM worker_state s
             JOIN apalis.workers w ON w.id = s.worker_id
             WHERE w.last_seen > now() - interval '5 seconds'",
            )
            .fetch_one(pool)
            .await
            .expect("state");
            oldest.filter(|oldest| *oldest > latest).map(|_| ())
        },
    )
    .await;
}

#[sqlx::test(migrations = false)]
async fn two_paused_workers_finish_what_they_hold_claim_nothing_new_and_resume(pool: PgPool) {
    migrated(&pool).await;
    let server = wiremock::MockServer::start().await;
    mount(
        &server,
        1,
        None,
        question("Paused or not?", "technical").set_delay(Duration::from_millis(1_500)),
    )
    .await;
    let env = worker_env(&pool, &server, &[]);
    let _a = Process::start("worker", "paused-a", &env).await;
    let _b = Process::start("worker", "paused-b", &env).await;
    let before = one_each(&pool, 12).await;
    // Some run (the model takes 1.5 s) when the operator pauses.
    until_operations(&pool, "processing", 1).await;
    let mut conn = pool.acquire().await.expect("conn");
    intake::set(&mut conn, true, "127.0.0.1")
        .await
        .expect("pause");
    workers_applied(&pool, 2, true).await;
    // What they held is finished.
    testkit::eventually(
        "the started ones to finish",
        Duration::from_secs(30),
        || async { (in_status(&pool, &before, "processing").await == 0).then_some(()) },
    )
    .await;

    // New work waits: accepted, pending, claimed by nobody, through further beats.
    let after = one_each(&pool, 10).await;
    workers_applied(&pool, 2, true).await;
    assert_eq!(in_status(&pool, &after, "pending").await, after.len());
    let claimed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM apalis.jobs
         WHERE idempotency_key = ANY($1) AND (lock_by IS NOT NULL OR status <> 'Pending')",
    )
    .bind(after.iter().map(|op| op.0.to_string()).collect::<Vec<_>>())
    .fetch_one(&pool)
    .await
    .expect("jobs");
    assert_eq!(claimed, 0, "no job claimed while paused");

    intake::set(&mut conn, false, "127.0.0.1")
        .await
        .expect("resume");
    drop(conn);
    workers_applied(&pool, 2, false).await;
    let everything: Vec<OperationId> = before.iter().chain(&after).copied().collect();
    all_completed(&pool, &everything).await;
    assert_consistent(&pool).await;
}
