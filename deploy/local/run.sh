#!/usr/bin/env bash
# Starts the whole system locally: PostgreSQL (if none answers), then the api and two
# workers with the built-in `offline` LLM, until Ctrl-C.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. deploy/local/ensure-postgres.sh
cargo build --release --locked --bins
trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT INT TERM
./target/release/api &
for n in 1 2; do WORKER_ADDR="127.0.0.1:$((9090 + n))" ./target/release/worker & done
wait
