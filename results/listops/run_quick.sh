#!/bin/bash
# The quick grid (hidden 64, 20,000 generated lines of fewer than 30 tokens, 4 epochs, tau = 0.01):
# four one-thread workers on one store, one per estimator column (stgs, gst(gap=1.0), the
# arborescence with stgs, gumbel_rao(mc_samples=10)), each over the seeds in order, so that a
# partial store covers every column. Resumable: rerun it, finished runs are skipped.
# Usage: bash results/listops/run_quick.sh [SEEDS]   (default: 0-2)
set -e
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
OUT=${LISTOPS_OUT:-results/listops}
SEEDS=${1:-0-2}
RUN=(.venv/bin/discretegrad run listops --quick --seeds "$SEEDS" --out "$OUT" --quiet)
"${RUN[@]}" --estimators stgs &
"${RUN[@]}" --estimators gst:gap=1.0 &
"${RUN[@]}" --estimators stgs --set latent=arborescence &
"${RUN[@]}" --estimators gumbel_rao:mc_samples=10 &
wait
