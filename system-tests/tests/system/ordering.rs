//! One session's questions stay in order across a crash: two worker binaries, one
//! killed with `kill -9` in the middle of the sequence and started again.

use crate::support::worker_env;
use serde_json::Value;
use sqlx::PgPool;
use std::time::Duration;
use testkit::fixtures::*;
use testkit::llm::*;
use testkit::process::Process;

#[sqlx::test(migrations = false)]
async fn twelve_questions_of_one_session_stay_in_order_through_a_kill_9_and_a_restart(
    pool: PgPool,
) {
    migrated(&pool).await;
    let server = wiremock::MockServer::start().await;
    mount(
        &server,
        1,
        None,
        question("In order?", "technical").set_delay(Duration::from_millis(200)),
    )
    .await;
    let env = worker_env(&pool, &server, &[]);
    let (user, session) = session(&pool, 1).await;
    let mut ops = Vec::new();
    for _ in 0..12 {
        ops.push(enqueue(&pool, user, session, 5).await);
    }
    let mut first = Process::start("worker", "order-a", &env).await;
    let _second = Process::start("worker", "order-b", &env).await;
    until_operations(&pool, "completed", 3).await;
    // Whichever holds the fourth question (or neither, between two), the sequence must
    // survive losing one of them.
    first.kill();
    let _restarted = Process::start("worker", "order-a-again", &env).await;

    for (i, op) in ops.iter().enumerate() {
        let done = finished(&pool, *op).await;
        assert_eq!(done.status.as_str(), "completed", "{done:?}");
        let result: Value = done.result.expect("result").0;
        assert_eq!(
            result["question_number"],
            i + 1,
            "written in the order accepted"
        );
    }
    assert_consistent(&pool).await;
    assert_eq!(counter(&pool, session).await, 12);
}
