//! Retention of operations: finished ones older than OPERATION_RETENTION_DAYS go, in
//! batches and one replica at a time; their question messages stay. And of the queue's
//! held jobs that no operation will ever release.

use crate::helpers::*;
use shared::domain::OperationId;
use sqlx::PgPool;
use worker::upkeep::{purge_once, purge_operations_once};

async fn age(pool: &PgPool, op: OperationId, days: i32) {
    sqlx::query(
        "UPDATE operations SET updated_at = now() - make_interval(days => $2) WHERE id = $1",
    )
    .bind(op)
    .bind(days)
    .execute(pool)
    .await
    .expect("age");
}

async fn exists(pool: &PgPool, op: OperationId) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM operations WHERE id = $1)")
        .bind(op)
        .fetch_one(pool)
        .await
        .expect("exists")
}

#[sqlx::test(migrations = false)]
async fn finished_operations_past_retention_go_and_their_messages_stay(pool: PgPool) {
    migrated(&pool).await;
    let fixtures = sessions(&pool, 3).await;
    let worker = RunningWorker::start(&pool, config(|_| {})).await;
    let mut done = Vec::new();
    for (user, session) in &fixtures[..2] {
        let op = enqueue(&pool, *user, *session, 5).await;
        finished(&pool, op).await;
        done.push(op);
    }
    worker.stop().await;
    // Unfinished, however old: never deleted (the reconciler's to end, not ours).
    let (user, session) = fixtures[2];
    let waiting = enqueue(&pool, user, session, 5).await;
    age(&pool, done[0], 31).await;
    age(&pool, done[1], 29).await;
    age(&pool, waiting, 400).await;

    assert_eq!(purge_operations_once(&pool, 30).await.expect("purge"), 1);
    assert!(!exists(&pool, done[0]).await);
    assert!(exists(&pool, done[1]).await && exists(&pool, waiting).await);
    // The question it produced is the permanent record: kept, detached.
    let messages: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM session_messages WHERE session_id = $1 AND operation_id IS NULL",
    )
    .bind(fixtures[0].1)
    .fetch_one(&pool)
    .await
    .expect("messages");
    assert_eq!(messages, 1);
    assert_eq!(counter(&pool, fixtures[0].1).await, 1);
}

#[sqlx::test(migrations = false)]
async fn a_backlog_goes_in_batches_and_one_replica_purges_at_a_time(pool: PgPool) {
    migrated(&pool).await;
    let (user, _) = session(&pool, 1).await;
    sqlx::query(
        "INSERT INTO operations (id, user_id, operation_type, status, error_message, updated_at)
         SELECT gen_random_uuid(), $1, 'question_generation', 'failed', 'old', now() - interval '40 days'
         FROM generate_series(1, 2500)",
    )
    .bind(user)
    .execute(&pool)
    .await
    .expect("backlog");
    // Another replica is purging operations: this one leaves them alone.
    let mut other = pool.begin().await.expect("tx");
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('interviewer.purge.operations'))")
        .execute(&mut *other)
        .await
        .expect("lock");
    assert_eq!(purge_operations_once(&pool, 30).await.expect("purge"), 0);
    other.commit().await.expect("release");
    // Then one pass takes the whole backlog, 1,000 at a time.
    assert_eq!(
        purge_operations_once(&pool, 30).await.expect("purge"),
        2_500
    );
    assert_eq!(purge_operations_once(&pool, 30).await.expect("purge"), 0);
}

#[sqlx::test(migrations = false)]
async fn a_purge_of_operations_elsewhere_does_not_stop_the_purge_of_the_queue(pool: PgPool) {
    migrated(&pool).await;
    let (user, session) = session(&pool, 1).await;
    let ops = enqueue_on(&pool, &[(user, session)], 1).await;
    sqlx::query(
        "UPDATE apalis.jobs SET status = 'Done', done_at = now() - interval '8 days'
         WHERE idempotency_key = $1::text",
    )
    .bind(ops[0])
    .execute(&pool)
    .await
    .expect("an old ended job");
    // Every worker starts both purges at once: another's purge of operations is on.
    let mut other = pool.begin().await.expect("tx");
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('interviewer.purge.operations'))")
        .execute(&mut *other)
        .await
        .expect("lock");
    assert_eq!(purge_once(&pool, 7).await.expect("purge").0, 1);
    // And another's purge of the queue stops this one's, as one replica at a time.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('interviewer.purge.queue'))")
        .execute(&mut *other)
        .await
        .expect("lock");
    sqlx::query(
        "UPDATE apalis.jobs SET status = 'Done', done_at = now() - interval '8 days'
         WHERE idempotency_key = $1::text",
    )
    .bind(enqueue_on(&pool, &[(user, session)], 1).await[0])
    .execute(&pool)
    .await
    .expect("another old ended job");
    assert_eq!(purge_once(&pool, 7).await.expect("purge").0, 0);
    other.commit().await.expect("release");
    assert_eq!(purge_once(&pool, 7).await.expect("purge").0, 1);
}

/// The keys of the queue's jobs, sorted.
async fn job_keys(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT idempotency_key FROM apalis.jobs ORDER BY idempotency_key")
        .fetch_all(pool)
        .await
        .expect("keys")
}

#[sqlx::test(migrations = false)]
async fn a_held_job_whose_key_names_no_operation_is_purged_and_stops_nothing(pool: PgPool) {
    migrated(&pool).await;
    let (user, session) = session(&pool, 1).await;
    // The first can run (no worker takes it here); the three behind it are held.
    let ops = enqueue_on(&pool, &[(user, session)], 4).await;
    // A held job whose key is not an operation's id at all.
    sqlx::query(
        "UPDATE apalis.jobs SET idempotency_key = 'not-a-uuid' WHERE idempotency_key = $1::text",
    )
    .bind(ops[2])
    .execute(&pool)
    .await
    .expect("a key that is no uuid");
    // A held job whose operation is gone (as it goes with its user).
    sqlx::query("DELETE FROM operations WHERE id = $1")
        .bind(ops[3])
        .execute(&pool)
        .await
        .expect("an orphan");

    assert_eq!(
        worker::upkeep::purge_once(&pool, 7).await.expect("purge"),
        (2, 0)
    );
    let mut kept = vec![ops[0].to_string(), ops[1].to_string()];
    kept.sort();
    assert_eq!(
        job_keys(&pool).await,
        kept,
        "the running job and the held one with its operation are kept"
    );
    assert_eq!(operations_in(&pool, "pending").await, 3);
}
