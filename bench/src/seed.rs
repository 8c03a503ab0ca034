//! History for the soak (issue 26): a database that has served `days` of traffic at
//! `rate` questions a second, so that the soak starts where production is after a
//! week, not from empty tables.
//!
//! What production keeps after `days` (8 by default, at 8 a second: 5.5 million
//! operations and ended jobs, 1 million messages):
//! - every operation (30 days of retention) and every ended job (7 days: the oldest
//!   day is past retention, for its first pass to delete during the soak), 1 % of them
//!   failed;
//! - the workers that held them: one apalis worker row per six hours, as pods come and
//!   go, each holding its share of the ended jobs in `lock_by`;
//! - the messages of the most recent sessions (18 % of the operations, ten questions a
//!   session); older sessions were deleted by their users, which removed their messages
//!   and left their operations with no session (`ON DELETE SET NULL`), as the schema
//!   does.
//!
//! The rows are written with PostgreSQL's `generate_series`, a day at a time, with
//! triggers and foreign keys off for the session (`session_replication_role =
//! replica`; the bench connects as a superuser): what is written is consistent by
//! construction (`testkit::fixtures::assert_consistent` holds), and nothing wakes a
//! worker. Then `VACUUM ANALYZE`, as autovacuum would have by then, and the first count
//! of ended work (`shared::db::ended_counts`), as the workers would have.

use anyhow::Context;
use sqlx::{Connection, PgConnection};
use std::time::Instant;

/// How much history, and of what shape.
#[derive(Debug, Clone, Copy)]
pub struct History {
    pub days: f64,
    /// Questions a second over those days.
    pub rate: f64,
}

impl History {
    /// Operations (and ended jobs) in all.
    pub fn operations(&self) -> i64 {
        (self.days * 86_400.0 * self.rate).round() as i64
    }

    /// Operations whose session, and so whose message, still exists: the newest 18 %
    /// (1 million of 5.5 million).
    fn with_messages(&self) -> i64 {
        (self.operations() as f64 * 0.18).round() as i64
    }
}

/// Questions a session asks before it ends.
const QUESTIONS_PER_SESSION: i64 = 10;
/// Candidates who asked them.
const USERS: i64 = 10_000;

/// Writes `history` into the (migrated, empty) database at `url`; prints what it did.
pub async fn seed(url: &str, history: History) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut conn = PgConnection::connect(url).await?;
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut conn)
        .await
        .context("seeding needs a superuser (session_replication_role)")?;
    let total = history.operations();
    let recent = history.with_messages();
    let seconds = history.days * 86_400.0;
    // Ids from numbers, so that every table agrees on them without a lookup: an
    // operation's, its job's, its message's and its session's. Named apart from
    // scripts/bench/pgbench/populate.sql's (md5 of 'op', 's' or 'user' and a number) so
    // that its rows fit beside these in a copy of a seeded database (`--template`).
    sqlx::raw_sql(
        "CREATE TEMPORARY TABLE seed_params (total bigint, recent bigint, seconds float8, started timestamptz);
         CREATE FUNCTION pg_temp.seed_uuid(kind text, n bigint) RETURNS uuid
             LANGUAGE sql IMMUTABLE AS $$ SELECT md5(kind || n)::uuid $$;",
    )
    .execute(&mut conn)
    .await?;
    sqlx::query("INSERT INTO seed_params VALUES ($1, $2, $3, now() - make_interval(secs => $3))")
        .bind(total)
        .bind(recent)
        .bind(seconds)
        .execute(&mut conn)
        .await?;

    // One worker row per queue per six hours of history.
    let workers = (history.days * 4.0).ceil().max(1.0) as i64;
    sqlx::query(
        "INSERT INTO apalis.workers (id, worker_type, storage_name, layers, last_seen, started_at)
         SELECT 'seed-' || w || '-question_generation-0', 'question_generation', 'PostgresStorage', '',
                p.started + make_interval(hours => (6 * (w + 1))::int), p.started + make_interval(hours => (6 * w)::int)
         FROM seed_params p, generate_series(0, $1 - 1) AS w",
    )
    .bind(workers)
    .execute(&mut conn)
    .await?;
    sqlx::query(
        "INSERT INTO users (id, email, password_hash, created_at, updated_at)
         SELECT pg_temp.seed_uuid('user', u), 'seed-' || u || '@example.com', 'seeded', p.started, p.started
         FROM seed_params p, generate_series(0, $1 - 1) AS u",
    )
    .bind(USERS)
    .execute(&mut conn)
    .await?;
    let sessions = (recent + QUESTIONS_PER_SESSION - 1) / QUESTIONS_PER_SESSION;
    // The sessions still there: every question they asked is a message, so the
    // counter is the number of their questions.
    sqlx::query(
        "INSERT INTO interview_sessions (id, user_id, status, current_question_number, created_at, updated_at)
         SELECT pg_temp.seed_uuid('session', s), pg_temp.seed_uuid('user', s % $2),
                'completed', least($3, $4 - s * $3), now(), now()
         FROM generate_series(0, $1 - 1) AS s",
    )
    .bind(sessions)
    .bind(USERS)
    .bind(QUESTIONS_PER_SESSION)
    .bind(recent)
    .execute(&mut conn)
    .await?;

    // A day at a time: operations, their jobs, and the messages of the recent ones.
    let per_day = (86_400.0 * history.rate).round().max(1.0) as i64;
    let mut from = 0;
    while from < total {
        let to = (from + per_day).min(total);
        insert_range(&mut conn, from, to).await?;
        println!(
            "{}",
            serde_json::json!({"seeded_operations": to, "of": total, "seconds": started.elapsed().as_secs()})
        );
        from = to;
    }
    sqlx::query("SET session_replication_role = DEFAULT")
        .execute(&mut conn)
        .await?;
    for table in [
        "apalis.jobs",
        "apalis.workers",
        "operations",
        "session_messages",
        "interview_sessions",
        "users",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(format!("VACUUM ANALYZE {table}")))
            .execute(&mut conn)
            .await?;
    }
    // The ended count's first pass counts every span of ended time, once; a database
    // that has served these days did it long ago, so the soak starts from its steady
    // passes.
    let counting = Instant::now();
    shared::db::ended_counts::recount_if_due(&mut conn).await?;
    println!(
        "{}",
        serde_json::json!({"first_ended_count_seconds": counting.elapsed().as_secs_f64()})
    );
    println!(
        "{}",
        serde_json::json!({"seeded": {"operations": total, "jobs": total, "messages": recent,
            "sessions": sessions, "users": USERS, "workers": workers, "days": history.days,
            "rate": history.rate}, "seconds": started.elapsed().as_secs()})
    );
    Ok(())
}

