#!/usr/bin/env bash
# The mixed-version test (issue 22): the previous release's api and worker beside this
# checkout's, on one database at this release's schema, with a kill -9 and a restart of
# each. A command of its own, which CI runs after the test command: building the
# previous release takes minutes, and the test command keeps within its budget.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/ensure-postgres.sh
started=$SECONDS
PREVIOUS_RELEASE_BIN=$(bash scripts/previous-release.sh)
export PREVIOUS_RELEASE_BIN
cargo build --quiet --locked --bins
cargo test --quiet --locked --test system -- --ignored --exact \
    upgrades::the_previous_release_and_this_one_side_by_side_lose_and_duplicate_nothing
echo "mixed-versions: passed in $((SECONDS - started)) s"
