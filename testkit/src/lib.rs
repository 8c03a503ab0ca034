//! What the tests and the benchmark harness share, so each is written once: the real
//! `api` and `worker` binaries as child processes, a user signed in over HTTP, database
//! fixtures written with the service's own SQL, a fake LLM's replies, and polling with a
//! deadline instead of sleeping. A dev crate: no shipped binary depends on it.
//!
//! Layout:
//! - [`process`]: start, stop, kill and read the logs of a binary; free ports;
//! - [`client`]: register, log in, and open a session over HTTP;
//! - [`fixtures`]: users, sessions and enqueued jobs straight in the database, and reads
//!   of what the worker wrote;
//! - [`llm`]: replies of an OpenAI-compatible server, for wiremock (feature `fake-llm`);
//! - [`otlp`]: an OTLP trace receiver (HTTP and gRPC) that decodes what the binaries
//!   export;
//! - [`provider`]: a fake provider with limits (capacity, outage, quota) that counts
//!   what it sees;
//! - [`wait`]: [`eventually`], a probe polled until it holds or a deadline passes;
//! - [`postgres`]: where PostgreSQL's programs are, and a test database's URL.

pub mod client;
pub mod fixtures;
#[cfg(feature = "fake-llm")]
pub mod llm;
pub mod otlp;
pub mod postgres;
pub mod process;
pub mod provider;
pub mod wait;

pub use wait::eventually;
