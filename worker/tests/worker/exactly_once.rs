//! A job delivered twice, or two workers on one queue: one message per operation.

use crate::helpers::*;
use shared::domain::OperationId;
use shared::jobs::QuestionGenerationJob;
use sqlx::PgPool;
use std::time::Duration;

#[sqlx::test(migrations = false)]
async fn the_same_job_delivered_twice_makes_one_message(pool: PgPool) {
    migrated(&pool).await;
    let (user, session) = session(&pool, 1).await;
    let op = enqueue(&pool, user, session, 5).await;
    // A second delivery of the same job: same payload, another queue row.
    deliver_again(&pool, &QuestionGenerationJob::new(op, session), 5).await;

    let worker = RunningWorker::start(&pool, config(|_| {})).await;
    finished(&pool, op).await;
    // Both rows must be worked off before we count.
    assert_eq!(settled_jobs(&pool).await, ["Done", "Done"]);
    worker.stop().await;
    assert_eq!(question_count(&pool, session).await, 1);
    assert_eq!(counter(&pool, session).await, 1);
}

#[sqlx::test(migrations = false)]
async fn two_workers_on_many_jobs_of_few_sessions_number_every_question_once(pool: PgPool) {
    migrated(&pool).await;
    let mut sessions = Vec::new();
    for n in 0..5 {
        sessions.push(session(&pool, n).await);
    }
    let mut ops: Vec<OperationId> = Vec::new();
    for round in 0..20 {
        for (user, session) in &sessions {
            let _ = round;
            ops.push(enqueue(&pool, *user, *session, 5).await);
        }
    }
    let one = RunningWorker::start(&pool, config(|c| c.worker_concurrency = 8)).await;
    let two = RunningWorker::start(&pool, config(|c| c.worker_concurrency = 8)).await;
    for op in &ops {
        assert_eq!(finished(&pool, *op).await.status.as_str(), "completed");
    }
    one.stop().await;
    two.stop().await;

    let total: i64 =
        sqlx::query_scalar("SELECT sum(current_question_number)::bigint FROM interview_sessions")
            .fetch_one(&pool)
            .await
            .expect("sum");
    assert_eq!(total, 100);
    for (_, session) in &sessions {
        let numbers: Vec<i64> = sqlx::query_scalar(
            "SELECT (metadata->>'question_number')::bigint FROM session_messages WHERE session_id = $1 ORDER BY 1",
        )
        .bind(session)
        .fetch_all(&pool)
        .await
        .expect("numbers");
        assert_eq!(
            numbers,
            (1..=20).collect::<Vec<i64>>(),
            "gap or repeat in {session}"
        );
    }
}

/// The work waits on the LLM, not the CPU: one worker process at WORKER_CONCURRENCY
/// 1,000 must run on the order of a thousand jobs at once.
#[sqlx::test(migrations = false)]
async fn one_worker_at_concurrency_1000_runs_a_thousand_jobs_at_once(pool: PgPool) {
    migrated(&pool).await;
    let server = wiremock::MockServer::start().await;
    mount(
        &server,
        1,
        None,
        question("Slow and steady?", "technical").set_delay(std::time::Duration::from_secs(2)),
    )
    .await;
    // A thousand sessions with one job each: a session's questions run one at a time
    // (the others' jobs are held), so only as many jobs can be in flight at once as
    // there are sessions with unfinished operations.
    let fixtures = sessions(&pool, 1000).await;
    let ops = enqueue_on(&pool, &fixtures, 1).await;
    let worker = RunningWorker::start(
        &pool,
        openai_config(&server, |c| {
            c.worker_concurrency = 1000;
            c.llm_timeout_secs = 30.0;
        }),
    )
    .await;
    // Sample how many operations are in flight until all are done.
    // The probe records the peak and the last count of open operations, which the
    // failure message reads when it is printed.
    let peak = std::cell::Cell::new(0);
    let open = std::cell::Cell::new(ops.len() as i64);
    let still_open =
        std::fmt::from_fn(|f| write!(f, "every operation to finish ({} still open)", open.get()));
    eventually(still_open, std::time::Duration::from_secs(180), || async {
        let (processing, now_open): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'processing'), count(*) FILTER (WHERE status IN ('pending', 'processing')) FROM operations",
        )
        .fetch_one(&pool)
        .await
        .expect("counts");
        peak.set(peak.get().max(processing));
        open.set(now_open);
        (now_open == 0).then_some(())
    })
    .await;
    let peak = peak.get();
    worker.stop().await;
    let completed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM operations WHERE status = 'completed'")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(completed, 1000);
    eprintln!("peak in flight: {peak} of 1000");
    // Serial or batch-bound processing would show a few dozen at most.
    assert!(peak >= 500, "only {peak} jobs were ever in flight at once");
}

