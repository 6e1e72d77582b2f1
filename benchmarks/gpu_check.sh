#!/usr/bin/env bash
# The GPU checks of issue 10 (P6) in one run, for a machine with CUDA (GPU time is short):
# the cuda-marked tests, then the categorical benchmark (eager and torch.compile) and the
# categorical-VAE efficiency table on the GPU. Reports go to results/benchmarks/gpu/ (or $OUT).
#     bash benchmarks/gpu_check.sh            # about 5-10 minutes on one GPU
set -u
PY=${PY:-.venv/bin/python}
DEST=${OUT:-results/benchmarks/gpu}
mkdir -p "$DEST"
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))" || exit 1
$PY -m pytest -q -m cuda -p no:cacheprovider tests 2>&1 | tail -40 > "$DEST/pytest_cuda.txt"
$PY benchmarks/bench_categorical.py --device cuda --threads 1 --reps 30 --rao-reps 10 --compile \
    --out "$DEST/categorical.md"
$PY benchmarks/bench_categorical_vae_efficiency.py --device cuda --rounds 5 --out "$DEST/categorical_vae_efficiency.md"
