#!/usr/bin/env bash
# The main job: build the extension, then train the default config from scratch on the CPU - synthetic shapes
# data (generated on first use), the small Mask R-CNN, COCO evaluation on the val split, overlay PNGs.
# Results: runs/default/metrics.json (bbox/AP, segm/AP, ...), runs/default/overlays/, runs/default/metrics.jsonl.
# Running it again resumes from the newest checkpoint (a finished run only re-evaluates); extra arguments are
# Hydra overrides, e.g. scripts/run_main.sh resume=false.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/python scripts/train.py "$@"
