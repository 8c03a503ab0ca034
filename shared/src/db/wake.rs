//! Wake-ups sent after a commit instead of inside it.
//!
//! PostgreSQL lets one committing transaction that sent a NOTIFY in at a time, across
//! the server, and holds it there until its commit record is on disk: such commits
//! never share a WAL flush, and one slow flush stops them all. Sixteen clients that
//! insert a row commit 10,896 times a second here; with a NOTIFY in the same
//! transaction, 2,702; with the NOTIFY sent alone after the commit, 7,048
//! (`scripts/bench/notify-commits.sh`; BENCHMARKS.md, "Soak"). Every job makes two such commits: the
//! api's enqueue (apalis' insert trigger) and the worker's result
//! (`operations_notify_finished`).
//!
//! So those two transactions call [`after_commit`], which keeps both triggers quiet
//! (migrations/20261206000002_wake_after_commit.sql), and once they have committed,
//! send a [`Wake`] on the same connection: a `pg_notify` alone, which writes nothing and
//! so waits for no flush. A wake lost to a crash between the two costs time, not work: a worker
//! polls every second, and a long poll re-reads its operation when its wait runs out.
//! Rarer commits (a cancel, the reconciler, a session's deletion) leave the triggers
//! as they are.

use crate::domain::OperationId;
use sqlx::PgConnection;

/// apalis' channel for a job that is due (`apalis::job::insert`), which wakes a worker's
/// fetch.
pub const JOB_INSERTED: &str = "apalis::job::insert";
/// The channel of an operation that reached `completed` or `failed`, which wakes the
/// api's long polls.
pub const OPERATION_FINISHED: &str = "operation_finished";

/// Keeps this transaction's notifying triggers quiet until it ends: the caller sends
/// what they would have sent, after the commit.
pub async fn after_commit(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('interviewer.wake_after_commit', 'on', true)")
        .execute(conn)
        .await?;
    Ok(())
}

/// A notification to send once the transaction that kept its trigger quiet has
/// committed; not sent if that transaction rolled back. The default sends nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[must_use = "the transaction's triggers stayed quiet: send this after its commit"]
pub struct Wake {
    notice: Option<(&'static str, String)>,
}

impl Wake {
    /// What apalis' trigger says of a job inserted due now (its fetch reads the queue
    /// and the id); `None` for a job that waits (`run_at` ahead), which nothing wakes.
    pub fn job(queue: &str, task_id: &str, due: bool) -> Self {
        let payload = serde_json::json!({ "job_type": queue, "id": task_id });
        Self {
            notice: due.then(|| (JOB_INSERTED, payload.to_string())),
        }
    }

    /// What `operations_notify_finished` says of an operation that finished.
    pub fn operation_finished(id: OperationId) -> Self {
        Self {
            notice: Some((OPERATION_FINISHED, id.to_string())),
        }
    }

    /// Sends it on `conn`: the connection that committed, so that a wake never waits
    /// for the pool (under overload, a wake that went back for a connection timed out).
    /// A failure is logged, not returned: what it announces is committed, and its
    /// listeners find it without the wake, later.
    pub async fn send(self, conn: &mut PgConnection) {
        let Some((channel, payload)) = self.notice else {
            return;
        };
        let sent = sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(&payload)
            .execute(conn)
            .await;
        if let Err(err) = sent {
            tracing::warn!(channel, payload, error = %err,
                "a wake-up after a commit was not sent; its listeners will find the change later");
        }
    }
}
