#!/usr/bin/env bash
# Executes every CUDA kernel on the CPU: builds csrc/ops/cuda/*.cu with g++ for the emulator in
# csrc/emu (-fsanitize=address,undefined), runs the emulator's self-test, then tests/emu, which
# compare each emulated kernel with the CPU kernel on the CPU tests' case sweeps under several
# schedules. Prints one line per kernel, "emulated <kernel>: <N> cases, <M> mismatches" (a case is
# one comparison under one schedule), and exits non-zero on any mismatch, failed test or sanitizer
# report. Extra arguments go to pytest (e.g. -x); a filter that leaves a kernel without cases fails.
#
# Needs the normal CPU build (./.venv, segdet/_C): scripts/bootstrap.sh provides it. A worktree whose
# .venv is a symlink to another checkout's shares that venv, and must not re-point it: there the
# bootstrap is skipped and the existing build is used.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
if [[ ! -L .venv ]]; then
  bash scripts/bootstrap.sh
fi
export PATH="$PWD/.venv/bin:$PATH"
PY="$PWD/.venv/bin/python"
BUILD=${SEGDET_EMU_BUILD_DIR:-build/emu}
mkdir -p "$BUILD"

echo "--- build (g++ -DSEGDET_EMULATION -fsanitize=address,undefined) into $BUILD"
"$PY" scripts/build_cuda_emulation.py --build-dir "$BUILD" > "$BUILD/build.log" 2>&1 || {
  tail -n 40 "$BUILD/build.log"; echo "run_cuda_emulation: build failed (log: $BUILD/build.log)"; exit 1; }

# Sanitizer reports are fatal (UBSan: -fno-sanitize-recover); this pattern also catches any that
# is printed without stopping the process.
SANITIZER_REPORT='ERROR: AddressSanitizer|ERROR: LeakSanitizer|runtime error:|UndefinedBehaviorSanitizer'

echo "--- emulator self-test ($BUILD/test_cuda_emu)"
if ! "$BUILD/test_cuda_emu" > "$BUILD/selftest.log" 2>&1; then
  cat "$BUILD/selftest.log"; echo "run_cuda_emulation: emulator self-test failed"; exit 1
fi
tail -n 1 "$BUILD/selftest.log"

echo "--- emulated kernels against the CPU kernels (tests/emu)"
# libasan must come first in the process; libstdc++ is preloaded with it because python does not
# link it, and ASan's __cxa_throw interceptor must find it when it initialises. Python's own
# allocations are never freed at exit, hence detect_leaks=0.
PRELOAD="$(g++ -print-file-name=libasan.so) $(readlink -f "$(g++ -print-file-name=libstdc++.so)")"
SUMMARY="$BUILD/summary.json"
rm -f "$SUMMARY"
set +e
LD_PRELOAD="$PRELOAD" ASAN_OPTIONS="detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
  SEGDET_EMU_LIB="$PWD/$BUILD/libsegdet_emu.so" SEGDET_EMU_SUMMARY="$SUMMARY" PYTHONPATH="$PWD" \
  PYTHONUNBUFFERED=1 "$PY" -m pytest tests/emu -q -p no:cacheprovider --capture=sys "$@" > "$BUILD/pytest.log" 2>&1
rc=$?
set -e
tail -n 1 "$BUILD/pytest.log"
status=0
if grep -qE "$SANITIZER_REPORT" "$BUILD/pytest.log"; then
  grep -m1 -A30 -E "$SANITIZER_REPORT" "$BUILD/pytest.log"
  echo "run_cuda_emulation: sanitizer report (log: $BUILD/pytest.log)"
  status=1
elif [[ $rc -ne 0 ]]; then
  grep -E "^(FAILED|ERROR) |^E  " "$BUILD/pytest.log" | head -n 30 || tail -n 30 "$BUILD/pytest.log"
  echo "run_cuda_emulation: pytest exited with $rc (log: $BUILD/pytest.log)"
  status=1
fi
"$PY" - "$SUMMARY" <<'PYEOF' || status=1
import json, os, sys

path = sys.argv[1]
if not os.path.exists(path):
    print("run_cuda_emulation: the tests wrote no summary (crashed?)")
    sys.exit(1)
tally = json.load(open(path))
KERNELS = list(tally)  # tests/emu/_harness.py's KERNELS: every kernel must have run cases
bad = False
for k in KERNELS:
    cases, mismatches = tally[k]["cases"], tally[k]["mismatches"]
    print(f"emulated {k}: {cases} cases, {mismatches} mismatches")
    bad = bad or mismatches > 0 or cases == 0
sys.exit(1 if bad else 0)
PYEOF
echo "--- run_cuda_emulation: $(( $(date +%s) - start )) s, $([[ $status -eq 0 ]] && echo OK || echo FAILED)"
exit $status
