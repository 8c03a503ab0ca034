#!/usr/bin/env bash
# Builds the binaries of the previous release (the git tag PREVIOUS_RELEASE, v0.1.0 by
# default) from its own sources, once, into .local/previous/<tag>/bin, and prints that
# directory. The mixed-version test runs them beside this checkout's binaries
# (scripts/mixed-versions.sh). Its build has a target directory of its own, so this
# checkout's target/ is left as it is.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
tag=${PREVIOUS_RELEASE:-v0.1.0}
dir=.local/previous/$tag
if [[ ! -x $dir/bin/api || ! -x $dir/bin/worker ]]; then
    if ! git rev-parse -q --verify "refs/tags/$tag" >/dev/null; then
        echo "previous-release: no tag $tag in this clone (git fetch --tags)" >&2
        exit 1
    fi
    rm -rf "$dir/src"
    mkdir -p "$dir/src" "$dir/bin"
    git archive "$tag" | tar -x -C "$dir/src"
    echo "previous-release: building $tag ($(git rev-parse --short "$tag^{commit}")) in $dir" >&2
    (cd "$dir/src" && GIT_COMMIT=$(git rev-parse --short "$tag^{commit}") \
        cargo build --quiet --locked --bins --target-dir ../target)
    cp "$dir/target/debug/api" "$dir/target/debug/worker" "$dir/bin/"
fi
echo "$PWD/$dir/bin"
