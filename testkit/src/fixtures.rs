//! Fixtures written with the service's own SQL (as the api writes them), and reads of
//! what the worker wrote: for tests that run a worker in-process or as a binary.

use shared::db::wake::Wake;
use shared::db::{job_postings, messages, operations, sessions, users};
use shared::domain::{MessageId, OperationId, OperationStatus, SessionId, UserId};
use shared::jobs::{self, FeedbackAnalysisJob, QuestionGenerationJob};
use sqlx::PgPool;
use std::time::Duration;

/// How long a job may take to end in a test: a generous safety net, not a measurement.
const JOB_DEADLINE: Duration = Duration::from_secs(120);

pub async fn migrated(pool: &PgPool) {
    shared::tls::install_crypto_provider();
    shared::db::migrate(pool).await.expect("migrate");
}

/// A user with a resume, a job posting and an active session.
pub async fn session(pool: &PgPool, n: usize) -> (UserId, SessionId) {
    let mut conn = pool.acquire().await.expect("conn");
    let user = users::insert(
        &mut conn,
        &format!("user{n}-{}@example.com", uuid::Uuid::new_v4()),
        "hash",
        None,
    )
    .await
    .expect("user");
    shared::db::resumes::upsert(
        &mut conn,
        user.id,
        "Eight years building payment systems in Rust and Go",
    )
    .await
    .expect("resume");
    let posting = job_postings::insert(
        &mut conn,
        user.id,
        "Staff engineer",
        Some("Acme"),
        "Own the ledger service on PostgreSQL and Kafka",
    )
    .await
    .expect("posting");
    let session = sessions::insert_for_posting(&mut conn, user.id, posting.id, None)
        .await
        .expect("session")
        .expect("owned");
    (user.id, session.id)
}

/// Inserts an operation and its job in one transaction, exactly as the api does: under
/// the session's row lock, the job held when an earlier operation of the session is
/// unfinished; then wakes the workers.
pub async fn enqueue(
    pool: &PgPool,
    user: UserId,
    session: SessionId,
    max_attempts: u32,
) -> OperationId {
    let (id, wake) = enqueue_unwoken(pool, user, session, max_attempts).await;
    wake.send(&mut pool.acquire().await.expect("conn")).await;
    id
}

/// [`enqueue`] without its wake: the caller sends it, or tests that the commit sent none.
pub async fn enqueue_unwoken(
    pool: &PgPool,
    user: UserId,
    session: SessionId,
    max_attempts: u32,
) -> (OperationId, Wake) {
    let mut tx = pool.begin().await.expect("tx");
    sessions::lock_owned(&mut tx, session, user)
        .await
        .expect("lock")
        .expect("the user's session");
    let unfinished = operations::count_unfinished(&mut tx, session)
        .await
        .expect("count");
    let id = OperationId::new();
    operations::insert_question_generation(&mut tx, id, user, session, None)
        .await
        .expect("insert")
        .expect("inserted");
    let wake = jobs::enqueue(
        &mut tx,
        &QuestionGenerationJob::new(id, session),
        max_attempts,
        unfinished.questions > 0,
        &jobs::Origin::default(),
    )
    .await
    .expect("push");
    tx.commit().await.expect("commit");
    (id, wake)
}

/// A question message on `session`, numbered and counted as the worker's commit does,
/// without a model: for tests of what follows a question.
pub async fn asked(pool: &PgPool, session: SessionId, text: &str) -> MessageId {
    sqlx::query_scalar(
        "WITH counted AS (
             UPDATE interview_sessions SET current_question_number = current_question_number + 1
             WHERE id = $1 RETURNING current_question_number
         )
         INSERT INTO session_messages (id, session_id, message_type, content, question_type, metadata)
         SELECT $2, $1, 'question', $3, 'technical',
                jsonb_build_object('question_number', current_question_number)
         FROM counted
         RETURNING id",
    )
    .bind(session)
    .bind(MessageId::new())
    .bind(text)
    .fetch_one(pool)
    .await
    .expect("a question message")
}

