//! Tracing set-up, in one place for both binaries: log lines on stdout, and, when an
//! OTLP endpoint is configured, the same spans exported as OpenTelemetry traces.
//!
//! One trace follows an operation across processes: the api's request span (which
//! continues an incoming W3C `traceparent`), the enqueue, then in the worker each run
//! of the job, its model calls and its commit. The context crosses the queue in the
//! job's own metadata (apalis' `TracingContext`, written by [`crate::jobs::enqueue`]);
//! docs/DESIGN.md, "Observability", draws the tree.
//!
//! Without an endpoint no OpenTelemetry layer is installed: the spans are the ones the
//! log lines already carry, and nothing is recorded, sampled or sent.

use crate::config::{LogFormat, OtlpProtocol, TelemetryConfig};
use opentelemetry::propagation::Extractor;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState, TracerProvider as _,
};
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// What [`init`] started: the trace exporter, if any, to flush at exit.
#[derive(Debug, Default)]
#[must_use = "call `shutdown` at exit, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered and stops the exporter. Call last, after the
    /// service has stopped (spans ended later are dropped), and off the runtime's
    /// threads (`spawn_blocking`): it blocks until the export is done.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(err) = provider.shutdown()
        {
            eprintln!("warning: flushing the last traces failed: {err}");
        }
    }
}

/// Installs the global subscriber: `RUST_LOG` filtering, text or JSON lines on stdout,
/// and OTLP export when `OTEL_EXPORTER_OTLP_ENDPOINT` (or its traces-only variant) is
/// set, under `OTEL_SERVICE_NAME` or `service_name`.
///
/// Call once, first thing in `main`, inside the tokio runtime (the grpc exporter's
/// channel lives on it). JSON lines carry the current span and its parents, so
/// `operation_id`, `session_id`, `job_id` and `request_id` follow every line of a job.
pub fn init(config: &TelemetryConfig, service_name: &str) -> Telemetry {
    let filter = EnvFilter::try_new(&config.rust_log).unwrap_or_else(|err| {
        eprintln!(
            "warning: RUST_LOG={:?} is not a valid filter ({err}); using info",
            config.rust_log
        );
        EnvFilter::new("info")
    });
    // The W3C propagator reads an incoming `traceparent` (the api) and a job's stored
    // context (apalis' `ContextualTaskSpan`, in the worker).
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = match traces_endpoint(config) {
        Some(endpoint) => match tracer_provider(config, &endpoint, service_name) {
            Ok(provider) => Some(provider),
            Err(err) => {
                eprintln!("warning: traces are not exported: {err}");
                None
            }
        },
        None => None,
    };
    // Its own filter, not RUST_LOG's: quieter logs (`RUST_LOG=warn`) keep the traces,
    // whose spans are all at `info`.
    let otel = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("interviewer"))
            .with_threads(false)
            .with_filter(LevelFilter::INFO)
    });
    let logs = match config.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer().boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
    };
    // `try_init` fails only when a subscriber is already set (tests): keep that one.
    let _ = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(otel)
        .try_init();
    EXPORTING.store(provider.is_some(), Ordering::Relaxed);
    Telemetry { provider }
}

/// Whether spans are exported: the trace context is read and written only then.
static EXPORTING: AtomicBool = AtomicBool::new(false);

fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Where the traces go, as the standard resolves it: the traces-only endpoint as it
/// is; else the general one, with `/v1/traces` added for http/protobuf.
fn traces_endpoint(config: &TelemetryConfig) -> Option<String> {
    let non_empty = |value: &Option<String>| value.clone().filter(|v| !v.trim().is_empty());
    if let Some(endpoint) = non_empty(&config.otel_exporter_otlp_traces_endpoint) {
        return Some(endpoint);
    }
    let base = non_empty(&config.otel_exporter_otlp_endpoint)?;
    Some(match config.otel_exporter_otlp_protocol {
        OtlpProtocol::HttpProtobuf => format!("{}/v1/traces", base.trim_end_matches('/')),
        OtlpProtocol::Grpc => base,
    })
}