#[sqlx::test(migrations = false)]
async fn ended_jobs_and_silent_workers_past_retention_are_purged_and_results_kept(pool: PgPool) {
    migrated(&pool).await;
    let (user, session) = session(&pool, 1).await;
    let worker = RunningWorker::start(&pool, config(|_| {})).await;
    let old = enqueue(&pool, user, session, 5).await;
    let recent = enqueue(&pool, user, session, 5).await;
    let exhausted = enqueue(&pool, user, session, 5).await;
    finished(&pool, old).await;
    finished(&pool, recent).await;
    finished(&pool, exhausted).await;
    settled_jobs(&pool).await;
    worker.stop().await;
    let job_id = |id: OperationId| ulid::Ulid(id.0.as_u128()).to_string();
    sqlx::query("UPDATE apalis.jobs SET done_at = now() - interval '8 days' WHERE id = $1")
        .bind(job_id(old))
        .execute(&pool)
        .await
        .expect("age the job");
    // A job that failed for good (attempts spent) goes too; one with attempts left
    // would be fetched again, so it is not "ended".
    sqlx::query(
        "UPDATE apalis.jobs SET status = 'Failed', attempts = max_attempts,
                done_at = now() - interval '8 days' WHERE id = $1",
    )
    .bind(job_id(exhausted))
    .execute(&pool)
    .await
    .expect("age the failed job");
    sqlx::query(
        "INSERT INTO apalis.workers (id, worker_type, storage_name, layers, last_seen)
         VALUES ('long-gone', 'question_generation', 'PgStorage', '', now() - interval '8 days')",
    )
    .execute(&pool)
    .await
    .expect("a silent worker");
    // What its heartbeat last published goes with it.
    sqlx::query(
        "INSERT INTO worker_state (worker_id, version, git_commit, in_flight, breaker_open)
         VALUES ('long-gone', '0.0.1', 'old', 0, false)",
    )
    .execute(&pool)
    .await
    .expect("its state");
    assert_eq!(
        worker::upkeep::purge_once(&pool, 7).await.expect("purge"),
        (2, 1)
    );
    let states: i64 =
        sqlx::query_scalar("SELECT count(*) FROM worker_state WHERE worker_id = 'long-gone'")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(states, 0, "the silent worker's state is purged with it");
    assert_eq!(settled_jobs(&pool).await.len(), 1, "the recent job is kept");
    assert_eq!(
        question_count(&pool, session).await,
        3,
        "results are not touched"
    );
}

#[sqlx::test(migrations = false)]
async fn a_job_of_a_newer_payload_version_is_put_back_without_counting_a_run(pool: PgPool) {
    migrated(&pool).await;
    let (user, session) = session(&pool, 1).await;
    let op = enqueue(&pool, user, session, 5).await;
    // Written by a newer release: a payload version this worker does not know (apalis
    // keeps the payload as JSON bytes).
    sqlx::query("UPDATE apalis.jobs SET job = convert_to(jsonb_set(convert_from(job, 'UTF8')::jsonb, '{version}', '2')::text, 'UTF8') WHERE idempotency_key = $1::text")
        .bind(op)
        .execute(&pool)
        .await
        .expect("a newer payload");
    let worker = RunningWorker::start(&pool, config(|_| {})).await;
    let put_back = || async {
        sqlx::query_as::<_, (String, Option<String>, i32, bool)>(
            "SELECT status, lock_by, attempts, run_at > now() FROM apalis.jobs WHERE idempotency_key = $1::text",
        )
        .bind(op)
        .fetch_one(&pool)
        .await
        .expect("the job")
    };
    // Taken, put back: pending again, unclaimed, due later, no run counted.
    testkit::eventually("the job put back", Duration::from_secs(60), || async {
        let (status, lock_by, attempts, later) = put_back().await;
        (status == "Pending" && lock_by.is_none() && attempts == 0 && later).then_some(())
    })
    .await;
    // And it stays so: the run's acknowledgement did not overwrite it.
    let metrics = worker.scrape().await;
    assert!(
        metrics.contains(r#"question_jobs_put_back_total{reason="unknown_payload_version"}"#),
        "{metrics}"
    );
    let (status, _, runs, _) = put_back().await;
    assert_eq!((status.as_str(), runs), ("Pending", 0));
    assert_eq!(
        attempts(&pool, op).await,
        0,
        "the operation counted nothing"
    );
    assert_eq!(operations_in(&pool, "pending").await, 1);

    // A worker that knows the version (here: the payload as this release writes it,
    // due now) runs it.
    sqlx::query("UPDATE apalis.jobs SET job = convert_to(jsonb_set(convert_from(job, 'UTF8')::jsonb, '{version}', '1')::text, 'UTF8'), run_at = now() WHERE idempotency_key = $1::text")
        .bind(op)
        .execute(&pool)
        .await
        .expect("known again");
    assert_eq!(finished(&pool, op).await.status.as_str(), "completed");
    worker.stop().await;
}
