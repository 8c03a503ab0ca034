//! The schema's promises, checked against the real PostgreSQL: each test gets its own
//! database from `#[sqlx::test]`, migrated by our migrator.

use chrono::Utc;
use serde_json::json;
use shared::db::{self, attempt, job_postings, messages, operations, sessions, users};
use shared::domain::{
    JobPostingId, MessageType, OperationId, OperationStatus, OperationType, QuestionType,
    SessionStatus,
};
use sqlx::{PgConnection, PgPool};

struct Fixture {
    user: users::User,
    posting: job_postings::JobPosting,
    session: sessions::Session,
}

async fn fixture(conn: &mut PgConnection) -> Fixture {
    let user = users::insert(conn, "ada@example.com", "hash", Some("Ada"))
        .await
        .expect("user");
    let posting = job_postings::insert(
        conn,
        user.id,
        "Backend engineer",
        Some("Acme"),
        "Rust and SQL",
    )
    .await
    .expect("posting");
    let session = sessions::insert_for_posting(conn, user.id, posting.id, None)
        .await
        .expect("insert session")
        .expect("posting is the user's");
    Fixture {
        user,
        posting,
        session,
    }
}

async fn add_operation(conn: &mut PgConnection, f: &Fixture) -> OperationId {
    let id = OperationId::new();
    operations::insert_question_generation(conn, id, f.user.id, f.session.id, None)
        .await
        .expect("insert operation")
        .expect("no key, no conflict");
    id
}

/// A connection, the fixture, and one `pending` operation on its session: where most
/// tests of an operation start.
async fn with_operation(
    pool: &PgPool,
) -> (
    sqlx::pool::PoolConnection<sqlx::Postgres>,
    Fixture,
    OperationId,
) {
    let mut conn = pool.acquire().await.expect("conn");
    let f = fixture(&mut conn).await;
    let op = add_operation(&mut conn, &f).await;
    (conn, f, op)
}

/// Runs an attempt of `op` as the worker does: its start, then its completion in a
/// transaction that commits only when the question is stored.
async fn add_question(
    conn: &mut PgConnection,
    f: &Fixture,
    op: OperationId,
    text: &str,
) -> attempt::Completion {
    attempt::start(conn, op, f.session.id, 50)
        .await
        .expect("start")
        .expect("unfinished");
    complete(conn, f, op, text).await
}

/// The completion alone, committed only when it stored the question.
async fn complete(
    conn: &mut PgConnection,
    f: &Fixture,
    op: OperationId,
    text: &str,
) -> attempt::Completion {
    let metadata = json!({ "operation_id": op });
    let mut tx = sqlx::Connection::begin(&mut *conn).await.expect("tx");
    let done = attempt::complete(
        &mut tx,
        &attempt::NewQuestion {
            session_id: f.session.id,
            operation_id: op,
            content: text,
            question_type: QuestionType::Technical,
            metadata: &metadata,
        },
    )
    .await
    .expect("complete");
    if matches!(done, attempt::Completion::Completed { .. }) {
        tx.commit().await.expect("commit");
    }
    done
}

async fn question_number(conn: &mut PgConnection, f: &Fixture) -> i32 {
    sessions::find(conn, f.session.id)
        .await
        .expect("find")
        .expect("exists")
        .current_question_number
}

