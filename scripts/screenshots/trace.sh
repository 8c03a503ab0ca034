#!/usr/bin/env bash
# Takes the picture of one question's trace in deploy/README.md: docs/images/trace.png.
# Not part of the test command.
#
# The local system (the api and a worker, built if needed, on a scratch database that
# is dropped at the end; PostgreSQL started if none answers) exports its spans over
# OTLP/HTTP to a local trace viewer, Arize Phoenix: an OpenTelemetry viewer that
# installs from PyPI (into .local/phoenix on first use), where Jaeger, compose's
# viewer, would need a container engine. The model is llm_standin.py `flaky`: the
# question's first run meets a 500 and is retried, the second meets a 429 with
# Retry-After and waits, then gets its question. The client sends its own traceparent,
# so the script knows the trace's id; headless Chromium takes the viewer's page of it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. scripts/ensure-postgres.sh

out=docs/images/trace.png
work=$(mktemp -d)
pids=()
scratch=trace_screenshot_$$
base_url=${DATABASE_URL%%\?*}
base_url=${base_url%/*}
psql_bin="$(pg_bin_dir psql)/psql"

cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    "$psql_bin" "$base_url/postgres" -qc "DROP DATABASE IF EXISTS $scratch WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

if ! command -v chromium >/dev/null; then
    echo "screenshot: installing chromium"
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq chromium >/dev/null
fi
phoenix=.local/phoenix/bin/phoenix
if [[ ! -x $phoenix ]]; then
    echo "screenshot: installing the trace viewer (arize-phoenix) into .local/phoenix"
    python3 -m venv .local/phoenix
    .local/phoenix/bin/pip install -q arize-phoenix
fi
cargo build --locked --bins -p api -p worker

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
random_hex() { python3 -c "import secrets; print(secrets.token_hex($1))"; }
field() { # field NAME < json: the first string value of NAME
    sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" | head -n 1
}
wait_for() { # wait_for URL: until it answers (any status), for up to 60 s
    for _ in $(seq 1 300); do
        curl -s -o /dev/null "$1" && return 0
        sleep 0.2
    done
    echo "screenshot: $1 did not come up; logs in $work" >&2
    exit 1
}

viewer_port=$(free_port)
PHOENIX_PORT=$viewer_port PHOENIX_GRPC_PORT=$(free_port) PHOENIX_HOST=127.0.0.1 \
    PHOENIX_WORKING_DIR="$work/phoenix" "$phoenix" serve >"$work/phoenix.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$viewer_port/"
viewer="http://127.0.0.1:$viewer_port"

llm_port=$(free_port)
python3 scripts/screenshots/llm_standin.py flaky "$llm_port" &
pids+=($!)

"$psql_bin" "$base_url/postgres" -qc "CREATE DATABASE $scratch"
export DATABASE_URL="$base_url/$scratch" RUST_LOG=${RUST_LOG:-warn}
export OTEL_EXPORTER_OTLP_ENDPOINT=$viewer OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf \
    OTEL_BSP_SCHEDULE_DELAY=200
api_addr=127.0.0.1:$(free_port)
API="http://$api_addr/api/v1"
API_ADDR=$api_addr JWT_SECRET=$(random_hex 32) ./target/debug/api >"$work/api.log" 2>&1 &
pids+=($!)
wait_for "http://$api_addr/healthz"
worker_addr=127.0.0.1:$(free_port)
WORKER_ADDR=$worker_addr LLM_PROVIDER=openai OPENAI_API_KEY=stand-in \
    OPENAI_BASE_URL="http://127.0.0.1:$llm_port/v1" LLM_BACKOFF_BASE_MS=300 LLM_BACKOFF_MAX_MS=600 \
    ./target/debug/worker >"$work/worker.log" 2>&1 &
pids+=($!)
wait_for "http://$worker_addr/healthz"

echo "screenshot: one question, through a 500 and a 429"
email="trace-$RANDOM@example.com"
curl -fsS -X POST "$API/auth/register" -H 'content-type: application/json' \
    -d "{\"email\": \"$email\", \"password\": \"trace password\"}" >/dev/null
token=$(curl -fsS -X POST "$API/auth/login" -H 'content-type: application/json' \
    -d "{\"email\": \"$email\", \"password\": \"trace password\"}" | field access_token)
auth=(-H "authorization: Bearer $token" -H 'content-type: application/json')
curl -fsS -X PUT "$API/resume" "${auth[@]}" \
    -d '{"content": "Six years of backend work in Rust and Go; built a payments ledger on PostgreSQL."}' >/dev/null
posting=$(curl -fsS -X POST "$API/job-postings" "${auth[@]}" \
    -d '{"title": "Senior backend engineer", "company": "Acme", "description": "Design durable job queues and APIs on PostgreSQL and Kubernetes."}' | field id)
session=$(curl -fsS -X POST "$API/sessions" "${auth[@]}" -d "{\"job_posting_id\": \"$posting\"}" | field id)
trace_id=$(random_hex 16)
op=$(curl -fsS -X POST "$API/sessions/$session/generate-question" "${auth[@]}" \
    -H "traceparent: 00-$trace_id-$(random_hex 8)-01" -H "x-request-id: trace-picture" | field id)
status=""
for _ in $(seq 1 12); do
    status=$(curl -fsS "$API/operations/$op?wait=10" "${auth[@]}" | field status)
    [[ $status == completed || $status == failed ]] && break
done
[[ $status == completed ]] || { echo "screenshot: operation $op is $status; logs in $work" >&2; exit 1; }

# The viewer has the whole trace once the worker's commit span is in (both processes
# send every 200 ms).
project=$(python3 -c 'import base64; print(base64.b64encode(b"Project:1").decode())')
for _ in $(seq 1 100); do
    spans=$(curl -fsS "$viewer/v1/projects/default/spans?limit=100" 2>/dev/null || true)
    [[ $spans == *'"commit"'* ]] && break
    sleep 0.2
done
[[ $spans == *'"commit"'* ]] || { echo "screenshot: the viewer has no commit span; logs in $work" >&2; exit 1; }

timeout 120 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --disable-background-networking --disable-component-update --disable-sync --no-first-run \
    --user-data-dir="$work/chromium" --window-size=1400,900 --virtual-time-budget=15000 \
    --screenshot="$out" "$viewer/projects/$project/traces/$trace_id" >"$work/chromium.log" 2>&1
[[ -s $out ]] || { echo "screenshot: chromium wrote no $out; see $work/chromium.log" >&2; exit 1; }
echo "screenshot: $out (trace $trace_id)"
