#!/usr/bin/env bash
# Fuzzes the api against its own OpenAPI document with schemathesis (PyPI), as an
# authenticated user: every check schemathesis has, and from the api's own metrics, how
# many requests it served and how many were 5xx (must be 0).
# Needs the api and worker binaries built (target/debug/) and PostgreSQL (ensure-postgres.sh).
#
# The seed rotates, so that runs over time explore new cases: FUZZ_SEED (default: the UTC
# date and time, e.g. 20261124153012) is printed first, and any failure prints the
# command that replays it, `FUZZ_SEED=... FUZZ_EXAMPLES=... FUZZ_REPLAY=0 bash scripts/fuzz.sh`.
# Then every seed of scripts/fuzz/failed-seeds.txt (seeds that once found a bug) is
# replayed, unless FUZZ_REPLAY=0. Each seed runs on its own fresh database, api and
# worker, so that it finds the same state whenever it runs. FUZZ_EXAMPLES (default 8)
# sets the depth, examples per operation: 12 took 222 s for one seed here (697
# requests), 70 took about 7 minutes; 8 keeps the test command within its budget. A run fails on any schemathesis failure, any 5xx, or fewer requests than
# 200 + 7 per example (about half of what full runs served: 1,454 at 70, 1,891 at 100),
# which would mean the fuzz did not reach the api.
#
# One check is left out: positive_data_acceptance expects every schema-valid request to
# succeed, which state-dependent rules make wrong (PATCH a completed session to paused
# is a correct 400 INVALID_STATUS_TRANSITION; generate-question on a paused session is a
# correct 400 SESSION_NOT_ACTIVE), and its inferred links reuse a null job_posting_id
# as a path id. Long polls wait up to 30 s by design, hence the request timeout.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/lib/postgres.sh
. scripts/lib/postgres.sh
: "${DATABASE_URL:=postgres://postgres@127.0.0.1:5432/interviewer}"
seed=${FUZZ_SEED:-$(date -u +%Y%m%d%H%M%S)}
examples=${FUZZ_EXAMPLES:-8}
replay=${FUZZ_REPLAY:-1}
seeds_file=scripts/fuzz/failed-seeds.txt
start_timeout=30 # seconds for the api to answer /healthz on its fresh database
venv=.local/venv

[[ $seed =~ ^[0-9]+$ ]] || { echo "fuzz: FUZZ_SEED must be a non-negative integer, not '$seed'" >&2; exit 1; }
[[ $examples =~ ^[1-9][0-9]*$ ]] || { echo "fuzz: FUZZ_EXAMPLES must be a positive integer, not '$examples'" >&2; exit 1; }
echo "fuzz: seed $seed, $examples examples per operation (FUZZ_SEED=$seed FUZZ_EXAMPLES=$examples bash scripts/fuzz.sh runs it again)"

pg_dir=$(pg_bin_dir psql) || { echo "fuzz: psql not found: install PostgreSQL's client tools (Debian: postgresql-client)" >&2; exit 1; }
psql=$pg_dir/psql
for binary in api worker; do
    [[ -x target/debug/$binary ]] || { echo "fuzz: target/debug/$binary is missing: cargo build --locked -p api -p worker" >&2; exit 1; }
done
[[ -x $venv/bin/python ]] || python3 -m venv "$venv"
[[ -x $venv/bin/schemathesis ]] || "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==4.32.5"
mkdir -p .local/fuzz
./target/debug/api --print-openapi >.local/openapi.json

