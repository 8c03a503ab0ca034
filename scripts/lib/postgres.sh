# shellcheck shell=bash
# Finds PostgreSQL's programs, for the scripts of scripts/ (sourced, never run):
#   . scripts/lib/postgres.sh
#   bin=$(pg_bin_dir initdb pg_ctl) || { echo "no initdb and pg_ctl" >&2; exit 1; }
#
# pg_bin_dir PROGRAM...: prints the first directory that holds every PROGRAM (psql,
# pgbench, initdb, pg_ctl, postgres...), looking in PATH first, then in Debian's
# /usr/lib/postgresql/*/bin (newest version first), /usr/local/pgsql/bin and
# /opt/homebrew/bin. Asking for several programs at once keeps them of one version (a
# pg_ctl on PATH may belong to another version than an initdb found elsewhere). Prints
# nothing and returns 1 when no directory has them all.
# (testkit/src/postgres.rs does the same lookup in Rust, for tests that run a cluster.)

pg_bin_dir() {
    local dir name candidates=() path_dirs=()
    (($# > 0)) || { echo "pg_bin_dir: name at least one program" >&2; return 2; }
    IFS=: read -r -a path_dirs <<<"$PATH"
    candidates+=("${path_dirs[@]}")
    while IFS= read -r dir; do
        candidates+=("$dir")
    done < <(compgen -G '/usr/lib/postgresql/*/bin' | sort -rV)
    candidates+=(/usr/local/pgsql/bin /opt/homebrew/bin)
    for dir in "${candidates[@]}"; do
        [[ -n $dir ]] || continue
        for name in "$@"; do
            [[ -x $dir/$name && ! -d $dir/$name ]] || continue 2
        done
        echo "$dir"
        return 0
    done
    return 1
}
