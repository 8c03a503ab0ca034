//! Successful generation: what is committed, and what the LLM is asked.

use crate::helpers::*;
use serde_json::Value;
use sqlx::PgPool;
use wiremock::MockServer;

#[sqlx::test(migrations = false)]
async fn an_offline_question_commits_message_counter_and_result_together(pool: PgPool) {
    migrated(&pool).await;
    let (user, session) = session(&pool, 1).await;
    let worker = RunningWorker::start(&pool, config(|_| {})).await;
    let op = enqueue(&pool, user, session, 5).await;
    let done = finished(&pool, op).await;
    let scraped = worker.scrape().await;
    worker.stop().await;

    assert_eq!(
        done.status.as_str(),
        "completed",
        "{:?}",
        done.error_message
    );
    for metric in [
        "question_jobs{state=\"done\"}",
        "operations{status=\"completed\"}",
        "question_job_duration_seconds_bucket",
        "llm_request_duration_seconds_bucket",
        "llm_requests_total{outcome=\"ok\"}",
    ] {
        assert!(
            scraped.contains(metric),
            "{metric} missing from /metrics:\n{scraped}"
        );
    }
    let result = done.result.expect("result").0;
    assert_eq!(result["question_number"], 1);
    assert_eq!(result["question_type"], "technical");
    assert_eq!(counter(&pool, session).await, 1);
    let (id, content, kind, metadata): (uuid::Uuid, String, String, Value) = sqlx::query_as(
        "SELECT id, content, question_type, metadata FROM session_messages WHERE operation_id = $1",
    )
    .bind(op)
    .fetch_one(&pool)
    .await
    .expect("the question message");
    assert_eq!(result["message_id"], id.to_string());
    assert_eq!(result["question_text"], content);
    assert_eq!(kind, "technical");
    assert_eq!(metadata["operation_id"], op.to_string());
    assert_eq!(metadata["question_number"], 1);
    assert_eq!(metadata["model"], "offline");
    assert_eq!(metadata["attempts"], 1);
    assert!(metadata["latency_ms"].is_u64());
    assert!(metadata["prompt_version"].is_string());
    assert_eq!(attempts(&pool, op).await, 1);
}

#[sqlx::test(migrations = false)]
async fn three_operations_rotate_technical_behavioral_situational(pool: PgPool) {
    migrated(&pool).await;
    let (user, session) = session(&pool, 1).await;
    let worker = RunningWorker::start(&pool, config(|_| {})).await;
    let mut kinds = Vec::new();
    for n in 1..=3 {
        let op = enqueue(&pool, user, session, 5).await;
        let done = finished(&pool, op).await;
        let result = done.result.expect("completed").0;
        assert_eq!(result["question_number"], n);
        kinds.push(result["question_type"].as_str().expect("type").to_owned());
    }
    worker.stop().await;
    assert_eq!(kinds, ["technical", "behavioral", "situational"]);
    assert_eq!(counter(&pool, session).await, 3);
}

#[sqlx::test(migrations = false)]
async fn the_prompt_carries_the_job_the_resume_and_the_earlier_questions(pool: PgPool) {
    migrated(&pool).await;
    let server = MockServer::start().await;
    mount(
        &server,
        1,
        Some(1),
        question("What is the first question?", "technical"),
    )
    .await;
    mount(
        &server,
        2,
        None,
        question("And the second one?", "behavioral"),
    )
    .await;
    let (user, session) = session(&pool, 1).await;
    let worker = RunningWorker::start(&pool, openai_config(&server, |_| {})).await;
    let first = enqueue(&pool, user, session, 5).await;
    finished(&pool, first).await;
    let second = enqueue(&pool, user, session, 5).await;
    let done = finished(&pool, second).await;
    worker.stop().await;

    assert_eq!(
        done.result.expect("completed").0["question_text"],
        "And the second one?"
    );
    let bodies = call_bodies(&server).await;
    assert_eq!(bodies.len(), 2);
    let prompt = bodies[1]["messages"].to_string();
    for needle in [
        "Staff engineer",
        "Acme",
        "ledger service",
        "payment systems",
        "What is the first question?",
        "behavioral",
    ] {
        assert!(
            prompt.contains(needle),
            "{needle:?} not in the second prompt: {prompt}"
        );
    }
    assert_eq!(bodies[1]["model"], "test-model");
    assert_eq!(bodies[1]["response_format"]["type"], "json_schema");
    // Token usage reported by the provider lands in the metadata.
    let metadata: Value =
        sqlx::query_scalar("SELECT metadata FROM session_messages WHERE operation_id = $1")
            .bind(second)
            .fetch_one(&pool)
            .await
            .expect("message");
    assert_eq!(metadata["usage"]["total_tokens"], 150);
    assert_eq!(metadata["model"], "test-model");
}

#[sqlx::test(migrations = false)]
async fn text_mode_takes_the_reply_as_the_question_of_the_requested_type(pool: PgPool) {
    migrated(&pool).await;
    let server = MockServer::start().await;
    mount(
        &server,
        1,
        None,
        completion("Describe how you would shard the ledger."),
    )
    .await;
    let (user, session) = session(&pool, 1).await;
    let worker = RunningWorker::start(
        &pool,
        openai_config(&server, |c| {
            c.llm_response_format = worker::llm::openai::ReplyFormat::Text
        }),
    )
    .await;
    let op = enqueue(&pool, user, session, 5).await;
    let done = finished(&pool, op).await;
    worker.stop().await;
    let result = done.result.expect("completed").0;
    assert_eq!(
        result["question_text"],
        "Describe how you would shard the ledger."
    );
    assert_eq!(result["question_type"], "technical");
    let bodies = call_bodies(&server).await;
    assert!(
        bodies[0].get("response_format").is_none_or(|f| f.is_null()),
        "{}",
        bodies[0]
    );
}

