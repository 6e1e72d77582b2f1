#!/usr/bin/env bash
# issue 15's poisson-gan checks (quick protocol: 50 epochs, 5 seeds), resumable through the store.
set -u
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
DG=".venv/bin/discretegrad"
run() { echo "== $(date -u +%H:%M:%S) $*"; "$DG" run poisson-gan --quick --workers 1 --quiet --out results/poisson-gan-fidelity "$@"; }
# pWGF with its step on the per-sample gradient (the new default) next to ../poisson-gan's (step / 64)
run --estimators pwgf_mmd
# the learning rate of theta: 10 times smaller, ST and pWGF
run --estimators st,pwgf_mmd --set lr=0.001
echo "== $(date -u +%H:%M:%S) done"
