#!/usr/bin/env bash
# Validates what deploy/ and the api publish, with tools from PyPI in a local venv:
# the OpenAPI document (openapi-spec-validator), the compose file (the compose-spec
# schema), the Kubernetes manifests (kubernetes-validate, strict) and the KEDA objects
# (our schema of the fields we rely on). Needs the api binary built (target/debug/api).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
venv=.local/venv
if [[ ! -x $venv/bin/kubernetes-validate ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        "openapi-spec-validator==0.9.0" "check-jsonschema==0.39.0" "kubernetes-validate==1.37.0"
fi

echo "validate: OpenAPI document"
./target/debug/api --print-openapi >.local/openapi.json
"$venv/bin/openapi-spec-validator" .local/openapi.json

echo "validate: docker-compose.yml"
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/docker-compose.yml

echo "validate: Kubernetes manifests"
for manifest in deploy/k8s/*.yaml; do
    [[ $manifest == */keda.yaml ]] && continue
    "$venv/bin/kubernetes-validate" --strict --quiet "$manifest"
done
# keda.yaml holds two documents; check-jsonschema reads one per file.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
awk -v dir="$tmp" '/^---/ {n++; next} {print > (dir "/keda-" n+0 ".yaml")}' deploy/k8s/keda.yaml
"$venv/bin/check-jsonschema" --schemafile deploy/k8s/schemas/keda.schema.json "$tmp"/keda-*.yaml
echo "validate: all good"
