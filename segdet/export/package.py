"""Running an exported package (``scripts/export.py``'s FILE.pt2) in place of the eager model.

``load_package`` gives a ``PackageModel``: an ``nn.Module`` with the eager ``MaskRCNN``'s inference call
convention (a list of images in, one output dict per image out), so ``segdet.engine.predictor.predict_files``
runs it through the same pipeline (DataLoader, journal, COCO results, overlays) as a ``.pt`` checkpoint.
"""
from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from segdet.export import METADATA_PREFIX

__all__ = ["PACKAGE_SUFFIX", "PackageModel", "is_package_path", "load_package", "read_package_metadata"]

PACKAGE_SUFFIX = ".pt2"


def is_package_path(path: str | os.PathLike) -> bool:
    """True when ``checkpoint=`` names an exported package (a ``.pt2`` file) rather than a checkpoint or run dir."""
    return Path(path).suffix.lower() == PACKAGE_SUFFIX


class PackageModel(nn.Module):
    """An AOTInductor package called like the eager model in eval mode.

    forward(images: list of uint8 Tensor[3, H, W] RGB on ``device``) -> one dict per image: {"boxes": float32
    [D, 4] (x1, y1, x2, y2) input pixels, "scores": float32 [D], "labels": int64 [D] in 1..K, "masks": bool
    [D, H, W]}. The package takes one image per call, so a batch is run image by image.
    """

    def __init__(self, compiled, *, num_classes: int, class_names: Sequence[str],
                 label_to_category_id: Mapping[int, int] | None, min_side: int, max_side: int,
                 device: torch.device):
        super().__init__()
        self.compiled = compiled
        self.num_classes = int(num_classes)
        self.class_names = list(class_names)
        self.label_to_category_id = label_to_category_id
        self.min_side, self.max_side = int(min_side), int(max_side)
        self.device = torch.device(device)

    def input_error(self, image: torch.Tensor) -> str | None:
        """Why the package cannot take ``image`` (its size is outside the range it was exported for), or None.
        ``predict_files`` skips (or, strict, stops at) such an image as it does an unreadable file."""
        height, width = (int(s) for s in image.shape[-2:])
        if not (self.min_side <= height <= self.max_side and self.min_side <= width <= self.max_side):
            return (f"{height} x {width} pixels is outside the package's [{self.min_side}, {self.max_side}] "
                    "(the min_side/max_side it was exported with)")
        return None

    def forward(self, images: Sequence[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        outputs = []
        for image in images:
            boxes, scores, labels, masks = self.compiled(image)
            outputs.append({"boxes": boxes, "scores": scores, "labels": labels, "masks": masks})
        return outputs


def _package_device(metadata: Mapping[str, str]) -> torch.device:
    # segdet.device is what export_checkpoint was asked for; AOTI_DEVICE_KEY what AOTInductor compiled for.
    name = metadata.get(METADATA_PREFIX + "device") or metadata.get("AOTI_DEVICE_KEY") or "cpu"
    return torch.device(name)


def read_package_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The metadata strings of the package ``path``, read from the archive without loading its compiled code (so
    a package for a device this machine lacks can be refused with a clear message). Raises ValueError naming the
    file when it is not an AOTInductor package."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("wrapper_metadata.json") and "/aotinductor/" in n]
            if not names:
                raise ValueError("it holds no AOTInductor model")
            metadata = json.loads(archive.read(names[0]))
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise ValueError(f"checkpoint={str(path)!r} is not an AOTInductor package ({exc}); a .pt2 file must be "
                         "written by scripts/export.py") from exc
    if not isinstance(metadata, dict):
        raise ValueError(f"checkpoint={str(path)!r}: its AOTInductor metadata is not a JSON object")
    return {str(k): str(v) for k, v in metadata.items()}


def load_package(path: str | os.PathLike, device: str | torch.device | None = None) -> tuple[PackageModel, dict]:
    """Load the package ``path`` (``checkpoint=FILE.pt2``) on the device it was compiled for.

    ``device``: None for that device; another device type fails (a package runs where it was compiled), a CUDA
    index (``cuda:1``) picks the GPU for a CUDA package. Returns (model, info) like ``load_model``: info holds
    "checkpoint_path", "class_names", "label_to_category_id" ({int: int} or None), "metadata" (all of the
    package's metadata strings) and "device". Raises FileNotFoundError for a missing file, ValueError naming the
    file for one that is not a segdet package, and ValueError naming ``device`` for a device it cannot run on.
    """
    import segdet.ops  # noqa: F401  (the package calls segdet's ops: they must be registered in this process)

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint={str(path)!r}: no such package file (export one with "
                                "scripts/export.py ... output=FILE.pt2)")
    metadata = read_package_metadata(path)
    required = [METADATA_PREFIX + k for k in ("num_classes", "class_names", "label_to_category_id", "min_side",
                                              "max_side")]
    absent = [k for k in required if k not in metadata]
    if absent:
        raise ValueError(f"checkpoint={str(path)!r} is an AOTInductor package but not one of segdet's (no "
                         f"{', '.join(absent)} in its metadata); export it with scripts/export.py")
    target = _package_device(metadata)
    if device is not None:
        requested = torch.device(device)
        if requested.type != target.type:
            raise ValueError(f"device={str(device)!r}, but the package {str(path)!r} was compiled for "
                             f"{target.type}: leave device unset, or export it again with device={requested.type}")
        target = requested
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: the package {str(path)!r} was compiled for CUDA but CUDA is not available here; "
                         "export it again with device=cpu")
    try:
        compiled = torch._inductor.aoti_load_package(str(path), device_index=-1 if target.index is None
                                                     else target.index)
    except RuntimeError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"checkpoint={str(path)!r}: AOTInductor cannot load this package ({first})") from exc
    names = json.loads(metadata[METADATA_PREFIX + "class_names"])
    mapping = json.loads(metadata[METADATA_PREFIX + "label_to_category_id"])
    if mapping is not None:
        mapping = {int(k): int(v) for k, v in mapping.items()}
    model = PackageModel(compiled, num_classes=int(metadata[METADATA_PREFIX + "num_classes"]), class_names=names,
                         label_to_category_id=mapping, min_side=int(metadata[METADATA_PREFIX + "min_side"]),
                         max_side=int(metadata[METADATA_PREFIX + "max_side"]), device=target)
    info = {"checkpoint_path": str(path), "class_names": names, "label_to_category_id": mapping,
            "metadata": metadata, "device": str(target)}
    return model, info
