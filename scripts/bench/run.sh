#!/usr/bin/env bash
# Runs the benchmarks of BENCHMARKS.md: `scripts/bench/run.sh <figure>` for one figure
# (enqueue, poll, end-to-end, end-to-end-mixed, in-flight, pickup, wake, pgbench,
# overhead) or `all`; `soak [--minutes M] [--rate R] [--seed-days D] [--seed-rate S]`
# for the soak (on a PostgreSQL of its own, scripts/bench/soak-postgres.sh; its CSV,
# verdicts and plots go to .local/bench/soak-<time>/), and `seed` for a database with
# the soak's history; `seed [--days D] [--rate R] --keep-as NAME` keeps it as NAME, and
# `--template NAME <figure>` (e.g. end-to-end, pgbench) runs the figure on copies of
# it instead of empty databases (both on the soak's PostgreSQL); `--ratio-only` keeps
# end-to-end and pgbench to the runs of figure 3's ratio. Each figure brings up
# its own stack (a fresh database on the PostgreSQL of DATABASE_URL, started if need be,
# the real api and worker binaries, a fake LLM of set latency) and prints
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
soak=""
soak_postgres=""
for arg in "$@"; do
    if [[ $arg == soak || $arg == seed ]]; then soak=$arg soak_postgres=1; fi
    # The seeded templates live on the soak's PostgreSQL.
    if [[ $arg == --template || $arg == --template=* ]]; then soak_postgres=1; fi
done
if [[ -n $soak_postgres ]]; then
    # shellcheck source=scripts/bench/soak-postgres.sh
    . scripts/bench/soak-postgres.sh
fi
cargo build --quiet --locked --profile profiling -p api -p worker -p bench
mkdir -p .local/bench
: >.local/bench/last-run.log
status=0
./target/profiling/bench --bin-dir target/profiling "$@" | tee -a .local/bench/results.jsonl .local/bench/last-run.log \
    || status=$?
if [[ $soak == soak ]]; then
    soak_dir=$(sed -n 's/.*"soak_dir":"\([^"]*\)".*/\1/p' .local/bench/last-run.log | tail -n 1)
    if [[ -n $soak_dir ]]; then
        bash scripts/bench/plot_soak.sh "$soak_dir/soak.csv" "$soak_dir" || status=1
    fi
fi
rm -f .local/bench/last-run.log
exit "$status"
