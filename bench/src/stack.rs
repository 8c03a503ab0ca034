//! What a run stands on: a fresh database, the real `api` and `worker` binaries as
//! child processes (testkit's), and a client with a registered user and sessions.

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt, stream};
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use sqlx::types::chrono::{DateTime, Utc};
use sqlx::{Connection, PgConnection, PgPool};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use testkit::client::SignedIn;
pub use testkit::process::Process;
use uuid::Uuid;

/// Where the harness finds the binaries and the database server.
#[derive(Debug, Clone)]
pub struct Setup {
    pub bin_dir: PathBuf,
    /// Any database on the server; runs create their own beside it.
    pub database_url: String,
    pub log_dir: PathBuf,
    /// Where the binaries export their traces (`--traces`), every span sampled; `None`:
    /// tracing off, as by default.
    pub otlp_endpoint: Option<String>,
    /// A database on the server that each run's database is a copy of (`--template`),
    /// checked by [`database_name`]; `None`: each starts empty.
    pub template: Option<String>,
}

impl Setup {
    /// The tracing settings of a binary: none when tracing is off.
    fn otel_env(&self) -> Vec<(&'static str, String)> {
        match &self.otlp_endpoint {
            None => Vec::new(),
            Some(endpoint) => vec![
                ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
                ("OTEL_TRACES_SAMPLER", "always_on".into()),
            ],
        }
    }
}

/// `name` if it is a database name that may go into SQL as written: lowercase ASCII
/// letters, digits and `_`, at most PostgreSQL's 63 bytes. Names come from the command
/// line (`--template`, `--keep-as`) and no statement takes a database name as a
/// parameter.
pub fn database_name(name: &str) -> Result<String, String> {
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    if name.is_empty() || name.len() > 63 || !name.chars().all(allowed) {
        return Err(format!(
            "{name:?} is not a database name the bench accepts: 1 to 63 characters of \
             a-z, 0-9 and _"
        ));
    }
    Ok(name.to_owned())
}

/// What a question asked through the api ([`User::ask`]) came to.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    /// From the POST's start to its `202`.
    pub posted: Duration,
    /// From the POST's start to the poll that saw the end.
    pub answered: Duration,
    pub completed: bool,
    /// The question's message, when it completed.
    pub message: Option<Uuid>,
    /// Requests sent again after a `503` or `429` (`User::ask`).
    pub retries: u32,
}

/// A database created for one run and dropped after it.
#[derive(Debug)]
pub struct Database {
    pub url: String,
    pub pool: PgPool,
    /// PostgreSQL's `now()` when the database was created. A copy of a seeded template
    /// holds days of history, all of it older: the figures count only rows from this
    /// instant on, so that they count this run's.
    pub created_at: DateTime<Utc>,
    name: String,
    admin_url: String,
}

