//! The reconciler's statement: it fails the operations that can no longer end by
//! themselves. It spans `operations` and `apalis.jobs`, like [`super::attempt`]
//! spans the tables of a question, because the question it answers ("is this operation's
//! job still going to run?") is about both.
//!
//! An unfinished operation is stuck when
//! - its job has ended (`Done`, `Killed`, or `Failed` with its attempts spent) or is
//!   missing: nothing will run it again, typically because the last attempt could not
//!   even write its failure (the database was away);
//! - or a worker first began it longer ago than its job's worst case ([`WorstCase`]):
//!   something holds it that should not (a wedged process). Counting from the first
//!   start, not from creation, because waiting in a backlog is legitimate.
//!
//! It is safe to run from every worker at once: rows are taken `FOR UPDATE SKIP
//! LOCKED`, sessions' before operations' as every writer takes them, and every update
//! is guarded by the status it expects.

use crate::domain::{OperationId, SessionId};
use crate::ended_job;
use sqlx::{Connection, PgConnection};
use std::time::Duration;

/// Shown when a question's job ended without the operation ending.
pub const JOB_ENDED: &str = "The question could not be generated: every attempt failed.";
/// Shown when a question's operation outlived the job's worst case.
pub const OVERDUE: &str = "The question could not be generated in time.";
/// [`JOB_ENDED`] of a feedback.
pub const FEEDBACK_JOB_ENDED: &str = "The feedback could not be generated: every attempt failed.";
/// [`OVERDUE`] of a feedback.
pub const FEEDBACK_OVERDUE: &str = "The feedback could not be generated in time.";

/// Operations failed per statement; the next tick takes the rest.
const BATCH: i64 = 500;

/// How long a job may take from its first start: `per_attempt × max_attempts + waits +
/// margin`, where `max_attempts` is the job's own, as the api wrote it at the enqueue
/// (`LLM_MAX_ATTEMPTS` then). Read per job in SQL, so a worker needs no attempt budget
/// of its own, and jobs enqueued before a change of the setting keep theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorstCase {
    /// The longest one attempt may take: the model's timeout, the longest backoff and
    /// a takeover window.
    pub per_attempt: Duration,
    /// Added once: the waits on the provider that no attempt counts (a `Retry-After`,
    /// the breaker, the cap), bounded per operation by `LLM_MAX_WAIT_SECS`.
    pub waits: Duration,
    /// Added once: pickup after a takeover, slow statements, a long pause of a process.
    pub margin: Duration,
}

impl WorstCase {
    /// What is added once, whatever the job's attempts: the waits and the margin.
    fn once(&self) -> Duration {
        self.waits + self.margin
    }
}

/// One operation the reconciler failed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Reconciled {
    pub id: OperationId,
    /// `job_ended` or `overdue`, for the log and the metric.
    pub reason: String,
}

/// The stuck operations, with why, as a `SELECT` over `operations o` and their jobs
/// `j` (a job's queue is its operation's type): `$1` one attempt's worst case and `$2`
/// what is added once (both in seconds). Both statements of [`fail_stuck`] are built on it, so the one that
/// fails an operation checks again, under the locks, what the one that chose it saw.
macro_rules! stuck {
    () => {
        concat!(
            "SELECT o.id, o.session_id, o.operation_type,
                    CASE WHEN j.id IS NULL OR ",
            ended_job!(),
            " THEN 'job_ended' ELSE 'overdue' END AS reason
             FROM operations o
             LEFT JOIN apalis.jobs j ON j.job_type = o.operation_type AND j.idempotency_key = o.id::text
             WHERE o.status IN ('pending', 'processing')
               AND (j.id IS NULL OR ",
            ended_job!(),
            " OR coalesce(o.started_at,
                                CASE WHEN j.status IN ('Queued', 'Running') THEN j.lock_at END)
                       < now() - make_interval(secs => $1 * j.max_attempts + $2))"
        )
    };
}

