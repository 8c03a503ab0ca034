#!/usr/bin/env bash
# The test command, stopping at the first failure (lints are scripts/lint.sh):
#   fmt       cargo fmt --check (a second: a badly formatted tree fails at once);
#   postgres  a real PostgreSQL at DATABASE_URL (started if need be: ensure-postgres.sh);
#   tests     every test of the workspace but the bench crate's (a benchmark harness, run
#             by scripts/bench/run.sh); arguments go to cargo test;
#   build     the api and worker binaries, then
#   validate  the OpenAPI document and the deployment files (scripts/validate.sh),
#   alerts    the alert rules loaded and unit-tested by promtool, installed if missing
#             (scripts/check-alerts.sh), and
#   fuzz      the api against its own document (scripts/fuzz.sh).
# At the end, or at a failure, it prints the seconds each phase took.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
test_args=("$@")

done_phases=() current="" current_start=0
phase() { # phase NAME COMMAND...: runs COMMAND as the phase NAME, timed
    current=$1 current_start=$SECONDS
    echo "test: $1"
    "${@:2}"
    done_phases+=("$(printf '  %-9s %5d s' "$1" $((SECONDS - current_start)))")
    current=""
}
summary() {
    echo "test: seconds per phase"
    if [[ ${#done_phases[@]} -gt 0 ]]; then printf '%s\n' "${done_phases[@]}"; fi
    if [[ -n $current ]]; then printf '  %-9s %5d s  FAILED\n' "$current" $((SECONDS - current_start)); fi
    printf '  %-9s %5d s\n' total "$SECONDS"
}
trap summary EXIT

start_postgres() {
    # shellcheck source=scripts/ensure-postgres.sh
    . scripts/ensure-postgres.sh
}

phase fmt cargo fmt --all -- --check
phase postgres start_postgres
phase tests cargo test --workspace --exclude bench --locked ${test_args[@]+"${test_args[@]}"}
phase build cargo build --quiet --locked --bins -p api -p worker
phase validate bash scripts/validate.sh
phase alerts bash scripts/check-alerts.sh
phase fuzz bash scripts/fuzz.sh