#[sqlx::test(migrations = false)]
async fn json_object_mode_asks_for_json_and_reads_it(pool: PgPool) {
    migrated(&pool).await;
    let server = MockServer::start().await;
    mount(&server, 1, None, question("Why PostgreSQL?", "technical")).await;
    let (user, session) = session(&pool, 1).await;
    let worker = RunningWorker::start(
        &pool,
        openai_config(&server, |c| {
            c.llm_response_format = worker::llm::openai::ReplyFormat::JsonObject
        }),
    )
    .await;
    let op = enqueue(&pool, user, session, 5).await;
    assert_eq!(finished(&pool, op).await.status.as_str(), "completed");
    worker.stop().await;
    assert_eq!(
        call_bodies(&server).await[0]["response_format"]["type"],
        "json_object"
    );
}

#[sqlx::test(migrations = false)]
async fn a_prompt_quotes_only_the_latest_earlier_questions(pool: PgPool) {
    migrated(&pool).await;
    let server = MockServer::start().await;
    for (n, text) in ["Oldest question?", "Middle question?", "Newest question?"]
        .into_iter()
        .enumerate()
    {
        mount(&server, (n + 1) as u8, Some(1), question(text, "technical")).await;
    }
    let (user, session) = session(&pool, 1).await;
    let worker = RunningWorker::start(
        &pool,
        openai_config(&server, |c| c.prompt_max_earlier_questions = 1),
    )
    .await;
    for _ in 0..3 {
        let operation = enqueue(&pool, user, session, 5).await;
        finished(&pool, operation).await;
    }
    worker.stop().await;

    let bodies = call_bodies(&server).await;
    assert_eq!(bodies.len(), 3);
    let third = bodies[2]["messages"].to_string();
    assert!(third.contains("2. Middle question?"), "{third}");
    assert!(!third.contains("Oldest question?"), "{third}");
    assert!(third.contains("question number 3"), "{third}");
    assert_eq!(counter(&pool, session).await, 3);
}

#[sqlx::test(migrations = false)]
async fn metrics_addr_moves_the_workers_metrics_off_its_ops_listener(pool: PgPool) {
    migrated(&pool).await;
    let private: std::net::SocketAddr = testkit::process::free_addr().parse().expect("addr");
    let worker =
        RunningWorker::start(&pool, config(|c| c.telemetry.metrics_addr = Some(private))).await;
    let ops = format!("http://{}", worker.metrics_addr);
    let scraped = testkit::eventually(
        "the private metrics listener",
        std::time::Duration::from_secs(30),
        || async {
            let response = reqwest::get(format!("http://{private}/metrics"))
                .await
                .ok()?;
            (response.status() == reqwest::StatusCode::OK).then_some(response)
        },
    )
    .await
    .text()
    .await
    .expect("text");
    let moved = reqwest::get(format!("{ops}/metrics"))
        .await
        .expect("request");
    let healthy = reqwest::get(format!("{ops}/healthz"))
        .await
        .expect("request");
    worker.stop().await;
    assert!(scraped.contains("question_jobs_in_flight"), "{scraped}");
    assert_eq!(moved.status(), reqwest::StatusCode::NOT_FOUND);
    assert_eq!(healthy.status(), reqwest::StatusCode::OK);
}

#[sqlx::test(migrations = false)]
async fn tokens_and_their_cost_are_counted_per_model_unusable_replies_included(pool: PgPool) {
    migrated(&pool).await;
    let server = MockServer::start().await;
    // First a reply with usage but no usable question (billed all the same), then a good one;
    // each reports 120 prompt and 30 completion tokens.
    mount(
        &server,
        1,
        Some(1),
        testkit::llm::completion("not a question"),
    )
    .await;
    mount(&server, 2, None, question("Why shard?", "technical")).await;
    let (user, session) = session(&pool, 1).await;
    // A model name of its own: the recorder is shared by the tests of this binary.
    let model = "tokens-test-model";
    let worker = RunningWorker::start(
        &pool,
        openai_config(&server, |c| {
            c.llm_model = model.into();
            c.llm_price_per_million_prompt_tokens = Some(0.5);
            c.llm_price_per_million_completion_tokens = Some(2.0);
        }),
    )
    .await;
    let op = enqueue(&pool, user, session, 5).await;
    let done = finished(&pool, op).await;
    assert_eq!(
        done.status.as_str(),
        "completed",
        "{:?}",
        done.error_message
    );
    let scraped = worker.scrape().await;
    worker.stop().await;
    let series = |labels: &str| {
        scraped
            .lines()
            .find_map(|line| line.strip_prefix(labels)?.trim().parse::<f64>().ok())
    };
    assert_eq!(
        series(&format!(
            r#"llm_tokens_total{{model="{model}",kind="prompt"}}"#
        )),
        Some(240.0),
        "{scraped}"
    );
    assert_eq!(
        series(&format!(
            r#"llm_tokens_total{{model="{model}",kind="completion"}}"#
        )),
        Some(60.0)
    );
    // 240 × 0.5 / 1e6 + 60 × 2.0 / 1e6
    let cost = series(&format!(r#"llm_cost_total{{model="{model}"}}"#)).expect("a cost");
    assert!((cost - 0.00024).abs() < 1e-12, "{cost}");
    assert!(
        scraped.contains("llm_tokens_per_question_bucket"),
        "{scraped}"
    );
}
