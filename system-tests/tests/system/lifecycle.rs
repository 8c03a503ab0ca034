//! Every operation ends, with the real worker binary: connections cut again and again,
//! a worker killed at the default settings (taken over within seconds), and workers
//! stopped with prefetched jobs until apalis' attempt counter runs ahead of ours.

use crate::support::worker_env;
use shared::domain::OperationId;
use sqlx::PgPool;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use testkit::fixtures::*;
use testkit::llm::*;
use testkit::process::Process;
use wiremock::{Request, Respond, ResponseTemplate};

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
}

/// Like [`count`], with `$1` bound to `arg`.
async fn count_with(pool: &PgPool, sql: &'static str, arg: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(arg)
        .fetch_one(pool)
        .await
        .unwrap_or_else(|err| panic!("{sql}: {err}"))
}

/// The process has not exited.
fn assert_alive(process: &mut Process) {
    assert!(
        process.exited().is_none(),
        "{} exited; log: {}",
        process.name,
        process.logs()
    );
}

#[sqlx::test(migrations = false)]
async fn connections_cut_every_300_ms_for_12_s_end_every_operation_exactly_once(pool: PgPool) {
    migrated(&pool).await;
    let server = wiremock::MockServer::start().await;
    mount(
        &server,
        1,
        None,
        question("Still connected?", "technical").set_delay(Duration::from_millis(200)),
    )
    .await;
    let env = worker_env(&pool, &server, &[("WORKER_CONCURRENCY", "16")]);
    let fixtures = sessions(&pool, 20).await;
    let ops = enqueue_on(&pool, &fixtures, 10).await;
    let mut workers = [
        Process::start("worker", "cut-a", &env).await,
        Process::start("worker", "cut-b", &env).await,
    ];

    // From another database, so the storm never cuts its own connection.
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
        .expect("name");
    let admin = sqlx::PgPool::connect_with((*pool.connect_options()).clone().database("postgres"))
        .await
        .expect("admin connection");
    let storm_ends = Instant::now() + Duration::from_secs(12);
    let mut cuts = 0;
    while Instant::now() < storm_ends {
        let cut: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&database)
        .fetch_all(&admin)
        .await
        .expect("terminate");
        cuts += cut.len();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eprintln!("cut {cuts} connections in 12 s");
    let storm_over = Instant::now();
    // Our own pool's cut connections are tested and replaced on the next acquire.
    for op in &ops {
        finished(&pool, *op).await;
    }
    eprintln!(
        "every operation ended {:.1} s after the storm",
        storm_over.elapsed().as_secs_f64()
    );
    for worker in &mut workers {
        assert_alive(worker);
    }
    assert_consistent(&pool).await;
    let completed = count(
        &pool,
        "SELECT count(*) FROM operations WHERE status = 'completed'",
    )
    .await;
    eprintln!("after the storm: {completed} of 200 completed");
    assert!(cuts >= 40, "the storm cut only {cuts} connections");
}

#[sqlx::test(migrations = false)]
async fn a_worker_killed_at_the_default_settings_is_taken_over_within_seconds(pool: PgPool) {
    migrated(&pool).await;
    let server = wiremock::MockServer::start().await;
    mount(
        &server,
        1,
        None,
        question("Taken over?", "technical").set_delay(Duration::from_millis(1500)),
    )
    .await;
    // The defaults, but for where the model is: WORKER_HEARTBEAT_SECS,
    // WORKER_CONCURRENCY and the backoff are not set. (The schema is the test's: no
    // migration, so an older worker binary can be timed here too.)
    let env = vec![
        ("DATABASE_URL", testkit::postgres::database_url(&pool)),
        ("OPENAI_BASE_URL", format!("{}/v1", server.uri())),
        ("OPENAI_API_KEY", "sk-test".to_owned()),
        ("MIGRATE", "false".to_owned()),
    ];
    let fixtures = sessions(&pool, 60).await;
    let mut victim = Process::start("worker", "takeover-victim", &env).await;
    let ops = enqueue_on(&pool, &fixtures, 1).await;
    // Let the victim take a full house before the survivor starts.
    let victim_lock = format!("%-{}-%", victim.pid());
    testkit::eventually(
        "the victim to hold 20 jobs",
        Duration::from_secs(60),
        || async {
            let held = count_with(
                &pool,
                "SELECT count(*) FROM apalis.jobs WHERE status = 'Running' AND lock_by LIKE $1",
                &victim_lock,
            )
            .await;
            (held >= 20).then_some(())
        },
    )
    .await;
    let survivor = Process::start("worker", "takeover-survivor", &env).await;
    let held: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT o.id FROM operations o JOIN apalis.jobs j ON j.idempotency_key = o.id::text
         WHERE o.status IN ('pending', 'processing') AND j.lock_by LIKE $1",
    )
    .bind(&victim_lock)
    .fetch_all(&pool)
    .await
    .expect("held");
    victim.kill();
    let killed = Instant::now();
    for id in &held {
        let done = finished(&pool, OperationId(*id)).await;
        assert_eq!(done.status.as_str(), "completed");
    }
    let recovered = killed.elapsed();
    eprintln!(
        "{} jobs of the killed worker finished {:.1} s after kill -9",
        held.len(),
        recovered.as_secs_f64()
    );
    for op in &ops {
        assert_eq!(finished(&pool, *op).await.status.as_str(), "completed");
    }
    drop(survivor);
    assert_consistent(&pool).await;
    // Takeover window 8 s + one heartbeat (2 s) + pickup + a 1.5 s model; the bound
    // asserted is a generous safety net, the figure above is the measurement.
    assert!(
        recovered < Duration::from_secs(30),
        "the killed worker's jobs took {recovered:?}"
    );
    // No job of a live worker was taken: only the victim's in-flight jobs were asked
    // of the model twice.
    let calls = calls(&server).await;
    assert!(
        calls <= ops.len() + held.len(),
        "{calls} model calls for {} operations, {} of them in flight at the kill",
        ops.len(),
        held.len()
    );
}

