# shellcheck shell=bash
# The PostgreSQL of the soak (sourced by scripts/bench/run.sh for `soak` and `seed`):
# a cluster of its own in .local/bench/soak-pg (ignored by git) on SOAK_PG_PORT (5499),
# created and started when it does not answer, that records what the soak reads:
#   pg_stat_statements  statement time per job (track = all: also the statements
#                       inside apalis' get_jobs);
#   auto_explain        the plans, with the rows each node read, of 2 % of the
#                       statements (log_nested_statements: the claim inside get_jobs
#                       too), as JSON lines in the server's jsonlog;
#   lock waits          every wait for a lock over 200 ms (deadlock_timeout), and every
#                       autovacuum and autoanalyze, in the same log: what a stall in
#                       the samples waited for;
# with shared_buffers 1 GB, so the seeded tables (about 5 GB) are partly in memory, as
# on a database server. Exports DATABASE_URL pointing at it.

soak_postgres() {
    local repo_root dir port bin run_as=()
    repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd) || return 1
    # shellcheck source=scripts/lib/postgres.sh
    . "$repo_root/scripts/lib/postgres.sh" || return 1
    dir="$repo_root/.local/bench/soak-pg"
    port=${SOAK_PG_PORT:-5499}
    export DATABASE_URL="postgres://postgres@127.0.0.1:$port/interviewer"
    bin=$(pg_bin_dir initdb pg_ctl psql) || {
        echo "soak-postgres: the soak needs PostgreSQL's server programs (initdb, pg_ctl): apt-get install -y postgresql" >&2
        return 1
    }
    if "$bin/psql" "postgres://postgres@127.0.0.1:$port/postgres" -Atqc 'SELECT 1' >/dev/null 2>&1; then
        echo "soak-postgres: running at 127.0.0.1:$port"
        return 0
    fi
    # PostgreSQL refuses to run as root: use the `postgres` system user then.
    if [[ $(id -u) -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || useradd --system --home-dir "$dir" --shell /bin/sh postgres || return 1
        run_as=(runuser -u postgres --)
    fi
    mkdir -p "$dir" || return 1
    if [[ ${#run_as[@]} -gt 0 ]]; then chown -R postgres "$dir" || return 1; fi
    if [[ ! -f "$dir/data/PG_VERSION" ]]; then
        echo "soak-postgres: creating a cluster in $dir"
        ${run_as[@]+"${run_as[@]}"} "$bin/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 >"$dir/initdb.log" \
            || { echo "soak-postgres: initdb failed (see $dir/initdb.log)" >&2; return 1; }
        cat >>"$dir/data/postgresql.conf" <<'CONF'
# scripts/bench/soak-postgres.sh
listen_addresses = '127.0.0.1'
max_connections = 300
shared_buffers = 1GB
shared_preload_libraries = 'pg_stat_statements,auto_explain'
pg_stat_statements.track = all
pg_stat_statements.max = 1000
auto_explain.log_min_duration = 0
auto_explain.log_analyze = on
auto_explain.log_timing = off
auto_explain.log_buffers = off
auto_explain.log_nested_statements = on
auto_explain.log_format = json
auto_explain.sample_rate = 0.02
logging_collector = on
log_destination = 'jsonlog'
log_directory = 'log'
log_rotation_size = 0
log_lock_waits = on
deadlock_timeout = 200ms
log_autovacuum_min_duration = 0
CONF
    fi
    echo "soak-postgres: starting it on 127.0.0.1:$port (log: $dir/postgres.log)"
    ${run_as[@]+"${run_as[@]}"} "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 120 \
        -o "-p $port -k $dir" start >/dev/null \
        || { echo "soak-postgres: the cluster did not start (see $dir/postgres.log)" >&2; return 1; }
    "$bin/psql" "postgres://postgres@127.0.0.1:$port/postgres" -qc 'CREATE DATABASE interviewer' 2>/dev/null || true
}

soak_postgres || return 1