/// Operations `from..to` (in order of time), their ended jobs, and the messages of those
/// among the newest `recent`.
async fn insert_range(conn: &mut PgConnection, from: i64, to: i64) -> anyhow::Result<()> {
    let mut tx = conn.begin().await?;
    // n: the operation's number; at: when it was asked. An operation is among the
    // recent when n ≥ total − recent; then its session is r / 10, its question r % 10 + 1.
    sqlx::query(
        "INSERT INTO operations (id, user_id, session_id, operation_type, status, result,
                                 error_message, attempts, model_calls, created_at, started_at, updated_at)
         SELECT pg_temp.seed_uuid('operation', n),
                pg_temp.seed_uuid('user', CASE WHEN r >= 0 THEN (r / $4) % $3 ELSE n % $3 END),
                CASE WHEN r >= 0 THEN pg_temp.seed_uuid('session', r / $4) END,
                'question_generation',
                CASE WHEN failed THEN 'failed' ELSE 'completed' END,
                CASE WHEN NOT failed THEN jsonb_build_object(
                    'question_text', 'Seeded question ' || n, 'question_type', 'technical',
                    'message_id', pg_temp.seed_uuid('message', n), 'question_number', r % $4 + 1) END,
                CASE WHEN failed THEN 'The question could not be generated: the language model service had an error.' END,
                CASE WHEN failed THEN 5 ELSE 1 END, CASE WHEN failed THEN 5 ELSE 1 END,
                at, at + interval '5 ms', at + interval '2500 ms'
         FROM (SELECT n, n - (p.total - p.recent) AS r,
                      p.started + make_interval(secs => p.seconds * n / p.total) AS at,
                      -- 1 % failed, none of them among the recent: a failed operation
                      -- leaves no message, and the recent sessions number theirs 1..10.
                      (n % 100 = 99 AND n < p.total - p.recent) AS failed
               FROM seed_params p, generate_series($1, $2 - 1) AS n) AS o",
    )
    .bind(from)
    .bind(to)
    .bind(USERS)
    .bind(QUESTIONS_PER_SESSION)
    .execute(&mut *tx)
    .await
    .context("seeding operations")?;
    sqlx::query(
        "INSERT INTO apalis.jobs (job, id, job_type, status, attempts, max_attempts, run_at,
                                  last_result, lock_at, lock_by, done_at, priority, idempotency_key)
         SELECT convert_to(jsonb_build_object('version', 1, 'operation_id', o.id,
                                              'session_id', o.session_id)::text, 'UTF8'),
                upper(replace(o.id::text, '-', '')), 'question_generation',
                CASE WHEN o.status = 'failed' THEN 'Killed' ELSE 'Done' END,
                o.attempts, 5, o.created_at,
                CASE WHEN o.status = 'failed' THEN '{\"Err\": \"seeded failure\"}'::jsonb ELSE '{\"Ok\": null}'::jsonb END,
                o.started_at,
                'seed-' || floor(extract(epoch FROM o.created_at - p.started) / 21600)::bigint || '-question_generation-0',
                o.updated_at, 0, o.id::text
         FROM seed_params p, generate_series($1, $2 - 1) AS n
         JOIN operations o ON o.id = pg_temp.seed_uuid('operation', n)",
    )
    .bind(from)
    .bind(to)
    .execute(&mut *tx)
    .await
    .context("seeding jobs")?;
    sqlx::query(
        "INSERT INTO session_messages (id, session_id, message_type, content, question_type, metadata,
                                       operation_id, created_at)
         SELECT pg_temp.seed_uuid('message', n), o.session_id, 'question', o.result->>'question_text',
                'technical',
                jsonb_build_object('question_number', (o.result->>'question_number')::int,
                                   'model', 'seed-model', 'operation_id', o.id,
                                   'usage', jsonb_build_object('prompt_tokens', 300,
                                       'completion_tokens', 30, 'total_tokens', 330)),
                o.id, o.updated_at
         FROM generate_series($1, $2 - 1) AS n
         JOIN operations o ON o.id = pg_temp.seed_uuid('operation', n)
         WHERE o.session_id IS NOT NULL",
    )
    .bind(from)
    .bind(to)
    .execute(&mut *tx)
    .await
    .context("seeding messages")?;
    tx.commit().await?;
    Ok(())
}
