#!/usr/bin/env bash
# The first-GPU check (issue 10, section 5), in one go, under 8 minutes on one GPU:
#   1. the CUDA build of segdet._C in place (FORCE_CUDA=1, arch 9.0 unless TORCH_CUDA_ARCH_LIST says),
#   2. the CUDA tests (pytest -m cuda over tests/ops),
#   3. compute-sanitizer memcheck, racecheck and synccheck over scripts/sweep_ops.py (a small sweep
#      of every op and kernel variant, compared with the CPU kernels),
#   4. scripts/bench_ops.py --device cuda --quick.
# Everything goes to a log (GPU_CHECK_LOG, default gpu_check.log) that can be pasted into
# BENCHMARKS.md; the summary at its end has one line per step. Exits non-zero if any step failed,
# but runs every step regardless, so one run shows everything.
#
#   bash scripts/gpu_check.sh                 # PYTHON=... to pick the interpreter
set -uo pipefail
cd "$(dirname "$0")/.."

LOG=${GPU_CHECK_LOG:-gpu_check.log}
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec > >(tee "$LOG") 2>&1

summary=()
failed=0
# The whole check stays under 8 minutes: each step's own limit is cut to what is left of the
# budget, and a step with under 10 s left is skipped (and counted as a failure).
BUDGET=${GPU_CHECK_BUDGET_S:-470}
# step NAME SECONDS CMD...: runs CMD under a timeout and records its outcome and duration.
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET - SECONDS))
  if ((left < 10)); then
    failed=1
    summary+=("$name: SKIPPED, out of the ${BUDGET} s budget")
    return
  fi
  ((limit > left)) && limit=$left
  echo
  echo "== $name ($(date -u +%H:%M:%S) UTC, limit ${limit} s)"
  local start=$SECONDS rc=0
  timeout --kill-after=10 "$limit" "$@" || rc=$?
  local took=$((SECONDS - start))
  if [[ $rc -eq 0 ]]; then
    summary+=("$name: ok (${took} s)")
  else
    failed=1
    [[ $rc -eq 124 ]] && summary+=("$name: TIMED OUT after ${took} s") || summary+=("$name: FAILED, exit $rc (${took} s)")
  fi
}

echo "# segdet GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not available"
nvcc --version 2>/dev/null | tail -n 2
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)"

export FORCE_CUDA=1
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
step "cuda build (TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST)" 300 "$PYTHON" setup.py -q build_ext --inplace
step "registration" 60 "$PYTHON" scripts/check_registration.py --cuda "$(ls segdet/_C*.so | head -n1)"
step "cuda tests" 150 "$PYTHON" -m pytest -q -m cuda -p no:cacheprovider ${GPU_CHECK_TESTS:-tests/ops}

if command -v compute-sanitizer >/dev/null; then
  # Only segdet's kernels are instrumented where the sanitizer can filter by name (much faster);
  # torch's own kernels still run.
  filter=()
  if compute-sanitizer --help 2>&1 | grep -q -- "--kernel-name"; then
    filter=(--kernel-name kns=segdet)
  fi
  for tool in memcheck racecheck synccheck; do
    step "compute-sanitizer $tool" 120 compute-sanitizer --tool "$tool" --error-exitcode 3 "${filter[@]}" \
      "$PYTHON" scripts/sweep_ops.py --device cuda
  done
else
  failed=1
  summary+=("compute-sanitizer: NOT FOUND on PATH")
fi

step "bench_ops --device cuda --quick" 150 "$PYTHON" scripts/bench_ops.py --device cuda --quick --json bench_ops_cuda.json

echo
echo "== summary"
for line in "${summary[@]}"; do echo "  $line"; done
echo "log: $LOG"
exit $failed
