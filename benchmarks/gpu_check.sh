#!/usr/bin/env bash
# The GPU run, as one prepared script for a lent CUDA machine (its own python3 and packages; nothing is installed):
#   bash benchmarks/gpu_check.sh [PATH_TO_ml-atoken]      # default: $ATOKEN_OFFICIAL or ./shared/ml-atoken
# 1. the CUDA-only and compile tests (gsplat rasteriser parity, zero graph breaks, export);
# 2. `benchmarks.run --suite gpu`: ours vs the official code (same weights, bf16 and fp32; an SDPA stand-in when
#    flash-attn is absent), compiled (fullgraph) vs eager and MFU against the measured bf16 matmul rate for So/C at
#    256 and 512 px, scaling with image side and video length (memory flat in length);
# and writes benchmarks/results/gpu.{md,json} (copied to $OUT when the device tool sets it).
set -uo pipefail
cd "$(dirname "$0")/.."
official="${1:-${ATOKEN_OFFICIAL:-shared/ml-atoken}}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || { echo "no CUDA device" >&2; exit 2; }
python3 -c "import torch; assert torch.cuda.is_available(); print('torch', torch.__version__, torch.version.cuda)" \
    || exit 2
python3 -m pytest -q -x -p no:cacheprovider tests/test_gaussians.py tests/test_compile.py tests/test_parity.py 2>&1 \
    | tail -5
args=(--suite gpu --only official scaling efficiency)
if [ -d "$official" ]; then args+=(--official "$official"); else echo "no official checkout at $official: skipping the comparison" >&2; fi
python3 -m benchmarks.run "${args[@]}"
if [ -n "${OUT:-}" ]; then cp benchmarks/results/gpu.md benchmarks/results/gpu.json "$OUT"/ 2>/dev/null || true; fi
