#!/usr/bin/env bash
# Starts the whole system locally and walks through one question, then keeps running
# until Ctrl-C:
#   PostgreSQL (started if none answers at DATABASE_URL), migrations (applied by the
#   binaries at start), the api on API_ADDR and two workers with the built-in `offline`
#   LLM (set OPENAI_API_KEY / OPENAI_BASE_URL to use a real model instead).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. deploy/local/ensure-postgres.sh

export API_ADDR=${API_ADDR:-127.0.0.1:8080}
# A fixed development secret, so tokens survive restarts of this local system. Never
# use it in production: there JWT_SECRET must be a long random value.
export JWT_SECRET=${JWT_SECRET:-local-development-secret-not-for-production}
export RUST_LOG=${RUST_LOG:-info}

cargo build --locked --bins -p api -p worker # not the bench harness
mkdir -p .local/logs

pids=()
cleanup() {
    echo; echo "stopping: api and workers get SIGTERM and drain their work"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 0' INT TERM

./target/debug/api >.local/logs/api.log 2>&1 &
pids+=($!)
for n in 1 2; do
    WORKER_ADDR="127.0.0.1:$((9090 + n))" ./target/debug/worker >".local/logs/worker-$n.log" 2>&1 &
    pids+=($!)
done

for addr in "$API_ADDR" 127.0.0.1:9091 127.0.0.1:9092; do
    for _ in $(seq 1 150); do
        curl -fs "http://$addr/healthz" >/dev/null && break
        sleep 0.2
    done
    curl -fs "http://$addr/healthz" >/dev/null || { echo "$addr did not come up; see .local/logs/" >&2; exit 1; }
done

API_URL="http://$API_ADDR" bash deploy/local/demo.sh

cat <<MSG

The system is running:
  api            http://$API_ADDR   (docs: http://$API_ADDR/docs, metrics: /metrics)
  worker 1       http://127.0.0.1:9091/metrics
  worker 2       http://127.0.0.1:9092/metrics
  logs           .local/logs/
Press Ctrl-C to stop.
MSG
wait
