#!/usr/bin/env bash
# CI check of the binary wheel (issue 11 §4): build the CPU wheel, install it into a fresh virtual environment
# beside the pinned torch, and smoke-test it from outside the checkout (import, every op registered, a tiny
# predict with a random-weight model).
#
#   bash scripts/check_wheel.sh                            # torch==<built release> pip-installed into the venv
#   SEGDET_WHEEL_TORCH=reuse bash scripts/check_wheel.sh   # reuse the build venv's torch through a .pth file
#
# The default installs the pinned torch into the fresh venv from the package index/cache, as a user would:
# measured 125 s on the 2-core development VM (torch 2.14.1+cu130 with its nvidia-* wheels, local mirror).
# "reuse" skips that: a .pth makes the build venv's site-packages importable *after* the fresh venv's own, so
# the imported segdet is the wheel's (the smoke test checks its path) and torch is the pinned one; .pth files
# inside the reused directory are not processed, so a development checkout linked there is not seen.
# Environment: PYTHON (the build interpreter, default .venv/bin/python), KEEP=1 keeps the work directory.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/segdet-wheel.XXXXXX")"
cleanup() { if [ "${KEEP:-0}" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT

step() { echo "== $*"; }

step "build the CPU wheel"
start=$(date +%s)
(cd "$ROOT" && PATH="$(dirname "$PY"):$PATH" FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-2}" \
  "$PY" -m pip wheel --no-build-isolation --no-deps -q -w "$WORK/dist" .)
WHEEL="$(ls "$WORK"/dist/segdet-*.whl)"
echo "built $(basename "$WHEEL") in $(( $(date +%s) - start )) s"

step "check the wheel's version and torch pin"
TORCH_RELEASE="$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')"
"$PY" - "$WHEEL" "$TORCH_RELEASE" <<'PYEOF'
import sys, zipfile
wheel, release = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    names = z.namelist()
version = next(l.split(":", 1)[1].strip() for l in meta.splitlines() if l.startswith("Version:"))
requires = [l.split(":", 1)[1].strip() for l in meta.splitlines() if l.startswith("Requires-Dist:")]
assert version.endswith(f"+pt{release}cpu"), f"wheel version {version} lacks the local tag +pt{release}cpu"
assert f"torch=={release}" in requires, f"wheel does not pin torch=={release}: {requires}"
assert any(n.startswith("segdet/_C") and n.endswith(".so") for n in names), "wheel lacks the compiled segdet/_C"
assert "segdet/_build_info.py" in names, "wheel lacks segdet/_build_info.py"
print(f"version {version}, requires {requires}")
PYEOF

step "fresh virtual environment"
"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
if [ "${SEGDET_WHEEL_TORCH:-index}" = index ]; then
  start=$(date +%s)
  "$VPY" -m pip install -q "torch==$TORCH_RELEASE"
  echo "pip install torch==$TORCH_RELEASE took $(( $(date +%s) - start )) s"
else
  BASE_SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  VSITE="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  echo "$BASE_SITE" > "$VSITE/zz_pinned_torch.pth"
  echo "torch $TORCH_RELEASE reused from $BASE_SITE"
fi
"$VPY" -m pip install -q "$WHEEL"

step "smoke test from outside the checkout"
mkdir -p "$WORK/smoke"
cd "$WORK/smoke"
env -u PYTHONPATH "$VPY" - "$ROOT" "$WORK" <<'PYEOF'
import os, sys
from pathlib import Path
root, work = Path(sys.argv[1]), Path(sys.argv[2])
import numpy as np
import torch
import segdet
import segdet.ops
assert Path(segdet.__file__).resolve().is_relative_to((work / "venv").resolve()), f"imported {segdet.__file__}"
ops = ["roi_align", "_roi_align_backward", "nms", "batched_nms", "decode_boxes", "paste_masks", "paste_masks_crops",
       "check_image"]
missing = [op for op in ops if not hasattr(torch.ops.segdet, op)]
assert not missing, f"ops not registered: {missing}"
from omegaconf import OmegaConf
from PIL import Image
from segdet.config import compose_model_config
from segdet.engine.predictor import predict
from segdet.modeling import build_model
# Configs are read from the checkout (they are not part of the wheel); all code comes from the wheel.
cfg = compose_model_config("maskrcnn_small", conf_dir=root / "conf")
cfg["num_classes"] = 3
torch.manual_seed(0)
model = build_model(cfg)
resolved = OmegaConf.to_container(OmegaConf.create(cfg), resolve=True)
torch.save({"model": model.state_dict(), "model_config": resolved}, "m.pt")
Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)).save("img.png")
# The model config comes from the checkpoint, as scripts/predict.py does without model=.
results = predict(cfg_model=None, checkpoint="m.pt", input="img.png", output="out", score_threshold=0.0,
                  num_workers=0)
assert (Path("out") / "predictions.json").is_file() and (Path("out") / "img.png").is_file()
print(f"segdet {segdet.__version__} from {Path(segdet.__file__).parent}: {len(ops)} ops registered, "
      f"tiny predict wrote {len(results)} detections")
PYEOF
step "wheel check passed"
