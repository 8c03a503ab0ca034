#!/usr/bin/env bash
# Builds the binaries of the previous release (the git tag PREVIOUS_RELEASE, v0.1.0 by
# default) from its own sources, once, into .local/previous/<tag>/bin, and prints that
# directory. The mixed-version test runs them beside this checkout's binaries
# (scripts/mixed-versions.sh). Its build has a target directory of its own, so this
# checkout's target/ is left as it is.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tag=${PREVIOUS_RELEASE:-v0.1.0}
# Each release's commit, for a clone made without tags (it is on main's history).
declare -A released=([v0.1.0]=e3165e2f99f0448ef929ea4ee0d660263db97f7a)
dir=.local/previous/$tag
if [[ ! -x $dir/bin/api || ! -x $dir/bin/worker ]]; then
    commit=$(git rev-parse -q --verify "refs/tags/$tag^{commit}" || true)
    if [[ -z $commit ]]; then
        commit=$(git rev-parse -q --verify "${released[$tag]:-none}^{commit}" || true)
    fi
    if [[ -z $commit ]]; then
        echo "previous-release: neither the tag $tag nor its commit is in this clone (git fetch --tags, or a clone with its history)" >&2
        exit 1
    fi
    rm -rf "$dir/src"
    mkdir -p "$dir/src" "$dir/bin"
    git archive "$commit" | tar -x -C "$dir/src"
    echo "previous-release: building $tag (${commit:0:7}) in $dir" >&2
    (cd "$dir/src" && GIT_COMMIT=${commit:0:7} \
        cargo build --quiet --locked --bins --target-dir ../target)
    cp "$dir/target/debug/api" "$dir/target/debug/worker" "$dir/bin/"
fi
echo "$PWD/$dir/bin"
