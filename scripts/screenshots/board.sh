#!/usr/bin/env bash
# Takes the pictures of the queue board in deploy/README.md: docs/images/board.png
# (/board), docs/images/job.png (one failed job) and docs/images/board-paused.png (the
# board after an operator paused intake from it). Not part of the test command.
#
# It builds the binaries if needed, starts PostgreSQL if none answers
# (scripts/ensure-postgres.sh), and works in a scratch database that it drops at
# the end. Jobs reach their states through the service itself, never by editing
# apalis' rows:
#   done       a worker with the built-in `offline` model answers them;
#   failed     a worker whose model always answers 503 spends the attempts;
#   killed     the owner cancels a pending operation (POST .../cancel on the api);
#   pending    asked while no worker runs;
#   held       asked behind an unfinished question of the same session;
#   running    the worker that serves the board (OPS_TOKEN set) takes one job, and its
#              model never answers (llm_standin.py, `hang`).
# The browser is Chromium, headless (installed with apt-get when missing); it answers
# the board's Basic challenge with the credentials in the URL.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. scripts/ensure-postgres.sh

out=docs/images
work=$(mktemp -d)
pids=()
scratch=board_screenshot_$$
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
cargo build --locked --bins -p api -p worker

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
random_hex() { python3 -c "import secrets; print(secrets.token_hex($1))"; }
field() { # field NAME < json: the first string value of NAME
    sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p" | head -n 1
}
wait_for() { # wait_for URL: until it answers (any status), for up to 30 s
    for _ in $(seq 1 150); do
        curl -s -o /dev/null "$1" && return 0
        sleep 0.2
    done
    echo "screenshot: $1 did not come up; logs in $work" >&2
    exit 1
}

"$psql_bin" "$base_url/postgres" -qc "CREATE DATABASE $scratch"
export DATABASE_URL="$base_url/$scratch" RUST_LOG=${RUST_LOG:-warn}
# Every job's budget: the api enqueues with it and the workers count against it.
export LLM_MAX_ATTEMPTS=3 LLM_BACKOFF_BASE_MS=200 LLM_BACKOFF_MAX_MS=400 WORKER_SHUTDOWN_SECS=1
api_addr=127.0.0.1:$(free_port)
API="http://$api_addr/api/v1"
API_ADDR=$api_addr JWT_SECRET=$(random_hex 32) RATE_LIMIT_GENERATE_PER_MINUTE=0 \
    ./target/debug/api >"$work/api.log" 2>&1 &
pids+=($!)
wait_for "http://$api_addr/healthz"

# start_worker NAME VAR=VALUE...: a worker with those settings; sets worker_pid and
# worker_addr.
start_worker() {
    local name=$1
    shift
    worker_addr=127.0.0.1:$(free_port)
    env HOSTNAME="$name" WORKER_ADDR="$worker_addr" "$@" ./target/debug/worker >"$work/$name.log" 2>&1 &
    worker_pid=$!
    pids+=("$worker_pid")
    wait_for "http://$worker_addr/healthz"
}
stop_worker() {
    kill -TERM "$worker_pid"
    wait "$worker_pid" 2>/dev/null || true
}

# One candidate with a resume, a job posting and six interview sessions.
email="board-$RANDOM@example.com"
curl -fsS -X POST "$API/auth/register" -H 'content-type: application/json' \
    -d "{\"email\": \"$email\", \"password\": \"board password\"}" >/dev/null
token=$(curl -fsS -X POST "$API/auth/login" -H 'content-type: application/json' \
    -d "{\"email\": \"$email\", \"password\": \"board password\"}" | field access_token)
auth=(-H "authorization: Bearer $token" -H 'content-type: application/json')
curl -fsS -X PUT "$API/resume" "${auth[@]}" \
    -d '{"content": "Six years of backend work in Rust and Go; built a payments ledger on PostgreSQL."}' >/dev/null
posting=$(curl -fsS -X POST "$API/job-postings" "${auth[@]}" \
    -d '{"title": "Senior backend engineer", "company": "Acme", "description": "Design durable job queues and APIs on PostgreSQL and Kubernetes."}' | field id)
