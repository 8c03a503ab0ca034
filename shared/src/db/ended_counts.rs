//! The shared count of ended work (`ended_counts`): jobs of our queues that apalis will
//! not run again, and finished operations. Retention keeps days of them, millions on a
//! busy week, so counting them all costs seconds (4-14 s on one core in the soak); the
//! gauges need them, but not every 3 s from every process.
//!
//! So they are kept by spans of ended time (`ended_count_spans`, [`SPAN`] wide), and a
//! pass recounts only the spans that can have changed since the last one: the recent
//! ones (from [`SETTLE`] ago); the oldest stored, where retention deletes (forgotten
//! once empty); and one more older span in turn, which counts a row that ended late
//! into an older span (a transaction held open for minutes; an ended job put back by
//! hand). The first pass on a database counts every span, once. One replica passes at
//! a time ([`recount_if_due`]), no more often than [`MIN_PERIOD`] and never more than
//! 1/[`PERIOD_PER_COUNT`] of the time, and writes the spans' sum to one row that every
//! process reads ([`read`]) by its key.

use crate::ended_job;
use crate::jobs::QUEUES;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{Connection, PgConnection, PgPool};
use std::time::Duration;

/// The shortest time between two counts: what a gauge of ended work may lag behind.
pub const MIN_PERIOD: Duration = Duration::from_secs(10);
/// The next count waits this many times as long as the last one took, so counting
/// takes at most 1/20 of one connection's time, whatever the history.
pub const PERIOD_PER_COUNT: f64 = 20.0;
/// The width of a span of ended time. The spans already stored are of this width
/// (aligned on the epoch): a change of it needs a migration that empties
/// `ended_count_spans` and sets `spans_filled` back to false.
pub const SPAN: Duration = Duration::from_secs(600);
/// A row ends with its transaction's start time (`now()`), and becomes visible when
/// that transaction commits: the spans that start within this time of now are recounted
/// at every pass, so that a short transaction's rows are counted at the next one.
pub const SETTLE: Duration = Duration::from_secs(60);

/// Ended jobs of one queue in one apalis status (`Done`, `Failed`, `Killed`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct EndedJobs {
    pub job_type: String,
    pub status: String,
    pub count: i64,
}

/// Finished operations in one status (`completed`, `failed`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct FinishedOperations {
    pub status: String,
    pub count: i64,
}

/// The last count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndedCounts {
    pub jobs: Vec<EndedJobs>,
    pub operations: Vec<FinishedOperations>,
}

/// Recounts unless another replica is counting now or the last count is recent
/// (younger than [`MIN_PERIOD`] and [`PERIOD_PER_COUNT`] times its own duration).
/// Returns whether this call counted. In a transaction of its own, or a savepoint of
/// the caller's (a test reads what the pass read).
pub async fn recount_if_due(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    let mut tx = conn.begin().await?;
    let locked: bool = sqlx::query_scalar(
        "SELECT pg_try_advisory_xact_lock(hashtext('interviewer.ended_counts'))",
    )
    .fetch_one(&mut *tx)
    .await?;
    if !locked {
        return Ok(false);
    }
    let recent: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM ended_counts
                        WHERE counted_at > now() - make_interval(secs => greatest($1, took_ms / 1000 * $2)))",
    )
    .bind(MIN_PERIOD.as_secs_f64())
    .bind(PERIOD_PER_COUNT)
    .fetch_one(&mut *tx)
    .await?;
    if recent {
        return Ok(false);
    }
    // Bookkeeping, not the service's work: without parallel workers, the first count
    // over millions of rows takes one core, not all of them.
    sqlx::query("SET LOCAL max_parallel_workers_per_gather = 0")
        .execute(&mut *tx)
        .await?;
    let started = std::time::Instant::now();
    let state: Option<State> = sqlx::query_as(
        "SELECT spans_filled, jobs_checked_to, operations_checked_to
         FROM ended_counts WHERE singleton",
    )
    .fetch_optional(&mut *tx)
    .await?;
    let state = state.unwrap_or_default();
    let recent_from: DateTime<Utc> = sqlx::query_scalar(
        "SELECT date_bin(make_interval(secs => $1), now() - make_interval(secs => $2),
                         TIMESTAMPTZ 'epoch')",
    )
    .bind(SPAN.as_secs_f64())
    .bind(SETTLE.as_secs_f64())
    .fetch_one(&mut *tx)
    .await?;
    let (jobs_checked_to, operations_checked_to) = if state.spans_filled {
        (
            pass(&mut tx, Subject::Job, recent_from, state.jobs_checked_to).await?,
            pass(
                &mut tx,
                Subject::Operation,
                recent_from,
                state.operations_checked_to,
            )
            .await?,
        )
    } else {
        recount(&mut tx, Subject::Job, None, None).await?;
        recount(&mut tx, Subject::Operation, None, None).await?;
        (None, None)
    };
    sqlx::query(WRITE_TOTALS)
        .bind(started.elapsed().as_secs_f64() * 1000.0)
        .bind(jobs_checked_to)
        .bind(operations_checked_to)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

