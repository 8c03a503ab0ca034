//! Tracing set-up, in one place for both binaries.

use crate::config::{LogFormat, TelemetryConfig};
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber: `RUST_LOG` filtering, text or JSON lines on stdout.
///
/// Call once, first thing in `main`. JSON lines carry the current span and its parents,
/// so `operation_id`, `session_id` and `job_id` follow every line of a job.
pub fn init(config: &TelemetryConfig) {
    let filter = EnvFilter::try_new(&config.rust_log).unwrap_or_else(|err| {
        eprintln!(
            "warning: RUST_LOG={:?} is not a valid filter ({err}); using info",
            config.rust_log
        );
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // `try_init` fails only when a subscriber is already set (tests): keep that one.
    let _ = match config.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
}