/// Fails the stuck operations (up to a batch), and ends the queue row of each overdue
/// one so that no worker starts it again.
///
/// Locks in the order of every writer of a session: the sessions' rows first, then the
/// operations' (failing one fires the `operations_release_next_question` trigger, which
/// locks its session; taken the other way round, it could deadlock against a cancel or
/// a worker's commit). So, in a transaction of its own (or a savepoint of the caller's):
/// choose the candidates without locking them, lock their sessions, and fail the ones
/// still stuck. It waits for no session and no operation: one locked by anyone else is
/// skipped, for the next tick.
pub async fn fail_stuck(
    conn: &mut PgConnection,
    worst_case: WorstCase,
) -> Result<Vec<Reconciled>, sqlx::Error> {
    let mut tx = conn.begin().await?;
    let candidates: Vec<(OperationId, Option<SessionId>)> = sqlx::query_as(concat!(
        "SELECT id, session_id FROM (",
        stuck!(),
        " ORDER BY o.created_at LIMIT $3) AS candidates"
    ))
    .bind(worst_case.per_attempt.as_secs_f64())
    .bind(worst_case.once().as_secs_f64())
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    if candidates.is_empty() {
        return Ok(Vec::new());
    }
    let sessions: Vec<SessionId> = candidates.iter().filter_map(|(_, s)| *s).collect();
    // In id order, as any writer that takes several sessions must.
    let locked: Vec<SessionId> = sqlx::query_scalar(
        "SELECT id FROM interview_sessions WHERE id = ANY($1)
         ORDER BY id FOR UPDATE SKIP LOCKED",
    )
    .bind(&sessions)
    .fetch_all(&mut *tx)
    .await?;
    // A candidate without a session (deleted) has no session row to take first.
    let ready: Vec<OperationId> = candidates
        .iter()
        .filter(|(_, session)| session.is_none_or(|s| locked.contains(&s)))
        .map(|(id, _)| *id)
        .collect();
    if ready.is_empty() {
        return Ok(Vec::new());
    }
    let failed = sqlx::query_as(concat!(
        "WITH stuck AS (",
        stuck!(),
        "      AND o.id = ANY($3)
             FOR UPDATE OF o SKIP LOCKED
         ),
         failed AS (
             UPDATE operations o
             SET status = 'failed',
                 error_message = CASE
                     WHEN stuck.operation_type = 'feedback_analysis' THEN
                         CASE stuck.reason WHEN 'overdue' THEN $7 ELSE $6 END
                     ELSE CASE stuck.reason WHEN 'overdue' THEN $5 ELSE $4 END
                 END,
                 updated_at = now()
             FROM stuck
             WHERE o.id = stuck.id AND o.status IN ('pending', 'processing')
             RETURNING o.id, o.operation_type, stuck.reason
         ),
         ended AS (
             UPDATE apalis.jobs j
             SET status = 'Killed', done_at = now(),
                 last_result = '{\"Err\": \"Ended by the reconciler: the operation outlived a job''s worst case.\"}'
             FROM failed
             WHERE failed.reason = 'overdue'
               AND j.job_type = failed.operation_type AND j.idempotency_key = failed.id::text
               AND j.status NOT IN ('Done', 'Killed')
         )
         SELECT id, reason FROM failed"
    ))
    .bind(worst_case.per_attempt.as_secs_f64())
    .bind(worst_case.once().as_secs_f64())
    .bind(&ready)
    .bind(JOB_ENDED)
    .bind(OVERDUE)
    .bind(FEEDBACK_JOB_ENDED)
    .bind(FEEDBACK_OVERDUE)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(failed)
}

/// Unfinished operations first started longer ago than their job's worst case: the
/// gauge that must read 0 (the reconciler fails them within a tick). One whose job is
/// gone has no attempt left to make, so one attempt's worst case is the most it may
/// legitimately still run.
pub async fn count_overdue(
    conn: &mut PgConnection,
    worst_case: WorstCase,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM operations o
         LEFT JOIN apalis.jobs j ON j.job_type = o.operation_type AND j.idempotency_key = o.id::text
         WHERE o.status IN ('pending', 'processing')
           AND o.started_at
               < now() - make_interval(secs => $1 * coalesce(j.max_attempts, 1) + $2)",
    )
    .bind(worst_case.per_attempt.as_secs_f64())
    .bind(worst_case.once().as_secs_f64())
    .fetch_one(conn)
    .await
}
