#!/usr/bin/env bash
# Compile segdet._C with its CUDA kernels on a machine without a GPU, in a build directory of its
# own (build/cuda-*) so the in-place CPU build stays untouched, then check that every segdet op
# has a CUDA kernel registered in that library.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .stamps
exec 9>.stamps/cuda-lock
flock 9
# ninja (and cmake helpers) from the venv when the system has none.
export PATH="$PWD/.venv/bin:$PATH"
export FORCE_CUDA=1
# +PTX on the last entry: newer GPUs JIT the PTX instead of failing with "no kernel image".
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-"8.0;9.0+PTX"}
export MAX_JOBS=${MAX_JOBS:-2}
echo "[cuda-build] FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST"
.venv/bin/python setup.py -q build_ext --build-temp build/cuda-temp --build-lib build/cuda-lib
lib=$(ls build/cuda-lib/segdet/_C*.so | head -n1)
.venv/bin/python scripts/check_registration.py --cuda "$lib"
