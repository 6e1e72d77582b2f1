#!/usr/bin/env bash
# issue 11's next protocol: the quick data at the paper's hidden size 300, 20 epochs, tau 0.01, STGS and
# GST-1.0 alternating seed by seed (Table 6's finding is that STGS collapses in some seeds). Every run
# resumes from its store and a killed run from its last checkpoint (one per epoch, ~4 minutes apart).
# About 60 CPU-minutes per run on an idle core with subnormal floats flushed, 80-90 at load 3
# (results/listops/README.md, Speed and cost).
#   OMP_NUM_THREADS=1 bash tools/listops_sweeps.sh
set -u
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
for s in 0 1 2 3 4; do
  for e in stgs gst:gap=1.0; do
    echo "== $(date -u +%H:%M:%S) listops hidden 300 $e seed $s"
    .venv/bin/discretegrad run listops --quick --set epochs=20 --set hidden=300 --set tau=0.01 --estimators "$e" \
        --seeds "$s" --out results/listops/quick-h300 --quiet --workers 1 --set data_root=../shared/data/listops
  done
done
echo "== $(date -u +%H:%M:%S) done"
