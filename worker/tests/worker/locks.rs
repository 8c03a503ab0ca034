//! One order of locks for every writer of a session: the session's row, then its
//! operation's. A cancel (the api's: session, then operation) races the worker's
//! failure write and the reconciler, which fail an operation and so, by the trigger
//! that releases the session's next question, also take the session's row. Taken in
//! opposite orders, PostgreSQL would abort one of the two after `deadlock_timeout`.

use crate::helpers::*;
use shared::db::reconcile::{self, WorstCase};
use shared::db::{operations, sessions};
use shared::domain::{OperationId, SessionId, UserId};
use sqlx::{PgPool, Postgres, Transaction};
use std::time::Duration;
use tokio::task::JoinHandle;

/// How long a step may take here: a safety net, not a measurement.
const DEADLINE: Duration = Duration::from_secs(30);

/// A worst case no operation of these tests reaches: only a job that ended makes one
/// stuck.
const WORST_CASE: WorstCase = WorstCase {
    per_attempt: Duration::from_secs(26),
    waits: Duration::from_secs(300),
    margin: Duration::from_secs(60),
};

/// Backends of this test's database waiting for a lock now.
async fn waiting_for_a_lock(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = current_database() AND wait_event_type = 'Lock'",
    )
    .fetch_one(pool)
    .await
    .expect("pg_stat_activity")
}

/// The first half of the api's cancel: the session's row, locked in a transaction.
async fn cancel_begins(
    pool: &PgPool,
    user: UserId,
    session: SessionId,
) -> Transaction<'static, Postgres> {
    let mut tx = pool.begin().await.expect("begin");
    sessions::lock_owned(&mut tx, session, user)
        .await
        .expect("lock the session")
        .expect("the user's session");
    tx
}

/// The second half: the operation failed as cancelled, and the commit.
async fn cancel_ends(mut tx: Transaction<'static, Postgres>, op: OperationId, user: UserId) {
    let cancelled = operations::cancel(&mut tx, op, user).await;
    assert!(
        matches!(cancelled, Ok(Some(_))),
        "the cancel: {cancelled:?}"
    );
    tx.commit().await.expect("commit the cancel");
}

/// Waits until `other` is blocked on a lock (as it must be when it takes the session
/// held by the cancel) or done (as the reconciler is: it skips a locked session).
async fn blocked_or_done<T>(pool: &PgPool, other: &JoinHandle<T>) {
    eventually("the other writer to block or finish", DEADLINE, || async {
        (other.is_finished() || waiting_for_a_lock(pool).await > 0).then_some(())
    })
    .await;
}

async fn status_and_error(pool: &PgPool, op: OperationId) -> (String, Option<String>) {
    let mut conn = pool.acquire().await.expect("conn");
    let op = operations::find(&mut conn, op)
        .await
        .expect("find")
        .expect("exists");
    (op.status.as_str().to_owned(), op.error_message)
}

#[sqlx::test(migrations = false)]
async fn a_cancel_racing_the_workers_failure_write_waits_for_it_and_never_deadlocks(pool: PgPool) {
    migrated(&pool).await;
    let (user, session) = session(&pool, 1).await;
    let op = enqueue(&pool, user, session, 5).await;
    let cancel = cancel_begins(&pool, user, session).await;
    let failing = tokio::spawn({
        let pool = pool.clone();
        async move {
            let mut conn = pool.acquire().await.expect("conn");
            operations::fail(&mut conn, op, "The model failed.").await
        }
    });
    eventually("the failure write to wait for a lock", DEADLINE, || async {
        (waiting_for_a_lock(&pool).await > 0).then_some(())
    })
    .await;
    cancel_ends(cancel, op, user).await;
    let failed = tokio::time::timeout(DEADLINE, failing)
        .await
        .expect("the failure write ends")
        .expect("join");
    // It found the operation cancelled: its own verdict does not overwrite that one.
    assert!(matches!(failed, Ok(false)), "the failure write: {failed:?}");
    assert_eq!(
        status_and_error(&pool, op).await,
        ("failed".to_owned(), Some(operations::CANCELLED.to_owned()))
    );
}

#[sqlx::test(migrations = false)]
async fn a_cancel_racing_the_reconciler_never_deadlocks(pool: PgPool) {
    migrated(&pool).await;
    let (user, session) = session(&pool, 1).await;
    let op = enqueue(&pool, user, session, 5).await;
    // Its job is gone: the reconciler's to fail.
    sqlx::query("DELETE FROM apalis.jobs WHERE idempotency_key = $1::text")
        .bind(op)
        .execute(&pool)
        .await
        .expect("lose the job");
    let cancel = cancel_begins(&pool, user, session).await;
    let reconciling = tokio::spawn({
        let pool = pool.clone();
        async move {
            let mut conn = pool.acquire().await.expect("conn");
            reconcile::fail_stuck(&mut conn, WORST_CASE).await
        }
    });
    blocked_or_done(&pool, &reconciling).await;
    cancel_ends(cancel, op, user).await;
    let reconciled = tokio::time::timeout(DEADLINE, reconciling)
        .await
        .expect("the reconciler ends")
        .expect("join");
    // The session was the cancel's: the reconciler left it for its next tick, by which
    // the operation has ended.
    assert!(
        matches!(&reconciled, Ok(failed) if failed.is_empty()),
        "the reconciler: {reconciled:?}"
    );
    assert_eq!(
        status_and_error(&pool, op).await,
        ("failed".to_owned(), Some(operations::CANCELLED.to_owned()))
    );
    let mut conn = pool.acquire().await.expect("conn");
    let next_tick = reconcile::fail_stuck(&mut conn, WORST_CASE).await;
    assert!(
        matches!(&next_tick, Ok(failed) if failed.is_empty()),
        "{next_tick:?}"
    );
}

#[sqlx::test(migrations = false)]
async fn the_reconciler_fails_a_stuck_operation_once_its_session_is_free(pool: PgPool) {
    migrated(&pool).await;
    let fixtures = sessions(&pool, 2).await;
    let ops = enqueue_on(&pool, &fixtures, 1).await;
    sqlx::query("DELETE FROM apalis.jobs")
        .execute(&pool)
        .await
        .expect("lose the jobs");
    // One session is busy (a commit, a cancel): its operation waits for the next tick;
    // the other's is failed now.
    let (user, session) = fixtures[0];
    let busy = cancel_begins(&pool, user, session).await;
    let mut conn = pool.acquire().await.expect("conn");
    assert_eq!(reconcile_now(&mut conn).await, [ops[1]]);
    busy.rollback().await.expect("free the session");
    assert_eq!(reconcile_now(&mut conn).await, [ops[0]]);
}

/// One pass of the reconciler, which must not wait for anyone's lock.
async fn reconcile_now(conn: &mut sqlx::PgConnection) -> Vec<OperationId> {
    tokio::time::timeout(DEADLINE, reconcile::fail_stuck(conn, WORST_CASE))
        .await
        .expect("the reconciler waited for a lock")
        .expect("reconcile")
        .into_iter()
        .map(|r| r.id)
        .collect()
}
