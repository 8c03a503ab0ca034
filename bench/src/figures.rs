//! One function per figure of BENCHMARKS.md; each does one run on a fresh stack and
//! returns its numbers.

use crate::llm;
use crate::load::{self, Outcome};
use crate::stack::{self, Database, Process, Setup, User};
use crate::stats::{Figures, percentile, round};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use testkit::provider::{Behaviour, FakeProvider};

const WARMUP: Duration = Duration::from_secs(2);
const MEASURE: Duration = Duration::from_secs(10);
/// Figure 8's steady state: arrivals from this second on (the ramp to full load is over).
const STEADY_FROM: Duration = Duration::from_secs(10);
/// Generous: a run that takes longer than this is broken, not slow.
const FINISH_DEADLINE: Duration = Duration::from_secs(900);
/// Sessions for figure 1: more than the requests it sends (about 2,000/s over WARMUP +
/// MEASURE, BENCHMARKS.md, so some 24,000), so that each request is its session's only
/// unfinished operation. A session's questions are generated one at a time; a request
/// on a session with an unfinished operation would push its job held, and past
/// MAX_PENDING_PER_SESSION of them (20) be refused with a 429.
const ENQUEUE_SESSIONS: usize = 40_000;

/// 1. `POST …/generate-question` on `connections` connections, with `workers` workers
///    (instant LLM) draining the queue meanwhile: none leaves the api and PostgreSQL the
///    machine; a real system enqueues and drains at once.
pub async fn enqueue(setup: &Setup, connections: usize, workers: usize) -> anyhow::Result<Figures> {
    let db = Database::create(setup).await?;
    let api = stack::api(setup, &db).await?;
    // One session per request (see ENQUEUE_SESSIONS): with no worker, no operation
    // ever ends.
    let user = User::create(&api, ENQUEUE_SESSIONS).await?;
    let llm = fake_llm(Duration::ZERO).await?;
    let mut draining = Vec::with_capacity(workers);
    for _ in 0..workers {
        draining.push(stack::worker(setup, &db, &llm, 64, 0).await?);
    }
    let cpu_before = cpu_snapshot(&[&api]);
    let outcome = load::closed_loop(connections, WARMUP, MEASURE, move |http, n| {
        let user = user.clone();
        async move { Ok(user.generate(&http, n as usize).await.is_ok()) }
    })
    .await?;
    let cpu = cpu_snapshot(&[&api]).since(&cpu_before, WARMUP + MEASURE);
    let (operations,): (i64,) = sqlx::query_as("SELECT count(*) FROM operations")
        .fetch_one(&db.pool)
        .await?;
    let (drained,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM operations WHERE status = 'completed'")
            .fetch_one(&db.pool)
            .await?;
    drop(draining);
    if operations > ENQUEUE_SESSIONS as i64 {
        eprintln!(
            "enqueue: {operations} requests accepted on {ENQUEUE_SESSIONS} sessions: some \
             sessions got a second (held) job; raise ENQUEUE_SESSIONS"
        );
    }
    drop(api);
    db.drop_database().await?;
    let mut figures = with_cpu(load_figures(outcome), "api", cpu);
    if workers > 0 {
        figures.insert(
            "drained_per_sec".into(),
            round(drained as f64 / (WARMUP + MEASURE).as_secs_f64()),
        );
    }
    Ok(figures)
}

/// 2. `GET /operations/{id}` on `connections` connections, over 1,000 operations.
pub async fn poll(setup: &Setup, connections: usize) -> anyhow::Result<Figures> {
    let db = Database::create(setup).await?;
    let api = stack::api(setup, &db).await?;
    // One session per operation: no worker runs, so all stay unfinished, and one
    // session may hold only MAX_PENDING_PER_SESSION of them.
    let operations = 1_000;
    let user = User::create(&api, operations).await?;
    let ids = user.generate_many(operations, 32).await?;
    let cpu_before = cpu_snapshot(&[&api]);
    let outcome = load::closed_loop(connections, WARMUP, MEASURE, move |http, n| {
        let url = format!("{}/operations/{}", user.base, ids[n as usize % ids.len()]);
        let token = user.token.clone();
        async move {
            let response = http.get(url).bearer_auth(token).send().await?;
            let ok = response.status().is_success();
            response.bytes().await?;
            Ok(ok)
        }
    })
    .await?;
    let cpu = cpu_snapshot(&[&api]).since(&cpu_before, WARMUP + MEASURE);
    drop(api);
    db.drop_database().await?;
    Ok(with_cpu(load_figures(outcome), "api", cpu))
}

/// 3. Jobs/s end to end with an instant LLM: `jobs` queued first, then `workers`
///    worker processes started; timed from the first claim to the last commit.
pub async fn end_to_end(
    setup: &Setup,
    jobs: usize,
    workers: usize,
    cap: u32,
) -> anyhow::Result<Figures> {
    drain(setup, jobs, 0, workers, cap).await
}

/// 3b. Figure 3 with half the jobs feedback (`feedback_analysis`) and half questions,
///     on a fake model that answers both (llm.rs), without a cap.
pub async fn end_to_end_mixed(
    setup: &Setup,
    jobs: usize,
    workers: usize,
) -> anyhow::Result<Figures> {
    drain(setup, jobs, jobs / 2, workers, 0).await
}

/// Figures 3 and 3b: `jobs` queued, `feedback` of them feedback on an answer and the
/// rest questions, then `workers` worker processes started; timed from the first claim
/// to the last commit.
async fn drain(
    setup: &Setup,
    jobs: usize,
    feedback: usize,
    workers: usize,
    cap: u32,
) -> anyhow::Result<Figures> {
    let db = Database::create(setup).await?;
    let api = stack::api(setup, &db).await?;
    // The bench's own fake model for both figures 3 and 3b, so that the two compare
    // the jobs, not two fakes (testkit's answers questions only).
    let llm = llm::start().await?;
    // One job per session: a session's questions run one at a time, so with several
    // per session the later ones would wait for their predecessors instead of the
    // workers, and the figure would measure the sessions, not the queue. (Feedback is
    // not held behind anything; one per session all the same, so both kinds spread
    // alike.)
    let user = User::create(&api, jobs).await?;
    if feedback == 0 {
        user.generate_many(jobs, 64).await?;
    } else {
        // The first `feedback` sessions get a question (written in the database, since
        // no worker may run before the window) and an answer to it, then feedback on
        // the answer; the others a question. Both queued at once, as users would.
        let (answering, asking) = user.sessions.split_at(feedback);
        let questions = db.ask_first_questions(answering).await?;
        let askers = User {
            sessions: asking.to_vec(),
            ..user.clone()
        };
        tokio::try_join!(
            user.feedback_many(&questions, 32),
            askers.generate_many(jobs - feedback, 32),
        )?;
    }
    let started = Instant::now();
    let cpu_before = stack::postgres_cpu_seconds();
    let mut running = Vec::new();
    for _ in 0..workers {
        running.push(stack::worker(setup, &db, &llm, 64, cap).await?);
    }
    let failed = db.wait_finished(jobs as i64, FINISH_DEADLINE).await?;
    let wall = started.elapsed().as_secs_f64();
    // The workers started inside the window, so all their CPU time counts. Read before
    // the queries below, which on a copy of a seeded template read millions of rows.
    let workers_cpu: f64 = running.iter().map(|w| stack::cpu_seconds(w.pid())).sum();
    let postgres_cpu = stack::postgres_cpu_seconds() - cpu_before;
    let span = claim_to_commit_seconds(&db).await?;
    let commits = first_to_last_commit_seconds(&db).await?;
    drop(running);
    drop(api);
    let (feedback_messages,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM session_messages
         WHERE message_type = 'feedback' AND created_at >= $1",
    )
    .bind(db.created_at)
    .fetch_one(&db.pool)
    .await?;
    db.drop_database().await?;
    if feedback_messages != feedback as i64 {
        eprintln!("end_to_end: {feedback_messages} feedback messages for {feedback} feedback jobs");
    }
    let mut figures = Figures::new();
    if feedback > 0 {
        figures.insert("feedback_messages".into(), json!(feedback_messages));
    }
    figures.insert("cpu_cores_workers".into(), round(workers_cpu / wall));
    figures.insert("cpu_cores_postgres".into(), round(postgres_cpu / wall));
    figures.insert("jobs_per_sec".into(), round(jobs as f64 / span));
    // Without the start: a worker under a cap makes no call until its peers have
    // counted it (two heartbeats), which the span above includes.
    figures.insert(
        "jobs_per_sec_first_to_last_commit".into(),
        round((jobs - 1) as f64 / commits),
    );
    figures.insert("seconds_first_claim_to_last_commit".into(), round(span));
    figures.insert("seconds_wall_from_worker_start".into(), round(wall));
    figures.insert("failed".into(), json!(failed));
    Ok(figures)
}

/// 4. One worker at `concurrency` with a `latency_ms` LLM: jobs in flight and RSS.
pub async fn in_flight(
    setup: &Setup,
    jobs: usize,
    concurrency: u32,
    latency_ms: u64,
    cap: u32,
) -> anyhow::Result<Figures> {
    let db = Database::create(setup).await?;
    let api = stack::api(setup, &db).await?;
    let llm = fake_llm(Duration::from_millis(latency_ms)).await?;
    // One job per session: a session's questions run one at a time, so `concurrency`
    // jobs can be in flight only if as many sessions have one.
    let user = User::create(&api, jobs).await?;
    user.generate_many(jobs, 64).await?;
    let worker = stack::worker(setup, &db, &llm, concurrency, cap).await?;
    let metrics_url = format!("http://{}/metrics", worker.addr);
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut in_flight = Vec::new();
    let mut peak_rss: f64 = 0.0;
    loop {
        let (finished, _) = db.finished().await?;
        if finished >= jobs as i64 {
            break;
        }
        if started.elapsed() > FINISH_DEADLINE {
            bail!("only {finished} of {jobs} finished");
        }
        let metrics = http.get(&metrics_url).send().await?.text().await?;
        // Only samples while work is still queued: the tail, where the queue is
        // empty, says nothing about how many jobs one worker can hold.
        let (queued,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM apalis.jobs WHERE status IN ('Pending', 'Queued')",
        )
        .fetch_one(&db.pool)
        .await?;
        if queued > 0 {
            in_flight.push(gauge(&metrics, "question_jobs_in_flight").unwrap_or(0.0));
        }
        peak_rss = peak_rss.max(stack::rss_mib(worker.pid()).0);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let span = claim_to_commit_seconds(&db).await?;
    let commits = first_to_last_commit_seconds(&db).await?;
    let (_, high_water) = stack::rss_mib(worker.pid());
    // Where a job's time goes: all of it, and the LLM's part.
    let metrics = http.get(&metrics_url).send().await?.text().await?;
    let mean = |name: &str| {
        let sum = gauge(&metrics, &format!("{name}_sum"))?;
        let count = gauge(&metrics, &format!("{name}_count"))?;
        (count > 0.0).then(|| sum / count)
    };
    let job_seconds = mean("question_job_duration_seconds").unwrap_or(0.0);
    let llm_seconds = mean("llm_request_duration_seconds").unwrap_or(0.0);
    drop(worker);
    drop(api);
    db.drop_database().await?;
    let mut figures = Figures::new();
    let peak_in_flight = in_flight.iter().copied().fold(0.0, f64::max);
    figures.insert("in_flight_peak".into(), round(peak_in_flight));
    figures.insert(
        "in_flight_p50".into(),
        round(percentile(&mut in_flight, 50.0)),
    );
    figures.insert("jobs_per_sec".into(), round(jobs as f64 / span));
    // Steady state by Little's law, without the ramp-up and the last wave that the
    // span above includes.
    let steady = percentile(&mut in_flight, 50.0) / job_seconds.max(f64::EPSILON);
    figures.insert("jobs_per_sec_steady".into(), round(steady));
    // Without the start (a worker under a cap calls nothing until its peers have
    // counted it), which the span and the mean job time above include.
    figures.insert(
        "jobs_per_sec_first_to_last_commit".into(),
        round((jobs - 1) as f64 / commits),
    );
    figures.insert("job_seconds_mean".into(), round(job_seconds));
    figures.insert("llm_seconds_mean".into(), round(llm_seconds));
    figures.insert("rss_peak_sampled_mib".into(), round(peak_rss));
    figures.insert("rss_high_water_mib".into(), round(high_water));
    Ok(figures)
}

/// 5. Pickup latency (enqueue → claim) at a steady `rate` per second for `seconds`,
///    with two workers waiting.
pub async fn pickup(setup: &Setup, rate: u32, seconds: u64) -> anyhow::Result<Figures> {
    let db = Database::create(setup).await?;
    let api = stack::api(setup, &db).await?;
    let llm = fake_llm(Duration::ZERO).await?;
    let total = rate as u64 * seconds;
    // One session per request: a request on a session whose previous operation is
    // unfinished would have its job held until that one ends, and the figure would
    // count the wait as pickup latency.
    let user = User::create(&api, total as usize).await?;
    let workers = [
        stack::worker(setup, &db, &llm, 64, 0).await?,
        stack::worker(setup, &db, &llm, 64, 0).await?,
    ];
    let http = reqwest::Client::new();
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut sent = Vec::new();
    for n in 0..total {
        ticker.tick().await;
        let (user, http) = (user.clone(), http.clone());
        sent.push(tokio::spawn(async move {
            user.generate(&http, n as usize).await
        }));
    }
    for request in sent {
        request.await??;
    }
    db.wait_finished(total as i64, FINISH_DEADLINE).await?;
    // Both instants are PostgreSQL's clock: `created_at` is when the enqueue
    // transaction began, `lock_at` when a worker claimed the job.
    let mut latencies: Vec<f64> = sqlx::query_scalar(
        "SELECT (extract(epoch FROM j.lock_at - o.created_at) * 1000)::float8
         FROM operations o JOIN apalis.jobs j ON j.idempotency_key = o.id::text",
    )
    .fetch_all(&db.pool)
    .await?;
    if latencies.len() as u64 != total {
        bail!("{} claims for {total} operations", latencies.len());
    }
    drop(workers);
    drop(api);
    db.drop_database().await?;
    let mut figures = Figures::new();
    figures.insert(
        "pickup_p50_ms".into(),
        round(percentile(&mut latencies, 50.0)),
    );
    figures.insert(
        "pickup_p99_ms".into(),
        round(percentile(&mut latencies, 99.0)),
    );
    figures.insert(
        "pickup_max_ms".into(),
        round(percentile(&mut latencies, 100.0)),
    );
    Ok(figures)
}

/// 6. Long-poll wake latency: a client waits on an operation, the harness commits the
///    operation's completion, and the time from that commit's acknowledgement to the
///    client's response is measured, `count` times one after another.
pub async fn wake(setup: &Setup, count: usize) -> anyhow::Result<Figures> {
    let db = Database::create(setup).await?;
    let api = stack::api(setup, &db).await?;
    // One session per operation: no worker runs, so all stay unfinished until the
    // harness completes them, and one session may hold only MAX_PENDING_PER_SESSION.
    let user = User::create(&api, count).await?;
    let ids = user.generate_many(count, 8).await?;
    let http = reqwest::Client::new();
    let mut wakes = Vec::with_capacity(count);
    for id in ids {
        let request = http
            .get(format!("{}/operations/{id}?wait=30", user.base))
            .bearer_auth(&user.token);
        let waiting = tokio::spawn(async move {
            let response = request.send().await?;
            let answered = Instant::now();
            let body: Value = response.json().await?;
            anyhow::Ok((answered, body))
        });
        // Long enough for the request to be parked on the listener; the figure is
        // measured from the commit, so this pause is not part of it.
        tokio::time::sleep(Duration::from_millis(50)).await;
        sqlx::query("UPDATE operations SET status = 'completed', result = '{}', updated_at = now() WHERE id = $1")
            .bind(id)
            .execute(&db.pool)
            .await?;
        let committed = Instant::now();
        let (answered, body) = waiting.await??;
        if body["status"] != "completed" {
            bail!("the long poll answered {body}");
        }
        // Signed: the wake may reach the client before the commit's acknowledgement
        // reaches the harness.
        let ms = if answered >= committed {
            (answered - committed).as_secs_f64() * 1000.0
        } else {
            -((committed - answered).as_secs_f64() * 1000.0)
        };
        wakes.push(ms);
    }
    drop(api);
    db.drop_database().await?;
    let mut figures = Figures::new();
    figures.insert("wake_p50_ms".into(), round(percentile(&mut wakes, 50.0)));
    figures.insert("wake_p99_ms".into(), round(percentile(&mut wakes, 99.0)));
    Ok(figures)
}

/// 8. What a candidate waits beyond the model: open-loop arrivals, one every 1/`rate`
///    s for `seconds` (each on its own session), each client doing what docs/API.md
///    ("Polling an operation") tells one to: POST generate-question, then long-poll
///    the operation (`wait=30`) until it has finished. Overhead = POST to the answering poll, minus the model's
///    latency. One worker at `concurrency`; arrivals of the first WARMUP are not counted
///    (the worker's pool and the api's connections are still opening).
pub async fn overhead(
    setup: &Setup,
    rate: u32,
    seconds: u64,
    latency_ms: u64,
    concurrency: u32,
) -> anyhow::Result<Figures> {
    let db = Database::create(setup).await?;
    let api = stack::api(setup, &db).await?;
    let llm = fake_llm(Duration::from_millis(latency_ms)).await?;
    let total = rate as u64 * seconds;
    let user = User::create(&api, total as usize).await?;
    let worker = stack::worker(setup, &db, &llm, concurrency, 0).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(4_096)
        .http1_only()
        .build()?;
    let model = Duration::from_millis(latency_ms);
    let cpu_before = cpu_snapshot(&[&api, &worker]);
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(1) / rate);
    // Open loop: an arrival that is late is sent at once, never skipped, so a slow
    // server faces the same load as a fast one.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut clients = Vec::with_capacity(total as usize);
    for n in 0..total {
        ticker.tick().await;
        let counted = started.elapsed() >= WARMUP;
        let (user, http) = (user.clone(), http.clone());
        clients.push(tokio::spawn(async move {
            let outcome = user
                .ask(&http, n as usize, FINISH_DEADLINE)
                .await
                .map(|a| (a.posted, a.answered, a.completed));
            (counted, outcome)
        }));
    }
    // CPU over the arrivals and their answers: whether the machine was the bound.
    let mut answered = Vec::with_capacity(clients.len());
    for client in clients {
        answered.push(client.await?);
    }
    let cpu = cpu_snapshot(&[&api, &worker]).since(&cpu_before, started.elapsed());
    let (mut overheads, mut posts, mut failed, mut errors) = (Vec::new(), Vec::new(), 0, 0);
    // The overheads of arrivals after STEADY_FROM: the first seconds carry the ramp
    // from nothing to `rate × model` jobs in flight (new connections everywhere).
    let mut steady = Vec::new();
    // Each counted arrival's second and overhead, for a look at when the slow ones came
    // (`.local/bench/overhead-<rate>.tsv`).
    let mut series = String::new();
    for (n, client) in answered.into_iter().enumerate() {
        match client {
            (true, Ok((posted, answered, completed))) => {
                let arrived = n as f64 / f64::from(rate);
                let overhead = (answered.as_secs_f64() - model.as_secs_f64()) * 1000.0;
                series.push_str(&format!("{arrived:.3}\t{overhead:.1}\n"));
                if arrived >= STEADY_FROM.as_secs_f64() {
                    steady.push(overhead);
                }
                posts.push(posted.as_secs_f64() * 1000.0);
                overheads.push((answered.as_secs_f64() - model.as_secs_f64()) * 1000.0);
                failed += u64::from(!completed);
            }
            (true, Err(_)) => errors += 1,
            (false, _) => {}
        }
    }
    std::fs::write(setup.log_dir.join(format!("overhead-{rate}.tsv")), series)?;
    let (_, rss) = stack::rss_mib(worker.pid());
    // Where the overhead goes, by PostgreSQL's clock: enqueue to claim (apalis'
    // `lock_at`, rewritten by its acknowledgement of the claim), claim to our
    // `processing` mark, and the mark to the commit, minus the model.
    let stages: Vec<(f64, f64, f64)> = sqlx::query_as(
        "SELECT (extract(epoch FROM j.lock_at - o.created_at) * 1000)::float8,
                (extract(epoch FROM o.started_at - j.lock_at) * 1000)::float8,
                (extract(epoch FROM o.updated_at - o.started_at) * 1000)::float8 - $1
         FROM operations o JOIN apalis.jobs j ON j.idempotency_key = o.id::text
         WHERE o.created_at > (SELECT min(created_at) FROM operations) + make_interval(secs => $2)",
    )
    .bind(latency_ms as f64)
    .bind(WARMUP.as_secs_f64())
    .fetch_all(&db.pool)
    .await?;
    drop(worker);
    drop(api);
    db.drop_database().await?;
    let mut figures = Figures::new();
    for (name, mut values) in [
        ("pickup", stages.iter().map(|s| s.0).collect::<Vec<_>>()),
        ("claim_to_start", stages.iter().map(|s| s.1).collect()),
        (
            "start_to_commit_beyond_model",
            stages.iter().map(|s| s.2).collect(),
        ),
    ] {
        figures.insert(
            format!("{name}_p50_ms"),
            round(percentile(&mut values, 50.0)),
        );
        figures.insert(
            format!("{name}_p99_ms"),
            round(percentile(&mut values, 99.0)),
        );
    }
    figures.insert("counted".into(), json!(overheads.len()));
    for p in [50.0, 90.0, 99.0] {
        figures.insert(
            format!("overhead_p{p}_ms"),
            round(percentile(&mut overheads, p)),
        );
    }
    figures.insert(
        "overhead_max_ms".into(),
        round(percentile(&mut overheads, 100.0)),
    );
    for p in [50.0, 99.0] {
        figures.insert(
            format!("steady_overhead_p{p}_ms"),
            round(percentile(&mut steady, p)),
        );
    }
    figures.insert(
        "steady_overhead_max_ms".into(),
        round(percentile(&mut steady, 100.0)),
    );
    figures.insert("post_p99_ms".into(), round(percentile(&mut posts, 99.0)));
    figures.insert("failed".into(), json!(failed));
    figures.insert("errors".into(), json!(errors));
    figures.insert("worker_rss_high_water_mib".into(), round(rss));
    Ok(with_cpu(figures, "api_and_worker", cpu))
}

/// Seconds from the first operation's commit to the last one's, in this run.
async fn first_to_last_commit_seconds(db: &Database) -> anyhow::Result<f64> {
    let span: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM max(updated_at) - min(updated_at))::float8
         FROM operations WHERE status = 'completed' AND updated_at >= $1",
    )
    .bind(db.created_at)
    .fetch_one(&db.pool)
    .await?;
    span.filter(|s| *s > 0.0).context("no commits recorded")
}

