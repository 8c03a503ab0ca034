//! The system's tests, one binary (one link step): the real `api` and `worker` binaries,
//! driven over HTTP as a client and an operator would, and attacked (RELIABILITY.md).

mod support;

mod cancel;
mod e2e;
mod ended_counts;
mod faults;
mod intake;
mod lifecycle;
mod observability;
mod ordering;
mod outage;
mod provider_limits;
mod scaling;
mod security;
mod traces;
mod upgrades;
mod wakes;
