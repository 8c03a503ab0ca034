#!/usr/bin/env bash
# Starts the whole system locally and walks through one question, then keeps running
# until Ctrl-C:
#   PostgreSQL (started if none answers at DATABASE_URL), migrations (applied by the
#   binaries at start), the api on API_ADDR and two workers with the built-in `offline`
#   LLM (set OPENAI_API_KEY / OPENAI_BASE_URL to use a real model instead), and, when
#   `prometheus` is installed, a Prometheus on PROMETHEUS_ADDR that scrapes all three
#   and evaluates the alert rules (scripts/prometheus-local.yml; its data go with it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/ensure-postgres.sh

export API_ADDR=${API_ADDR:-127.0.0.1:8080}
# The api's signing key: JWT_SECRET if set, else 32 random bytes made once per checkout
# and kept in .local/jwt-secret (git-ignored, mode 600), so tokens survive restarts of
# this local system. Never a fixed default: one written in the repository would pass
# the api's checks and let anyone who read it forge a token for any user. Passed to
# the api alone; the workers never sign anything. Delete the file for a new key (which
# ends every token already given out).
jwt_secret=${JWT_SECRET:-}
export -n JWT_SECRET 2>/dev/null || true
if [[ -z $jwt_secret ]]; then
    jwt_secret_file=.local/jwt-secret
    if [[ ! -s $jwt_secret_file ]]; then
        mkdir -p .local
        (
            umask 077
            if command -v openssl >/dev/null; then
                openssl rand -hex 32
            else
                head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; echo
            fi >"$jwt_secret_file.new"
        )
        [[ $(<"$jwt_secret_file.new") =~ ^[0-9a-f]{64}$ ]] || { echo "could not make a random JWT_SECRET" >&2; exit 1; }
        mv -f "$jwt_secret_file.new" "$jwt_secret_file"
        echo "made a random JWT_SECRET for this checkout in $jwt_secret_file"
    fi
    chmod 600 "$jwt_secret_file"
    jwt_secret=$(<"$jwt_secret_file")
fi
export RUST_LOG=${RUST_LOG:-info}
PROMETHEUS_ADDR=${PROMETHEUS_ADDR:-127.0.0.1:9190}

cargo build --locked --bins -p api -p worker # not the bench harness
mkdir -p .local/logs

pids=() prometheus_dir=""
cleanup() {
    echo; echo "stopping: api and workers get SIGTERM and drain their work (and Prometheus, if it runs)"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
    if [[ -n $prometheus_dir ]]; then rm -rf "$prometheus_dir"; fi
}
trap cleanup EXIT
trap 'exit 0' INT TERM

JWT_SECRET=$jwt_secret ./target/debug/api >.local/logs/api.log 2>&1 &
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

# Prometheus, when installed: the local configuration with the api's address and the
# rule file's absolute path, its storage in a temporary directory.
prometheus_line="not installed (to graph the queue: apt-get install prometheus)"
if command -v prometheus >/dev/null; then
    prometheus_dir=$(mktemp -d)
    sed -e "s|127\.0\.0\.1:8080|$API_ADDR|" -e "s|^  - \.\./deploy/prometheus/alerts\.yml\$|  - $PWD/deploy/prometheus/alerts.yml|" \
        scripts/prometheus-local.yml >"$prometheus_dir/prometheus.yml"
    prometheus --config.file="$prometheus_dir/prometheus.yml" --storage.tsdb.path="$prometheus_dir/data" \
        --web.listen-address="$PROMETHEUS_ADDR" >.local/logs/prometheus.log 2>&1 &
    pids+=($!)
    for _ in $(seq 1 100); do
        curl -fs "http://$PROMETHEUS_ADDR/-/ready" >/dev/null && break
        sleep 0.2
    done
    if curl -fs "http://$PROMETHEUS_ADDR/-/ready" >/dev/null; then
        prometheus_line="http://$PROMETHEUS_ADDR   (try: max by (state) (question_jobs); alerts: /alerts)"
    else
        prometheus_line="did not come up; see .local/logs/prometheus.log"
    fi
else
    echo "Prometheus is not installed, going on without it (to graph queue depth: apt-get install prometheus)"
fi

API_URL="http://$API_ADDR" bash scripts/demo.sh

cat <<MSG

The system is running:
  api            http://$API_ADDR   (docs: http://$API_ADDR/docs, metrics: /metrics)
  worker 1       http://127.0.0.1:9091/metrics
  worker 2       http://127.0.0.1:9092/metrics
  prometheus     $prometheus_line
  logs           .local/logs/
Press Ctrl-C to stop.
MSG
wait
