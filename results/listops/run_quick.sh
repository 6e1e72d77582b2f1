#!/bin/bash
# The quick grid, seed-major so that a partial store covers every estimator (resumable: rerun it).
# Usage: bash results/listops/run_quick.sh [SEEDS...]   (default: 0 1 2)
set -e
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
OUT=${LISTOPS_OUT:-results/listops}
for seed in ${@:-0 1 2}; do
  .venv/bin/discretegrad run listops --quick --seeds "$seed" --out "$OUT" --quiet
  .venv/bin/discretegrad run listops --quick --seeds "$seed" --estimators stgs --set latent=arborescence --set gcn_layers=2 --out "$OUT" --quiet
done