impl Database {
    /// Creates a database, empty or a copy of `setup.template`, and applies the schema
    /// (ours and apalis'; nothing to do on a copy of a migrated database).
    pub async fn create(setup: &Setup) -> anyhow::Result<Self> {
        let (base, _) = setup
            .database_url
            .rsplit_once('/')
            .context("DATABASE_URL has no database part")?;
        let name = format!("interviewer_bench_{}", Uuid::new_v4().simple());
        let admin_url = format!("{base}/postgres");
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .context("connecting to PostgreSQL (is it running? scripts/ensure-postgres.sh)")?;
        // The name is ours (a UUID in hex), never input; the template's is checked.
        let create = match &setup.template {
            None => format!("CREATE DATABASE {name}"),
            // FILE_COPY: the seeded template is gigabytes, which the default strategy
            // (WAL_LOG) would write to the WAL block by block. Quoted, so that a name
            // such as `user` or `8days` is read as a name.
            Some(template) => format!(
                "CREATE DATABASE {name} TEMPLATE \"{}\" STRATEGY = FILE_COPY",
                database_name(template).map_err(anyhow::Error::msg)?
            ),
        };
        sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&mut admin)
            .await
            .with_context(|| match &setup.template {
                None => format!("creating database {name}"),
                Some(template) => format!(
                    "creating database {name} as a copy of {template} (made by `seed \
                     --keep-as {template}` on this server? nothing may be connected to it)"
                ),
            })?;
        let created_at: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
            .fetch_one(&mut admin)
            .await?;
        let url = format!("{base}/{name}");
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await?;
        shared::db::migrate(&pool).await?;
        Ok(Self {
            url,
            pool,
            created_at,
            name,
            admin_url,
        })
    }

    /// Counts of this run's operations by whether they are finished.
    pub async fn finished(&self) -> anyhow::Result<(i64, i64)> {
        Ok(sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status IN ('completed', 'failed')),
                    count(*) FILTER (WHERE status = 'failed')
             FROM operations
             WHERE created_at >= $1",
        )
        .bind(self.created_at)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Waits until `total` operations of this run, all of them queued already, are
    /// finished; the number that failed.
    pub async fn wait_finished(&self, total: i64, deadline: Duration) -> anyhow::Result<i64> {
        let started = Instant::now();
        loop {
            // The unfinished ones, on their partial index read whole
            // (operations_session_unfinished_idx): a count of the finished would read
            // every operation, millions on a copy of a seeded template, four times a
            // second on the server being measured.
            let (unfinished,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM operations
                 WHERE status IN ('pending', 'processing') AND created_at >= $1",
            )
            .bind(self.created_at)
            .fetch_one(&self.pool)
            .await?;
            let finished = match unfinished {
                0 => {
                    let (finished, failed) = self.finished().await?;
                    if finished >= total {
                        return Ok(failed);
                    }
                    finished
                }
                _ => total - unfinished,
            };
            if started.elapsed() > deadline {
                bail!("only {finished} of {total} operations finished in {deadline:?}");
            }
            // The rate comes from the database's timestamps, not from this loop, and
            // each count costs the measured server: poll rarely.
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Gives each of `sessions` its first question straight in the database, as the
    /// worker's commit would (a `technical` question numbered 1, the session's counter
    /// at 1), without a worker or a model; `(session, question)` pairs.
    pub async fn ask_first_questions(
        &self,
        sessions: &[Uuid],
    ) -> anyhow::Result<Vec<(Uuid, Uuid)>> {
        let ids: Vec<Uuid> = sessions.iter().map(|_| Uuid::now_v7()).collect();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE interview_sessions SET current_question_number = 1, updated_at = now()
             WHERE id = ANY($1)",
        )
        .bind(sessions)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO session_messages (id, session_id, message_type, content, question_type, metadata)
             SELECT id, session_id, 'question',
                    'Walk me through how you would make a job queue survive a crashed worker.',
                    'technical', '{\"question_number\": 1}'::jsonb
             FROM unnest($1::uuid[], $2::uuid[]) AS q (id, session_id)",
        )
        .bind(&ids)
        .bind(sessions)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(sessions.iter().copied().zip(ids).collect())
    }

    /// Fails if the server already has a database named `name`: `seed --keep-as` never
    /// replaces one (it may be a template others use).
    pub async fn ensure_absent(&self, name: &str) -> anyhow::Result<()> {
        // pg_database is the server's, seen from any of its databases.
        let taken: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)")
                .bind(name)
                .fetch_one(&self.pool)
                .await?;
        if taken {
            bail!(
                "a database named {name} already exists on this server: drop it \
                 (DROP DATABASE {name}) or choose another --keep-as"
            );
        }
        Ok(())
    }

    /// Keeps the database under the name `keep_as` instead of dropping it: a seeded
    /// database for `--template`. Its URL under that name.
    pub async fn keep_as(self, keep_as: &str) -> anyhow::Result<String> {
        let keep_as = database_name(keep_as).map_err(anyhow::Error::msg)?;
        self.ensure_absent(&keep_as)
            .await
            .with_context(|| format!("the seeded database is kept as {}", self.name))?;
        let (base, _) = self
            .url
            .rsplit_once('/')
            .context("the database's URL has no database part")?;
        let url = format!("{base}/{keep_as}");
        let name = self.name.clone();
        self.close_and_run(format!("ALTER DATABASE {name} RENAME TO \"{keep_as}\""))
            .await
            .with_context(|| format!("renaming {name} to {keep_as}"))?;
        Ok(url)
    }

    pub async fn drop_database(self) -> anyhow::Result<()> {
        let name = self.name.clone();
        self.close_and_run(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await
    }

    /// Closes this database's pool and runs `statement`, about the database itself, on
    /// the server's admin database: a database cannot be renamed while anyone is
    /// connected to it, nor dropped from inside.
    async fn close_and_run(self, statement: String) -> anyhow::Result<()> {
        self.pool.close().await;
        let mut admin = PgConnection::connect(&self.admin_url).await?;
        sqlx::query(sqlx::AssertSqlSafe(statement))
            .execute(&mut admin)
            .await?;
        Ok(())
    }
}

