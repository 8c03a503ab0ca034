//! The shared count of ended work (`shared::db::ended_counts`): one replica counts at a
//! time and rarely, every process reads its sum, and a pass recounts the spans of ended
//! time that can have changed, not the days of history, yet stays exact through new
//! work, retention's deletes and rows that end late.

use crate::scaling::{Due, jobs, question_jobs};
use shared::db::{ended_counts, retention};
use shared::jobs::{FEEDBACK_ANALYSIS_QUEUE, QUESTION_GENERATION_QUEUE, QUEUES};
use sqlx::PgPool;
use testkit::fixtures::*;

/// One pass, as a process's gauge refresh runs it; whether it counted.
async fn recount(pool: &PgPool) -> bool {
    let mut conn = pool.acquire().await.expect("conn");
    ended_counts::recount_if_due(&mut conn)
        .await
        .expect("recount")
}

/// Makes the next pass due, as time would.
async fn make_due(pool: &PgPool) {
    sqlx::query("UPDATE ended_counts SET counted_at = now() - interval '1 hour', took_ms = 0")
        .execute(pool)
        .await
        .expect("age the count");
}

/// The count as a full scan gives it: what the spans' sum must equal.
async fn truth(pool: &PgPool) -> ended_counts::EndedCounts {
    let (jobs, operations): (serde_json::Value, serde_json::Value) = sqlx::query_as(concat!(
        "SELECT (SELECT coalesce(jsonb_agg(c), '[]') FROM (
                     SELECT j.job_type, j.status, count(*) AS count FROM apalis.jobs j
                     WHERE j.job_type = ANY($1) AND ",
        shared::ended_job!(),
        "            GROUP BY 1, 2) c),
                (SELECT coalesce(jsonb_agg(c), '[]') FROM (
                     SELECT status, count(*) AS count FROM operations
                     WHERE status IN ('completed', 'failed') GROUP BY 1) c)"
    ))
    .bind(QUEUES)
    .fetch_one(pool)
    .await
    .expect("full count");
    sorted(ended_counts::EndedCounts {
        jobs: serde_json::from_value(jobs).expect("jobs"),
        operations: serde_json::from_value(operations).expect("operations"),
    })
}

/// The shared count, in the order of [`truth`].
async fn shared_count(pool: &PgPool) -> ended_counts::EndedCounts {
    sorted(ended_counts::read(pool).await.expect("read"))
}

fn sorted(mut counts: ended_counts::EndedCounts) -> ended_counts::EndedCounts {
    counts
        .jobs
        .sort_by(|a, b| (&a.job_type, &a.status).cmp(&(&b.job_type, &b.status)));
    counts.operations.sort_by(|a, b| a.status.cmp(&b.status));
    counts
}

/// Three days of history, ending an hour ago: `jobs` ended question jobs and
/// `operations` finished operations, evenly spread.
async fn history(pool: &PgPool, jobs: i64, operations: i64) {
    question_jobs(pool, 1, "Done", 1, Due::Now).await; // the worker row they name
    sqlx::query(
        "INSERT INTO apalis.jobs (job, id, job_type, status, attempts, max_attempts, run_at,
                                  lock_by, lock_at, done_at)
         SELECT convert_to('{}', 'UTF8'), gen_random_uuid()::text, $1,
                CASE WHEN g % 10 = 0 THEN 'Failed' ELSE 'Done' END, 5, 5, t, 'scaling-worker', t, t
         FROM (SELECT g, now() - interval '1 hour' - (interval '3 days') * g / $2 AS t
               FROM generate_series(1, $2) g) s",
    )
    .bind(QUESTION_GENERATION_QUEUE)
    .bind(jobs)
    .execute(pool)
    .await
    .expect("ended jobs");
    finished_operations(pool, operations, "1 hour", "3 days").await;
}

/// `n` finished operations (one in ten failed) that ended between `ago` and `ago` +
/// `over` before now.
async fn finished_operations(pool: &PgPool, n: i64, ago: &str, over: &str) {
    let (user, _) = session(pool, 0).await;
    sqlx::query(
        "INSERT INTO operations (user_id, operation_type, status, result, created_at, updated_at)
         SELECT $1, 'question_generation', CASE WHEN g % 10 = 0 THEN 'failed' ELSE 'completed' END,
                '{}', t, t
         FROM (SELECT g, now() - $3::interval - $4::interval * g / $2 AS t
               FROM generate_series(1, $2) g) s",
    )
    .bind(user)
    .bind(n)
    .bind(ago)
    .bind(over)
    .execute(pool)
    .await
    .expect("finished operations");
}

