#!/usr/bin/env bash
# Set everything up from nothing (./.venv, dependencies, segdet._C) and run the test suite.
# Extra arguments go to pytest, e.g. scripts/run_tests.sh tests/ops -k roi_align
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python -m pytest "$@"