sessions=()
for _ in 1 2 3 4 5 6; do
    sessions+=("$(curl -fsS -X POST "$API/sessions" "${auth[@]}" -d "{\"job_posting_id\": \"$posting\"}" | field id)")
done
ask() { # ask SESSION: the id of a new operation
    curl -fsS -X POST "$API/sessions/$1/generate-question" "${auth[@]}" | field id
}
settle() { # settle OPERATION: waits until it is completed or failed
    local status=""
    for _ in $(seq 1 12); do
        status=$(curl -fsS "$API/operations/$1?wait=10" "${auth[@]}" | field status)
        [[ $status == completed || $status == failed ]] && return 0
    done
    echo "screenshot: operation $1 is still $status; logs in $work" >&2
    exit 1
}

echo "screenshot: questions answered by the offline model"
start_worker worker-a LLM_PROVIDER=offline
done_ops=("$(ask "${sessions[0]}")" "$(ask "${sessions[0]}")" "$(ask "${sessions[1]}")" "$(ask "${sessions[2]}")")
for op in "${done_ops[@]}"; do settle "$op"; done
stop_worker

echo "screenshot: a question whose model keeps failing"
llm_port=$(free_port)
python3 scripts/screenshots/llm_standin.py fail "$llm_port" &
pids+=($!)
wait_for "http://127.0.0.1:$llm_port/"
start_worker worker-b LLM_PROVIDER=openai OPENAI_API_KEY=stand-in \
    OPENAI_BASE_URL="http://127.0.0.1:$llm_port/v1" LLM_TIMEOUT_SECS=5
failed_op=$(ask "${sessions[3]}")
settle "$failed_op"
stop_worker
# Past the heartbeat window (WORKER_HEARTBEAT_SECS, 8 s), the stopped workers show as
# silent on the board.
sleep 9

echo "screenshot: pending, held and cancelled questions, with no worker running"
cancelled=$(ask "${sessions[4]}")
curl -fsS -X POST "$API/operations/$cancelled/cancel" "${auth[@]}" >/dev/null
ask "${sessions[4]}" >/dev/null
for _ in 1 2 3; do ask "${sessions[5]}" >/dev/null; done
ask "${sessions[1]}" >/dev/null

echo "screenshot: the board's worker, whose model never answers"
hang_port=$(free_port)
python3 scripts/screenshots/llm_standin.py hang "$hang_port" &
pids+=($!)
ops_token=$(random_hex 16)
start_worker worker-c LLM_PROVIDER=openai OPENAI_API_KEY=stand-in \
    OPENAI_BASE_URL="http://127.0.0.1:$hang_port/v1" LLM_TIMEOUT_SECS=600 \
    WORKER_CONCURRENCY=1 OPS_TOKEN="$ops_token"
for _ in $(seq 1 150); do
    [[ $("$psql_bin" "$DATABASE_URL" -Atqc "SELECT count(*) FROM apalis.jobs WHERE status = 'Running'") == 1 ]] && break
    sleep 0.2
done

board="http://$worker_addr/board"
[[ $(curl -s -o /dev/null -w '%{http_code}' "$board") == 401 ]] \
    || { echo "screenshot: the board answers without the token" >&2; exit 1; }
curl -fsS -o /dev/null -H "authorization: Bearer $ops_token" "$board"
failed_job=$("$psql_bin" "$DATABASE_URL" -Atqc "SELECT id FROM apalis.jobs WHERE idempotency_key = '$failed_op'")

shoot() { # shoot PATH FILE [HEIGHT]
    timeout 120 chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
        --user-data-dir="$work/chromium" --window-size="1280,${3:-900}" --screenshot="$2" \
        "http://ops:$ops_token@$worker_addr$1" >>"$work/chromium.log" 2>&1
    [[ -s $2 ]] || { echo "screenshot: chromium wrote no $2; see $work/chromium.log" >&2; exit 1; }
    echo "screenshot: $2"
}
shoot /board "$out/board.png"
shoot "/board/jobs/$failed_job" "$out/job.png"

# An incident (deploy/README.md): the operator pauses intake with the board's own form
# (its CSRF token read from the page), and the workers apply it at their next beat.
echo "screenshot: intake paused from the board"
csrf=$(curl -fsS -H "authorization: Bearer $ops_token" "$board" \
    | sed -n 's/.*name="csrf" value="\([0-9a-f]*\)".*/\1/p' | head -n 1)
[[ -n $csrf ]] || { echo "screenshot: no CSRF token on the board" >&2; exit 1; }
curl -fsS -o /dev/null -H "authorization: Bearer $ops_token" \
    --data "action=pause&csrf=$csrf" "http://$worker_addr/board/intake"
for _ in $(seq 1 100); do
    [[ $("$psql_bin" "$DATABASE_URL" -Atqc "SELECT count(*) FROM worker_state WHERE paused") -ge 1 ]] && break
    sleep 0.2
done
shoot /board "$out/board-paused.png" 1500
