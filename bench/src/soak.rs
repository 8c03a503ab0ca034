//! The soak (issue 26): the same load for a long time on a database with history, and
//! whether anything grows with it.
//!
//! One run: a fresh database seeded with `history` ([`crate::seed`]); the api and two
//! workers (`WORKER_CONCURRENCY` 1,000 each); a fake model taking 2 s ± 10 % with 1 % of
//! calls failing at once with a `500`. First the capacity: closed-loop clients through
//! the api for [`CAPACITY_RUN`], as many as keep both workers full; then open-loop
//! arrivals at `rate` (default 60 % of that capacity) for `minutes`, spread over many
//! sessions, each a POST of generate-question and long polls until it ends. Every
//! [`SAMPLE`] a row of the CSV ([`COLUMNS`]); at the end, whether every operation
//! finished consistently, and one verdict per target.
//!
//! It needs a PostgreSQL with `pg_stat_statements` (statement time per job) and
//! `auto_explain` (rows read by sampled acknowledgements and claims, from the plans it
//! logs as JSON); `scripts/bench/run.sh soak` starts one.

use crate::seed::{self, History};
use crate::stack::{self, Database, Process, Setup, User};
use crate::stats::{Figures, percentile, round};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::{BufRead, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use testkit::provider::{Behaviour, FakeProvider};
use uuid::Uuid;

/// How often a row is written.
const SAMPLE: Duration = Duration::from_secs(10);
/// The closed-loop run that measures the capacity, and its warm-up.
const CAPACITY_RUN: Duration = Duration::from_secs(40);
const CAPACITY_WARMUP: Duration = Duration::from_secs(10);
/// Clients of the capacity run: more than two workers' 2,000 slots can serve at 2 s a
/// job would leave requests queued, fewer would leave slots idle; with the api's and
/// PostgreSQL's time on top, this keeps the workers busy.
const CAPACITY_CLIENTS: usize = 1_500;
/// Sessions the soak's arrivals go round at any time: each gets a question every
/// `sessions / rate` seconds, several times the time one takes, so that none waits
/// behind its own previous question.
const SESSIONS: usize = 5_000;
/// Questions a session gets before a fresh one takes its turn: an interview's length.
/// With the same 5,000 sessions for the hour, each had 130 questions at 185 arrivals a
/// second, and everything a question reads of its session (the earlier questions for
/// the prompt, the session's operations) grew with it: a cost of the load's shape,
/// not of the history the soak measures.
const QUESTIONS_PER_SESSION: usize = 20;
const CONCURRENCY: u32 = 1_000;
/// The window at each end that the verdicts compare.
const ENDS: Duration = Duration::from_secs(300);
/// How long the arrivals still in flight at the end may take.
const DRAIN: Duration = Duration::from_secs(300);

/// The CSV's columns (`scripts/bench/plot_soak.py` reads them by name).
pub const COLUMNS: &[&str] = &[
    "t_s",
    "completed",
    "failed",
    "retried",
    "throughput_per_s",
    "overhead_p50_ms",
    "overhead_p99_ms",
    "pg_ms_per_job",
    "ack_rows_read",
    "claim_rows_read",
    "wal_bytes_per_job",
    "jobs_mib",
    "jobs_index_mib",
    "operations_mib",
    "operations_index_mib",
    "messages_mib",
    "messages_index_mib",
    "jobs_dead",
    "operations_dead",
    "messages_dead",
    "jobs_rows",
    "rss_api_mib",
    "rss_worker_1_mib",
    "rss_worker_2_mib",
    "conns_api",
    "conns_worker_1",
    "conns_worker_2",
    "stuck_operations",
    "retention_deleted",
];

/// What to run.
#[derive(Debug, Clone)]
pub struct Soak {
    pub minutes: f64,
    /// Arrivals a second; `None`: 60 % of the measured capacity.
    pub rate: Option<f64>,
    pub history: History,
    /// Where the CSV and the verdicts go.
    pub out: PathBuf,
}

/// One finished arrival.
#[derive(Debug, Clone, Copy)]
struct Answered {
    /// Seconds since the soak began, when the answer came.
    at: f64,
    /// From the POST to the long poll's answer.
    answered_ms: f64,
    completed: bool,
    message: Option<Uuid>,
}

type Inbox = Arc<Mutex<Vec<Answered>>>;

pub async fn soak(setup: &Setup, args: &Soak) -> anyhow::Result<Figures> {
    std::fs::create_dir_all(&args.out)?;
    let db = Database::create(setup).await?;
    let explain_log = check_server(&db).await?;
    // A copy of a seeded template (`--template`) has its history already.
    if setup.template.is_none() {
        seed::seed(&db.url, args.history).await?;
    }
    let model = FakeProvider::start(Behaviour {
        capacity: None,
        retry_after: None,
        latency: (Duration::from_millis(1_800), Duration::from_millis(2_200)),
        failure_rate: 0.01,
    })
    .await?;
    let api = stack::api(setup, &db).await?;
    let user = User::create(&api, SESSIONS.max(CAPACITY_CLIENTS)).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(8_192)
        .http1_only()
        .build()?;
    // The capacity, on workers that keep every row: retention's first pass belongs to
    // the soak's workers, at their start, where the samples see it.
    let capacity = {
        let keep = [("JOB_RETENTION_DAYS", "0".to_owned())];
        let mut workers = Vec::new();
        for _ in 0..2 {
            workers.push(
                stack::worker_with(setup, &db, &model.base_url, CONCURRENCY, 0, &keep).await?,
            );
        }
        let capacity = capacity(&user, &http).await?;
        for mut worker in workers {
            worker.terminate(Duration::from_secs(60)).await;
        }
        capacity
    };
    let (capacity, capacity_retries) = capacity;
    let workers = [
        stack::worker(setup, &db, &model.base_url, CONCURRENCY, 0).await?,
        stack::worker(setup, &db, &model.base_url, CONCURRENCY, 0).await?,
    ];
    let rate = args.rate.unwrap_or(0.6 * capacity);
    let length = Duration::from_secs_f64(args.minutes * 60.0);
    // Enough sessions that none gets more than an interview's questions.
    let arrivals = (rate * length.as_secs_f64()).ceil() as usize;
    let generations = arrivals.div_ceil(SESSIONS * QUESTIONS_PER_SESSION).max(1);
    let candidates = User::create_as(&api, "soak@example.com", SESSIONS * generations).await?;
    println!(
        "{}",
        json!({"soak": "capacity", "jobs_per_sec": round(capacity), "rate": round(rate),
               "client_retries": capacity_retries})
    );
    sqlx::query("SELECT pg_stat_statements_reset()")
        .execute(&db.pool)
        .await?;

    let inbox: Inbox = Arc::default();
    let started = Instant::now();
    let arrivals = tokio::spawn(arrive(
        candidates,
        http.clone(),
        rate,
        length,
        started,
        Arc::clone(&inbox),
    ));
    let csv_path = args.out.join("soak.csv");
    let mut sampler = Sampler::new(&db, &api, &workers, explain_log, &csv_path).await?;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + SAMPLE, SAMPLE);
    let mut rows = Vec::new();
    while started.elapsed() < length {
        ticker.tick().await;
        let answered = std::mem::take(&mut *inbox.lock().unwrap_or_else(PoisonError::into_inner));
        rows.push(
            sampler
                .sample(started.elapsed().as_secs_f64(), answered)
                .await?,
        );
    }
    let arrived = arrivals.await??;
    // The last arrivals' answers, then whether everything accepted ended consistently.
    let drained = all_ended(&db, DRAIN).await;
    let late = std::mem::take(&mut *inbox.lock().unwrap_or_else(PoisonError::into_inner));
    let failed_late = late.iter().filter(|a| !a.completed).count();
    let pool = db.pool.clone();
    let consistent = tokio::spawn(async move { testkit::fixtures::assert_consistent(&pool).await })
        .await
        .map_err(|panic| format!("{panic}"));
    let verdicts = verdicts(&rows, &sampler.overheads, drained, &consistent, &arrived);
    let mut file = std::fs::File::create(args.out.join("verdicts.jsonl"))?;
    for verdict in &verdicts {
        println!("{verdict}");
        writeln!(file, "{verdict}")?;
    }
    drop(workers);
    drop(api);
    db.drop_database().await?;

    let mut figures = Figures::new();
    figures.insert("capacity_jobs_per_sec".into(), round(capacity));
    figures.insert("rate".into(), round(rate));
    figures.insert("minutes".into(), json!(args.minutes));
    figures.insert("accepted".into(), json!(arrived.accepted));
    figures.insert("refused".into(), json!(arrived.refused));
    figures.insert("refused_by_kind".into(), json!(arrived.refused_by_kind));
    figures.insert("client_retries".into(), json!(arrived.client_retries));
    figures.insert("capacity_client_retries".into(), json!(capacity_retries));
    figures.insert("failed".into(), json!(sampler.failed + failed_late as u64));
    figures.insert("csv".into(), json!(csv_path.display().to_string()));
    figures.insert(
        "verdicts_passed".into(),
        json!(verdicts.iter().filter(|v| v["pass"] == true).count()),
    );
    figures.insert("verdicts".into(), json!(verdicts.len()));
    figures.insert(
        "verdicts_gated_failed".into(),
        json!(
            verdicts
                .iter()
                .filter(|v| v["gate"] == true && v["pass"] != true)
                .count()
        ),
    );
    Ok(figures)
}

