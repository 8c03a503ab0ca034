//! The worker's integration tests, one binary (one link step): the worker in this
//! process against a fake model. Tests of the real binaries are in `system-tests/`.

mod helpers;

pub mod board;
mod chaos;
mod exactly_once;
mod failures;
mod feedback;
mod generation;
mod intake;
mod lifecycle;
mod locks;
mod ordering;
mod provider_limits;
mod retention;