/// Posts an answer to `question` of `session` and enqueues its feedback, as the api
/// does; returns the answer's id and the operation's.
pub async fn enqueue_feedback(
    pool: &PgPool,
    user: UserId,
    session: SessionId,
    question: MessageId,
    answer: &str,
    max_attempts: u32,
) -> (MessageId, OperationId) {
    let mut tx = pool.begin().await.expect("tx");
    sessions::lock_owned(&mut tx, session, user)
        .await
        .expect("lock")
        .expect("the user's session");
    let answer = messages::insert_answer(&mut tx, session, answer, Some(question))
        .await
        .expect("answer");
    let id = OperationId::new();
    operations::insert(
        &mut tx,
        id,
        user,
        operations::Target::Feedback(session, answer.id),
        None,
    )
    .await
    .expect("insert")
    .expect("inserted");
    let wake = jobs::enqueue(
        &mut tx,
        &FeedbackAnalysisJob::new(id, session, answer.id),
        max_attempts,
        false,
        &jobs::Origin::default(),
    )
    .await
    .expect("push");
    tx.commit().await.expect("commit");
    wake.send(&mut pool.acquire().await.expect("conn")).await;
    (answer.id, id)
}

/// A second delivery of `job`: the same payload in another queue row of its type (no
/// id or idempotency key, so apalis' unique index lets it in), as a redelivery after a
/// lost acknowledgement would be.
pub async fn deliver_again<J: jobs::Job>(pool: &PgPool, job: &J, max_attempts: usize) {
    let bytes = serde_json::to_vec(job).expect("json");
    let task = apalis_core::task::builder::TaskBuilder::new(bytes)
        .max_attempts(max_attempts)
        .build();
    let mut conn = pool.acquire().await.expect("conn");
    apalis_postgres::queries::push_tasks(&mut *conn, J::TYPE.as_str(), vec![task])
        .await
        .expect("push");
}

/// Polls until the operation is `completed` or `failed`, with a generous deadline.
pub async fn finished(pool: &PgPool, id: OperationId) -> operations::Operation {
    until(pool, id, |s| s.is_terminal()).await
}

/// Polls until the operation's status satisfies `wanted`.
pub async fn until(
    pool: &PgPool,
    id: OperationId,
    wanted: impl Fn(OperationStatus) -> bool,
) -> operations::Operation {
    let wanted = &wanted;
    crate::eventually(format!("operation {id}"), JOB_DEADLINE, || async move {
        let mut conn = pool.acquire().await.expect("conn");
        let op = operations::find(&mut conn, id)
            .await
            .expect("find")
            .expect("exists");
        wanted(op.status).then_some(op)
    })
    .await
}

pub async fn scalar(pool: &PgPool, sql: &'static str, id: uuid::Uuid) -> i64 {
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(pool)
        .await
        .expect("scalar")
}

pub async fn question_count(pool: &PgPool, session: SessionId) -> i64 {
    scalar(
        pool,
        "SELECT count(*) FROM session_messages WHERE session_id = $1 AND message_type = 'question'",
        session.0,
    )
    .await
}

pub async fn counter(pool: &PgPool, session: SessionId) -> i64 {
    scalar(
        pool,
        "SELECT current_question_number::bigint FROM interview_sessions WHERE id = $1",
        session.0,
    )
    .await
}

pub async fn attempts(pool: &PgPool, op: OperationId) -> i64 {
    scalar(
        pool,
        "SELECT attempts::bigint FROM operations WHERE id = $1",
        op.0,
    )
    .await
}

/// Polls until no job of the queue is waiting or running, and returns their statuses.
pub async fn settled_jobs(pool: &PgPool) -> Vec<String> {
    crate::eventually("every job to settle", JOB_DEADLINE, || async {
        let statuses: Vec<String> =
            sqlx::query_scalar("SELECT status FROM apalis.jobs ORDER BY id")
                .fetch_all(pool)
                .await
                .expect("jobs");
        statuses
            .iter()
            .all(|s| matches!(s.as_str(), "Done" | "Killed" | "Failed"))
            .then_some(statuses)
    })
    .await
}

