//! A worker process's heartbeat, as one statement: it marks the process's apalis worker
//! alive, publishes the process's build and its side of the model provider's limits for
//! the queue board (`worker_state`), and counts the live peers among which the cap on calls
//! in flight is shared (docs/DESIGN.md, "The provider's limits"). One statement per
//! beat, none per job: that is what the share costs. The process's other apalis workers
//! (one per further job type) are only marked alive ([`touch`]): the process is
//! counted, and describes itself, once, under its question worker. The beat also reads
//! the operator's intake switch, so that every worker sees a pause within a beat.

use crate::jobs::QUESTION_GENERATION_QUEUE;
use sqlx::PgConnection;
use std::time::Duration;

/// What this process reports of itself at a beat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderState {
    /// Its share of `LLM_MAX_IN_FLIGHT`; `None` when no cap is set.
    pub cap_share: Option<u32>,
    /// Model calls it has in flight now.
    pub in_flight: u32,
    pub breaker_open: bool,
    /// Whether it has paused its claims (the intake switch, as it last applied it).
    pub paused: bool,
}

/// What a beat saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct Beat {
    /// Whether this worker's row exists (apalis registers it when the worker starts): a
    /// worker the others cannot see yet must not count itself among them.
    pub registered: bool,
    /// Live workers of the queue other than this one: seen within the takeover window.
    pub peers: i64,
    /// Those of them whose name sorts before this one's: this worker's rank.
    pub peers_before: i64,
    /// The intake switch: whether claims are paused (`intake`; false without its row).
    pub intake_paused: bool,
}

/// Beats for the apalis worker `name`, publishes `state`, and counts the workers seen
/// within `window` besides it. (apalis' own heartbeat is sent only when a job slot is
/// free; this one comes from a task of the process's own, so a busy worker is never
/// taken for a dead one.)
pub async fn beat(
    conn: &mut PgConnection,
    name: &str,
    window: Duration,
    state: ProviderState,
) -> Result<Beat, sqlx::Error> {
    sqlx::query_as(
        "WITH beat AS (
             UPDATE apalis.workers SET last_seen = now()
             WHERE id = $1 AND worker_type = $2
             RETURNING id
         ),
         published AS (
             INSERT INTO worker_state
                 (worker_id, version, git_commit, cap_share, in_flight, breaker_open, paused)
             SELECT id, $7, $8, $4, $5, $6, $9 FROM beat
             ON CONFLICT (worker_id) DO UPDATE
             SET version = EXCLUDED.version, git_commit = EXCLUDED.git_commit,
                 cap_share = EXCLUDED.cap_share, in_flight = EXCLUDED.in_flight,
                 breaker_open = EXCLUDED.breaker_open, paused = EXCLUDED.paused,
                 updated_at = now()
         )
         SELECT EXISTS (SELECT 1 FROM beat) AS registered,
                count(*) AS peers,
                count(*) FILTER (WHERE w.id < $1) AS peers_before,
                coalesce((SELECT paused FROM intake), false) AS intake_paused
         FROM apalis.workers w
         WHERE w.worker_type = $2 AND w.id <> $1
           AND w.last_seen > now() - make_interval(secs => $3)",
    )
    .bind(name)
    .bind(QUESTION_GENERATION_QUEUE)
    .bind(window.as_secs_f64())
    .bind(
        state
            .cap_share
            .map(|share| i32::try_from(share).unwrap_or(i32::MAX)),
    )
    .bind(i32::try_from(state.in_flight).unwrap_or(i32::MAX))
    .bind(state.breaker_open)
    .bind(crate::build::VERSION)
    .bind(crate::build::COMMIT)
    .bind(state.paused)
    .fetch_one(conn)
    .await
}

/// Marks the apalis worker `name` of queue `job_type` alive; returns whether its row
/// exists (apalis registers it when the worker starts).
pub async fn touch(
    conn: &mut PgConnection,
    name: &str,
    job_type: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE apalis.workers SET last_seen = now() WHERE id = $1 AND worker_type = $2",
    )
    .bind(name)
    .bind(job_type)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
