//! Tests only: see `tests/system/`. They start the real `api` and `worker` binaries
//! (built by `cargo test --workspace`) and talk to them over HTTP, as a client and an
//! operator would, under the faults of RELIABILITY.md.