/// Starts the `api` on a free port against `db` and waits until it answers.
pub async fn api(setup: &Setup, db: &Database) -> anyhow::Result<Process> {
    let mut env = vec![
        ("DATABASE_URL", db.url.clone()),
        ("JWT_SECRET", "bench-secret-of-at-least-32-bytes!!".into()),
        // The soak's users sign in once, at its start, and ask for an hour or more: at
        // the default hour their tokens ran out in its last seconds (55 arrivals got
        // 401 in the third hour). A day outlives any soak.
        ("JWT_TTL_SECS", "86400".into()),
        ("RATE_LIMIT_GENERATE_PER_MINUTE", "0".into()),
        // Figure 3b posts thousands of answers as one user.
        ("ANSWERS_PER_MINUTE", "0".into()),
        // One user's hundreds of long polls over hundreds of connections from one
        // address: the load, not an attack.
        ("MAX_LONG_POLLS_PER_USER", "0".into()),
        ("MAX_CONNECTIONS_PER_ADDRESS", "0".into()),
        ("MIGRATE", "false".into()),
        ("RUST_LOG", "warn".into()),
    ];
    env.extend(setup.otel_env());
    Process::spawn(&setup.bin_dir, "api", log_path(&setup.log_dir, "api"), &env).await
}

/// Starts a `worker` that asks the LLM at `llm_url`, with `concurrency` jobs in flight
/// and `LLM_MAX_IN_FLIGHT` = `cap` (0: no cap).
pub async fn worker(
    setup: &Setup,
    db: &Database,
    llm_url: &str,
    concurrency: u32,
    cap: u32,
) -> anyhow::Result<Process> {
    worker_with(setup, db, llm_url, concurrency, cap, &[]).await
}

/// [`worker`], with `extra` settings on top.
pub async fn worker_with(
    setup: &Setup,
    db: &Database,
    llm_url: &str,
    concurrency: u32,
    cap: u32,
    extra: &[(&'static str, String)],
) -> anyhow::Result<Process> {
    let mut env = vec![
        ("DATABASE_URL", db.url.clone()),
        ("LLM_PROVIDER", "openai".into()),
        ("OPENAI_BASE_URL", llm_url.to_owned()),
        ("OPENAI_API_KEY", "bench-key".into()),
        ("WORKER_CONCURRENCY", concurrency.to_string()),
        ("LLM_MAX_IN_FLIGHT", cap.to_string()),
        ("MIGRATE", "false".into()),
        ("RUST_LOG", "warn".into()),
    ];
    env.extend(setup.otel_env());
    env.extend(extra.iter().cloned());
    Process::spawn(
        &setup.bin_dir,
        "worker",
        log_path(&setup.log_dir, "worker"),
        &env,
    )
    .await
}

/// Sends the request `build` makes until it is answered neither `503` nor `429`, waiting
/// each such answer's `Retry-After` (1 s without one), and fails on any other error
/// status, a transport error, or a wait that would end after `until`.
async fn send_retrying(
    until: Instant,
    retries: &mut u32,
    build: impl Fn() -> reqwest::RequestBuilder,
) -> anyhow::Result<reqwest::Response> {
    loop {
        let response = build().send().await?;
        let status = response.status();
        if status != reqwest::StatusCode::SERVICE_UNAVAILABLE
            && status != reqwest::StatusCode::TOO_MANY_REQUESTS
        {
            return Ok(response.error_for_status()?);
        }
        let wait = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .map_or(Duration::from_secs(1), Duration::from_secs);
        if Instant::now() + wait > until {
            return Ok(response.error_for_status()?);
        }
        *retries += 1;
        tokio::time::sleep(wait).await;
    }
}

/// The id of the operation a `202` carries.
async fn operation_id(response: reqwest::Response) -> anyhow::Result<Uuid> {
    let operation: Value = response.json().await?;
    Ok(operation["id"]
        .as_str()
        .context("no operation id")?
        .parse()?)
}

fn log_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}-{}.log", Uuid::new_v4().simple()))
}