fn tracer_provider(
    config: &TelemetryConfig,
    endpoint: &str,
    service_name: &str,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    // An https endpoint needs the process's TLS provider (reqwest and tonic are built
    // without one of their own).
    crate::tls::install_crypto_provider();
    let exporter = match config.otel_exporter_otlp_protocol {
        OtlpProtocol::HttpProtobuf => SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint)
            .build()?,
        OtlpProtocol::Grpc => SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()?,
    };
    let name = config
        .otel_service_name
        .clone()
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| service_name.to_owned());
    // `Resource::builder` also reads OTEL_RESOURCE_ATTRIBUTES; the sampler comes from
    // OTEL_TRACES_SAMPLER(_ARG) and the batching from OTEL_BSP_*, read by the SDK.
    let resource = Resource::builder()
        .with_service_name(name)
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            crate::build::VERSION,
        ))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Makes the caller of `headers` (a W3C `traceparent`, with its `tracestate`) the parent
/// of `span`, when it sent a valid one and traces are exported; otherwise the span
/// starts a trace of its own.
pub fn continue_trace(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    if !exporting() || !headers.contains_key("traceparent") {
        return;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&Headers(headers))
    });
    if parent.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer is installed: nothing to continue.
        let _ = span.set_parent(parent);
    }
}

/// The W3C trace context of the current span, when traces are exported and it is
/// sampled: `(trace id, span id, flags, tracestate)` as the `traceparent` spells them.
pub fn current_trace_context() -> Option<(String, String, u8, String)> {
    if !exporting() {
        return None;
    }
    let context = tracing::Span::current().context();
    let span = context.span();
    let span = span.span_context();
    span.is_valid().then(|| {
        (
            span.trace_id().to_string(),
            span.span_id().to_string(),
            span.trace_flags().to_u8(),
            span.trace_state().header(),
        )
    })
}

/// Makes the remote span `span_id` of trace `trace_id` (hex, as a `traceparent` spells
/// them) the parent of `span`; nothing when they do not parse or traces are off.
pub fn continue_remote(
    span: &tracing::Span,
    trace_id: &str,
    span_id: &str,
    flags: u8,
    state: Option<&str>,
) {
    if !exporting() {
        return;
    }
    let (Ok(trace_id), Ok(span_id)) = (TraceId::from_hex(trace_id), SpanId::from_hex(span_id))
    else {
        return;
    };
    let state = state
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    let parent = SpanContext::new(trace_id, span_id, TraceFlags::new(flags), true, state);
    if parent.is_valid() {
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent));
    }
}

/// A request's headers, as the propagator reads them.
struct Headers<'a>(&'a axum::http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|name| name.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(
        general: Option<&str>,
        traces: Option<&str>,
        protocol: OtlpProtocol,
    ) -> TelemetryConfig {
        TelemetryConfig {
            otel_exporter_otlp_endpoint: general.map(str::to_owned),
            otel_exporter_otlp_traces_endpoint: traces.map(str::to_owned),
            otel_exporter_otlp_protocol: protocol,
            ..TelemetryConfig::for_tests()
        }
    }

    #[test]
    fn the_endpoint_is_resolved_as_the_standard_says() {
        use OtlpProtocol::{Grpc, HttpProtobuf};
        assert_eq!(traces_endpoint(&config(None, None, HttpProtobuf)), None);
        assert_eq!(
            traces_endpoint(&config(Some(" "), None, HttpProtobuf)),
            None
        );
        assert_eq!(
            traces_endpoint(&config(Some("http://c:4318/"), None, HttpProtobuf)).as_deref(),
            Some("http://c:4318/v1/traces")
        );
        assert_eq!(
            traces_endpoint(&config(Some("http://c:4317"), None, Grpc)).as_deref(),
            Some("http://c:4317")
        );
        assert_eq!(
            traces_endpoint(&config(
                Some("http://c:4318"),
                Some("http://t/x"),
                HttpProtobuf
            ))
            .as_deref(),
            Some("http://t/x")
        );
    }
}
