//! An OTLP trace receiver for tests: what a collector (Jaeger, Tempo, the OpenTelemetry
//! Collector) would receive from the binaries, over both standard transports — HTTP
//! (`POST /v1/traces`, `application/x-protobuf`) and gRPC (`TraceService/Export`) —
//! decoded with OpenTelemetry's own protobuf definitions (`opentelemetry-proto`), so a
//! test asserts on the spans exactly as they left the process.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode as SpanStatus;
use prost::Message as _;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One span as received: ids in hex, as a `traceparent` spells them.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// The sending process's `service.name`.
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a trace's root.
    pub parent_span_id: String,
    /// Every attribute, its value as text.
    pub attributes: BTreeMap<String, String>,
    /// The span's status is `ERROR`.
    pub is_error: bool,
    pub start_unix_nano: u64,
}

impl ReceivedSpan {
    /// The attribute `key`, as text.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// The spans received so far, by either transport.
#[derive(Debug, Clone, Default)]
pub struct Received(Arc<Mutex<Vec<ReceivedSpan>>>);

impl Received {
    fn record(&self, request: ExportTraceServiceRequest) {
        let mut spans = Vec::new();
        for resource in request.resource_spans {
            let service = resource
                .resource
                .as_ref()
                .and_then(|r| {
                    r.attributes
                        .iter()
                        .find(|kv| kv.key == "service.name")
                        .map(|kv| text(kv.value.as_ref()))
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    spans.push(ReceivedSpan {
                        service: service.clone(),
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        attributes: attributes(&span.attributes),
                        is_error: span
                            .status
                            .is_some_and(|s| s.code == SpanStatus::Error as i32),
                        start_unix_nano: span.start_time_unix_nano,
                    });
                }
            }
        }
        self.0.lock().expect("not poisoned").extend(spans);
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.0.lock().expect("not poisoned").clone()
    }
}

/// A receiver listening on two free ports of 127.0.0.1, until it is dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    /// For `OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf` (`/v1/traces` is added).
    pub http_endpoint: String,
    /// For `OTEL_EXPORTER_OTLP_PROTOCOL=grpc`.
    pub grpc_endpoint: String,
    received: Received,
    servers: Vec<tokio::task::JoinHandle<()>>,
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let received = Received::default();
        let http = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port for OTLP/HTTP");
        let http_endpoint = format!("http://{}", http.local_addr().expect("bound"));
        let router = axum::Router::new()
            .route("/v1/traces", axum::routing::post(export_http))
            .with_state(received.clone());
        let http_server = tokio::spawn(async move {
            let _ = axum::serve(http, router).await;
        });

        let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port for OTLP/gRPC");
        let grpc_endpoint = format!("http://{}", grpc.local_addr().expect("bound"));
        let service = TraceServiceServer::new(Grpc(received.clone()));
        let grpc_server = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(grpc))
                .await;
        });
        Self {
            http_endpoint,
            grpc_endpoint,
            received,
            servers: vec![http_server, grpc_server],
        }
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.received.spans()
    }

    /// Waits (up to `deadline`) until the spans received make `done` true, and returns
    /// them; panics with `what` and every span received when they never do.
    pub async fn wait_for(
        &self,
        what: &str,
        deadline: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let give_up = tokio::time::Instant::now() + deadline;
        loop {
            let spans = self.spans();
            if done(&spans) {
                return spans;
            }
            if tokio::time::Instant::now() >= give_up {
                panic!(
                    "{what}: not within {deadline:?}; received:\n{}",
                    outline(&spans)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        for server in &self.servers {
            server.abort();
        }
    }
}

/// The spans as an indented tree per trace, for a failing test's message.
pub fn outline(spans: &[ReceivedSpan]) -> String {
    fn walk(spans: &[ReceivedSpan], parent: &str, depth: usize, out: &mut String) {
        let mut children: Vec<&ReceivedSpan> = spans
            .iter()
            .filter(|s| s.parent_span_id == parent)
            .collect();
        children.sort_by_key(|s| s.start_unix_nano);
        for span in children {
            out.push_str(&format!(
                "{}{} [{}] {}{}\n",
                "  ".repeat(depth),
                span.name,
                span.service,
                span.span_id,
                if span.is_error { " ERROR" } else { "" }
            ));
            walk(spans, &span.span_id, depth + 1, out);
        }
    }
    let mut out = String::new();
    let known: std::collections::HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    // Roots, and spans whose parent was never received (a killed process's).
    let mut roots: Vec<&str> = spans
        .iter()
        .filter(|s| !known.contains(s.parent_span_id.as_str()))
        .map(|s| s.parent_span_id.as_str())
        .collect();
    roots.sort();
    roots.dedup();
    for root in roots {
        if !root.is_empty() {
            out.push_str(&format!("(parent {root}, not received)\n"));
        }
        walk(spans, root, usize::from(!root.is_empty()), &mut out);
    }
    out
}

async fn export_http(State(received): State<Received>, body: Bytes) -> impl IntoResponse {
    match ExportTraceServiceRequest::decode(body) {
        Ok(request) => {
            received.record(request);
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
        }
        Err(_) => (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "text/plain")],
            b"not an ExportTraceServiceRequest".to_vec(),
        ),
    }
}

#[derive(Debug)]
struct Grpc(Received);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.record(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attributes(pairs: &[KeyValue]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}