/// A signed-in user of the api, with sessions to ask questions in.
#[derive(Debug, Clone)]
pub struct User {
    pub base: String,
    pub token: String,
    pub sessions: Vec<Uuid>,
}

impl User {
    /// Registers a user with a resume, a job posting and `sessions` active sessions.
    pub async fn create(api: &Process, sessions: usize) -> anyhow::Result<Self> {
        Self::create_as(api, "bench@example.com", sessions).await
    }

    /// [`User::create`] under `email`, for a second user on the same api.
    pub async fn create_as(api: &Process, email: &str, sessions: usize) -> anyhow::Result<Self> {
        let user = SignedIn::register(&api.addr, email).await?;
        user.send(
            reqwest::Method::PUT,
            "/resume",
            json!({"content": "Ten years of Rust and PostgreSQL; built payment queues."}),
        )
        .await?;
        let posting = user.job_posting().await?;
        let ids: Vec<Uuid> = stream::iter(0..sessions)
            .map(|_| async {
                let id = user.session(&posting).await?;
                id.parse::<Uuid>().map_err(anyhow::Error::from)
            })
            // Thousands for some figures (one job per session): many at a time.
            .buffer_unordered(64)
            .try_collect()
            .await?;
        Ok(Self {
            base: user.base,
            token: user.token,
            sessions: ids,
        })
    }

    /// Queues a question for session number `n` (modulo the sessions); the operation id.
    pub async fn generate(&self, http: &reqwest::Client, n: usize) -> anyhow::Result<Uuid> {
        let response = self.generate_request(http, n).send().await?;
        operation_id(response.error_for_status()?).await
    }

    /// The POST that queues a question for session number `n` (modulo the sessions).
    fn generate_request(&self, http: &reqwest::Client, n: usize) -> reqwest::RequestBuilder {
        let session = self.sessions[n % self.sessions.len()];
        http.post(format!(
            "{}/sessions/{session}/generate-question",
            self.base
        ))
        .bearer_auth(&self.token)
    }

    /// POSTs a question for session `n`, then long-polls it until it has ended; an
    /// error if it has not `deadline` after the POST. The one client of the figures
    /// that time a question from the candidate's side (the overhead, the soak).
    ///
    /// It behaves as docs/API.md asks of a client: a `503` or `429` is waited out for
    /// its `Retry-After` and sent again. A client that gave up its operation on such an
    /// answer and asked anew turned a moment's overload into a collapse: the abandoned
    /// question still ran, and held the session's next one behind it. The POST is sent
    /// again without an `Idempotency-Key`, which would add two statements to every
    /// request and so to the figures' cost per job. The `503`s the soak met were the
    /// pool's wait for a connection, answered before anything is written; one after a
    /// request's time-out may follow a commit, and its retry then queues a second
    /// question, which `assert_consistent` counts as any other. (A real client sends a
    /// key.)
    pub async fn ask(
        &self,
        http: &reqwest::Client,
        n: usize,
        deadline: Duration,
    ) -> anyhow::Result<Answer> {
        let sent = Instant::now();
        let until = sent + deadline;
        let mut retries = 0;
        let accepted =
            send_retrying(until, &mut retries, || self.generate_request(http, n)).await?;
        let id = operation_id(accepted).await?;
        let posted = sent.elapsed();
        loop {
            let operation: Value = send_retrying(until, &mut retries, || {
                http.get(format!("{}/operations/{id}?wait=30", self.base))
                    .bearer_auth(&self.token)
            })
            .await?
            .json()
            .await?;
            let completed = match operation["status"].as_str() {
                Some("completed") => true,
                Some("failed") => false,
                // Not the id: the soak tallies its errors by their message.
                _ if sent.elapsed() > deadline => bail!("never finished within {deadline:?}"),
                _ => continue,
            };
            return Ok(Answer {
                posted,
                answered: sent.elapsed(),
                completed,
                message: operation["result"]["message_id"]
                    .as_str()
                    .and_then(|m| m.parse().ok()),
                retries,
            });
        }
    }

