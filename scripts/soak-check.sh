#!/usr/bin/env bash
# The short soak CI runs (issue 26), outside the test command's budget: two minutes of
# load on a database seeded with 8 days of history at 0.1 questions a second (69,000
# ended jobs, a day of them past retention), on the soak's own PostgreSQL
# (scripts/bench/soak-postgres.sh). It fails when a gated verdict fails: an operation
# lost, duplicated or stuck, or an acknowledgement that reads more than twice the rows
# it acknowledges, the cost that grows with history. The full hour is
# `scripts/bench/run.sh soak` (BENCHMARKS.md, "Soak").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec bash scripts/bench/run.sh --runs 1 soak --minutes 2 --seed-days 8 --seed-rate 0.1
