"""Export of a trained Mask R-CNN to an AOTInductor package (``.pt2``) that runs without segdet's Python code.

The package is called with one image, a uint8 Tensor[3, H, W] RGB (H, W dynamic within ``[min_side, max_side]``),
and returns ``(boxes float32 [D, 4] x1y1x2y2 input pixels, scores float32 [D], labels int64 [D] in 1..K, masks bool
[D, H, W])``, the eager model's output for that image. It needs segdet's compiled ops in the process
(``torch.ops.load_library(segdet.ops.library_path())``) and nothing else of segdet.

Data-dependent sizes (proposals after NMS, detections after the score threshold and NMS) are unbacked symbolic
sizes: torch.export traces the real ops, whose fake kernels give outputs of unknown length, and the graph keeps
them variable. No fixed-capacity buffer or padding is needed and the outputs have exactly D rows.

Metadata (strings, ``aoti_load_package(path).get_metadata()``): ``segdet.class_names`` (JSON list of K names for
labels 1..K), ``segdet.label_to_category_id`` (JSON object label -> dataset category id, or null),
``segdet.num_classes``, ``segdet.min_side``, ``segdet.max_side``, ``segdet.amp``, ``segdet.torch_version``,
``segdet.version``.

Precision (``amp``): "none" exports float32; "bf16" exports the model as it runs under ``torch.autocast(bf16)`` (the
convolutions and linear layers in bf16, box coding, NMS and pasting in float32, as segdet's autocast rules say). The
trace and the AOTInductor compile both run under the autocast context: the compile re-traces the exported program,
and outside autocast that re-trace would compute the layers in float32 and contradict the dtypes recorded at export.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = ["ExportError", "InferenceWrapper", "export_model", "export_checkpoint", "package_metadata",
           "EXPORT_AMP", "METADATA_PREFIX"]

METADATA_PREFIX = "segdet."

# layout_optimization off: with torch 2.14.1 on the CPU, inductor's channels-last layout optimisation computes
# wrong results for back-to-back convolutions whose batch size is unbacked (the mask head's batch is the number
# of detections): a 2-conv stack differed by up to 0.8 from eager, 0.0 with it off (tests/export/test_export.py
# catches it through the mask IoU).
INDUCTOR_CONFIGS = {"layout_optimization": False}

# The precisions a package can be exported in (the ``amp`` key of conf/export.yaml).
EXPORT_AMP = ("none", "bf16")


def _check_export_amp(amp: str) -> None:
    if amp not in EXPORT_AMP:
        raise ValueError(f"amp must be one of {', '.join(EXPORT_AMP)} for an export, got {amp!r}")


def _export_autocast(amp: str, device: torch.device):
    from segdet.utils.amp import autocast, resolve_amp

    _check_export_amp(amp)
    return autocast(device, resolve_amp(amp, device))


class ExportError(RuntimeError):
    """torch.export or AOTInductor could not turn the model into a package."""


class InferenceWrapper(nn.Module):
    """One image in, a tuple out: the call convention of the package.

    forward(image uint8 Tensor[3, H, W] RGB) -> (boxes float32 [D, 4] x1y1x2y2 input pixels, scores float32 [D],
    labels int64 [D] in 1..K, masks bool [D, H, W]).
    """

    def __init__(self, model: nn.Module, min_side: int, max_side: int):
        super().__init__()
        self.model = model
        self.min_side = int(min_side)
        self.max_side = int(max_side)

    def forward(self, image: torch.Tensor):
        import segdet.ops  # noqa: F401  (registers check_image's fake kernel)

        # In the graph, so the compiled package checks its own input (csrc/ops/check_image.cpp).
        image = torch.ops.segdet.check_image(image, self.min_side, self.max_side)
        (out,) = self.model([image])
        return out["boxes"].float(), out["scores"].float(), out["labels"].long(), out["masks"].bool()


def _example_size(model: nn.Module, min_side: int, max_side: int) -> tuple[int, int]:
    # An example whose resized size is not a multiple of the padding and whose sides differ, so no
    # coincidence (H == W, no padding needed, H equal to a constant of the model) can specialise the trace.
    base = int(getattr(model, "min_size", (128,))[-1])
    h = min(max(min_side, base - 13), max_side)
    w = min(max(min_side, int(h * 1.37) + 3), max_side)
    return h, w


def export_model(model: nn.Module, *, min_side: int = 32, max_side: int = 2048,
                 example_size: tuple[int, int] | None = None, amp: str = "none") -> torch.export.ExportedProgram:
    """torch.export (strict, so a graph break is an error) of ``model``'s inference on one uint8 image with
    dynamic height and width in ``[min_side, max_side]``, in the precision ``amp`` (module docstring; compile it
    with the same ``amp``). The model is put in eval mode."""
    if not 1 <= min_side <= max_side:
        raise ValueError(f"need 1 <= min_side <= max_side, got min_side={min_side}, max_side={max_side}")
    model.eval()
    wrapper = InferenceWrapper(model, min_side, max_side).eval()
    h, w = example_size or _example_size(model, min_side, max_side)
    device = next(model.parameters()).device
    example = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, device=device)
    dims = {1: torch.export.Dim("height", min=min_side, max=max_side),
            2: torch.export.Dim("width", min=min_side, max=max_side)}
    with torch.no_grad(), _export_autocast(amp, device):
        try:
            return torch.export.export(wrapper, (example,), dynamic_shapes={"image": dims}, strict=True)
        except Exception as exc:  # noqa: BLE001  (torch.export raises many types; all mean the same here)
            raise ExportError(f"torch.export of {type(model).__name__} failed: {exc}") from exc


def package_metadata(*, num_classes: int, class_names: Sequence[str], label_to_category_id: Mapping | None,
                     min_side: int, max_side: int, amp: str = "none",
                     extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The string metadata stored in the package (module docstring)."""
    import segdet

    if len(class_names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} names, the model has num_classes={num_classes}")
    mapping = None if label_to_category_id is None else {str(int(k)): int(v) for k, v in label_to_category_id.items()}
    meta = {
        "class_names": json.dumps([str(n) for n in class_names]),
        "label_to_category_id": json.dumps(mapping),
        "num_classes": str(int(num_classes)),
        "min_side": str(int(min_side)),
        "max_side": str(int(max_side)),
        "amp": str(amp),
        "torch_version": torch.__version__,
        "version": segdet.__version__,
        **dict(extra or {}),
    }
    return {METADATA_PREFIX + k: v for k, v in meta.items()}


