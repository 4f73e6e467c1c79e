"""Runs an AOTInductor package in a process that never imports segdet (tests/export/test_export.py).

python _run_package.py LIBRARY PACKAGE INPUTS.pt OUTPUTS.pt
INPUTS.pt: list of uint8 Tensor[3, H, W]; OUTPUTS.pt: {"outputs": list of (boxes, scores, labels, masks),
"metadata": dict, "errors": list of [kind, message] for the bad inputs, "segdet_imported": bool}.
"""
import sys

import torch

library, package, inputs, outputs = sys.argv[1:5]
torch.ops.load_library(library)
model = torch._inductor.aoti_load_package(package)
images = torch.load(inputs)
result = {"outputs": [tuple(t.clone() for t in model(img)) for img in images], "metadata": model.get_metadata()}
errors = []
for bad in (images[0].float(), images[0][0], torch.zeros(3, 8, 8, dtype=torch.uint8)):
    try:
        model(bad)
        errors.append(["none", ""])
    except Exception as exc:  # noqa: BLE001  (the test checks the type and message)
        errors.append([type(exc).__name__, str(exc)])
result["errors"] = errors
result["segdet_imported"] = any(name == "segdet" or name.startswith("segdet.") for name in sys.modules)
torch.save(result, outputs)
