#!/usr/bin/env bash
# Makes sure a PostgreSQL answers at DATABASE_URL and that its database exists.
#
# - If one answers, nothing is started.
# - Otherwise, if the PostgreSQL server binaries are installed, a throwaway cluster is
#   created in .local/postgres (ignored by git) on the URL's port and started.
# - Otherwise it says exactly what to install, and fails.
#
# Source it (`. deploy/local/ensure-postgres.sh`) to get DATABASE_URL exported, or run it.
set -euo pipefail

: "${DATABASE_URL:=postgres://postgres@127.0.0.1:5432/interviewer}"
export DATABASE_URL

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cluster_dir="$repo_root/.local/postgres"

# postgres://user[:password]@host[:port]/database[?params]
if [[ ! "$DATABASE_URL" =~ ^postgres(ql)?://([^:@/]+)(:[^@/]*)?@([^:/?]+)(:([0-9]+))?/([^?]+) ]]; then
    echo "ensure-postgres: cannot read DATABASE_URL=$DATABASE_URL (want postgres://user@host:port/db)" >&2
    exit 1
fi
pg_user=${BASH_REMATCH[2]}
pg_host=${BASH_REMATCH[4]}
pg_port=${BASH_REMATCH[6]:-5432}
pg_db=${BASH_REMATCH[7]}
admin_url="${DATABASE_URL%%/"$pg_db"*}/postgres"

find_pg_bin() {
    local name=$1 dir
    if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return; fi
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV) /usr/local/pgsql/bin /opt/homebrew/bin; do
        if [[ -x "$dir/$name" ]]; then echo "$dir/$name"; return; fi
    done
    return 1
}

answers() {
    local psql_bin
    psql_bin=$(find_pg_bin psql) || return 1
    "$psql_bin" "$admin_url" -Atqc 'SELECT 1' >/dev/null 2>&1
}

start_throwaway_cluster() {
    local initdb pg_ctl run_as=()
    if ! initdb=$(find_pg_bin initdb) || ! pg_ctl=$(find_pg_bin pg_ctl); then
        cat >&2 <<MSG
ensure-postgres: no PostgreSQL answers at $pg_host:$pg_port, and the server binaries
(initdb, pg_ctl) are not installed. Either point DATABASE_URL at a running PostgreSQL
(15 or newer), or install the server and run this again:
  Debian/Ubuntu:  sudo apt-get install -y postgresql
  Fedora:         sudo dnf install -y postgresql-server
  macOS:          brew install postgresql@15
MSG
        exit 1
    fi
    if [[ "$pg_host" != "127.0.0.1" && "$pg_host" != "localhost" ]]; then
        echo "ensure-postgres: nothing answers at $pg_host:$pg_port, and a local cluster cannot serve a remote host" >&2
        exit 1
    fi
    # PostgreSQL refuses to run as root: use the `postgres` system user then.
    if [[ $(id -u) -eq 0 ]]; then
        if ! id postgres >/dev/null 2>&1; then
            useradd --system --home-dir "$cluster_dir" --shell /bin/sh postgres
        fi
        run_as=(runuser -u postgres --)
    fi
    mkdir -p "$cluster_dir"
    [[ ${#run_as[@]} -gt 0 ]] && chown -R postgres "$cluster_dir"
    if [[ ! -f "$cluster_dir/data/PG_VERSION" ]]; then
        echo "ensure-postgres: creating a throwaway cluster in $cluster_dir"
        "${run_as[@]}" "$initdb" -D "$cluster_dir/data" -U "$pg_user" --auth=trust -E UTF8 >"$cluster_dir/initdb.log"
    fi
    echo "ensure-postgres: starting it on $pg_host:$pg_port (log: $cluster_dir/postgres.log)"
    "${run_as[@]}" "$pg_ctl" -D "$cluster_dir/data" -l "$cluster_dir/postgres.log" -w -t 60 \
        -o "-p $pg_port -c listen_addresses=127.0.0.1 -k $cluster_dir" start >/dev/null
}

if ! answers; then
    start_throwaway_cluster
    answers || { echo "ensure-postgres: the cluster started but does not answer at $admin_url" >&2; exit 1; }
fi

psql_bin=$(find_pg_bin psql)
if [[ $("$psql_bin" "$admin_url" -Atqc "SELECT 1 FROM pg_database WHERE datname = '$pg_db'") != 1 ]]; then
    "$psql_bin" "$admin_url" -qc "CREATE DATABASE \"$pg_db\"" 2>/dev/null \
        || [[ $("$psql_bin" "$admin_url" -Atqc "SELECT 1 FROM pg_database WHERE datname = '$pg_db'") == 1 ]]
fi
echo "ensure-postgres: PostgreSQL is ready at $pg_host:$pg_port, database $pg_db"
