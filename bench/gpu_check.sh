#!/usr/bin/env bash
# The training-throughput check on a bare GPU box (one call of the lent-GPU `run` tool, or
# any CUDA machine whose image has torch + transformers + accelerate but no package index).
#
#   bench/gpu_check.sh [BENCH OPTIONS]  # wheels from .whl/ (see below), results in $OUT or /tmp
#
# .whl/ holds what the image lacks, fetched beforehand on a machine with an index:
#   pip wheel --no-deps deepspeed==0.19.8 hjson -w .whl
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
#       -d .whl liger-kernel==0.8.5 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types typing-inspection
# It prints the bench's one JSON line (bench/train_throughput.py: padded, packed, packed+fused).
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || { echo "wheel install failed"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 DS_SKIP_CUDA_CHECK=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers, deepspeed, liger_kernel, triton; print('torch', torch.__version__, 'transformers', transformers.__version__, 'deepspeed', deepspeed.__version__, 'triton', triton.__version__)" 2>&1 | grep -v Warning

python3 bench/train_throughput.py --size 1b --steps ${STEPS:-5} --warmup-steps 2 --timeout ${VARIANT_TIMEOUT:-300} \
  --work-dir /tmp/bench "$@" 2> "$OUT/bench.stderr" | tee "$OUT/bench.json"
for v in padded packed packed_fused; do cp /tmp/bench/$v/metrics.jsonl "$OUT/$v.metrics.jsonl" 2>/dev/null; done
tail -c 6000 "$OUT/bench.stderr"