    /// Answers `question` of `session`, then queues feedback on that answer; the
    /// operation id.
    pub async fn answer_and_feedback(
        &self,
        http: &reqwest::Client,
        session: Uuid,
        question: Uuid,
    ) -> anyhow::Result<Uuid> {
        let answer: Value = http
            .post(format!("{}/sessions/{session}/answers", self.base))
            .bearer_auth(&self.token)
            .json(&json!({
                "content": "I would keep each job's claim in PostgreSQL with a lease, so a \
                            crashed worker's jobs are claimed again once it expires.",
                "question_id": question,
            }))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let answer = answer["id"].as_str().context("no answer id")?;
        let operation: Value = http
            .post(format!(
                "{}/sessions/{session}/answers/{answer}/feedback",
                self.base
            ))
            .bearer_auth(&self.token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(operation["id"]
            .as_str()
            .context("no operation id")?
            .parse()?)
    }

    /// Answers each `(session, question)` and queues feedback on the answer,
    /// `parallel` at a time; the operation ids.
    pub async fn feedback_many(
        &self,
        questions: &[(Uuid, Uuid)],
        parallel: usize,
    ) -> anyhow::Result<Vec<Uuid>> {
        let http = reqwest::Client::new();
        stream::iter(questions)
            .map(|&(session, question)| self.answer_and_feedback(&http, session, question))
            .buffer_unordered(parallel)
            .try_collect()
            .await
    }

    /// Queues `count` questions over the sessions, `parallel` at a time.
    pub async fn generate_many(&self, count: usize, parallel: usize) -> anyhow::Result<Vec<Uuid>> {
        let http = reqwest::Client::new();
        stream::iter(0..count)
            .map(|n| self.generate(&http, n))
            .buffer_unordered(parallel)
            .try_collect()
            .await
    }
}

/// CPU seconds (user + system) a process and its threads have used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU seconds used so far by every PostgreSQL server process on the machine.
pub fn postgres_cpu_seconds() -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "postgres")
        })
        .map(cpu_seconds)
        .sum()
}

/// A process's resident set now and at its peak, in MiB (`VmRSS`, `VmHWM`).
pub fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_database_names_are_accepted() {
        assert_eq!(database_name("seeded_8d").as_deref(), Ok("seeded_8d"));
        assert!(database_name(&"a".repeat(63)).is_ok());
        for bad in ["", "Seeded", "a-b", "a b", "x\"; DROP DATABASE y; --", "é"] {
            assert!(database_name(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(database_name(&"a".repeat(64)).is_err());
    }

    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    /// A server that answers `first` `times` times, then `200`.
    async fn answering(first: ResponseTemplate, times: u64) -> MockServer {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(first)
            .up_to_n_times(times)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200))
            .mount(&server)
            .await;
        server
    }

    async fn send(server: &MockServer, until: Instant) -> (anyhow::Result<u16>, u32) {
        let http = reqwest::Client::new();
        let mut retries = 0;
        let sent = send_retrying(until, &mut retries, || http.get(server.uri())).await;
        (sent.map(|r| r.status().as_u16()), retries)
    }

    #[tokio::test]
    async fn a_503_or_429_is_waited_out_for_its_retry_after_and_sent_again() {
        let later = Instant::now() + Duration::from_secs(60);
        for status in [503, 429] {
            let busy = ResponseTemplate::new(status).insert_header("Retry-After", "0");
            let server = answering(busy, 2).await;
            let (sent, retries) = send(&server, later).await;
            assert_eq!(sent.ok(), Some(200), "after {status}");
            assert_eq!(retries, 2, "after {status}");
            assert_eq!(server.received_requests().await.map(|r| r.len()), Some(3));
        }
    }

    #[tokio::test]
    async fn other_errors_and_waits_past_the_deadline_fail_without_a_retry() {
        let later = Instant::now() + Duration::from_secs(60);
        let server = answering(ResponseTemplate::new(404), 1).await;
        let (sent, retries) = send(&server, later).await;
        assert!(sent.is_err(), "a 404 is an error");
        assert_eq!(retries, 0);

        // Retry-After 30 s with 1 s left: the 503 is the answer.
        let soon = Instant::now() + Duration::from_secs(1);
        let busy = ResponseTemplate::new(503).insert_header("Retry-After", "30");
        let server = answering(busy, 1).await;
        let (sent, retries) = send(&server, soon).await;
        assert!(sent.is_err(), "a 503 past the deadline is an error");
        assert_eq!(retries, 0);
        assert_eq!(server.received_requests().await.map(|r| r.len()), Some(1));
    }
}