/// Waits until no operation is unfinished; whether that came within `deadline`.
async fn all_ended(db: &Database, deadline: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < deadline {
        let unfinished: Result<i64, _> = sqlx::query_scalar(
            "SELECT count(*) FROM operations WHERE status IN ('pending', 'processing')",
        )
        .fetch_one(&db.pool)
        .await;
        if matches!(unfinished, Ok(0)) {
            return true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    false
}

/// Checks that the server records what the soak reads; the path of the log that
/// auto_explain writes its plans to (JSON lines).
async fn check_server(db: &Database) -> anyhow::Result<PathBuf> {
    let preload: String = sqlx::query_scalar("SELECT current_setting('shared_preload_libraries')")
        .fetch_one(&db.pool)
        .await?;
    if !(preload.contains("pg_stat_statements") && preload.contains("auto_explain")) {
        bail!(
            "the soak reads pg_stat_statements and auto_explain, which this server does not \
             load (shared_preload_libraries = {preload:?}): run it through \
             `scripts/bench/run.sh soak`, which starts a PostgreSQL that does"
        );
    }
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(&db.pool)
        .await?;
    let (dir, file): (String, Option<String>) =
        sqlx::query_as("SELECT current_setting('data_directory'), pg_current_logfile('jsonlog')")
            .fetch_one(&db.pool)
            .await?;
    let file = file.context("the server writes no jsonlog (log_destination = jsonlog)")?;
    let path = Path::new(&file);
    Ok(if path.is_absolute() {
        path.to_owned()
    } else {
        Path::new(&dir).join(path)
    })
}

/// The capacity: completions a second of closed-loop clients through the api, after a
/// warm-up; and how many requests its clients sent again after a `503` or `429`.
async fn capacity(user: &User, http: &reqwest::Client) -> anyhow::Result<(f64, u64)> {
    let start = Instant::now();
    let measured_from = start + CAPACITY_WARMUP;
    let until = start + CAPACITY_RUN;
    let mut clients = Vec::with_capacity(CAPACITY_CLIENTS);
    for client in 0..CAPACITY_CLIENTS {
        let (user, http) = (user.clone(), http.clone());
        clients.push(tokio::spawn(async move {
            let (mut done, mut retries) = (0u64, 0u64);
            while Instant::now() < until {
                let answered = user.ask(&http, client, DRAIN).await;
                if let Ok(answer) = &answered {
                    retries += u64::from(answer.retries);
                }
                if answered.is_ok() && Instant::now() >= measured_from && Instant::now() < until {
                    done += 1;
                }
            }
            (done, retries)
        }));
    }
    let (mut done, mut retries) = (0, 0);
    for client in clients {
        let (client_done, client_retries) = client.await?;
        done += client_done;
        retries += client_retries;
    }
    Ok((
        done as f64 / (CAPACITY_RUN - CAPACITY_WARMUP).as_secs_f64(),
        retries,
    ))
}

/// The session of arrival `n`: the `SESSIONS` in turn, each for
/// `QUESTIONS_PER_SESSION` rounds, then the next `SESSIONS`.
fn session_of(n: usize) -> usize {
    (n / (SESSIONS * QUESTIONS_PER_SESSION)) * SESSIONS + n % SESSIONS
}

/// How the arrivals went.
#[derive(Debug, Clone, Default)]
struct Arrived {
    accepted: i64,
    /// Requests the api refused, or that failed in transport.
    refused: u64,
    /// Those by what went wrong ([`error_kind`]): a soak's errors are a finding too.
    refused_by_kind: std::collections::BTreeMap<String, u64>,
    /// Requests of accepted arrivals sent again after a `503` or `429` ([`User::ask`]).
    client_retries: u64,
}

/// Open loop: one arrival every `1 / rate` s for `length`, never skipped when late, each
/// on the next session in turn; answers go to `inbox` as they come.
async fn arrive(
    user: User,
    http: reqwest::Client,
    rate: f64,
    length: Duration,
    started: Instant,
    inbox: Inbox,
) -> anyhow::Result<Arrived> {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut asked = Vec::new();
    let mut arrived = Arrived::default();
    let mut n = 0usize;
    while started.elapsed() < length {
        ticker.tick().await;
        let (user, http, inbox) = (user.clone(), http.clone(), Arc::clone(&inbox));
        asked.push(tokio::spawn(async move {
            let outcome = user.ask(&http, session_of(n), DRAIN).await;
            let accepted = outcome.as_ref().map(|a| a.retries).map_err(error_kind);
            if let Ok(answer) = outcome {
                inbox
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Answered {
                        at: started.elapsed().as_secs_f64(),
                        answered_ms: answer.answered.as_secs_f64() * 1000.0,
                        completed: answer.completed,
                        message: answer.message,
                    });
            }
            accepted
        }));
        n += 1;
        // Reap what has ended, so an hour of arrivals holds only those in flight.
        if asked.len() >= 4_096 {
            let (done, running): (Vec<_>, Vec<_>) =
                asked.into_iter().partition(|task| task.is_finished());
            asked = running;
            for task in done {
                arrived.tally(task.await?);
            }
        }
    }
    for task in asked {
        arrived.tally(task.await?);
    }
    Ok(arrived)
}

impl Arrived {
    fn tally(&mut self, outcome: Result<u32, String>) {
        match outcome {
            Ok(retries) => {
                self.accepted += 1;
                self.client_retries += u64::from(retries);
            }
            Err(kind) => {
                self.refused += 1;
                *self.refused_by_kind.entry(kind).or_default() += 1;
            }
        }
    }
}

/// What went wrong with an arrival, in a few words: the HTTP status the api answered,
/// or the transport's failure.
fn error_kind(err: &anyhow::Error) -> String {
    match err.downcast_ref::<reqwest::Error>() {
        Some(err) if err.status().is_some() => {
            format!("http {}", err.status().map_or(0, |s| s.as_u16()))
        }
        Some(err) if err.is_timeout() => "timeout".to_owned(),
        Some(err) if err.is_connect() => "connect".to_owned(),
        Some(err) if err.is_body() || err.is_decode() => "body".to_owned(),
        Some(err) => format!("transport: {err}"),
        None => err.to_string(),
    }
}

/// One row's figures that the verdicts read.
#[derive(Debug, Clone, Default)]
struct Row {
    t: f64,
    completed: u64,
    pg_ms: f64,
    ack_rows: Option<f64>,
    ack_ids: Option<f64>,
    rss: [f64; 3],
    stuck: f64,
    retention_deleted: i64,
    overhead_p99: Option<f64>,
}

/// Reads the figures of a sample and writes its row.
struct Sampler {
    pool: sqlx::PgPool,
    pids: [u32; 3],
    worker_addr: String,
    postgres_port: u16,
    explain: ExplainLog,
    csv: std::fs::File,
    /// The cumulative counters at the previous sample.
    pg_ms: f64,
    wal: f64,
    deleted: i64,
    /// Every answer's overhead so far, with when it came: the verdicts compare the ends.
    overheads: Vec<(f64, f64)>,
    failed: u64,
}

impl Sampler {
    async fn new(
        db: &Database,
        api: &Process,
        workers: &[Process; 2],
        explain_log: PathBuf,
        csv_path: &Path,
    ) -> anyhow::Result<Self> {
        let mut csv = std::fs::File::create(csv_path)?;
        writeln!(csv, "{}", COLUMNS.join(","))?;
        let postgres_port = db
            .url
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('/').next()?.parse().ok())
            .unwrap_or(5432);
        let mut sampler = Self {
            pool: db.pool.clone(),
            pids: [api.pid(), workers[0].pid(), workers[1].pid()],
            worker_addr: workers[0].addr.clone(),
            postgres_port,
            explain: ExplainLog::open(explain_log)?,
            csv,
            pg_ms: 0.0,
            wal: 0.0,
            deleted: 0,
            overheads: Vec::new(),
            failed: 0,
        };
        let (pg_ms, wal, _) = sampler.counters().await?;
        sampler.pg_ms = pg_ms;
        sampler.wal = wal;
        sampler.deleted = sampler.tables().await?.get("jobs").map_or(0, |t| t.deleted);
        Ok(sampler)
    }

    /// Statement time so far (ms), WAL position (bytes), and the sampler's own share.
    async fn counters(&self) -> anyhow::Result<(f64, f64, ())> {
        let (pg_ms, wal): (f64, f64) = sqlx::query_as(
            "SELECT (SELECT coalesce(sum(total_exec_time), 0)::float8 FROM pg_stat_statements
                     WHERE toplevel AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                       AND query NOT LIKE '%pg_stat_statements%'),
                    pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::float8",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok((pg_ms, wal, ()))
    }

    async fn tables(&self) -> anyhow::Result<HashMap<String, Table>> {
        let rows: Vec<(String, f64, f64, i64, i64, i64)> = sqlx::query_as(
            "SELECT c.relname::text, pg_table_size(c.oid)::float8, pg_indexes_size(c.oid)::float8,
                    s.n_dead_tup, s.n_live_tup, s.n_tup_del
             FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
             WHERE c.oid IN ('apalis.jobs'::regclass, 'operations'::regclass, 'session_messages'::regclass)",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(name, size, index, dead, live, deleted)| {
                (
                    name,
                    Table {
                        size,
                        index,
                        dead,
                        live,
                        deleted,
                    },
                )
            })
            .collect())
    }

    async fn sample(&mut self, t: f64, answered: Vec<Answered>) -> anyhow::Result<Row> {
        let completed = answered.iter().filter(|a| a.completed).count() as u64;
        let failed = answered.len() as u64 - completed;
        self.failed += failed;
        // The overhead: the answer's time minus the model's, the call that wrote the
        // question (the worker keeps it in the message's metadata), for the questions
        // written at the first call of the first run. A retried one also waited out a
        // backoff (the model's 1 % of failures), which is the retry policy's time, not
        // the service's; those are counted apart (`retried`).
        let ids: Vec<Uuid> = answered.iter().filter_map(|a| a.message).collect();
        let model_ms: HashMap<Uuid, (f64, bool)> = sqlx::query_as(
            "SELECT m.id, (m.metadata->>'latency_ms')::float8,
                    (m.metadata->>'attempts')::int = 1 AND coalesce(o.attempts, 1) <= 1
             FROM session_messages m LEFT JOIN operations o ON o.id = m.operation_id
             WHERE m.id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?
        .into_iter()
        .map(|(id, ms, first_try)| (id, (ms, first_try)))
        .collect();
        let retried = model_ms.values().filter(|(_, first)| !first).count();
        let mut window: Vec<f64> = answered
            .iter()
            .filter_map(|a| {
                let (model, first_try) = model_ms.get(&a.message?)?;
                first_try.then(|| (a.at, a.answered_ms - model))
            })
            .map(|(at, overhead)| {
                self.overheads.push((at, overhead));
                overhead
            })
            .collect();
        let (pg_ms, wal, ()) = self.counters().await?;
        let tables = self.tables().await?;
        let plans = self.explain.read()?;
        let stuck = stuck_operations(&self.worker_addr).await;
        let per_job = |delta: f64| (completed > 0).then(|| delta / completed as f64);
        let pg_per_job = per_job(pg_ms - self.pg_ms);
        let wal_per_job = per_job(wal - self.wal);
        let jobs = tables.get("jobs").cloned().unwrap_or_default();
        let deleted = jobs.deleted - self.deleted;
        (self.pg_ms, self.wal, self.deleted) = (pg_ms, wal, jobs.deleted);
        let table = |name: &str| tables.get(name).cloned().unwrap_or_default();
        let (operations, messages) = (table("operations"), table("session_messages"));
        let rss = self.pids.map(|pid| stack::rss_mib(pid).0);
        let conns = self.pids.map(|pid| connections(pid, self.postgres_port));
        let p = |window: &mut Vec<f64>, q: f64| (!window.is_empty()).then(|| percentile(window, q));
        let (p50, p99) = (p(&mut window, 50.0), p(&mut window, 99.0));
        let mib = |bytes: f64| Some(bytes / 1_048_576.0);
        let cells: Vec<Option<f64>> = vec![
            Some(t),
            Some(completed as f64),
            Some(failed as f64),
            Some(retried as f64),
            Some(completed as f64 / SAMPLE.as_secs_f64()),
            p50,
            p99,
            pg_per_job,
            plans.ack_rows,
            plans.claim_rows,
            wal_per_job,
            mib(jobs.size),
            mib(jobs.index),
            mib(operations.size),
            mib(operations.index),
            mib(messages.size),
            mib(messages.index),
            Some(jobs.dead as f64),
            Some(operations.dead as f64),
            Some(messages.dead as f64),
            Some(jobs.live as f64),
            Some(rss[0]),
            Some(rss[1]),
            Some(rss[2]),
            Some(conns[0] as f64),
            Some(conns[1] as f64),
            Some(conns[2] as f64),
            stuck,
            Some(deleted as f64),
        ];
        let line: Vec<String> = cells
            .iter()
            .map(|cell| cell.map(|v| format!("{v:.3}")).unwrap_or_default())
            .collect();
        writeln!(self.csv, "{}", line.join(","))?;
        Ok(Row {
            t,
            completed,
            pg_ms: pg_per_job.unwrap_or(0.0) * completed as f64,
            ack_rows: plans.ack_rows,
            ack_ids: plans.ack_ids,
            rss,
            stuck: stuck.unwrap_or(0.0),
            retention_deleted: deleted,
            overhead_p99: p99,
        })
    }
}

