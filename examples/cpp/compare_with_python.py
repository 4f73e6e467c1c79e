"""ctest check of examples/cpp/segdet_predict: its JSON equals the Python results of the same package.

python compare_with_python.py SEGDET_PREDICT LIBSEGDET_OPS.so [PACKAGE.pt2]
(PACKAGE: reuse one made by scripts/export.py, with at least 110 x 150 px in its size range.)

Without PACKAGE, exports a random-weight maskrcnn_small (a few minutes: AOTInductor compiles). The Python side
runs the package through torch._inductor.aoti_load_package with the same op library.
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]


def export_random_model(path: Path) -> None:
    from hydra import compose, initialize_config_dir

    from segdet.export import compile_package, export_model, package_metadata
    from segdet.modeling import build_model

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("export", ["checkpoint=x", "output=y.pt2"]).model
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():  # spread mask logits (tests/export/test_export.py says why)
        torch.nn.init.normal_(model.roi_heads.mask_head.predictor.weight, std=0.5)
    meta = package_metadata(num_classes=4, class_names=["circle", "square", "triangle", "star"],
                            label_to_category_id=None, min_side=32, max_side=512)
    compile_package(export_model(model, min_side=32, max_side=512), path, meta)


def main() -> int:
    if sys.argv[1] == "--export":  # the child process: this one must not import segdet (its _C defines the ops)
        export_random_model(Path(sys.argv[2]))
        return 0
    binary, library = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        package = Path(sys.argv[3]) if len(sys.argv) > 3 else tmp / "model.pt2"
        if len(sys.argv) <= 3:
            # Exported in a child process: importing segdet here would register the ops a second time when the
            # op library is loaded below (two libraries defining segdet::* abort the process).
            subprocess.run([sys.executable, __file__, "--export", str(package)], check=True, timeout=1800)
        torch.ops.load_library(library)
        model = torch._inductor.aoti_load_package(str(package))
        names = json.loads(model.get_metadata()["segdet.class_names"])
        rgb = np.random.default_rng(0).integers(0, 256, (110, 150, 3), dtype=np.uint8)
        ppm = tmp / "image.ppm"
        ppm.write_bytes(b"P6\n# test image\n150 110\n255\n" + rgb.tobytes())
        boxes, scores, labels, masks = model(torch.from_numpy(rgb).permute(2, 0, 1).contiguous())
        proc = subprocess.run([binary, library, str(package), str(ppm), "0.0"], capture_output=True, text=True,
                              timeout=600)
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr)
            return 1
        got = json.loads(proc.stdout)
        dets = got["detections"]
        assert (got["height"], got["width"]) == (110, 150), (got["height"], got["width"])
        assert len(dets) == boxes.shape[0] > 0, (len(dets), boxes.shape[0])
        for i, d in enumerate(dets):
            assert d["label"] == int(labels[i]) and d["class_name"] == names[int(labels[i]) - 1], (i, d)
            assert abs(d["score"] - float(scores[i])) <= 1e-6, (i, d["score"], float(scores[i]))
            assert np.allclose(d["box"], boxes[i].tolist(), atol=1e-3), (i, d["box"], boxes[i].tolist())
            assert d["mask_area"] == int(masks[i].sum()), (i, d["mask_area"], int(masks[i].sum()))
        bad = subprocess.run([binary, library, str(package), str(tmp / "missing.ppm")], capture_output=True,
                             text=True, timeout=600)
        assert bad.returncode == 1 and "missing.ppm" in bad.stderr, bad.stderr
        print(f"segdet_predict matches Python on {len(dets)} detections")
    return 0


if __name__ == "__main__":
    sys.exit(main())
