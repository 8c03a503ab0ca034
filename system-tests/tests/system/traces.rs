//! Distributed tracing through the real binaries, into a real OTLP receiver
//! (`testkit::otlp`, decoding with OpenTelemetry's protobuf definitions): the api
//! exports over http/protobuf and the workers over grpc, so both transports are used.
//! One question is one trace, from the client's own span to the commit, through a
//! retried attempt and through a takeover after `kill -9`.

use crate::support::worker_env;
use shared::domain::OperationId;
use sqlx::PgPool;
use std::time::Duration;
use testkit::fixtures::*;
use testkit::llm::*;
use testkit::otlp::{OtlpReceiver, ReceivedSpan, outline};
use testkit::postgres::database_url;
use testkit::process::Process;

/// The client's own trace and span, as its `traceparent` sends them.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";
const REQUEST_ID: &str = "trace-test-request-1";
const DEADLINE: Duration = Duration::from_secs(90);

/// The exporter's settings: `endpoint` over `protocol`, batches sent every 100 ms.
fn otel(endpoint: &str, protocol: &str) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_owned()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ]
}

async fn traced_api(pool: &PgPool, receiver: &OtlpReceiver) -> Process {
    let mut env = vec![
        ("DATABASE_URL", database_url(pool)),
        (
            "JWT_SECRET",
            "trace-test-signing-key-of-32-bytes".to_owned(),
        ),
    ];
    env.extend(otel(&receiver.http_endpoint, "http/protobuf"));
    Process::start("api", "traced", &env).await
}

/// Signs up over HTTP and asks for a question with the client's `traceparent` and
/// request id; the operation's id.
async fn ask_traced(api: &Process) -> OperationId {
    let (token, session) =
        testkit::client::signed_in_session(&api.addr, "traced@example.com").await;
    let response = reqwest::Client::new()
        .post(format!(
            "http://{}/api/v1/sessions/{session}/generate-question",
            api.addr
        ))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"))
        .header("x-request-id", REQUEST_ID)
        .send()
        .await
        .expect("generate-question");
    assert_eq!(response.status(), 202);
    let body: serde_json::Value = response.json().await.expect("json");
    OperationId(body["id"].as_str().expect("id").parse().expect("uuid"))
}

/// The one span of the trace named `name`.
fn one<'a>(spans: &'a [ReceivedSpan], name: &str) -> &'a ReceivedSpan {
    let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one {name:?} span in:\n{}", outline(spans));
    found[0]
}

fn children<'a>(
    spans: &'a [ReceivedSpan],
    parent: &ReceivedSpan,
    name: &str,
) -> Vec<&'a ReceivedSpan> {
    let mut found: Vec<_> = spans
        .iter()
        .filter(|s| s.parent_span_id == parent.span_id && s.name == name)
        .collect();
    found.sort_by_key(|s| s.start_unix_nano);
    found
}

/// The spans of the client's trace, once one of them is the worker's commit.
async fn the_trace(receiver: &OtlpReceiver) -> Vec<ReceivedSpan> {
    let spans = receiver
        .wait_for(
            "the worker's commit span in the client's trace",
            DEADLINE,
            |spans| {
                spans
                    .iter()
                    .any(|s| s.trace_id == CLIENT_TRACE && s.name == "commit")
            },
        )
        .await;
    spans
        .into_iter()
        .filter(|s| s.trace_id == CLIENT_TRACE)
        .collect()
}

/// The api's half, the same in every trace here: the request span continues the
/// client's, and the enqueue is its child; the enqueue span, under which the job runs.
fn api_half(spans: &[ReceivedSpan]) -> ReceivedSpan {
    let request = one(spans, "POST /api/v1/sessions/{id}/generate-question");
    assert_eq!(request.service, "api");
    assert_eq!(request.parent_span_id, CLIENT_SPAN, "{}", outline(spans));
    assert_eq!(request.attr("request_id"), Some(REQUEST_ID));
    assert_eq!(request.attr("http.response.status_code"), Some("202"));
    let enqueue = one(spans, "enqueue");
    assert_eq!(
        enqueue.parent_span_id,
        request.span_id,
        "{}",
        outline(spans)
    );
    assert_eq!(enqueue.attr("job_type"), Some("question_generation"));
    enqueue.clone()
}