/// A fake model answering every call after `latency`, without limits; its base URL.
async fn fake_llm(latency: Duration) -> anyhow::Result<String> {
    Ok(FakeProvider::start(Behaviour::unlimited(latency))
        .await?
        .base_url)
}

/// Seconds from the first claim of a job to the last operation's commit, in this run.
async fn claim_to_commit_seconds(db: &Database) -> anyhow::Result<f64> {
    let span: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM (SELECT max(updated_at) FROM operations WHERE updated_at >= $1)
                                 - (SELECT min(lock_at) FROM apalis.jobs WHERE lock_at >= $1))::float8",
    )
    .bind(db.created_at)
    .fetch_one(&db.pool)
    .await?;
    span.filter(|s| *s > 0.0).context("no claims recorded")
}

/// The value of an unlabelled series in a Prometheus text exposition.
fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

fn load_figures(mut outcome: Outcome) -> Figures {
    let mut figures = Figures::new();
    figures.insert("requests_per_sec".into(), round(outcome.per_second()));
    figures.insert(
        "p50_ms".into(),
        round(percentile(&mut outcome.latencies_ms, 50.0)),
    );
    figures.insert(
        "p99_ms".into(),
        round(percentile(&mut outcome.latencies_ms, 99.0)),
    );
    figures.insert("errors".into(), json!(outcome.errors));
    figures
}

