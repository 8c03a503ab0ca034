#!/usr/bin/env bash
# Kept where the first releases documented it: the script is scripts/test.sh.
exec bash "$(dirname "${BASH_SOURCE[0]}")/../../scripts/test.sh" "$@"
