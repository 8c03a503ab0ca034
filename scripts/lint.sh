#!/usr/bin/env bash
# The lints, stopping at the first failure (the tests are scripts/test.sh):
#   fmt       cargo fmt --check;
#   clippy    every target of the whole workspace, warnings denied;
#   machete   no unused dependency (cargo-machete, installed if missing).
# Separate from the tests because clippy's check build shares nothing with the test
# build: on a cold 2-core machine it alone takes six minutes.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
machete_version=0.9.2 # installed when no cargo-machete is

echo "lint: fmt"
cargo fmt --all -- --check
echo "lint: clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "lint: machete"
if ! cargo machete --version >/dev/null 2>&1; then
    echo "lint: installing cargo-machete $machete_version"
    if ! cargo install --quiet --locked cargo-machete --version "$machete_version"; then
        echo "lint: cannot install cargo-machete, which keeps unused dependencies out:" >&2
        echo "lint: 'cargo install --locked cargo-machete --version $machete_version' failed (above)" >&2
        exit 1
    fi
fi
cargo machete
echo "lint: ok ($SECONDS s)"
