//! Deploy day (issue 22): migrations as a step of their own (`api migrate`), binaries
//! that start on a schema newer than theirs, and readiness that waits for the migrate
//! step instead of exiting.

use serde_json::Value;
use shared::domain::OperationId;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use std::process::Command;
use std::time::Duration;
use testkit::fixtures::*;
use testkit::postgres::database_url;
use testkit::process::Process;

/// `api migrate` against `pool`'s database: its exit status and what it printed.
fn api_migrate(url: &str) -> (bool, String, String) {
    let output = Command::new(testkit::process::binary_dir().join("api"))
        .arg("migrate")
        .env_clear()
        .env("DATABASE_URL", url)
        .env("DATABASE_ACQUIRE_TIMEOUT_SECS", "2")
        .output()
        .expect("api migrate runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The api's and the worker's environment on `pool`'s database, `MIGRATE` as given.
fn env(pool: &PgPool, migrate: bool) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", database_url(pool)),
        ("MIGRATE", migrate.to_string()),
        ("JWT_SECRET", "upgrade-test-signing-key-32-bytes".into()),
        ("LLM_PROVIDER", "offline".into()),
        ("WORKER_HEARTBEAT_SECS", "2".into()),
    ]
}

/// `GET http://addr/readyz`: its status and body.
async fn readyz(addr: &str) -> (u16, Value) {
    let response = reqwest::get(format!("http://{addr}/readyz"))
        .await
        .expect("readyz");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON"))
}

/// Marks a migration of a newer release as applied, in our history and apalis'.
async fn apply_a_newer_release(pool: &PgPool) {
    for history in ["public._sqlx_migrations", "apalis._sqlx_migrations"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {history} (version, description, success, checksum, execution_time)
             VALUES (29991231000001, 'from a newer release', true, '\\x00', 0)"
        )))
        .execute(pool)
        .await
        .expect("a newer migration");
    }
}

#[sqlx::test(migrations = false)]
async fn a_schema_ahead_of_this_release_lets_both_binaries_start_and_work(pool: PgPool) {
    migrated(&pool).await;
    apply_a_newer_release(&pool).await;
    // The api migrating at start, as a pod of the old release restarted mid-rollout
    // would; the worker not, as the manifests run it.
    let api = Process::start("api", "ahead", &env(&pool, true)).await;
    let worker = Process::start("worker", "ahead", &env(&pool, false)).await;
    assert_eq!(readyz(&api.addr).await.0, 200);
    let ops = one_each(&pool, 5).await;
    all_completed(&pool, &ops).await;
    testkit::eventually("the worker ready", Duration::from_secs(30), || async {
        (readyz(&worker.addr).await.0 == 200).then_some(())
    })
    .await;
    let (ok, stdout, stderr) = api_migrate(&database_url(&pool));
    assert!(ok, "api migrate on a schema ahead: {stdout}{stderr}");
    assert!(stdout.contains("(0 applied now)"), "{stdout}");
}

#[sqlx::test(migrations = false)]
async fn with_migrate_off_the_binaries_wait_for_the_migrate_step_and_then_work(pool: PgPool) {
    // The previous release's schema: every migration but this release's last.
    shared::tls::install_crypto_provider();
    apalis_postgres::PostgresStorage::<()>::setup(&pool)
        .await
        .expect("queue schema");
    let known: Vec<_> = shared::db::MIGRATOR.iter().cloned().collect();
    let newest = known.last().expect("migrations").clone();
    Migrator::with_migrations(known[..known.len() - 1].to_vec())
        .run(&pool)
        .await
        .expect("the previous release's schema");
    let newest = format!("{} {}", newest.version, newest.description);

    let api = Process::start("api", "behind", &env(&pool, false)).await;
    let worker = Process::start("worker", "behind", &env(&pool, false)).await;
    // Running (healthz answered), not ready, and saying why.
    let (status, body) = readyz(&api.addr).await;
    assert_eq!(status, 503, "{body}");
    let message = body["detail"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&newest), "{body}");
    let (status, body) = readyz(&worker.addr).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap_or_default()
            .contains(&newest),
        "{body}"
    );

    let (ok, stdout, stderr) = api_migrate(&database_url(&pool));
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.contains(&format!("applied {newest}")), "{stdout}");

    for process in [&api, &worker] {
        testkit::eventually(
            format!("{} ready after the migrate step", process.name),
            Duration::from_secs(60),
            || async { (readyz(&process.addr).await.0 == 200).then_some(()) },
        )
        .await;
    }
    let ops = one_each(&pool, 5).await;
    all_completed(&pool, &ops).await;
    assert_consistent(&pool).await;
}

#[test]
fn api_migrate_without_a_database_fails_with_the_reason() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    // Nothing listens there once the listener above is dropped.
    let (ok, stdout, stderr) = api_migrate(&format!("postgres://postgres@127.0.0.1:{port}/none"));
    assert!(!ok, "{stdout}");
    assert!(stderr.contains("migrate: failed:"), "{stderr}");
}

