#!/usr/bin/env bash
# Runs every test of the workspace against a real PostgreSQL (started if need be), then
# validates the OpenAPI document and the deployment files (deploy/validate.sh), and
# fuzzes the api against its own document (deploy/fuzz.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. deploy/local/ensure-postgres.sh
cargo test --workspace --locked "$@"
cargo build --quiet --locked --bins
bash deploy/validate.sh
bash deploy/fuzz.sh
