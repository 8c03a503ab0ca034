//! The workers' autoscaling as KEDA and the HPA compute it: the exact query, target and
//! replica bounds of `deploy/k8s/keda.yaml`, run against queues of known content, and
//! the replica count the HPA formula gives, `ceil(value / target)` between
//! `minReplicaCount` and `maxReplicaCount` (deploy/README.md, "How scaling behaves").

use shared::jobs::{FEEDBACK_ANALYSIS_QUEUE, HELD_UNTIL, QUESTION_GENERATION_QUEUE};
use sqlx::PgPool;
use std::path::PathBuf;
use testkit::fixtures::*;

fn deploy_file(path: &str) -> String {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The value of the first `key: value` line of `yaml` (quotes stripped). Enough for the
/// flat keys these manifests use once each; no YAML library in the workspace.
fn scalar(yaml: &str, key: &str) -> String {
    yaml.lines()
        .find_map(|line| {
            let value = line.trim_start().strip_prefix(key)?.strip_prefix(':')?;
            Some(value.trim().trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| panic!("no `{key}:` in {yaml}"))
}

fn number(yaml: &str, key: &str) -> u32 {
    let value = scalar(yaml, key);
    value
        .parse()
        .unwrap_or_else(|e| panic!("`{key}: {value}`: {e}"))
}

/// The folded block scalar (`key: >-`) under `key`, as a YAML parser reads it: the
/// more-indented lines that follow, joined by single spaces, the final newline dropped.
fn folded_block(yaml: &str, key: &str) -> String {
    let mut lines = yaml.lines();
    let header = lines
        .by_ref()
        .find(|line| line.trim_start().starts_with(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no `{key}:` in {yaml}"));
    assert_eq!(
        header.trim_start(),
        format!("{key}: >-"),
        "`{key}` must stay a folded block scalar, which this reader folds as YAML does"
    );
    let indent = header.len() - header.trim_start().len();
    let body: Vec<&str> = lines
        .take_while(|line| !line.trim().is_empty() && line.len() - line.trim_start().len() > indent)
        .collect();
    let body_indent = body[0].len() - body[0].trim_start().len();
    assert!(
        body.iter()
            .all(|line| line.len() - line.trim_start().len() == body_indent),
        "a more-indented line would keep its newline when folded: keep the query flush"
    );
    body.iter()
        .map(|line| line.trim())
        .collect::<Vec<_>>()
        .join(" ")
}

/// What KEDA and the HPA it manages read from `keda.yaml`.
#[derive(Debug)]
struct Scaler {
    query: String,
    target: u32,
    min: u32,
    max: u32,
}

impl Scaler {
    fn from_manifest() -> Self {
        let keda = deploy_file("k8s/keda.yaml");
        Scaler {
            query: folded_block(&keda, "query"),
            target: number(&keda, "targetQueryValue"),
            min: number(&keda, "minReplicaCount"),
            max: number(&keda, "maxReplicaCount"),
        }
    }

    /// The query's value on `pool` now.
    async fn value(&self, pool: &PgPool) -> i64 {
        sqlx::query_scalar(sqlx::AssertSqlSafe(self.query.clone()))
            .fetch_one(pool)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", self.query))
    }

    /// The HPA's desired replicas for an AverageValue target: `ceil(value / target)`,
    /// held between the ScaledObject's bounds (0 is never reached with a floor of 1).
    fn replicas(&self, value: i64) -> u32 {
        let wanted = u32::try_from(value).expect("a count").div_ceil(self.target);
        wanted.clamp(self.min, self.max)
    }
}

/// When a job row is due.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Due {
    /// A minute ago: a worker could take it now.
    Now,
    /// In five minutes: a retry's backoff, or a job scheduled for later.
    Later,
    /// At the end of time: held behind its session's earlier question.
    Held,
}

/// Inserts `n` rows of `queue` straight into apalis' table, as apalis leaves them in
/// `status`, with `attempts` of 5 spent; those a worker holds (`Queued`, `Running`,
/// and the ended ones) are locked by the worker `scaling-worker`.
pub(crate) async fn jobs(
    pool: &PgPool,
    queue: &str,
    n: i64,
    status: &str,
    attempts: i32,
    due: Due,
) {
    sqlx::query(
        "INSERT INTO apalis.workers (id, worker_type, storage_name, layers, last_seen)
         VALUES ('scaling-worker', $1, 'PostgresStorage', '', now())
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(QUESTION_GENERATION_QUEUE)
    .execute(pool)
    .await
    .expect("worker row");
    let run_at = match due {
        Due::Now => "now() - interval '1 minute'",
        Due::Later => "now() + interval '5 minutes'",
        Due::Held => "to_timestamp($5)",
    };
    let locked = status != "Pending" && !(status == "Failed" && attempts < 5);
    let sql = format!(
        "INSERT INTO apalis.jobs (job, id, job_type, status, attempts, max_attempts, run_at,
                                  lock_by, lock_at, done_at)
         SELECT convert_to('{{}}', 'UTF8'), gen_random_uuid()::text, $1, $2, $3, 5, {run_at},
                CASE WHEN $4 THEN 'scaling-worker' END, CASE WHEN $4 THEN now() END,
                CASE WHEN $2 IN ('Done', 'Failed', 'Killed') THEN now() END
         FROM generate_series(1, $6)"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(queue)
        .bind(status)
        .bind(attempts)
        .bind(locked)
        .bind(HELD_UNTIL as f64)
        .bind(n)
        .execute(pool)
        .await
        .unwrap_or_else(|e| panic!("{n} {status} jobs: {e}"));
}

pub(crate) async fn question_jobs(pool: &PgPool, n: i64, status: &str, attempts: i32, due: Due) {
    jobs(pool, QUESTION_GENERATION_QUEUE, n, status, attempts, due).await;
}

#[test]
fn the_target_is_one_replicas_concurrency_and_scale_down_waits_for_the_drain() {
    let keda = deploy_file("k8s/keda.yaml");
    let config = deploy_file("k8s/config.yaml");
    let worker = deploy_file("k8s/worker.yaml");
    let concurrency = number(&config, "WORKER_CONCURRENCY");
    let drain = number(&config, "WORKER_SHUTDOWN_SECS");
    assert_eq!(
        Scaler::from_manifest().target,
        concurrency,
        "targetQueryValue is the jobs one replica carries"
    );
    let grace = number(&worker, "terminationGracePeriodSeconds");
    assert!(
        grace > drain,
        "the pod must outlive the drain: grace {grace} s, drain {drain} s"
    );
    // The only stabilizationWindowSeconds and policies in the file are scaleDown's.
    let scale_down = &keda[keda.find("scaleDown:").expect("a scaleDown behavior")..];
    let window = number(scale_down, "stabilizationWindowSeconds");
    assert!(
        window >= drain + 60,
        "scale-down waits for the drain with a margin: window {window} s, drain {drain} s"
    );
    assert_eq!(scalar(scale_down, "- type"), "Percent");
    let percent = number(scale_down, "value");
    assert!(
        (1..100).contains(&percent),
        "a scale-down step removes a fraction of the replicas, not {percent} %"
    );
}

#[sqlx::test(migrations = false)]
async fn with_a_cap_on_model_calls_keda_never_asks_for_replicas_that_could_only_wait(pool: PgPool) {
    migrated(&pool).await;
    let config = deploy_file("k8s/config.yaml");
    let cap = number(&config, "LLM_MAX_IN_FLIGHT");
    let concurrency = number(&config, "WORKER_CONCURRENCY");
    assert!(cap > 0, "the manifest sets a cap");
    let scaler = Scaler::from_manifest();
    let useful = cap.div_ceil(concurrency);
    assert!(
        scaler.max <= useful,
        "maxReplicaCount {} may not pass ceil(LLM_MAX_IN_FLIGHT {cap} / WORKER_CONCURRENCY {concurrency}) = {useful}",
        scaler.max
    );
    // A flood: far more waiting than the cap's replicas could carry.
    question_jobs(&pool, i64::from(cap) * 4, "Pending", 0, Due::Now).await;
    let value = scaler.value(&pool).await;
    assert_eq!(value, i64::from(cap) * 4);
    assert!(
        scaler.replicas(value) <= useful,
        "{} replicas",
        scaler.replicas(value)
    );
}

#[sqlx::test(migrations = false)]
async fn two_hundred_waiting_jobs_ask_for_ceil_200_over_the_target(pool: PgPool) {
    migrated(&pool).await;
    let scaler = Scaler::from_manifest();
    question_jobs(&pool, 200, "Pending", 0, Due::Now).await;

    let value = scaler.value(&pool).await;
    assert_eq!(value, 200);
    assert_eq!(scaler.replicas(value), 200_u32.div_ceil(scaler.target));
    assert_eq!(scaler.replicas(value), 4, "with the target of 64");
}

#[sqlx::test(migrations = false)]
async fn busy_replicas_with_nothing_waiting_are_kept(pool: PgPool) {
    migrated(&pool).await;
    let scaler = Scaler::from_manifest();
    // The case: ten replicas each running a full 64, none waiting.
    question_jobs(&pool, 640, "Running", 1, Due::Now).await;

    let value = scaler.value(&pool).await;
    assert_eq!(value, 640);
    assert_eq!(scaler.replicas(value), 10, "not scaled down to one");
}

#[sqlx::test(migrations = false)]
async fn a_mixed_queue_counts_what_could_run_now_and_what_runs(pool: PgPool) {
    migrated(&pool).await;
    let scaler = Scaler::from_manifest();
    // Through the api's own enqueue: three sessions with three questions each, so
    // each session's first can run and the other two are held behind it.
    let fixtures = sessions(&pool, 3).await;
    enqueue_on(&pool, &fixtures, 3).await;

    // Counted: what a worker could take now, what workers claimed, what runs.
    question_jobs(&pool, 88, "Pending", 0, Due::Now).await;
    question_jobs(&pool, 7, "Queued", 0, Due::Now).await;
    question_jobs(&pool, 2, "Failed", 1, Due::Now).await; // attempts left: apalis fetches it again
    question_jobs(&pool, 29, "Running", 1, Due::Now).await;
    // Not counted.
    question_jobs(&pool, 300, "Pending", 0, Due::Held).await;
    question_jobs(&pool, 40, "Pending", 1, Due::Later).await;
    question_jobs(&pool, 5, "Failed", 1, Due::Later).await;
    question_jobs(&pool, 500, "Done", 1, Due::Now).await;
    question_jobs(&pool, 50, "Failed", 5, Due::Now).await; // attempts spent: failed for good
    question_jobs(&pool, 10, "Killed", 2, Due::Now).await;
    jobs(&pool, "some_other_queue", 20, "Pending", 0, Due::Now).await;

    let value = scaler.value(&pool).await;
    assert_eq!(value, 3 + 88 + 7 + 2 + 29);
    assert_eq!(scaler.replicas(value), 129_u32.div_ceil(scaler.target));
    assert_eq!(scaler.replicas(value), 3, "with the target of 64");

    // The queue gauge agrees: `pending` is what is due, the held and scheduled apart.
    let by_status = shared::db::queue::count_in_play(&pool)
        .await
        .expect("count");
    let count = |status: &str| {
        by_status
            .iter()
            .find(|c| c.job_type == QUESTION_GENERATION_QUEUE && c.status == status)
            .map_or(0, |c| c.count)
    };
    assert_eq!(count("Pending"), 3 + 88, "{by_status:?}");
    assert_eq!(count("Queued"), 7, "{by_status:?}");
    assert_eq!(count("Held"), 300 + 6, "{by_status:?}");
    assert_eq!(count("Scheduled"), 40, "{by_status:?}");
    // Those with attempts left; the 50 spent and the 10 killed have ended, and are
    // counted apart (`ended_counts`).
    assert_eq!(count("Failed"), 2 + 5, "{by_status:?}");
}

#[sqlx::test(migrations = false)]
async fn the_busier_job_type_decides_for_each_replica_runs_both(pool: PgPool) {
    migrated(&pool).await;
    let scaler = Scaler::from_manifest();
    question_jobs(&pool, 100, "Pending", 0, Due::Now).await;
    jobs(&pool, FEEDBACK_ANALYSIS_QUEUE, 30, "Pending", 0, Due::Now).await;
    jobs(&pool, FEEDBACK_ANALYSIS_QUEUE, 10, "Running", 1, Due::Now).await;
    assert_eq!(
        scaler.value(&pool).await,
        100,
        "the questions' 100, not 140"
    );

    // Feedback alone can ask for replicas too.
    jobs(&pool, FEEDBACK_ANALYSIS_QUEUE, 160, "Pending", 0, Due::Now).await;
    let value = scaler.value(&pool).await;
    assert_eq!(value, 200);
    assert_eq!(scaler.replicas(value), 200_u32.div_ceil(scaler.target));

    // The gauges count the types apart.
    let by_status = shared::db::queue::count_in_play(&pool)
        .await
        .expect("count");
    let pending = |queue: &str| {
        by_status
            .iter()
            .find(|c| c.job_type == queue && c.status == "Pending")
            .map_or(0, |c| c.count)
    };
    assert_eq!(pending(QUESTION_GENERATION_QUEUE), 100);
    assert_eq!(pending(FEEDBACK_ANALYSIS_QUEUE), 190);
}

#[sqlx::test(migrations = false)]
async fn while_intake_is_paused_waiting_jobs_ask_for_no_replica(pool: PgPool) {
    migrated(&pool).await;
    let scaler = Scaler::from_manifest();
    question_jobs(&pool, 500, "Pending", 0, Due::Now).await;
    question_jobs(&pool, 70, "Running", 1, Due::Now).await;
    assert_eq!(scaler.value(&pool).await, 570);
    let mut conn = pool.acquire().await.expect("conn");
    shared::db::intake::set(&mut conn, true, "127.0.0.1")
        .await
        .expect("pause");
    // The busy replicas stay until they have finished what they hold; nothing more.
    let value = scaler.value(&pool).await;
    assert_eq!(value, 70);
    assert_eq!(scaler.replicas(value), 70_u32.div_ceil(scaler.target));
    shared::db::intake::set(&mut conn, false, "127.0.0.1")
        .await
        .expect("resume");
    assert_eq!(scaler.value(&pool).await, 570);
}

#[sqlx::test(migrations = false)]
async fn an_empty_queue_reads_zero_and_keeps_the_floor(pool: PgPool) {
    migrated(&pool).await;
    let scaler = Scaler::from_manifest();
    // Only ended work and a session's held questions: nothing a worker could do.
    question_jobs(&pool, 25, "Done", 1, Due::Now).await;
    question_jobs(&pool, 4, "Pending", 0, Due::Held).await;

    let value = scaler.value(&pool).await;
    assert_eq!(value, 0);
    assert_eq!(scaler.replicas(value), scaler.min);
    assert_eq!(scaler.min, 1, "one worker stays for the queue's upkeep");
}

/// The nodes of a plan (EXPLAIN's JSON) that scan `relation` whole.
fn seq_scans(node: &serde_json::Value, relation: &str) -> usize {
    let here = usize::from(node["Node Type"] == "Seq Scan" && node["Relation Name"] == relation);
    here + node["Plans"].as_array().map_or(0, |plans| {
        plans.iter().map(|p| seq_scans(p, relation)).sum()
    })
}

/// The parameters a statement of the plan test takes.
#[derive(Clone, Copy)]
enum Binds {
    None,
    Queues,
    /// The job purge's: the queues, the days, the batch.
    QueuesDaysBatch,
    /// The operations purge's: the days, the batch.
    DaysBatch,
    /// The ended jobs' recount: the queues, the span, the recent spans' range.
    QueuesSpanRecent,
    /// The finished operations' recount: the span, the recent spans' range.
    SpanRecent,
}

/// Where a pass of the ended count starts its recent spans, about.
fn recent_from() -> chrono::DateTime<chrono::Utc> {
    chrono::Utc::now() - chrono::TimeDelta::minutes(10)
}

async fn plan(pool: &PgPool, sql: &str, binds: Binds) -> serde_json::Value {
    let explain = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN (FORMAT JSON) {sql}")));
    let explain = match binds {
        Binds::None => explain,
        Binds::Queues => explain.bind(shared::jobs::QUEUES),
        Binds::QueuesDaysBatch => explain.bind(shared::jobs::QUEUES).bind(7).bind(1_000_i64),
        Binds::DaysBatch => explain.bind(30).bind(1_000_i64),
        Binds::QueuesSpanRecent => explain
            .bind(shared::jobs::QUEUES)
            .bind(600.0)
            .bind(Some(recent_from()))
            .bind(None::<chrono::DateTime<chrono::Utc>>),
        Binds::SpanRecent => explain
            .bind(600.0)
            .bind(Some(recent_from()))
            .bind(None::<chrono::DateTime<chrono::Utc>>),
    };
    let plans: serde_json::Value = explain.fetch_one(pool).await.expect("explain");
    plans[0]["Plan"].clone()
}

/// What the gauges (and KEDA) read every few seconds must cost what is in play, not the
/// days of ended jobs and finished operations that retention keeps: on tables that are
/// mostly history, no plan of theirs scans the table.
#[sqlx::test(migrations = false)]
async fn the_gauges_and_the_scaler_read_the_work_in_play_not_the_history(pool: PgPool) {
    migrated(&pool).await;
    question_jobs(&pool, 40_000, "Done", 1, Due::Now).await;
    question_jobs(&pool, 2_000, "Failed", 5, Due::Now).await;
    question_jobs(&pool, 20, "Pending", 0, Due::Now).await;
    question_jobs(&pool, 10, "Pending", 0, Due::Held).await;
    question_jobs(&pool, 5, "Running", 1, Due::Now).await;
    question_jobs(&pool, 3, "Queued", 1, Due::Now).await;
    question_jobs(&pool, 2, "Failed", 1, Due::Now).await;
    let (user, _) = session(&pool, 1).await;
    sqlx::query(
        "INSERT INTO operations (user_id, operation_type, status, result, created_at, updated_at)
         SELECT $1, 'question_generation', 'completed', '{}', now() - interval '2 days', now() - interval '2 days'
         FROM generate_series(1, 40000)",
    )
    .bind(user)
    .execute(&pool)
    .await
    .expect("finished operations");
    // As autovacuum leaves them: statistics, and the visibility map that index-only
    // scans read.
    sqlx::query("VACUUM ANALYZE apalis.jobs, operations")
        .execute(&pool)
        .await
        .expect("vacuum");

    use shared::db::{ended_counts, operations, queue, retention};
    let statements = [
        ("count_in_play", queue::COUNT_IN_PLAY, Binds::Queues, "jobs"),
        (
            "oldest_pending_age",
            queue::OLDEST_PENDING_AGE,
            Binds::Queues,
            "jobs",
        ),
        (
            "count_unfinished_by_status",
            operations::COUNT_UNFINISHED_BY_STATUS,
            Binds::None,
            "operations",
        ),
        // These read ranges of the indexes of ended rows.
        (
            "count_ended_jobs",
            ended_counts::COUNT_ENDED_JOBS,
            Binds::QueuesSpanRecent,
            "jobs",
        ),
        (
            "count_finished_operations",
            ended_counts::COUNT_FINISHED_OPERATIONS,
            Binds::SpanRecent,
            "operations",
        ),
        (
            "purge_ended_jobs",
            retention::PURGE_ENDED_JOBS,
            Binds::QueuesDaysBatch,
            "jobs",
        ),
        (
            "purge_finished_operations",
            retention::PURGE_FINISHED_OPERATIONS,
            Binds::DaysBatch,
            "operations",
        ),
    ];
    for (name, sql, binds, table) in statements {
        let plan = plan(&pool, sql, binds).await;
        assert_eq!(seq_scans(&plan, table), 0, "{name} scans {table}: {plan:#}");
    }
    let keda = Scaler::from_manifest().query;
    let plan = plan(&pool, &keda, Binds::None).await;
    assert_eq!(
        seq_scans(&plan, "jobs"),
        0,
        "the scaler scans jobs: {plan:#}"
    );

    // And they count what they should.
    let in_play = shared::db::queue::count_in_play(&pool)
        .await
        .expect("count");
    let count = |status: &str| {
        in_play
            .iter()
            .find(|c| c.status == status)
            .map_or(0, |c| c.count)
    };
    assert_eq!(
        (
            count("Pending"),
            count("Held"),
            count("Running"),
            count("Queued"),
            count("Failed")
        ),
        (20, 10, 5, 3, 2),
        "{in_play:?}"
    );
    assert_eq!(count("Done"), 0, "ended jobs are counted apart");
}

/// Rows of `operations` the transaction on `conn` has read so far (scanned whole or
/// fetched through an index, kept or filtered out).
async fn operations_read(conn: &mut sqlx::PgConnection) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)
         FROM pg_stat_xact_user_tables WHERE relid = 'operations'::regclass",
    )
    .fetch_one(conn)
    .await
    .expect("reads")
}

/// What one session does reads that session's operations, not every operation in
/// flight: after a quiet night, the statistics say nothing is unfinished,
/// and a partial index of every unfinished operation then looks as cheap as the
/// session's own. Here the statistics are gathered on history alone, then 2,000
/// questions of other sessions arrive, as a morning would bring them.
#[sqlx::test(migrations = false)]
async fn a_sessions_statements_read_its_operations_not_all_in_flight(pool: PgPool) {
    migrated(&pool).await;
    let (user, mine) = session(&pool, 0).await;
    let (other, theirs) = session(&pool, 1).await;
    sqlx::query("UPDATE interview_sessions SET question_limit = 20 WHERE id = $1")
        .bind(mine)
        .execute(&pool)
        .await
        .expect("limit");
    // 2,000 sessions of someone else, with 20 finished questions each.
    sqlx::query(
        "INSERT INTO interview_sessions (user_id, job_posting_id)
         SELECT user_id, job_posting_id FROM interview_sessions, generate_series(1, 2000)
         WHERE id = $1",
    )
    .bind(theirs)
    .execute(&pool)
    .await
    .expect("sessions");
    let finished = "INSERT INTO operations (user_id, session_id, operation_type, status, result,
                                            created_at, updated_at)
         SELECT user_id, id, 'question_generation', 'completed', '{}',
                now() - interval '2 days', now() - interval '2 days'
         FROM interview_sessions, generate_series(1, $2) WHERE user_id = $1";
    for (owner, n) in [(other, 20), (user, 3)] {
        sqlx::query(finished)
            .bind(owner)
            .bind(n)
            .execute(&pool)
            .await
            .expect("history");
    }
    sqlx::query("VACUUM ANALYZE operations")
        .execute(&pool)
        .await
        .expect("vacuum");
    // The morning: a question in flight in each of their sessions, three in mine.
    let unfinished = "INSERT INTO operations (user_id, session_id, operation_type, status)
         SELECT user_id, id, 'question_generation', unnest($2::text[])
         FROM interview_sessions WHERE user_id = $1";
    for (owner, statuses) in [
        (other, &["pending"][..]),
        (user, &["processing", "pending", "pending"][..]),
    ] {
        sqlx::query(unfinished)
            .bind(owner)
            .bind(statuses)
            .execute(&pool)
            .await
            .expect("in flight");
    }
    let mine_total = 6;

    use shared::db::{operations, sessions};
    let mut tx = pool.begin().await.expect("begin");
    // (statement, rows read, the most it may read)
    let mut checked = Vec::new();
    macro_rules! reads {
        ($name:literal, $call:expr) => {
            reads!($name, $call, mine_total)
        };
        ($name:literal, $call:expr, $bound:expr) => {{
            let before = operations_read(&mut tx).await;
            let out = $call.await.expect($name);
            checked.push(($name, operations_read(&mut tx).await - before, $bound));
            out
        }};
    }
    let counted = reads!(
        "count_unfinished",
        operations::count_unfinished(&mut tx, mine)
    );
    assert_eq!((counted.all, counted.questions), (3, 3));
    let remaining = reads!(
        "questions_remaining",
        sessions::questions_remaining(&mut tx, mine)
    );
    assert_eq!(remaining, Some(20 - 3));
    reads!(
        "release_next_question",
        sqlx::query("SELECT release_next_question($1)")
            .bind(mine)
            .execute(&mut *tx)
    );
    let page = reads!(
        "page_of_session",
        operations::page_of_session(&mut tx, mine, &["pending", "processing"], 20, 0)
    );
    assert_eq!(page.len(), 3);
    reads!(
        "count_of_session",
        operations::count_of_session(&mut tx, mine, &["pending", "processing"])
    );
    // A user's deletion (rare, and behind login) may read what is in flight, but not
    // the history: 2,001 other questions in flight, 40,020 finished.
    let of_user = reads!(
        "unfinished_of_user",
        operations::unfinished_of_user(&mut tx, user),
        2_001 + mine_total
    );
    assert_eq!(of_user.len(), 3);
    let failed = reads!(
        "fail_unfinished_of_session",
        operations::fail_unfinished_of_session(&mut tx, mine)
    );
    assert_eq!(failed.len(), 3);
    let too_many: Vec<_> = checked.iter().filter(|(_, n, most)| n > most).collect();
    assert!(
        too_many.is_empty(),
        "rows of operations read, and the most allowed (the session has {mine_total}): {checked:?}"
    );
}