/// Fails every other call, slowly enough that jobs are in flight when a worker stops.
struct EveryOtherFails {
    calls: AtomicU64,
}

impl Respond for EveryOtherFails {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let reply = if n.is_multiple_of(2) {
            error(500)
        } else {
            question(&format!("Question {n}?"), "technical")
        };
        reply.set_delay(Duration::from_millis(300))
    }
}

#[sqlx::test(migrations = false)]
async fn workers_stopped_and_killed_again_and_again_with_claimed_jobs_end_every_operation(
    pool: PgPool,
) {
    migrated(&pool).await;
    let server = wiremock::MockServer::start().await;
    wiremock::Mock::given(wiremock::matchers::method("POST"))
        .respond_with(EveryOtherFails {
            calls: AtomicU64::new(0),
        })
        .mount(&server)
        .await;
    // Each round stops the worker the moment it holds a claimed job whose attempt has
    // not started (Queued for apalis, pending for us): SIGTERM drains it, kill -9
    // leaves it to the takeover, which counts an attempt in apalis and none in ours.
    let env = worker_env(&pool, &server, &[("WORKER_CONCURRENCY", "64")]);
    // 160 sessions with one job each: a session's questions run one at a time, so the
    // worker's 64 slots fill (and it claims jobs beyond them) only if at least 64
    // sessions have a runnable job.
    let fixtures = sessions(&pool, 160).await;
    let ops = enqueue_on(&pool, &fixtures, 1).await;
    for round in 0..6 {
        let mut worker = Process::start("worker", &format!("stopped-{round}"), &env).await;
        testkit::eventually(
            format!("round {round}: a claimed job held back (nothing held back)"),
            Duration::from_secs(30),
            || async {
                let held_back = count(
                    &pool,
                    "SELECT count(*) FROM apalis.jobs j JOIN operations o ON j.idempotency_key = o.id::text
                     WHERE j.status = 'Queued' AND o.status = 'pending'",
                )
                .await;
                if held_back >= 1 {
                    return Some(());
                }
                let open = count(
                    &pool,
                    "SELECT count(*) FROM operations WHERE status IN ('pending', 'processing')",
                )
                .await;
                // Too few left to fill the slots and hold more: stop waiting too.
                (open <= 64).then_some(())
            },
        )
        .await;
        if round % 2 == 0 {
            let status = worker.terminate(Duration::from_secs(60)).await;
            assert!(status.success(), "exit {status:?}; log: {}", worker.logs());
        } else {
            // Claimed jobs that had not started come back through the takeover, which
            // counts an attempt for them in apalis and none in ours.
            worker.kill();
        }
    }
    let ahead = count(
        &pool,
        "SELECT count(*) FROM apalis.jobs j JOIN operations o ON j.idempotency_key = o.id::text
         WHERE j.attempts > o.attempts",
    )
    .await;
    // How often it happens depends on timing; the in-process test
    // `apalis_counter_ahead_of_ours_still_makes_its_last_attempt_decide` pins it down.
    eprintln!("{ahead} jobs with apalis' count ahead of ours");
    let _last = Process::start("worker", "stopped-last", &env).await;
    for op in &ops {
        finished(&pool, *op).await;
    }
    assert_consistent(&pool).await;
    let over_budget = count(&pool, "SELECT count(*) FROM operations WHERE attempts > 5").await;
    assert_eq!(over_budget, 0, "an operation ran more than its budget");
}
