#!/usr/bin/env bash
# Runs the benchmarks of BENCHMARKS.md: `scripts/bench/run.sh <figure>` for one figure
# (enqueue, poll, end-to-end, end-to-end-mixed, in-flight, pickup, wake, pgbench,
# overhead) or `all`. Each figure brings up its own stack (a fresh database on the
# PostgreSQL of DATABASE_URL, started if need be, the real api and worker binaries, a
# fake LLM of set latency) and prints
# one JSON line per run and one with the median of the runs (--runs, default 3). The
# lines are also appended to .local/bench/results.jsonl.
#
# Run by hand on an otherwise idle machine: these are measurements, not tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. scripts/ensure-postgres.sh
# shellcheck source=scripts/lib/postgres.sh
. scripts/lib/postgres.sh
# The bench binary runs `pgbench` from PATH.
pg_dir=$(pg_bin_dir pgbench) || { echo "pgbench not found: install PostgreSQL's client tools (Debian: postgresql-client)" >&2; exit 1; }
PATH="$pg_dir:$PATH"
# Release code with line tables (Cargo.toml, profile.profiling), so perf can name it.
cargo build --quiet --locked --profile profiling -p api -p worker -p bench
mkdir -p .local/bench
./target/profiling/bench --bin-dir target/profiling "$@" | tee -a .local/bench/results.jsonl
