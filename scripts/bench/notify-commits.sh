#!/usr/bin/env bash
# What a NOTIFY inside a durable commit costs (docs/DESIGN.md, "Wake-ups after the
# commit"): pgbench, 16 clients for 15 s each, on a scratch table of a scratch database
# on the PostgreSQL of DATABASE_URL, three ways:
#   insert           a row, committed (the commits share WAL flushes);
#   insert+notify    a row and a NOTIFY in one transaction (what a trigger does):
#                    PostgreSQL lets these commits in one at a time, flush included;
#   insert, notify   the row committed, then the NOTIFY alone (shared::db::wake).
# Prints one JSON line per way. Run by hand on an idle machine: a measurement.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. scripts/ensure-postgres.sh
# shellcheck source=scripts/lib/postgres.sh
. scripts/lib/postgres.sh
pg_dir=$(pg_bin_dir pgbench psql) || { echo "pgbench not found: install PostgreSQL's client tools (Debian: postgresql-client)" >&2; exit 1; }
clients=${CLIENTS:-16}
seconds=${SECONDS_EACH:-15}
base=${DATABASE_URL%/*}
db=notify_commits_bench
url="$base/$db"
"$pg_dir/psql" -Atqc "DROP DATABASE IF EXISTS $db" "$base/postgres"
"$pg_dir/psql" -Atqc "CREATE DATABASE $db" "$base/postgres"
trap '"$pg_dir/psql" -Atqc "DROP DATABASE IF EXISTS $db" "$base/postgres"' EXIT
"$pg_dir/psql" -Atqc "CREATE TABLE rows (id bigserial PRIMARY KEY, v text)" "$url"
scripts=$(mktemp -d)
printf "INSERT INTO rows (v) VALUES ('x');\n" >"$scripts/insert.sql"
printf "BEGIN;\nINSERT INTO rows (v) VALUES ('x');\nSELECT pg_notify('bench', 'x');\nCOMMIT;\n" >"$scripts/insert+notify.sql"
printf "INSERT INTO rows (v) VALUES ('x');\nSELECT pg_notify('bench', 'x');\n" >"$scripts/insert, notify.sql"
for way in "insert" "insert+notify" "insert, notify"; do
    tps=$("$pg_dir/pgbench" -n -c "$clients" -j 2 -T "$seconds" -f "$scripts/$way.sql" "$url" 2>/dev/null \
        | sed -n 's/^tps = \([0-9.]*\).*/\1/p')
    printf '{"figure":"notify_commits","way":"%s","clients":%s,"seconds":%s,"commits_per_sec":%s}\n' \
        "$way" "$clients" "$seconds" "${tps:-null}"
done
rm -rf "$scripts"