#[sqlx::test(migrations = false)]
async fn one_question_is_one_trace_from_the_clients_span_to_the_commit_through_a_retry(
    pool: PgPool,
) {
    migrated(&pool).await;
    let receiver = OtlpReceiver::start().await;
    let model = wiremock::MockServer::start().await;
    // The first call fails with a 500; the retry gets the question.
    mount(&model, 1, Some(1), error(500)).await;
    mount(
        &model,
        2,
        None,
        question("What does a trace show?", "technical"),
    )
    .await;
    let api = traced_api(&pool, &receiver).await;
    let mut env = worker_env(&pool, &model, &[("LLM_MODEL", "test-model")]);
    env.extend(otel(&receiver.grpc_endpoint, "grpc"));
    let worker = Process::start("worker", "traced", &env).await;

    let op = ask_traced(&api).await;
    assert_eq!(finished(&pool, op).await.status.as_str(), "completed");
    let spans = the_trace(&receiver).await;
    let enqueue = api_half(&spans);

    // Two runs of the job under the enqueue, in order, each carrying the request id.
    let runs = children(&spans, &enqueue, "question_generation");
    assert_eq!(
        runs.len(),
        2,
        "two runs under the enqueue:\n{}",
        outline(&spans)
    );
    for (n, run) in runs.iter().enumerate() {
        assert_eq!(run.service, "worker");
        assert_eq!(
            run.attr("delivery_attempt"),
            Some((n + 1).to_string().as_str())
        );
        assert_eq!(run.attr("attempt"), Some((n + 1).to_string().as_str()));
        assert_eq!(run.attr("request_id"), Some(REQUEST_ID));
        assert_eq!(run.attr("operation_id"), Some(op.to_string().as_str()));
    }
    // The first: its model call got a 500, and the run ended for a retry.
    assert_eq!(runs[0].attr("outcome"), Some("retry"));
    assert!(runs[0].is_error);
    let failed = children(&spans, runs[0], "chat test-model");
    assert_eq!(failed.len(), 1, "{}", outline(&spans));
    assert_eq!(failed[0].attr("http.response.status_code"), Some("500"));
    assert_eq!(failed[0].attr("outcome"), Some("server_error"));
    assert!(failed[0].is_error);
    assert!(children(&spans, runs[0], "commit").is_empty());
    // The second: the model answered, with its tokens, and the commit followed.
    assert_eq!(runs[1].attr("outcome"), Some("done"));
    let call = children(&spans, runs[1], "chat test-model");
    assert_eq!(call.len(), 1, "{}", outline(&spans));
    assert_eq!(call[0].attr("outcome"), Some("ok"));
    assert_eq!(call[0].attr("gen_ai.request.model"), Some("test-model"));
    assert_eq!(call[0].attr("gen_ai.usage.input_tokens"), Some("120"));
    assert_eq!(call[0].attr("gen_ai.usage.output_tokens"), Some("30"));
    assert_eq!(
        children(&spans, runs[1], "commit").len(),
        1,
        "{}",
        outline(&spans)
    );

    // The request id is in the worker's own log lines too.
    let logs = worker.logs();
    assert!(
        logs.lines()
            .any(|l| l.contains(REQUEST_ID) && l.contains("attempt failed")),
        "the worker's log names the request:\n{logs}"
    );
}

#[sqlx::test(migrations = false)]
async fn a_job_taken_over_after_kill_9_goes_on_in_the_same_trace(pool: PgPool) {
    migrated(&pool).await;
    let receiver = OtlpReceiver::start().await;
    let model = wiremock::MockServer::start().await;
    // The first call hangs (its worker is killed meanwhile); the next one answers.
    mount(
        &model,
        1,
        Some(1),
        question("Never delivered", "technical").set_delay(Duration::from_secs(600)),
    )
    .await;
    mount(
        &model,
        2,
        None,
        question("After the takeover?", "technical"),
    )
    .await;
    let api = traced_api(&pool, &receiver).await;
    let mut env = worker_env(&pool, &model, &[("LLM_MODEL", "test-model")]);
    env.extend(otel(&receiver.grpc_endpoint, "grpc"));
    let mut first = Process::start("worker", "traced-killed", &env).await;

    let op = ask_traced(&api).await;
    testkit::eventually("the first worker's model call", DEADLINE, || async {
        (calls(&model).await >= 1).then_some(())
    })
    .await;
    first.kill();
    let _second = Process::start("worker", "traced-takeover", &env).await;
    assert_eq!(finished(&pool, op).await.status.as_str(), "completed");

    let spans = the_trace(&receiver).await;
    let enqueue = api_half(&spans);
    // The killed run's spans never ended, so they were never sent; the run that took
    // the job over is the enqueue's child too, the operation's second attempt.
    let runs = children(&spans, &enqueue, "question_generation");
    assert_eq!(runs.len(), 1, "{}", outline(&spans));
    let run = runs[0];
    assert_eq!(run.attr("attempt"), Some("2"), "{}", outline(&spans));
    assert_eq!(run.attr("outcome"), Some("done"));
    assert_eq!(run.attr("request_id"), Some(REQUEST_ID));
    let delivery: u32 = run
        .attr("delivery_attempt")
        .expect("delivery")
        .parse()
        .expect("number");
    assert!(
        delivery >= 2,
        "the takeover counts as a delivery:\n{}",
        outline(&spans)
    );
    assert_eq!(
        children(&spans, run, "commit").len(),
        1,
        "{}",
        outline(&spans)
    );
    assert_consistent(&pool).await;
}
