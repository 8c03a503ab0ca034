#!/usr/bin/env bash
# Runs every test of the workspace against a real PostgreSQL (started if need be), then
# validates the api's OpenAPI document with openapi-spec-validator.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. deploy/local/ensure-postgres.sh
cargo test --workspace --locked "$@"

echo "validating the OpenAPI document"
mkdir -p .local
cargo run --quiet --locked --bin api -- --print-openapi >.local/openapi.json
if [[ ! -x .local/venv/bin/openapi-spec-validator ]]; then
    python3 -m venv .local/venv
    .local/venv/bin/pip install --quiet --disable-pip-version-check "openapi-spec-validator==0.9.0"
fi
.local/venv/bin/openapi-spec-validator .local/openapi.json