async fn count(conn: &mut PgConnection, sql: &'static str, id: uuid::Uuid) -> i64 {
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(conn)
        .await
        .expect("count")
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_session_belongs_to_its_user_and_job_posting(pool: PgPool) {
    let mut conn = pool.acquire().await.expect("conn");
    let f = fixture(&mut conn).await;
    let found = sessions::find_owned(&mut conn, f.session.id, f.user.id)
        .await
        .expect("find")
        .expect("exists");
    assert_eq!(found.user_id, f.user.id);
    assert_eq!(found.job_posting_id, Some(f.posting.id));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_session_cannot_start_on_a_missing_job_posting(pool: PgPool) {
    let mut conn = pool.acquire().await.expect("conn");
    let f = fixture(&mut conn).await;
    let none = sessions::insert_for_posting(&mut conn, f.user.id, JobPostingId::new(), None)
        .await
        .expect("query");
    assert!(none.is_none());
}

/// The row a [`Check`] writes to.
#[derive(Debug, Clone, Copy)]
enum Row {
    User,
    Session,
    Answer,
    Operation,
}

/// One CHECK constraint of the schema: the statement that sets its column (`$1` the
/// row's id, `$2` the value as text), the values the contract allows, and one it
/// does not.
struct Check {
    constraint: &'static str,
    set: &'static str,
    row: Row,
    allowed: Vec<&'static str>,
    refused: &'static str,
}

fn names<T: Copy>(all: &[T], name: fn(T) -> &'static str) -> Vec<&'static str> {
    all.iter().map(|v| name(*v)).collect()
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn every_check_constraint_takes_the_contracts_values_and_refuses_others(pool: PgPool) {
    let mut conn = pool.acquire().await.expect("conn");
    let f = fixture(&mut conn).await;
    let answer = messages::insert_answer(&mut conn, f.session.id, "An answer", None)
        .await
        .expect("answer");
    let op = add_operation(&mut conn, &f).await;
    let checks = [
        Check {
            constraint: "users_email_lowercase",
            set: "UPDATE users SET email = $2 WHERE id = $1",
            row: Row::User,
            allowed: vec!["grace@example.com"],
            refused: "Grace@example.com",
        },
        Check {
            constraint: "interview_sessions_status_check",
            set: "UPDATE interview_sessions SET status = $2 WHERE id = $1",
            row: Row::Session,
            allowed: names(SessionStatus::ALL, SessionStatus::as_str),
            refused: "archived",
        },
        Check {
            constraint: "interview_sessions_question_number_check",
            set: "UPDATE interview_sessions SET current_question_number = $2::int WHERE id = $1",
            row: Row::Session,
            allowed: vec!["0", "7"],
            refused: "-1",
        },
        Check {
            constraint: "session_messages_message_type_check",
            set: "UPDATE session_messages SET message_type = $2 WHERE id = $1",
            row: Row::Answer,
            allowed: names(MessageType::ALL, MessageType::as_str),
            refused: "comment",
        },
        Check {
            constraint: "session_messages_question_type_check",
            set: "UPDATE session_messages SET question_type = $2 WHERE id = $1",
            row: Row::Answer,
            allowed: names(QuestionType::ALL, QuestionType::as_str),
            refused: "trivia",
        },
        Check {
            constraint: "session_messages_metadata_object",
            set: "UPDATE session_messages SET metadata = $2::jsonb WHERE id = $1",
            row: Row::Answer,
            allowed: vec!["{}", r#"{"model": "m"}"#],
            refused: "[]",
        },
        Check {
            constraint: "operations_operation_type_check",
            set: "UPDATE operations SET operation_type = $2 WHERE id = $1",
            row: Row::Operation,
            allowed: names(OperationType::ALL, OperationType::as_str),
            refused: "essay_grading",
        },
        Check {
            constraint: "operations_status_check",
            set: "UPDATE operations SET status = $2 WHERE id = $1",
            row: Row::Operation,
            allowed: names(OperationStatus::ALL, OperationStatus::as_str),
            refused: "cancelled",
        },
        Check {
            constraint: "operations_attempts_check",
            set: "UPDATE operations SET attempts = $2::int WHERE id = $1",
            row: Row::Operation,
            allowed: vec!["0", "3"],
            refused: "-1",
        },
    ];
    for check in checks {
        let id = match check.row {
            Row::User => f.user.id.0,
            Row::Session => f.session.id.0,
            Row::Answer => answer.id.0,
            Row::Operation => op.0,
        };
        for value in &check.allowed {
            let done = sqlx::query(check.set)
                .bind(id)
                .bind(value)
                .execute(&mut *conn)
                .await
                .unwrap_or_else(|err| panic!("{}: {value} refused: {err}", check.constraint));
            assert_eq!(done.rows_affected(), 1, "{}: {value}", check.constraint);
        }
        let err = sqlx::query(check.set)
            .bind(id)
            .bind(check.refused)
            .execute(&mut *conn)
            .await
            .expect_err(check.constraint);
        assert!(
            db::violates(&err, check.constraint),
            "{}: {err}",
            check.constraint
        );
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn current_question_number_starts_at_zero(pool: PgPool) {
    let mut conn = pool.acquire().await.expect("conn");
    let f = fixture(&mut conn).await;
    assert_eq!(f.session.current_question_number, 0);
    assert_eq!(f.session.status, SessionStatus::Active);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn deleting_a_user_deletes_their_sessions_messages_and_operations(pool: PgPool) {
    let (mut conn, f, op) = with_operation(&pool).await;
    assert!(matches!(
        add_question(&mut conn, &f, op, "Why Rust?").await,
        attempt::Completion::Completed { .. }
    ));

    assert!(users::delete(&mut conn, f.user.id).await.expect("delete"));

    let sid = f.session.id.0;
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) FROM interview_sessions WHERE id = $1",
            sid
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) FROM session_messages WHERE session_id = $1",
            sid
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) FROM operations WHERE id = $1",
            op.0
        )
        .await,
        0
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn deleting_a_job_posting_keeps_its_sessions_with_a_null_posting(pool: PgPool) {
    let mut conn = pool.acquire().await.expect("conn");
    let f = fixture(&mut conn).await;
    assert!(
        job_postings::delete_owned(&mut conn, f.posting.id, f.user.id)
            .await
            .expect("delete")
    );
    let kept = sessions::find(&mut conn, f.session.id)
        .await
        .expect("find")
        .expect("session kept");
    assert_eq!(kept.job_posting_id, None);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn deleting_a_session_deletes_its_messages_and_keeps_its_operations(pool: PgPool) {
    let mut conn = pool.acquire().await.expect("conn");
    let f = fixture(&mut conn).await;
    messages::insert_answer(&mut conn, f.session.id, "An answer", None)
        .await
        .expect("answer");
    let operation = add_operation(&mut conn, &f).await;
    sqlx::query("DELETE FROM interview_sessions WHERE id = $1")
        .bind(f.session.id)
        .execute(&mut *conn)
        .await
        .expect("delete");
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) FROM session_messages WHERE session_id = $1",
            f.session.id.0
        )
        .await,
        0
    );
    // The operation outlives its session, so a poller can be told it failed.
    let session_id: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT session_id FROM operations WHERE id = $1")
            .bind(operation)
            .fetch_one(&mut *conn)
            .await
            .expect("the operation is kept");
    assert_eq!(session_id, None);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn messages_come_back_ordered_by_created_at(pool: PgPool) {
    let mut conn = pool.acquire().await.expect("conn");
    let f = fixture(&mut conn).await;
    // Insert with explicit, out-of-order timestamps: the order must come from
    // created_at, not from insertion order.
    for (content, minutes_ago) in [("second", 5), ("first", 10), ("third", 1)] {
        sqlx::query(
            "INSERT INTO session_messages (session_id, message_type, content, created_at)
             VALUES ($1, 'answer', $2, now() - make_interval(mins => $3))",
        )
        .bind(f.session.id)
        .bind(content)
        .bind(minutes_ago)
        .execute(&mut *conn)
        .await
        .expect("insert");
    }
    let page = messages::page(&mut conn, f.session.id, 50, 0)
        .await
        .expect("page");
    let contents: Vec<_> = page.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(contents, ["first", "second", "third"]);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_100_kb_message_round_trips(pool: PgPool) {
    let mut conn = pool.acquire().await.expect("conn");
    let f = fixture(&mut conn).await;
    let content: String = "Ünïcode and ascii. "
        .chars()
        .cycle()
        .take(100 * 1024)
        .collect();
    let stored = messages::insert_answer(&mut conn, f.session.id, &content, None)
        .await
        .expect("insert");
    let read = messages::page(&mut conn, f.session.id, 1, 0)
        .await
        .expect("page");
    assert_eq!(stored.content, content);
    assert_eq!(read[0].content, content);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn question_type_is_null_for_answers_and_set_for_questions(pool: PgPool) {
    let mut conn = pool.acquire().await.expect("conn");
    let f = fixture(&mut conn).await;
    let answer = messages::insert_answer(&mut conn, f.session.id, "An answer", None)
        .await
        .expect("answer");
    assert_eq!(answer.question_type, None);
    let op = add_operation(&mut conn, &f).await;
    let attempt::Completion::Completed { message_id, .. } =
        add_question(&mut conn, &f, op, "Why?").await
    else {
        panic!("not stored");
    };
    let page = messages::page(&mut conn, f.session.id, 10, 0)
        .await
        .expect("page");
    let question = page.iter().find(|m| m.id == message_id).expect("stored");
    assert_eq!(question.question_type, Some(QuestionType::Technical));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn timestamps_come_back_in_utc(pool: PgPool) {
    let mut conn = pool.acquire().await.expect("conn");
    // A session time zone far from UTC must not leak into what we read.
    sqlx::query("SET TIME ZONE 'Asia/Kolkata'")
        .execute(&mut *conn)
        .await
        .expect("set tz");
    let before = Utc::now();
    let f = fixture(&mut conn).await;
    let skew = (f.session.created_at - before).num_seconds().abs();
    assert!(
        skew < 60,
        "created_at {} is not close to now {before} in UTC",
        f.session.created_at
    );
    assert!(
        serde_json::to_string(&f.session.created_at)
            .expect("json")
            .ends_with("Z\"")
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_operation_result_round_trips_as_jsonb_and_error_message_is_nullable(pool: PgPool) {
    let (mut conn, f, op) = with_operation(&pool).await;
    let fresh = operations::find(&mut conn, op)
        .await
        .expect("find")
        .expect("exists");
    assert_eq!(fresh.status, OperationStatus::Pending);
    assert_eq!(fresh.error_message, None);
    assert!(fresh.result.is_none());

    let attempt::Completion::Completed {
        message_id,
        question_number,
    } = add_question(&mut conn, &f, op, "Why «Rust»?").await
    else {
        panic!("not stored");
    };
    let done = operations::find(&mut conn, op)
        .await
        .expect("find")
        .expect("exists");
    assert_eq!(done.status, OperationStatus::Completed);
    assert_eq!(
        done.result.map(|j| j.0),
        Some(json!({
            "question_text": "Why «Rust»?",
            "question_type": "technical",
            "message_id": message_id,
            "question_number": question_number,
        }))
    );
    assert_eq!(done.error_message, None);
    let page = messages::page(&mut conn, f.session.id, 10, 0)
        .await
        .expect("page");
    assert_eq!(
        page[0].metadata.0,
        json!({ "operation_id": op, "question_number": 1 }),
        "the metadata gains the question's number"
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_finished_operation_does_not_change_again(pool: PgPool) {
    let (mut conn, f, op) = with_operation(&pool).await;
    assert!(
        operations::fail(&mut conn, op, "The question could not be generated.")
            .await
            .expect("fail")
    );
    assert!(
        attempt::start(&mut conn, op, f.session.id, 50)
            .await
            .expect("start")
            .is_none()
    );
    assert_eq!(
        complete(&mut conn, &f, op, "Late").await,
        attempt::Completion::OperationFinished
    );
    assert_eq!(question_number(&mut conn, &f).await, 0, "rolled back");
    let failed = operations::find(&mut conn, op)
        .await
        .expect("find")
        .expect("exists");
    assert_eq!(failed.status, OperationStatus::Failed);
    assert_eq!(
        failed.error_message.as_deref(),
        Some("The question could not be generated.")
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_indexes_of_the_design_exist(pool: PgPool) {
    let indexes: Vec<String> =
        sqlx::query_scalar("SELECT indexdef FROM pg_indexes WHERE schemaname = 'public'")
            .fetch_all(&pool)
            .await
            .expect("pg_indexes");
    for wanted in [
        "ON public.interview_sessions USING btree (user_id, created_at)",
        "ON public.session_messages USING btree (session_id, created_at)",
        "operations_session_unfinished_idx ON public.operations USING btree (session_id, accepted_seq) WHERE",
        "operations_finished_idx ON public.operations USING btree (updated_at, status) WHERE",
        "UNIQUE INDEX session_messages_operation_id_key ON public.session_messages USING btree (operation_id)",
        "UNIQUE INDEX operations_user_idempotency_key ON public.operations USING btree (user_id, idempotency_key)",
        "UNIQUE INDEX users_email_key ON public.users USING btree (email)",
    ] {
        assert!(
            indexes.iter().any(|def| def.contains(wanted)),
            "no index {wanted:?} in {indexes:#?}"
        );
    }
    // Vacuumed after 1 % of the rows changed, indexes included (migration
    // 20261205000008): the partial indexes read whole keep dead entries until then.
    let vacuumed_often: bool = sqlx::query_scalar(
        "SELECT reloptions @> '{autovacuum_vacuum_scale_factor=0.01,vacuum_index_cleanup=on}'
         FROM pg_class WHERE oid = 'operations'::regclass",
    )
    .fetch_one(&pool)
    .await
    .expect("reloptions");
    assert!(vacuumed_often);
    // An index of the unfinished status that a session's statement could take instead
    // of the session's own, when the statistics last saw nothing in flight (migration
    // 20261205000008): none may exist.
    let operations = indexes
        .iter()
        .filter(|def| def.contains(" ON public.operations "));
    for def in operations {
        assert!(
            !def.contains("USING btree (status") && !def.contains("(operation_type, status)"),
            "an index of operations leads with the status: {def}"
        );
        if def.contains("'pending'") {
            assert!(
                def.contains("USING btree (session_id"),
                "an index of unfinished operations does not lead with the session: {def}"
            );
        }
    }
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_second_question_for_one_operation_is_refused(pool: PgPool) {
    let (mut conn, f, op) = with_operation(&pool).await;
    assert!(matches!(
        add_question(&mut conn, &f, op, "First").await,
        attempt::Completion::Completed { .. }
    ));
    // A second delivery's completion is refused by the UNIQUE operation_id, and its
    // count with it; a plain insert is refused by the constraint itself.
    assert_eq!(
        complete(&mut conn, &f, op, "Second").await,
        attempt::Completion::AlreadyStored
    );
    assert_eq!(question_number(&mut conn, &f).await, 1);
    let err = sqlx::query(
        "INSERT INTO session_messages (session_id, message_type, content, question_type, operation_id)
         VALUES ($1, 'question', 'Third', 'technical', $2)",
    )
    .bind(f.session.id)
    .bind(op)
    .execute(&mut *conn)
    .await
    .expect_err("UNIQUE (operation_id)");
    assert!(db::violates(&err, messages::OPERATION_ID_KEY), "{err}");
    assert_eq!(
        messages::count(&mut conn, f.session.id)
            .await
            .expect("count"),
        1
    );
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_idempotency_key_makes_one_operation_per_user(pool: PgPool) {
    let mut conn = pool.acquire().await.expect("conn");
    let f = fixture(&mut conn).await;
    let mut insert_with_k1 = async || {
        operations::insert_question_generation(
            &mut conn,
            OperationId::new(),
            f.user.id,
            f.session.id,
            Some("k1"),
        )
        .await
        .expect("insert")
    };
    let first = insert_with_k1().await;
    let again = insert_with_k1().await;
    assert!(first.is_some());
    assert!(again.is_none(), "the key is taken");
    let keyed = operations::find_by_idempotency_key(&mut conn, f.user.id, "k1")
        .await
        .expect("find")
        .expect("kept");
    assert_eq!(Some(keyed.operation.id), first.map(|o| o.id));
    assert_eq!(keyed.session_id, Some(f.session.id));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn a_question_is_counted_only_in_an_active_session(pool: PgPool) {
    let (mut conn, f, op) = with_operation(&pool).await;
    assert!(matches!(
        add_question(&mut conn, &f, op, "One").await,
        attempt::Completion::Completed {
            question_number: 1,
            ..
        }
    ));
    let after = sessions::find(&mut conn, f.session.id)
        .await
        .expect("find")
        .expect("exists");
    assert_eq!(after.current_question_number, 1);
    assert!(after.updated_at >= f.session.updated_at);

    let paused = add_operation(&mut conn, &f).await;
    attempt::start(&mut conn, paused, f.session.id, 50)
        .await
        .expect("start")
        .expect("pending");
    sqlx::query("UPDATE interview_sessions SET status = 'paused' WHERE id = $1")
        .bind(f.session.id)
        .execute(&mut *conn)
        .await
        .expect("pause");
    assert_eq!(
        complete(&mut conn, &f, paused, "Two").await,
        attempt::Completion::SessionNotActive
    );
    let gone = Fixture {
        user: f.user.clone(),
        posting: f.posting.clone(),
        session: sessions::Session {
            id: shared::domain::SessionId::new(),
            ..f.session.clone()
        },
    };
    assert_eq!(
        complete(&mut conn, &gone, paused, "Two").await,
        attempt::Completion::SessionNotActive
    );
    assert_eq!(question_number(&mut conn, &f).await, 1, "nothing counted");
    assert_eq!(
        messages::count(&mut conn, f.session.id)
            .await
            .expect("count"),
        1
    );
}

/// Both migrators, in either order and twice, on a database nobody migrated.
#[sqlx::test(migrations = false)]
async fn both_migrators_run_twice_on_a_fresh_database_in_either_order(pool: PgPool) {
    shared::db::migrate(&pool)
        .await
        .expect("first run: queue, then ours");
    shared::db::migrate(&pool)
        .await
        .expect("second run is a no-op");
    let ours: i64 = sqlx::query_scalar("SELECT count(*) FROM public._sqlx_migrations")
        .fetch_one(&pool)
        .await
        .expect("ours");
    let queue: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis._sqlx_migrations")
        .fetch_one(&pool)
        .await
        .expect("apalis");
    assert_eq!(ours as usize, shared::db::MIGRATOR.iter().count());
    assert!(queue > 0);
}

#[sqlx::test(migrations = false)]
async fn our_migrations_first_then_the_queue_also_works(pool: PgPool) {
    shared::db::MIGRATOR.run(&pool).await.expect("ours first");
    shared::db::migrate(&pool).await.expect("then both");
    shared::db::migrate(&pool).await.expect("and again");
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM apalis.jobs")
        .fetch_one(&pool)
        .await
        .expect("apalis.jobs exists");
    assert_eq!(jobs, 0);
}

/// Several processes starting at once on a fresh database (api and workers) must not
/// trip over each other: the migrators serialise on an advisory lock.
#[sqlx::test(migrations = false)]
async fn concurrent_migrations_of_a_fresh_database_all_succeed(pool: PgPool) {
    let runs = (0..4).map(|_| {
        let pool = pool.clone();
        tokio::spawn(async move { shared::db::migrate(&pool).await })
    });
    for run in futures_join(runs).await {
        run.expect("task").expect("migration");
    }
    let ours: i64 = sqlx::query_scalar("SELECT count(*) FROM public._sqlx_migrations")
        .fetch_one(&pool)
        .await
        .expect("ours");
    assert_eq!(ours as usize, shared::db::MIGRATOR.iter().count());
}

async fn futures_join<T>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut results = Vec::new();
    for handle in handles.collect::<Vec<_>>() {
        results.push(handle.await);
    }
    results
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn an_attempt_start_counts_reads_and_relaxes_only_its_own_commit(pool: PgPool) {
    let mut conn = pool.acquire().await.expect("conn");
    let f = fixture(&mut conn).await;
    let first = add_operation(&mut conn, &f).await;
    add_question(&mut conn, &f, first, "Q1").await;
    let op = add_operation(&mut conn, &f).await;
    for attempt in 1..=2 {
        let started = attempt::start(&mut conn, op, f.session.id, 50)
            .await
            .expect("start")
            .expect("unfinished");
        assert_eq!(started.attempts, attempt);
        let inputs = started.inputs.expect("the session exists");
        assert_eq!(inputs.status, SessionStatus::Active);
        assert_eq!(inputs.current_question_number, 1);
        assert_eq!(inputs.earlier_questions, ["Q1"]);
        assert_eq!(inputs.job_posting.map(|p| p.id), Some(f.posting.id));
    }
    // `synchronous_commit = off` was for the start's own transaction: the connection,
    // which the pool hands to the completion next, commits synchronously again.
    let setting: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&mut *conn)
        .await
        .expect("show");
    assert_eq!(setting, "on");
    let status = operations::find(&mut conn, op)
        .await
        .expect("find")
        .expect("exists")
        .status;
    assert_eq!(status, OperationStatus::Processing);

    // A session deleted meanwhile: the attempt is still counted, with no inputs.
    let gone = add_operation(&mut conn, &f).await;
    let started = attempt::start(&mut conn, gone, shared::domain::SessionId::new(), 50)
        .await
        .expect("start")
        .expect("unfinished");
    assert_eq!(started.attempts, 1);
    assert!(started.inputs.is_none());
}

/// A question stored and answered, and feedback on the answer: a first one failed,
/// then a second (which the index allows only once the first failed) completed with
/// its message. Returns the answer and the two feedback operations.
async fn with_feedback(
    conn: &mut PgConnection,
    f: &Fixture,
) -> (shared::domain::MessageId, OperationId, OperationId) {
    let op = add_operation(conn, f).await;
    let attempt::Completion::Completed { message_id, .. } =
        add_question(conn, f, op, "Why Rust?").await
    else {
        panic!("the question is stored");
    };
    let answer = messages::insert_answer(conn, f.session.id, "Memory safety.", Some(message_id))
        .await
        .expect("answer");
    let target = operations::Target::Feedback(f.session.id, answer.id);
    let first = OperationId::new();
    operations::insert(conn, first, f.user.id, target, None)
        .await
        .expect("insert")
        .expect("inserted");
    // One feedback per answer that is not failed: a second is refused by the index...
    let refused = operations::insert(conn, OperationId::new(), f.user.id, target, None).await;
    assert!(
        matches!(&refused, Err(sqlx::Error::Database(e)) if e.constraint() == Some("operations_feedback_answer_key")),
        "{refused:?}"
    );
    // ... and allowed once the first failed.
    operations::fail(conn, first, "The feedback could not be generated: test.")
        .await
        .expect("fail");
    let second = OperationId::new();
    operations::insert(conn, second, f.user.id, target, None)
        .await
        .expect("insert")
        .expect("inserted");
    shared::db::feedback::start(conn, second, f.session.id, answer.id)
        .await
        .expect("start")
        .expect("unfinished")
        .inputs
        .expect("the answer and its question");
    let metadata = json!({ "answer_id": answer.id });
    let result = json!({ "answer_id": answer.id, "score": 4 });
    let mut tx = sqlx::Connection::begin(&mut *conn).await.expect("tx");
    let stored = shared::db::feedback::complete(
        &mut tx,
        &shared::db::feedback::NewFeedback {
            session_id: f.session.id,
            operation_id: second,
            summary: "Good.",
            metadata: &metadata,
            result: &result,
        },
    )
    .await
    .expect("complete");
    assert!(matches!(
        stored,
        shared::db::feedback::Completion::Completed { .. }
    ));
    tx.commit().await.expect("commit");
    (answer.id, first, second)
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn deleting_a_user_with_feedback_leaves_no_row_of_theirs(pool: PgPool) {
    let mut conn = pool.acquire().await.expect("conn");
    let f = fixture(&mut conn).await;
    with_feedback(&mut conn, &f).await;
    assert!(users::delete(&mut conn, f.user.id).await.expect("delete"));
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM operations WHERE user_id = $1)
              + (SELECT count(*) FROM interview_sessions WHERE user_id = $1)
              + (SELECT count(*) FROM session_messages WHERE session_id = $2)",
    )
    .bind(f.user.id)
    .bind(f.session.id)
    .fetch_one(&mut *conn)
    .await
    .expect("count");
    assert_eq!(left, 0);
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn deleting_a_session_keeps_its_feedback_operations_without_their_answer(pool: PgPool) {
    let mut conn = pool.acquire().await.expect("conn");
    let f = fixture(&mut conn).await;
    let (_, failed, completed) = with_feedback(&mut conn, &f).await;
    sqlx::query("DELETE FROM interview_sessions WHERE id = $1")
        .bind(f.session.id)
        .execute(&mut *conn)
        .await
        .expect("delete");
    let kept: Vec<(uuid::Uuid, Option<uuid::Uuid>, Option<uuid::Uuid>)> = sqlx::query_as(
        "SELECT id, session_id, answer_id FROM operations
         WHERE operation_type = 'feedback_analysis' ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await
    .expect("operations");
    assert_eq!(kept, [(failed.0, None, None), (completed.0, None, None)]);
}

/// What `queue_tuning()` leaves on apalis' table: the partial index of claimed jobs by
/// worker, one most-common value at most for `lock_by`, and vacuums after 1 % of the
/// rows changed that also clear the indexes.
async fn queue_tuned(pool: &PgPool) -> (bool, i32, bool) {
    sqlx::query_as(
        "SELECT to_regclass('apalis.jobs_claimed_by_worker_idx') IS NOT NULL,
                (SELECT attstattarget::int FROM pg_attribute
                 WHERE attrelid = 'apalis.jobs'::regclass AND attname = 'lock_by'),
                (SELECT reloptions @> '{autovacuum_vacuum_scale_factor=0.01,vacuum_index_cleanup=on}'
                 FROM pg_class WHERE oid = 'apalis.jobs'::regclass)",
    )
    .fetch_one(pool)
    .await
    .expect("the queue's tuning")
}

#[sqlx::test(migrations = false)]
async fn the_queue_is_tuned_when_apalis_migrates_first(pool: PgPool) {
    db::migrate(&pool).await.expect("migrated");
    assert_eq!(queue_tuned(&pool).await, (true, 1, true));
    // Again at the next start: nothing to do, nothing fails.
    db::migrate(&pool).await.expect("migrated again");
    assert_eq!(queue_tuned(&pool).await, (true, 1, true));
}

#[sqlx::test(migrator = "shared::db::MIGRATOR")]
async fn the_queue_is_tuned_when_our_migrations_ran_before_apalis_had_a_table(pool: PgPool) {
    // Ours alone ran (this test's migrator): there was no apalis.jobs to tune.
    let before: bool = sqlx::query_scalar("SELECT to_regclass('apalis.jobs') IS NULL")
        .fetch_one(&pool)
        .await
        .expect("read");
    assert!(before);
    db::migrate(&pool)
        .await
        .expect("apalis' migrations, then ours again");
    assert_eq!(queue_tuned(&pool).await, (true, 1, true));
}
