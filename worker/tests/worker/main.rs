//! The worker's integration tests, one binary (one link step).

mod helpers;
mod processes;

mod e2e;
mod exactly_once;
mod failures;
mod faults;
mod generation;
mod lifecycle;
mod lifecycle_faults;
mod observability;
mod outage;
