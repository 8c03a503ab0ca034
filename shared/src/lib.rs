//! What the `api` and `worker` binaries share: the domain vocabulary, configuration,
//! database access (one module of SQL per table), the job payload, telemetry, and what
//! both do at start and stop.
//!
//! It holds no routes, handlers or apalis worker wiring: those belong to the binaries.
//! [`serve`] is the one piece of HTTP here: the connection loop under every listener of
//! both binaries, which is about sockets (timeouts, bounds), not about either's routes.
//! The rows that SQL reads into double as the api's response bodies (they derive
//! `Serialize` and `ToSchema`); docs/DESIGN.md, "Response rows are the database rows",
//! says why.
//!
//! Layout:
//! - [`build`]: this build's version and git commit;
//! - [`domain`]: ids, statuses and question types, spelled the same in serde, SQL and the contract;
//! - [`config`]: settings read once from the environment (and `.env`);
//! - [`db`]: the pool and the migrators ([`db::connect`] at start), and one module of SQL per table;
//! - [`jobs`]: the `question_generation` job payload and its transactional enqueue;
//! - [`metrics`]: the Prometheus recorder, the rendering of a scrape, and the queue-depth
//!   gauges read from the database;
//! - [`per_key`]: bounds on what one client holds at once (connections, long polls);
//! - [`serve`]: serving a router with a header-read timeout and bounds on connections;
//! - [`shutdown`]: the production shutdown signal (SIGTERM or Ctrl-C);
//! - [`telemetry`]: tracing set-up (`RUST_LOG`, `LOG_FORMAT`);
//! - [`tls`]: the process's TLS crypto provider.

pub mod build;
pub mod config;
pub mod db;
pub mod domain;
pub mod jobs;
pub mod metrics;
pub mod per_key;
pub mod serve;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
