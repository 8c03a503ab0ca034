//! The worker's integration tests, one binary (one link step).

mod helpers;

mod exactly_once;
mod failures;
mod generation;