/// Index entries read from `index` by the transaction on `conn` so far, and by those
/// before it on this connection whose counts are not flushed yet.
async fn index_reads(conn: &mut sqlx::PgConnection, index: &str) -> i64 {
    sqlx::query_scalar("SELECT pg_stat_get_xact_tuples_returned($1::regclass)")
        .bind(index)
        .fetch_one(conn)
        .await
        .expect("reads")
}

/// The ended work is counted by one replica at a time, at most every MIN_PERIOD, and
/// every process reads that count.
#[sqlx::test(migrations = false)]
async fn ended_work_is_counted_by_one_replica_at_a_time_and_rarely(pool: PgPool) {
    migrated(&pool).await;
    question_jobs(&pool, 500, "Done", 1, Due::Now).await;
    question_jobs(&pool, 50, "Failed", 5, Due::Now).await; // attempts spent
    question_jobs(&pool, 10, "Killed", 2, Due::Now).await;
    question_jobs(&pool, 7, "Failed", 1, Due::Now).await; // attempts left: in play
    jobs(&pool, FEEDBACK_ANALYSIS_QUEUE, 4, "Done", 1, Due::Now).await;
    jobs(&pool, "some_other_queue", 20, "Done", 1, Due::Now).await;

    assert_eq!(
        ended_counts::read(&pool).await.expect("read"),
        ended_counts::EndedCounts::default(),
        "nothing before the first count"
    );
    // Another replica is counting: this one does not.
    let mut other = pool.begin().await.expect("tx");
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('interviewer.ended_counts'))")
        .execute(&mut *other)
        .await
        .expect("lock");
    assert!(!recount(&pool).await);
    other.rollback().await.expect("rollback");

    assert!(recount(&pool).await);
    let counted = ended_counts::read(&pool).await.expect("read");
    let jobs_of = |queue: &str, status: &str| {
        counted
            .jobs
            .iter()
            .find(|c| c.job_type == queue && c.status == status)
            .map_or(0, |c| c.count)
    };
    assert_eq!(
        jobs_of(QUESTION_GENERATION_QUEUE, "Done"),
        500,
        "{counted:?}"
    );
    assert_eq!(
        jobs_of(QUESTION_GENERATION_QUEUE, "Failed"),
        50,
        "{counted:?}"
    );
    assert_eq!(
        jobs_of(QUESTION_GENERATION_QUEUE, "Killed"),
        10,
        "{counted:?}"
    );
    assert_eq!(jobs_of(FEEDBACK_ANALYSIS_QUEUE, "Done"), 4, "{counted:?}");
    assert_eq!(
        counted.jobs.len(),
        4,
        "only our queues' ended jobs: {counted:?}"
    );

    // Within the period, a second call reads what is there.
    question_jobs(&pool, 100, "Done", 1, Due::Now).await;
    assert!(!recount(&pool).await);
    assert_eq!(
        ended_counts::read(&pool).await.expect("read").jobs,
        counted.jobs
    );

    // Once it is due, the next counts again.
    sqlx::query("UPDATE ended_counts SET counted_at = now() - interval '1 minute'")
        .execute(&pool)
        .await
        .expect("age the count");
    assert!(recount(&pool).await);
    let recounted = ended_counts::read(&pool).await.expect("read");
    assert!(
        recounted
            .jobs
            .iter()
            .any(|c| c.job_type == QUESTION_GENERATION_QUEUE
                && c.status == "Done"
                && c.count == 600),
        "{recounted:?}"
    );
    // A slow count pushes the next one back: 20 times its duration.
    sqlx::query("UPDATE ended_counts SET counted_at = now() - interval '1 minute', took_ms = 4000")
        .execute(&pool)
        .await
        .expect("a slow count");
    assert!(!recount(&pool).await, "a count that took 4 s waits 80 s");
}

