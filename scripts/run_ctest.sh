#!/usr/bin/env bash
# Configure and build with CMake (the op library against the venv's torch, and the C++ tests of the
# shared host/device math), then run ctest. Assumes scripts/bootstrap.sh has set up ./.venv.
set -euo pipefail
cd "$(dirname "$0")/.."
# ninja (and cmake helpers) from the venv when the system has none.
export PATH="$PWD/.venv/bin:$PATH"
BUILD=${CMAKE_BUILD_DIR:-build/cmake}
cmake -S . -B "$BUILD" -G Ninja -DPython3_EXECUTABLE="$PWD/.venv/bin/python" "$@"
cmake --build "$BUILD" -j "${MAX_JOBS:-2}"
ctest --test-dir "$BUILD" --output-on-failure
