#!/usr/bin/env bash
# Kept where the first releases documented it: the script is scripts/bench/run.sh.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../../scripts/bench/run.sh" "$@"
