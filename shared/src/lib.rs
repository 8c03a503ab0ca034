//! What the `api` and `worker` binaries share: the domain vocabulary, configuration,
//! database access (one module of SQL per table), the job payload and telemetry.
//!
//! It holds no HTTP types and no apalis worker wiring: those belong to the binaries.
//!
//! Layout:
//! - [`domain`]: ids, statuses and question types, spelled the same in serde, SQL and the contract;
//! - [`config`]: settings read once from the environment (and `.env`);
//! - [`db`]: the pool, the migrators, and one module of SQL per table;
//! - [`jobs`]: the `question_generation` job payload and its transactional enqueue;
//! - [`metrics`]: the Prometheus recorder and the queue-depth gauges read from the database;
//! - [`telemetry`]: tracing set-up (`RUST_LOG`, `LOG_FORMAT`);
//! - [`tls`]: the process's TLS crypto provider.

pub mod config;
pub mod db;
pub mod domain;
pub mod jobs;
pub mod metrics;
pub mod telemetry;
pub mod tls;
