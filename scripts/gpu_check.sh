#!/usr/bin/env bash
# One prepared run of every GPU path, for a session that is lent a GPU (about 8 minutes on one
# H200). Prints a log to record in BENCHMARKS.md; writes it to ${OUT:-.}/gpu_check.log too.
#   bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
LOG=${OUT:-.}/gpu_check.log
export PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  echo "== CUDA tests (CPU == GPU up to rounding, DDP, CLI)"
  timeout 240 $PY -m pytest -q -x tests/data/test_shaders.py -k cuda
  echo "== generation at 224 px on the GPU (target: the whole mix > 10,000 images/s)"
  timeout 200 $PY scripts/bench_generate.py --device cuda --batch-size 512 --sizes 224 --seconds 5
  echo "== training: streaming vs pre-made tensors (target: within 10%)"
  timeout 300 $PY scripts/bench_train.py --device gpu --paper-batch 64 --steps 20
} 2>&1 | tee "$LOG"
