#!/usr/bin/env bash
# Plots a soak run's CSV: `scripts/bench/plot_soak.sh SOAK.csv OUTDIR` writes one PNG
# per figure into OUTDIR (see scripts/bench/plot_soak.py). On first use it creates a
# virtualenv with matplotlib at .local/plot.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
if [ ! -x .local/plot/bin/python ]; then
  python3 -m venv .local/plot
  # A failed install must not leave a venv that the check above takes for a good one.
  .local/plot/bin/pip install -q matplotlib || { rm -rf .local/plot; exit 1; }
fi
.local/plot/bin/python scripts/bench/plot_soak.py "$@"