/// One table's figures.
#[derive(Debug, Clone, Default)]
struct Table {
    size: f64,
    index: f64,
    dead: i64,
    live: i64,
    deleted: i64,
}

/// `operations_overdue` from a worker's metrics: operations started longer ago than a
/// job's worst case.
async fn stuck_operations(worker_addr: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{worker_addr}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines().find_map(|line| {
        line.strip_prefix("operations_overdue ")?
            .trim()
            .parse()
            .ok()
    })
}

/// The TCP connections process `pid` has open to PostgreSQL on `port`: its sockets
/// (`/proc/<pid>/fd`) among the established connections to that port.
fn connections(pid: u32, port: u16) -> usize {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return 0;
    };
    let sockets: std::collections::HashSet<String> = fds
        .filter_map(Result::ok)
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let port = format!("{port:04X}");
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|file| std::fs::read_to_string(format!("/proc/{pid}/net/{file}")).ok())
        .flat_map(|table| table.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 9
                && fields[2].rsplit(':').next() == Some(port.as_str())
                && fields[3] == "01"
                && sockets.contains(fields[9])
        })
        .count()
}

/// What the plans logged since the last sample say: rows of `apalis.jobs` read per
/// acknowledgement (and ids acknowledged), and per claim.
#[derive(Debug, Default)]
struct Plans {
    ack_rows: Option<f64>,
    ack_ids: Option<f64>,
    claim_rows: Option<f64>,
}