/// After the first count, a pass reads the work that ended since, the oldest span and
/// one more, not the days of history: 40,000 ended jobs and 20,000 finished operations
/// over three days, then 300 jobs and 200 operations end now.
#[sqlx::test(migrations = false)]
async fn a_pass_reads_what_ended_lately_not_the_history(pool: PgPool) {
    migrated(&pool).await;
    history(&pool, 40_000, 20_000).await;
    assert!(recount(&pool).await, "the first count");
    assert_eq!(shared_count(&pool).await, truth(&pool).await);

    question_jobs(&pool, 300, "Done", 1, Due::Now).await;
    finished_operations(&pool, 200, "0 seconds", "1 second").await;
    make_due(&pool).await;
    // Within one transaction, a difference: the counters also hold what earlier
    // transactions of this connection read, until they are flushed.
    let mut tx = pool.begin().await.expect("tx");
    let jobs_before = index_reads(&mut tx, "apalis.jobs_ended_idx").await;
    let operations_before = index_reads(&mut tx, "operations_finished_idx").await;
    assert!(ended_counts::recount_if_due(&mut tx).await.expect("pass"));
    let jobs_read = index_reads(&mut tx, "apalis.jobs_ended_idx").await - jobs_before;
    let operations_read = index_reads(&mut tx, "operations_finished_idx").await - operations_before;
    tx.commit().await.expect("commit");
    assert_eq!(shared_count(&pool).await, truth(&pool).await);
    // A 10-minute span of this history holds 93 jobs and 46 operations: the pass reads
    // the new ones, two spans and the first entry.
    assert!(
        (300..=600).contains(&jobs_read),
        "the pass read {jobs_read} entries of jobs_ended_idx (40,301 ended jobs)"
    );
    assert!(
        (200..=400).contains(&operations_read),
        "the pass read {operations_read} entries of operations_finished_idx (20,200 finished)"
    );
}

/// The count stays exact when retention deletes the oldest rows, and a row that ends
/// into an older span, later than the recent spans reach back (a transaction held open
/// for minutes), is counted within one turn of the older spans.
#[sqlx::test(migrations = false)]
async fn the_count_follows_retention_and_rows_that_end_late(pool: PgPool) {
    migrated(&pool).await;
    history(&pool, 4_000, 2_000).await;
    assert!(recount(&pool).await, "the first count");

    while retention::purge_ended_jobs(&pool, 2).await.expect("purge") != Some(0) {}
    while retention::purge_finished_operations(&pool, 2)
        .await
        .expect("purge")
        != Some(0)
    {}
    make_due(&pool).await;
    assert!(recount(&pool).await);
    let after_purge = shared_count(&pool).await;
    assert_eq!(after_purge, truth(&pool).await);
    let done = |c: &ended_counts::EndedCounts| {
        c.jobs
            .iter()
            .filter(|c| c.status == "Done")
            .map(|c| c.count)
            .sum::<i64>()
    };
    assert!(
        done(&after_purge) < 3_000,
        "a third of the history was purged: {after_purge:?}"
    );
    let stale: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM ended_count_spans
         WHERE span_start < now() - interval '2 days' - interval '10 minutes'",
    )
    .fetch_one(&pool)
    .await
    .expect("spans");
    assert_eq!(stale, 0, "the spans retention emptied are forgotten");

    // Late rows, a day old when they become visible.
    sqlx::query(
        "INSERT INTO apalis.jobs (job, id, job_type, status, attempts, max_attempts, run_at,
                                  lock_by, lock_at, done_at)
         SELECT convert_to('{}', 'UTF8'), gen_random_uuid()::text, $1, 'Killed', 1, 5,
                now() - interval '1 day', NULL, NULL, now() - interval '1 day'
         FROM generate_series(1, 7)",
    )
    .bind(QUESTION_GENERATION_QUEUE)
    .execute(&pool)
    .await
    .expect("late jobs");
    finished_operations(&pool, 5, "1 day", "1 second").await;
    let expected = truth(&pool).await;
    assert_ne!(shared_count(&pool).await, expected);
    // Two days of 10-minute spans make one turn.
    let turn = 2 * 24 * 6 + 2;
    let mut passes = 0;
    while shared_count(&pool).await != expected {
        passes += 1;
        assert!(passes <= turn, "not counted after {turn} passes");
        make_due(&pool).await;
        assert!(recount(&pool).await);
    }
}