/// CPU seconds used so far by the processes under test, by PostgreSQL, and by this
/// harness (load generator and fake LLM).
#[derive(Debug)]
struct CpuSnapshot {
    service: f64,
    postgres: f64,
    harness: f64,
}

fn cpu_snapshot(service: &[&Process]) -> CpuSnapshot {
    CpuSnapshot {
        service: service.iter().map(|p| stack::cpu_seconds(p.pid())).sum(),
        postgres: stack::postgres_cpu_seconds(),
        harness: stack::cpu_seconds(std::process::id()),
    }
}

impl CpuSnapshot {
    /// Share of one core each used since `before`, over `elapsed`.
    fn since(&self, before: &CpuSnapshot, elapsed: Duration) -> CpuSnapshot {
        let share = |now: f64, then: f64| (now - then) / elapsed.as_secs_f64();
        CpuSnapshot {
            service: share(self.service, before.service),
            postgres: share(self.postgres, before.postgres),
            harness: share(self.harness, before.harness),
        }
    }
}

/// Adds the CPU shares; `service` names the processes under test.
fn with_cpu(mut figures: Figures, service: &str, cpu: CpuSnapshot) -> Figures {
    figures.insert(format!("cpu_cores_{service}"), round(cpu.service));
    figures.insert("cpu_cores_postgres".into(), round(cpu.postgres));
    figures.insert("cpu_cores_load_generator".into(), round(cpu.harness));
    figures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_are_read_from_the_exposition() {
        let text = "# TYPE question_jobs_in_flight gauge\nquestion_jobs_in_flight 998\nquestion_jobs_in_flight_total 3\n";
        assert_eq!(gauge(text, "question_jobs_in_flight"), Some(998.0));
        assert_eq!(gauge(text, "missing"), None);
    }
}