/// The server's JSON log, read from where the last sample stopped.
struct ExplainLog {
    path: PathBuf,
    offset: u64,
}

impl ExplainLog {
    fn open(path: PathBuf) -> anyhow::Result<Self> {
        let offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Ok(Self { path, offset })
    }

    fn read(&mut self) -> anyhow::Result<Plans> {
        let mut file = std::fs::File::open(&self.path)
            .with_context(|| format!("the server's log {}", self.path.display()))?;
        file.seek(std::io::SeekFrom::Start(self.offset))?;
        let mut reader = std::io::BufReader::new(file);
        let (mut acks, mut ids, mut claims) = (Vec::new(), Vec::new(), Vec::new());
        let mut line = String::new();
        loop {
            line.clear();
            let read = reader.read_line(&mut line)?;
            if read == 0 || !line.ends_with('\n') {
                break; // the end, or a line still being written: read it next time
            }
            self.offset += read as u64;
            let Some(plan) = plan_of(&line) else {
                continue;
            };
            let text = plan["Query Text"].as_str().unwrap_or_default();
            let mut read_rows = 0.0;
            let mut function_rows = 0.0;
            walk(&plan["Plan"], &mut read_rows, &mut function_rows);
            if text.contains("jsonb_array_elements") && text.contains("lock_by") {
                acks.push(read_rows);
                ids.push(function_rows);
            } else if text.contains("SKIP LOCKED") && text.contains("Queued") {
                claims.push(read_rows);
            }
        }
        let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        Ok(Plans {
            ack_rows: mean(&acks),
            ack_ids: mean(&ids),
            claim_rows: mean(&claims),
        })
    }
}

