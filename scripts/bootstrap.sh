#!/usr/bin/env bash
# Set up ./.venv and build segdet._C. Idempotent and quick when nothing changed:
# dependencies are reinstalled only when requirements*.txt change, and the extension is
# rebuilt (incrementally, by ninja) only when csrc/ or setup.py change.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
STAMPS=$ROOT/.stamps
mkdir -p "$STAMPS"
exec 9>"$STAMPS/lock"
flock 9  # one bootstrap/build at a time in this checkout

PYTHON_BIN=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  echo "[bootstrap] creating $VENV"
  "$PYTHON_BIN" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
PY=$VENV/bin/python
export PATH="$VENV/bin:$PATH"  # the ninja that pip installed, when the system has none

hash_of() { cat "$@" 2>/dev/null | sha256sum | cut -d' ' -f1; }

deps_hash=$(hash_of requirements.txt requirements-dev.txt)
if [ "$(cat "$STAMPS/deps" 2>/dev/null)" != "$deps_hash" ]; then
  echo "[bootstrap] installing dependencies"
  "$PY" -m pip install -q -r requirements-dev.txt
  echo "$deps_hash" > "$STAMPS/deps"
fi

src_hash=$(find csrc setup.py -type f \( -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh' -o -name 'setup.py' \) \
  -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
src_hash="$src_hash-${FORCE_CUDA:-auto}"
so_present=$(ls segdet/_C*.so 2>/dev/null | head -n1 || true)
if [ -z "$so_present" ] || [ "$(cat "$STAMPS/ext" 2>/dev/null)" != "$src_hash" ]; then
  export MAX_JOBS=${MAX_JOBS:-2}
  # Incremental in-place build in ./build (ninja recompiles only what changed). The .pth file
  # below makes the checkout importable from the venv, as `pip install -e .` would.
  echo "[bootstrap] building segdet._C"
  "$PY" setup.py -q build_ext --inplace
  echo "$src_hash" > "$STAMPS/ext"
fi
site=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
[ "$(cat "$site/segdet-checkout.pth" 2>/dev/null)" = "$ROOT" ] || echo "$ROOT" > "$site/segdet-checkout.pth"