# The runs, one "SEED EXAMPLES" each: this run's seed, then the failed seeds' file.
runs=("$seed $examples")
if [[ $replay != 0 && -f $seeds_file ]]; then
    n=0
    while IFS= read -r line || [[ -n $line ]]; do
        n=$((n + 1))
        fields=${line%%#*}
        read -r s e extra <<<"$fields" || true
        [[ -n ${s:-} ]] || continue
        if [[ ! $s =~ ^[0-9]+$ || ! ${e:-1} =~ ^[1-9][0-9]*$ || -n ${extra:-} ]]; then
            echo "fuzz: $seeds_file:$n: want 'SEED [EXAMPLES]', not '$line'" >&2
            exit 1
        fi
        [[ "$s ${e:-$examples}" == "${runs[0]}" ]] || runs+=("$s ${e:-$examples}")
    done <"$seeds_file"
    echo "fuzz: then the $((${#runs[@]} - 1)) seed(s) to replay of $seeds_file"
fi

# fuzz_once SEED EXAMPLES N: the Nth run, on its own database, api and worker. Run it in
# a subshell: it exits (cleaning up after itself) rather than returns.
fuzz_once() {
    seed=$1 examples=$2
    dir=.local/fuzz/seed-$seed
    db="interviewer_fuzz_$$_$3"
    admin_url="${DATABASE_URL%/*}/postgres"
    pids=() db_created=""
    # shellcheck disable=SC2317 # run by the EXIT trap
    cleanup() {
        if ((${#pids[@]} > 0)); then
            kill "${pids[@]}" 2>/dev/null || true
            wait "${pids[@]}" 2>/dev/null || true
        fi
        [[ -z $db_created ]] || "$psql" "$admin_url" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" || true
    }
    trap cleanup EXIT
    fail() { # fail MESSAGE [LOG...]: says why, shows the logs, and ends the run
        local log
        echo "fuzz: seed $seed: $1" >&2
        for log in "${@:2}"; do
            echo "----- $log (last 100 lines)" >&2
            tail -n 100 "$log" >&2 || true
        done
        exit 1
    }

    rm -rf "$dir" && mkdir -p "$dir"
    "$psql" "$admin_url" -qc "CREATE DATABASE $db" || fail "cannot create the database $db"
    db_created=1
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    addr="127.0.0.1:$port"
    DATABASE_URL="${DATABASE_URL%/*}/$db" API_ADDR=$addr JWT_SECRET=fuzz-test-signing-key-of-32-bytes RATE_LIMIT_GENERATE_PER_MINUTE=0 ANSWERS_PER_MINUTE=0 \
        RUST_LOG=warn ./target/debug/api >"$dir/api.log" 2>&1 &
    pids+=($!)
    api=$!
    # A worker finishes operations as in production, so long polls end when they should.
    DATABASE_URL="${DATABASE_URL%/*}/$db" WORKER_ADDR="127.0.0.1:0" LLM_PROVIDER=offline RUST_LOG=warn \
        ./target/debug/worker >"$dir/worker.log" 2>&1 &
    pids+=($!)
    worker=$!

    deadline=$((SECONDS + start_timeout))
    until curl -fs --max-time 2 "http://$addr/healthz" >/dev/null; do
        kill -0 "$api" 2>/dev/null || fail "the api exited at start" "$dir/api.log"
        ((SECONDS < deadline)) || fail "the api was not healthy within $start_timeout s at $addr" "$dir/api.log"
        sleep 0.2
    done
    kill -0 "$worker" 2>/dev/null || fail "the worker exited at start" "$dir/worker.log"

    curl -fsS --max-time 30 -X POST "http://$addr/api/v1/auth/register" -H 'content-type: application/json' \
        -d '{"email": "fuzz@example.com", "password": "fuzz password"}' >/dev/null \
        || fail "registering the fuzz user failed" "$dir/api.log"
    login=$(curl -sS --max-time 30 -X POST "http://$addr/api/v1/auth/login" -H 'content-type: application/json' \
        -d '{"email": "fuzz@example.com", "password": "fuzz password"}') \
        || fail "the login request failed" "$dir/api.log"
    token=$(sed -n 's/.*"access_token" *: *"\([^"]*\)".*/\1/p' <<<"$login")
    [[ -n $token ]] || fail "logging in gave no access_token; the api answered: $login" "$dir/api.log"

    # No example database (.hypothesis/) nor cache (scripts/fuzz/schemathesis.toml): the seed
    # alone decides the cases, here as in CI's fresh clone. Hypothesis' "too slow" health
    # check is about generating strings for the long text fields' patterns on a busy
    # 2-core machine, not about the api (seed 20261128013902 tripped it): suppressed.
    status=0
    "$venv/bin/schemathesis" --config-file scripts/fuzz/schemathesis.toml run .local/openapi.json --url "http://$addr" \
        -H "Authorization: Bearer $token" --checks all --exclude-checks positive_data_acceptance \
        --request-timeout 40 --max-response-time 35 --max-examples "$examples" \
        --seed "$seed" --generation-database none --suppress-health-check too_slow --report junit --report-dir "$dir/report" \
        || { status=$?; echo "fuzz: seed $seed: schemathesis failed (exit $status; junit report in $dir/report)" >&2; }

    metrics=$(curl -fsS --max-time 10 "http://$addr/metrics") || fail "cannot read the api's metrics" "$dir/api.log"
    total=$(awk '/^http_requests_total\{/ {s += $NF} END {print s + 0}' <<<"$metrics")
    errors=$(awk '/^http_requests_total\{.*status="5[0-9][0-9]"/ {s += $NF} END {print s + 0}' <<<"$metrics")
    least=$((200 + 7 * examples))
    echo "fuzz: seed $seed: the api served $total requests, $errors of them 5xx"
    [[ $errors -eq 0 ]] || { echo "fuzz: seed $seed: server errors (see $dir/api.log)" >&2; status=1; }
    [[ $total -ge $least ]] || { echo "fuzz: seed $seed: only $total requests, fewer than $least: the fuzz did not reach the api" >&2; status=1; }
    exit "$status"
}

# Ctrl-C ends the run under way (which cleans up after itself) and then the whole script.
trap 'echo "fuzz: interrupted" >&2; exit 130' INT
failed=() n=0
for run in "${runs[@]}"; do
    read -r s e <<<"$run"
    n=$((n + 1))
    echo "fuzz: seed $s, $e examples per operation"
    started=$SECONDS
    set +e
    (
        set -e
        fuzz_once "$s" "$e" "$n"
    )
    rc=$?
    set -e
    echo "fuzz: seed $s: $([[ $rc -eq 0 ]] && echo passed || echo FAILED) in $((SECONDS - started)) s"
    [[ $rc -eq 0 ]] || failed+=("FUZZ_SEED=$s FUZZ_EXAMPLES=$e FUZZ_REPLAY=0 bash scripts/fuzz.sh")
done

if ((${#failed[@]} > 0)); then
    echo "fuzz: ${#failed[@]} of ${#runs[@]} seed(s) failed; each replays with:" >&2
    printf '  %s\n' "${failed[@]}" >&2
    echo "fuzz: once a new seed's failure is fixed, add it to $seeds_file so that every run replays it" >&2
    exit 1
fi
echo "fuzz: all ${#runs[@]} seed(s) passed"
