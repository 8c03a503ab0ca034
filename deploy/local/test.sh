#!/usr/bin/env bash
# Runs every test of the workspace against a real PostgreSQL (started if need be).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. deploy/local/ensure-postgres.sh
cargo test --workspace --locked "$@"