def compile_package(ep: torch.export.ExportedProgram, output: str | os.PathLike, metadata: Mapping[str, str], *,
                    amp: str = "none") -> Path:
    """AOTInductor-compile ``ep`` (exported with the same ``amp``) and write the package ``output`` (written to a
    temporary name, then renamed, so a failed compile leaves an existing file as it was)."""
    declared = metadata.get(METADATA_PREFIX + "amp", amp)
    if declared != amp:
        raise ValueError(f"compile_package: amp={amp!r} but the metadata says {METADATA_PREFIX}amp={declared!r}; "
                         "compile with the amp the program was exported with")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    # Compiled under the final file name inside a temporary directory: the archive's root folder is named after
    # the file, and a temporary name would be baked into the package.
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{output.name}.tmp", dir=output.parent))
    tmp = tmp_dir / output.name
    device = next((t.device for t in ep.state_dict.values() if isinstance(t, torch.Tensor)), torch.device("cpu"))
    try:
        with torch.no_grad(), _export_autocast(amp, device):
            torch._inductor.aoti_compile_and_package(
                ep, package_path=str(tmp),
                inductor_configs=dict(INDUCTOR_CONFIGS, **{"aot_inductor.metadata": dict(metadata)}),
            )
        os.replace(tmp, output)
    except Exception as exc:  # noqa: BLE001
        raise ExportError(f"AOTInductor compilation to {output} failed: {exc}") from exc
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return output


def export_checkpoint(*, cfg_model, checkpoint: str | os.PathLike, output: str | os.PathLike, device: str = "cpu",
                      min_side: int = 32, max_side: int = 2048, class_names: Sequence[str] | None = None,
                      amp: str = "none") -> dict:
    """Everything ``scripts/export.py`` does: load the checkpoint into the model of ``cfg_model`` (the checkpoint's
    num_classes wins, a config that does not fit the weights fails naming the differences), export, compile,
    package. Returns {"output", "export_s", "compile_s", "metadata"}."""
    from segdet.engine.predictor import load_model, resolve_class_names

    output = Path(output)
    if output.suffix != ".pt2":
        raise ValueError(f"output must be a .pt2 file, got {str(output)!r}")
    _check_export_amp(amp)  # before the (slow) model load
    from segdet.engine.checkpoint import resolve_checkpoint

    path = resolve_checkpoint(checkpoint)
    model, info = load_model(cfg_model, path, device)
    names = resolve_class_names(class_names, info, int(model.num_classes))
    meta = package_metadata(num_classes=int(model.num_classes), class_names=names,
                            label_to_category_id=info.get("label_to_category_id"), min_side=min_side,
                            max_side=max_side, amp=amp, extra={"checkpoint": str(path), "device": str(device)})
    t0 = time.perf_counter()
    ep = export_model(model, min_side=min_side, max_side=max_side, amp=amp)
    t1 = time.perf_counter()
    logger.info("torch.export took %.1f s", t1 - t0)
    compile_package(ep, output, meta, amp=amp)
    t2 = time.perf_counter()
    logger.info("AOTInductor compile + package took %.1f s; wrote %s", t2 - t1, output)
    return {"output": str(output), "export_s": t1 - t0, "compile_s": t2 - t1, "metadata": meta}