#[test]
fn both_binaries_report_their_version_and_commit() {
    for binary in ["api", "worker"] {
        let output = Command::new(testkit::process::binary_dir().join(binary))
            .arg("--version")
            .env_clear()
            .output()
            .expect("--version runs");
        assert!(output.status.success(), "{binary} --version");
        let printed = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            printed.trim(),
            format!(
                "{binary} {} (commit {})",
                shared::build::VERSION,
                shared::build::COMMIT
            )
        );
    }
}

/// The previous release's binaries (`scripts/previous-release.sh` builds them).
fn previous_release() -> std::path::PathBuf {
    let dir = std::env::var("PREVIOUS_RELEASE_BIN").expect(
        "PREVIOUS_RELEASE_BIN names the previous release's binaries: run scripts/mixed-versions.sh",
    );
    std::path::PathBuf::from(dir)
}

/// Starts `name` from `bin_dir` with `env`, logging beside the other tests' logs.
async fn spawn(
    bin_dir: &std::path::Path,
    name: &str,
    tag: &str,
    env: &[(&str, String)],
) -> Process {
    let log = std::env::temp_dir().join(format!("{name}-{tag}-{}.log", uuid::Uuid::new_v4()));
    Process::spawn(bin_dir, name, log.clone(), env)
        .await
        .unwrap_or_else(|err| {
            panic!(
                "{name} ({tag}) did not start: {err:#}; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })
}

/// Asks for `per_session` questions on each of `sessions` new sessions through the api
/// at `addr`; returns the operations accepted.
async fn ask_through(
    addr: &str,
    who: &str,
    sessions: usize,
    per_session: usize,
) -> Vec<OperationId> {
    let client = reqwest::Client::new();
    let mut accepted = Vec::new();
    for n in 0..sessions {
        let (token, session) =
            testkit::client::signed_in_session(addr, &format!("{who}-{n}@example.com")).await;
        let url = format!("http://{addr}/api/v1/sessions/{session}/generate-question");
        for _ in 0..per_session {
            let response = client
                .post(&url)
                .bearer_auth(&token)
                .send()
                .await
                .expect("generate");
            assert_eq!(response.status(), 202, "{who}");
            let operation: Value = response.json().await.expect("JSON");
            accepted.push(OperationId(
                operation["id"].as_str().expect("id").parse().expect("uuid"),
            ));
        }
    }
    accepted
}

#[sqlx::test(migrations = false)]
#[ignore = "needs the previous release's binaries: scripts/mixed-versions.sh runs it"]
async fn the_previous_release_and_this_one_side_by_side_lose_and_duplicate_nothing(pool: PgPool) {
    // This release's schema; the previous release's binaries run on it unmigrated.
    migrated(&pool).await;
    let previous = previous_release();
    let current = testkit::process::binary_dir();
    let provider = testkit::provider::FakeProvider::start(testkit::provider::Behaviour::unlimited(
        Duration::from_millis(150),
    ))
    .await
    .expect("provider");
    let mut env = env(&pool, false);
    env.retain(|(key, _)| *key != "LLM_PROVIDER");
    env.extend([
        ("OPENAI_BASE_URL", provider.base_url.clone()),
        ("OPENAI_API_KEY", "sk-test".to_owned()),
        ("RATE_LIMIT_GENERATE_PER_MINUTE", "0".to_owned()),
        ("REGISTRATIONS_PER_MINUTE_PER_ADDRESS", "0".to_owned()),
        ("WORKER_HEARTBEAT_SECS", "3".to_owned()),
    ]);
    let mut old_api = spawn(&previous, "api", "old", &env).await;
    let new_api = spawn(&current, "api", "new", &env).await;
    let mut old_worker = spawn(&previous, "worker", "old", &env).await;
    let mut new_worker = spawn(&current, "worker", "new", &env).await;

    // Jobs from both apis, taken by both workers.
    let mut ops = ask_through(&old_api.addr, "old-api", 10, 3).await;
    ops.extend(ask_through(&new_api.addr, "new-api", 10, 3).await);
    // A kill -9 of each worker at work, and a restart, one after the other.
    until_operations(&pool, "completed", 10).await;
    old_worker.kill();
    let _old_again = spawn(&previous, "worker", "old-again", &env).await;
    until_operations(&pool, "completed", 25).await;
    new_worker.kill();
    let _new_again = spawn(&current, "worker", "new-again", &env).await;
    // And of the old api, which then takes more.
    old_api.kill();
    let old_api_again = spawn(&previous, "api", "old-again", &env).await;
    ops.extend(ask_through(&old_api_again.addr, "old-api-again", 5, 2).await);
    ops.extend(ask_through(&new_api.addr, "new-api-again", 5, 2).await);

    all_completed(&pool, &ops).await;
    assert_eq!(operations_in(&pool, "completed").await, ops.len() as i64);
    assert_consistent(&pool).await;
}