/// What the last pass left: whether the spans were counted once, and where each
/// subject's turn of older spans has reached.
#[derive(Default, sqlx::FromRow)]
struct State {
    spans_filled: bool,
    jobs_checked_to: Option<DateTime<Utc>>,
    operations_checked_to: Option<DateTime<Utc>>,
}

/// What is counted by spans.
#[derive(Debug, Clone, Copy)]
enum Subject {
    Job,
    Operation,
}

impl Subject {
    /// `ended_count_spans.subject`.
    fn name(self) -> &'static str {
        match self {
            Subject::Job => "job",
            Subject::Operation => "operation",
        }
    }
}

/// Spans that a pass may find emptied by retention and forget, beyond the one it
/// recounts at every pass: a retention shortened by a week empties a thousand at once,
/// each costing the pass one index probe.
pub const EMPTIED_PER_PASS: usize = 1_000;

/// One subject's pass after the first: recounts the recent spans; the oldest span, where
/// retention deletes (forgetting those it emptied, up to [`EMPTIED_PER_PASS`]); and the
/// next older span in turn. Returns where the turn has reached.
async fn pass(
    conn: &mut PgConnection,
    subject: Subject,
    recent_from: DateTime<Utc>,
    checked_to: Option<DateTime<Utc>>,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    let span = chrono::TimeDelta::seconds(SPAN.as_secs() as i64);
    recount(conn, subject, Some(recent_from), None).await?;
    let mut oldest = None;
    for _ in 0..=EMPTIED_PER_PASS {
        let start: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT min(span_start) FROM ended_count_spans WHERE subject = $1 AND span_start < $2",
        )
        .bind(subject.name())
        .bind(recent_from)
        .fetch_one(&mut *conn)
        .await?;
        let Some(start) = start else { break };
        if recount(conn, subject, Some(start), Some(start + span)).await? > 0 {
            oldest = Some(start);
            break;
        }
    }
    let Some(oldest) = oldest else {
        return Ok(None);
    };
    // The turn runs over the spans between the oldest and the recent ones, and starts
    // again after the oldest when it reaches the recent ones.
    let first = oldest + span;
    let from = checked_to
        .filter(|to| *to >= first && *to + span <= recent_from)
        .unwrap_or(first);
    if from + span > recent_from {
        return Ok(None);
    }
    recount(conn, subject, Some(from), Some(from + span)).await?;
    Ok(Some(from + span))
}

/// Recounts the spans of `subject` that start in [`from`, `to`) (unbounded where
/// `None`): deletes them, and stores what the table holds now. Returns the spans'
/// rows stored (0: the range holds no ended row).
async fn recount(
    conn: &mut PgConnection,
    subject: Subject,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "DELETE FROM ended_count_spans
         WHERE subject = $1
           AND span_start >= coalesce($2, '-infinity') AND span_start < coalesce($3, 'infinity')",
    )
    .bind(subject.name())
    .bind(from)
    .bind(to)
    .execute(&mut *conn)
    .await?;
    let insert = match subject {
        Subject::Job => sqlx::query(COUNT_ENDED_JOBS).bind(QUEUES),
        Subject::Operation => sqlx::query(COUNT_FINISHED_OPERATIONS),
    };
    let stored = insert
        .bind(SPAN.as_secs_f64())
        .bind(from)
        .bind(to)
        .execute(&mut *conn)
        .await?;
    Ok(stored.rows_affected())
}

