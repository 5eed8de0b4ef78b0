#!/usr/bin/env bash
# Issue 18: run the accelerator path on a machine with a CUDA GPU, from a set-up checkout
# (bash scripts/setup.sh): the GPU test cases (skipped elsewhere), then gpu_check.py's training
# steps in every precision and a GPU-trained checkpoint evaluated on the CPU. Writes
# benchmarks/results/gpu_check.json.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 2)" || {
    echo "gpu_check: no CUDA device visible to torch here; run this on a machine with a GPU" >&2; exit 2; }
.venv/bin/python -m pytest -q -m gpu tests/trainers tests/search tests/data  # the tests marked gpu
cd benchmarks && ../.venv/bin/python gpu_check.py