/// The plan of an auto_explain entry of the server's JSON log.
fn plan_of(line: &str) -> Option<Value> {
    let entry: Value = serde_json::from_str(line).ok()?;
    let message = entry["message"].as_str()?;
    let (_, plan) = message.split_once("plan:")?;
    serde_json::from_str(plan.trim()).ok()
}

/// Sums, over the plan's nodes, the rows read from `apalis.jobs` (returned and removed
/// by a filter, times the loops) and the rows of the function scans (the acknowledged
/// ids, `jsonb_array_elements`).
fn walk(node: &Value, read: &mut f64, functions: &mut f64) {
    let number = |key: &str| node[key].as_f64().unwrap_or(0.0);
    let loops = number("Actual Loops").max(1.0);
    if node["Relation Name"] == "jobs" {
        *read += (number("Actual Rows") + number("Rows Removed by Filter")) * loops;
    }
    if node["Function Name"] == "jsonb_array_elements" {
        *functions += number("Actual Rows") * loops;
    }
    if let Some(children) = node["Plans"].as_array() {
        for child in children {
            walk(child, read, functions);
        }
    }
}

/// One verdict line per target of issue 26. `gate`: whether a failure fails the run
/// (the CI soak): the targets that hold on any machine, however loaded: nothing lost,
/// nothing stuck, and an acknowledgement whose cost does not grow with history.
fn verdicts(
    rows: &[Row],
    overheads: &[(f64, f64)],
    drained: bool,
    consistent: &Result<(), String>,
    arrived: &Arrived,
) -> Vec<Value> {
    let end = rows.last().map_or(0.0, |r| r.t);
    let ends = ENDS.as_secs_f64().min(end / 2.0);
    let first = |t: f64| t <= ends;
    let last = |t: f64| t > end - ends;
    let p99 = |keep: &dyn Fn(f64) -> bool| {
        let mut values: Vec<f64> = overheads
            .iter()
            .filter(|(at, _)| keep(*at))
            .map(|(_, o)| *o)
            .collect();
        (!values.is_empty()).then(|| percentile(&mut values, 99.0))
    };
    let per_job = |keep: &dyn Fn(f64) -> bool| {
        let (ms, jobs) = rows
            .iter()
            .filter(|r| keep(r.t))
            .fold((0.0, 0u64), |(ms, jobs), r| {
                (ms + r.pg_ms, jobs + r.completed)
            });
        (jobs > 0).then(|| ms / jobs as f64)
    };
    let ack = |keep: &dyn Fn(f64) -> bool| {
        let (rows_read, ids) = rows
            .iter()
            .filter(|r| keep(r.t))
            .filter_map(|r| Some((r.ack_rows?, r.ack_ids?)))
            .fold((0.0, 0.0), |(a, b), (r, i)| (a + r, b + i));
        (ids > 0.0).then(|| rows_read / ids)
    };
    let within = |name: &str, first: Option<f64>, last: Option<f64>, limit: f64, gate: bool| {
        let ratio = first.zip(last).map(|(f, l)| l / f);
        json!({"verdict": name, "pass": ratio.is_some_and(|r| r <= 1.0 + limit), "gate": gate,
               "first_5_min": first.map(round), "last_5_min": last.map(round),
               "last_over_first": ratio.map(round)})
    };
    let mut verdicts = vec![
        within(
            "overhead p99 (ms): last 5 min within 15 % of the first",
            p99(&first),
            p99(&last),
            0.15,
            false,
        ),
        within(
            "PostgreSQL time per job (ms): last 5 min within 15 % of the first",
            per_job(&first),
            per_job(&last),
            0.15,
            false,
        ),
    ];
    let (ack_first, ack_last) = (ack(&first), ack(&last));
    verdicts.push(json!({
        "verdict": "rows read per acknowledgement: at most 2 × the ids it acknowledges, at the start and at the end",
        "pass": ack_first.zip(ack_last).is_some_and(|(f, l)| f <= 2.0 && l <= 2.0),
        "gate": true,
        "rows_per_id_first_5_min": ack_first.map(round), "rows_per_id_last_5_min": ack_last.map(round),
    }));
    let names = ["api", "worker 1", "worker 2"];
    for (i, name) in names.iter().enumerate() {
        let rss: Vec<f64> = rows
            .iter()
            .filter(|r| r.t > ends)
            .map(|r| r.rss[i])
            .collect();
        let (low, high) = rss
            .iter()
            .fold((f64::MAX, 0.0f64), |(l, h), v| (l.min(*v), h.max(*v)));
        let flat = !rss.is_empty() && high <= low * 1.10;
        verdicts.push(
            json!({"verdict": format!("RSS of the {name}: flat within 10 % after the first 5 min"),
            "pass": flat, "gate": false, "min_mib": round(low), "max_mib": round(high)}),
        );
    }
    let stuck = rows.iter().map(|r| r.stuck).fold(0.0, f64::max);
    verdicts.push(json!({"verdict": "zero stuck operations", "pass": stuck == 0.0, "gate": true, "max_overdue": stuck}));
    verdicts.push(json!({"verdict": "zero lost or duplicated questions (every operation ended; assert_consistent)",
        "pass": drained && consistent.is_ok(), "gate": true, "all_ended": drained,
        "inconsistent": consistent.as_ref().err(), "accepted": arrived.accepted, "refused": arrived.refused,
        "refused_by_kind": arrived.refused_by_kind}));
    // Retention: every sample in which it deleted, against the samples in which it did not.
    let mut quiet: Vec<f64> = rows
        .iter()
        .filter(|r| r.retention_deleted == 0)
        .filter_map(|r| r.overhead_p99)
        .collect();
    let baseline = (!quiet.is_empty()).then(|| percentile(&mut quiet, 50.0));
    // A 10 s sample's p99 rests on a few of its slowest answers, so quiet samples
    // spread too: how high they reach (their 95th percentile) says what a deleting
    // sample is compared against besides their median.
    let quiet_high = (!quiet.is_empty()).then(|| percentile(&mut quiet, 95.0));
    let deleting: Vec<&Row> = rows.iter().filter(|r| r.retention_deleted > 0).collect();
    let while_deleting: Vec<f64> = deleting.iter().filter_map(|r| r.overhead_p99).collect();
    let worst = while_deleting.iter().copied().fold(0.0, f64::max);
    let above_quiet_high = quiet_high.map(|high| {
        while_deleting
            .iter()
            .filter(|p99| **p99 > high * 1.2)
            .count()
    });
    verdicts.push(json!({"verdict": "retention's deletes move no 10 s sample's overhead p99 by more than 20 %",
        "pass": !deleting.is_empty() && baseline.is_some_and(|b| worst <= b * 1.2), "gate": false,
        "samples_deleting": deleting.len(), "rows_deleted": deleting.iter().map(|r| r.retention_deleted).sum::<i64>(),
        "baseline_p99_ms": baseline.map(round), "worst_p99_ms_while_deleting": round(worst),
        "p99_ms_while_deleting": while_deleting.iter().map(|p| round(*p)).collect::<Vec<_>>(),
        "quiet_samples_p95_of_p99_ms": quiet_high.map(round),
        "samples_deleting_above_1_2x_quiet_p95": above_quiet_high}));
    verdicts
}