/// Stores the ended jobs of our queues in the spans [`$3`, `$4`) by span, queue and
/// status (`$1` the queues, `$2` the span's seconds), public so that a test can check
/// its plan: a range of `jobs_ended_idx`, read alone. A row whose ended time is
/// infinite (none of apalis' or ours: every end sets `done_at`) is in no span.
pub const COUNT_ENDED_JOBS: &str = concat!(
    "INSERT INTO ended_count_spans (subject, span_start, kind, status, count)
     SELECT 'job', date_bin(make_interval(secs => $2), coalesce(j.done_at, j.lock_at, j.run_at),
                            TIMESTAMPTZ 'epoch'),
            j.job_type, j.status, count(*)
     FROM apalis.jobs j
     WHERE j.job_type = ANY($1) AND ",
    ended_job!(),
    "  AND coalesce(j.done_at, j.lock_at, j.run_at) >= coalesce($3, '-infinity')
       AND coalesce(j.done_at, j.lock_at, j.run_at) < coalesce($4, 'infinity')
     GROUP BY 2, 3, 4"
);

/// Stores the finished operations in the spans [`$2`, `$3`) by span and status (`$1`
/// the span's seconds), public so that a test can check its plan: a range of
/// `operations_finished_idx`, read alone.
pub const COUNT_FINISHED_OPERATIONS: &str =
    "INSERT INTO ended_count_spans (subject, span_start, kind, status, count)
     SELECT 'operation', date_bin(make_interval(secs => $1), updated_at, TIMESTAMPTZ 'epoch'),
            '', status, count(*)
     FROM operations
     WHERE status IN ('completed', 'failed')
       AND updated_at >= coalesce($2, '-infinity') AND updated_at < coalesce($3, 'infinity')
     GROUP BY 2, 3, 4";

/// Writes the spans' sum, and the pass's time (`$1`, ms) and turns (`$2`, `$3`).
const WRITE_TOTALS: &str = "INSERT INTO ended_counts
         (jobs, operations, counted_at, took_ms, spans_filled, jobs_checked_to, operations_checked_to)
     SELECT (SELECT coalesce(jsonb_agg(c), '[]') FROM (
                 SELECT kind AS job_type, status, sum(count)::bigint AS count
                 FROM ended_count_spans WHERE subject = 'job' GROUP BY 1, 2) c),
            (SELECT coalesce(jsonb_agg(c), '[]') FROM (
                 SELECT status, sum(count)::bigint AS count
                 FROM ended_count_spans WHERE subject = 'operation' GROUP BY 1) c),
            now(), $1, true, $2, $3
     ON CONFLICT (singleton) DO UPDATE
     SET jobs = excluded.jobs, operations = excluded.operations,
         counted_at = excluded.counted_at, took_ms = excluded.took_ms,
         spans_filled = true, jobs_checked_to = excluded.jobs_checked_to,
         operations_checked_to = excluded.operations_checked_to";

/// The row as stored.
#[derive(sqlx::FromRow)]
struct Stored {
    jobs: Json<Vec<EndedJobs>>,
    operations: Json<Vec<FinishedOperations>>,
}

/// The last count; empty before the first.
pub async fn read(pool: &PgPool) -> Result<EndedCounts, sqlx::Error> {
    let stored: Option<Stored> =
        sqlx::query_as("SELECT jobs, operations FROM ended_counts WHERE singleton")
            .fetch_optional(pool)
            .await?;
    Ok(
        stored.map_or_else(EndedCounts::default, |stored| EndedCounts {
            jobs: stored.jobs.0,
            operations: stored.operations.0,
        }),
    )
}
