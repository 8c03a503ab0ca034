#!/usr/bin/env bash
# Makes sure a PostgreSQL answers at DATABASE_URL and that its database exists.
#
# - If one answers, nothing is started.
# - Otherwise, if the PostgreSQL server binaries are installed, a throwaway cluster is
#   created in .local/postgres (ignored by git) on the URL's port and started.
# - Otherwise it says exactly what to install, and fails.
#
# Source it (`. scripts/ensure-postgres.sh`) to get DATABASE_URL exported, or run it.
# Sourced, it returns (1 on failure) instead of exiting, and leaves the caller's shell
# options as they were; run, it is `set -euo pipefail`.

ensure_postgres() {
    : "${DATABASE_URL:=postgres://postgres@127.0.0.1:5432/interviewer}"
    export DATABASE_URL

    local repo_root cluster_dir pg_user pg_host pg_port pg_db admin_url psql_bin
    repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd) || return 1
    # shellcheck source=scripts/lib/postgres.sh
    . "$repo_root/scripts/lib/postgres.sh" || return 1
    cluster_dir="$repo_root/.local/postgres"

    # postgres://user[:password]@host[:port]/database[?params]
    if [[ ! "$DATABASE_URL" =~ ^postgres(ql)?://([^:@/]+)(:[^@/]*)?@([^:/?]+)(:([0-9]+))?/([^?]+) ]]; then
        echo "ensure-postgres: cannot read DATABASE_URL=$DATABASE_URL (want postgres://user@host:port/db)" >&2
        return 1
    fi
    pg_user=${BASH_REMATCH[2]}
    pg_host=${BASH_REMATCH[4]}
    pg_port=${BASH_REMATCH[6]:-5432}
    pg_db=${BASH_REMATCH[7]}
    admin_url="${DATABASE_URL%%/"$pg_db"*}/postgres"

    if ! answers; then
        start_throwaway_cluster || return 1
        answers || { echo "ensure-postgres: the cluster started but does not answer at $admin_url" >&2; return 1; }
    fi

    psql_bin="$(pg_bin_dir psql)/psql" || return 1
    if [[ $("$psql_bin" "$admin_url" -Atqc "SELECT 1 FROM pg_database WHERE datname = '$pg_db'") != 1 ]]; then
        "$psql_bin" "$admin_url" -qc "CREATE DATABASE \"$pg_db\"" 2>/dev/null \
            || [[ $("$psql_bin" "$admin_url" -Atqc "SELECT 1 FROM pg_database WHERE datname = '$pg_db'") == 1 ]] \
            || { echo "ensure-postgres: cannot create the database $pg_db at $pg_host:$pg_port" >&2; return 1; }
    fi
    echo "ensure-postgres: PostgreSQL is ready at $pg_host:$pg_port, database $pg_db"
}

# The helpers below read ensure_postgres' locals (bash scopes them dynamically).
answers() {
    local dir
    dir=$(pg_bin_dir psql) || return 1
    "$dir/psql" "$admin_url" -Atqc 'SELECT 1' >/dev/null 2>&1
}

start_throwaway_cluster() {
    local bin run_as=()
    if ! bin=$(pg_bin_dir initdb pg_ctl); then
        cat >&2 <<MSG
ensure-postgres: no PostgreSQL answers at $pg_host:$pg_port, and the server binaries
(initdb, pg_ctl) are not installed. Either point DATABASE_URL at a running PostgreSQL
(15 or newer), or install the server and run this again:
  Debian/Ubuntu:  sudo apt-get install -y postgresql
  Fedora:         sudo dnf install -y postgresql-server
  macOS:          brew install postgresql@15
MSG
        return 1
    fi
    if [[ "$pg_host" != "127.0.0.1" && "$pg_host" != "localhost" ]]; then
        echo "ensure-postgres: nothing answers at $pg_host:$pg_port, and a local cluster cannot serve a remote host" >&2
        return 1
    fi
    # PostgreSQL refuses to run as root: use the `postgres` system user then.
    if [[ $(id -u) -eq 0 ]]; then
        if ! id postgres >/dev/null 2>&1; then
            useradd --system --home-dir "$cluster_dir" --shell /bin/sh postgres || return 1
        fi
        run_as=(runuser -u postgres --)
    fi
    mkdir -p "$cluster_dir" || return 1
    if [[ ${#run_as[@]} -gt 0 ]]; then
        chown -R postgres "$cluster_dir" || return 1
    fi
    if [[ ! -f "$cluster_dir/data/PG_VERSION" ]]; then
        echo "ensure-postgres: creating a throwaway cluster in $cluster_dir"
        ${run_as[@]+"${run_as[@]}"} "$bin/initdb" -D "$cluster_dir/data" -U "$pg_user" --auth=trust -E UTF8 >"$cluster_dir/initdb.log" \
            || { echo "ensure-postgres: initdb failed (see $cluster_dir/initdb.log)" >&2; return 1; }
    fi
    echo "ensure-postgres: starting it on $pg_host:$pg_port (log: $cluster_dir/postgres.log)"
    ${run_as[@]+"${run_as[@]}"} "$bin/pg_ctl" -D "$cluster_dir/data" -l "$cluster_dir/postgres.log" -w -t 60 \
        -o "-p $pg_port -c listen_addresses=127.0.0.1 -k $cluster_dir" start >/dev/null \
        || { echo "ensure-postgres: the cluster did not start (see $cluster_dir/postgres.log)" >&2; return 1; }
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    ensure_postgres
else
    ensure_postgres || return 1
fi