/// Every completed operation is consistent (its message exists, is of its type, and
/// matches its result), every failed one left no message, each answer has at most one
/// feedback, and each session's counter equals its questions, numbered 1..n with no gap
/// or repeat. An operation whose session was deleted has no message to compare (they
/// went with the session); it must have ended all the same.
pub async fn assert_consistent(pool: &PgPool) {
    let inconsistent: Vec<(OperationId, String, String)> = sqlx::query_as(
        "SELECT o.id, o.operation_type, o.status FROM operations o
         LEFT JOIN session_messages m ON m.operation_id = o.id
         WHERE (o.status = 'completed' AND o.operation_type = 'question_generation'
                AND o.session_id IS NOT NULL
                AND (m.id IS NULL OR m.message_type <> 'question'
                     OR o.result->>'message_id' <> m.id::text
                     OR o.result->>'question_text' <> m.content))
            OR (o.status = 'completed' AND o.operation_type = 'feedback_analysis'
                AND o.session_id IS NOT NULL
                AND (m.id IS NULL OR m.message_type <> 'feedback'
                     OR o.result->>'message_id' <> m.id::text
                     OR o.result->>'summary' <> m.content
                     OR o.result->>'answer_id' <> m.metadata->>'answer_id'
                     OR o.result->>'answer_id' <> o.answer_id::text
                     OR (o.result->>'score')::int NOT BETWEEN 1 AND 5))
            OR (o.status = 'failed' AND m.id IS NOT NULL)
            OR o.status NOT IN ('completed', 'failed')",
    )
    .fetch_all(pool)
    .await
    .expect("consistency");
    assert!(
        inconsistent.is_empty(),
        "{} operations whose state and messages disagree, among them: {:?}",
        inconsistent.len(),
        &inconsistent[..inconsistent.len().min(10)]
    );
    let twice_reviewed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT metadata->>'answer_id' FROM session_messages
                               WHERE message_type = 'feedback'
                               GROUP BY 1 HAVING count(*) > 1) AS twice",
    )
    .fetch_one(pool)
    .await
    .expect("feedback per answer");
    assert_eq!(twice_reviewed, 0, "answers with more than one feedback");
    let bad_sessions: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM interview_sessions s
         WHERE s.current_question_number <> (SELECT count(*) FROM session_messages m
                                             WHERE m.session_id = s.id AND m.message_type = 'question')
            OR ARRAY(SELECT (metadata->>'question_number')::int FROM session_messages m
                     WHERE m.session_id = s.id AND m.message_type = 'question' ORDER BY 1)
               <> ARRAY(SELECT generate_series(1, s.current_question_number))",
    )
    .fetch_one(pool)
    .await
    .expect("sessions");
    assert_eq!(
        bad_sessions, 0,
        "sessions whose counter and questions disagree"
    );
}

/// `n` users, each with an active session (see [`session`]).
pub async fn sessions(pool: &PgPool, n: usize) -> Vec<(UserId, SessionId)> {
    let mut fixtures = Vec::new();
    for i in 0..n {
        fixtures.push(session(pool, i).await);
    }
    fixtures
}

/// `per_session` operations on each of `fixtures`, enqueued as the api does, round
/// robin (so a prefix of the list spreads over every session).
pub async fn enqueue_on(
    pool: &PgPool,
    fixtures: &[(UserId, SessionId)],
    per_session: usize,
) -> Vec<OperationId> {
    let mut ops = Vec::new();
    for _ in 0..per_session {
        for (user, session) in fixtures {
            ops.push(enqueue(pool, *user, *session, 5).await);
        }
    }
    ops
}

/// One operation on each of `n` fresh sessions: nothing waits behind a session's
/// earlier question, so every one can run at once.
pub async fn one_each(pool: &PgPool, n: usize) -> Vec<OperationId> {
    enqueue_on(pool, &sessions(pool, n).await, 1).await
}

/// Waits for each of `ops` to finish, and asserts that it completed.
pub async fn all_completed(pool: &PgPool, ops: &[OperationId]) {
    for op in ops {
        let done = finished(pool, *op).await;
        assert_eq!(
            done.status.as_str(),
            "completed",
            "{op}: {:?}",
            done.error_message
        );
    }
}

/// How many operations are in `status` now.
pub async fn operations_in(pool: &PgPool, status: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM operations WHERE status = $1")
        .bind(status)
        .fetch_one(pool)
        .await
        .expect("count operations")
}

/// Waits until at least `n` operations are in `status`.
pub async fn until_operations(pool: &PgPool, status: &str, n: i64) {
    crate::eventually(format!("{n} operations {status}"), JOB_DEADLINE, || async {
        (operations_in(pool, status).await >= n).then_some(())
    })
    .await
}
