"""Inference on image files: load a trained model, predict, write COCO-format results and overlay pictures.

``scripts/predict.py`` is a thin Hydra front end over ``predict_files``; everything here takes plain values.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

__all__ = [
    "COCO_CATEGORIES",
    "IMAGE_EXTENSIONS",
    "assign_image_ids",
    "default_class_names",
    "encode_mask_rle",
    "list_images",
    "load_model",
    "predict",
    "predict_files",
    "read_image",
    "resolve_class_names",
    "to_coco_results",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")

# COCO 2017 "things": (category id, name). The ids skip 12, 26, 29, 30, 45, 66, 68, 69, 71, 83.
COCO_CATEGORIES = (
    (1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle"), (5, "airplane"), (6, "bus"), (7, "train"),
    (8, "truck"), (9, "boat"), (10, "traffic light"), (11, "fire hydrant"), (13, "stop sign"),
    (14, "parking meter"), (15, "bench"), (16, "bird"), (17, "cat"), (18, "dog"), (19, "horse"), (20, "sheep"),
    (21, "cow"), (22, "elephant"), (23, "bear"), (24, "zebra"), (25, "giraffe"), (27, "backpack"),
    (28, "umbrella"), (31, "handbag"), (32, "tie"), (33, "suitcase"), (34, "frisbee"), (35, "skis"),
    (36, "snowboard"), (37, "sports ball"), (38, "kite"), (39, "baseball bat"), (40, "baseball glove"),
    (41, "skateboard"), (42, "surfboard"), (43, "tennis racket"), (44, "bottle"), (46, "wine glass"),
    (47, "cup"), (48, "fork"), (49, "knife"), (50, "spoon"), (51, "bowl"), (52, "banana"), (53, "apple"),
    (54, "sandwich"), (55, "orange"), (56, "broccoli"), (57, "carrot"), (58, "hot dog"), (59, "pizza"),
    (60, "donut"), (61, "cake"), (62, "chair"), (63, "couch"), (64, "potted plant"), (65, "bed"),
    (67, "dining table"), (70, "toilet"), (72, "tv"), (73, "laptop"), (74, "mouse"), (75, "remote"),
    (76, "keyboard"), (77, "cell phone"), (78, "microwave"), (79, "oven"), (80, "toaster"), (81, "sink"),
    (82, "refrigerator"), (84, "book"), (85, "clock"), (86, "vase"), (87, "scissors"), (88, "teddy bear"),
    (89, "hair drier"), (90, "toothbrush"),
)


def default_class_names(num_classes: int) -> list[str]:
    """K names for labels 1..K when neither the checkpoint nor the config gives any.

    80 classes: COCO's contiguous order; 90: torchvision's COCO models, whose label is the COCO category
    id (unused ids read "N/A"); otherwise "class_1".."class_K".
    """
    if num_classes == len(COCO_CATEGORIES):
        return [name for _, name in COCO_CATEGORIES]
    if num_classes == 90:
        by_id = dict(COCO_CATEGORIES)
        return [by_id.get(i, "N/A") for i in range(1, 91)]
    return [f"class_{i}" for i in range(1, num_classes + 1)]


def list_images(input_path: str | os.PathLike) -> list[Path]:
    """An image file, or the image files (by extension, sorted, not recursive) of a directory."""
    path = Path(input_path)
    if not path.exists():
        raise FileNotFoundError(f"input {str(path)!r} does not exist (expected an image file or a directory of images)")
    if path.is_file():
        return [path]
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise FileNotFoundError(f"input directory {str(path)!r} contains no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def read_image(path: str | os.PathLike) -> torch.Tensor:
    """RGB uint8 Tensor[3, H, W] of the image file ``path`` (any Pillow format; greyscale/alpha converted)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            rgb = np.array(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ValueError(f"cannot read image {str(path)!r}: {exc}") from exc
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


def assign_image_ids(paths: Sequence[Path]) -> list[int]:
    """COCO image ids: the file stem when it is a non-negative integer ("000139.jpg" -> 139); other files
    count on from the largest such id, in order, so no two images share an id."""
    ids: list[int | None] = [int(p.stem) if p.stem.isdigit() else None for p in paths]
    numeric = [i for i in ids if i is not None]
    if len(set(numeric)) != len(numeric):
        raise ValueError("two input files have the same numeric stem (image id): "
                         + ", ".join(str(p) for p, i in zip(paths, ids) if i is not None and numeric.count(i) > 1))
    next_id = max(numeric, default=-1) + 1
    out = []
    for i in ids:
        if i is None:
            i, next_id = next_id, next_id + 1
        out.append(i)
    return out


def encode_mask_rle(mask: torch.Tensor) -> dict:
    """COCO RLE {"size": [H, W], "counts": str} of a bool Tensor[H, W]."""
    from pycocotools import mask as mask_utils

    arr = np.asfortranarray(mask.detach().cpu().numpy().astype(np.uint8))
    rle = mask_utils.encode(arr)
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def to_coco_results(prediction: Mapping[str, torch.Tensor], image_id: int,
                    label_to_category_id: Mapping[int, int] | None = None) -> list[dict]:
    """COCO results entries of one image's prediction ({"boxes" Tensor[D, 4] x1y1x2y2, "scores", "labels",
    "masks" bool Tensor[D, H, W]}): {"image_id", "category_id", "bbox": [x, y, w, h], "score", "segmentation"}."""
    boxes = prediction["boxes"].detach().cpu().double()
    scores = prediction["scores"].detach().cpu().tolist()
    labels = prediction["labels"].detach().cpu().tolist()
    masks = prediction.get("masks")
    results = []
    for i, (label, score) in enumerate(zip(labels, scores)):
        x1, y1, x2, y2 = boxes[i].tolist()
        if label_to_category_id is not None:
            if int(label) not in label_to_category_id:
                raise KeyError(f"label {label} has no entry in label_to_category_id")
            category = int(label_to_category_id[int(label)])
        else:
            category = int(label)
        entry = {"image_id": int(image_id), "category_id": category, "bbox": [x1, y1, x2 - x1, y2 - y1],
                 "score": float(score)}
        if masks is not None:
            entry["segmentation"] = encode_mask_rle(masks[i])
        results.append(entry)
    return results


def load_model(cfg_model, checkpoint: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Build the model of config node ``cfg_model`` and load ``checkpoint`` into it, in eval mode on ``device``.

    The checkpoint's stored ``num_classes`` (from its "model_config") wins over the config's, so a model
    trained on another dataset loads with the config it was trained with. Returns (model, checkpoint dict
    without "model", e.g. with "label_to_category_id" / "class_names" when training stored them).
    """
    from omegaconf import DictConfig, OmegaConf

    from segdet.engine.checkpoint import config_differences, load_model_state, read_checkpoint
    from segdet.modeling import build_model

    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' was requested but CUDA is not available; use device=cpu")
    ckpt = read_checkpoint(checkpoint)
    saved = ckpt.get("model_config")
    num_classes = saved.get("num_classes") if isinstance(saved, Mapping) else None
    model = build_model(cfg_model, num_classes=num_classes)
    current = OmegaConf.to_container(cfg_model, resolve=True) if isinstance(cfg_model, DictConfig) else dict(cfg_model)
    if num_classes is not None:
        current["num_classes"] = num_classes
    load_model_state(model, ckpt["model"], source=f"checkpoint {checkpoint}",
                     config_diffs=config_differences(saved, current))
    model.to(device).eval()
    return model, {k: v for k, v in ckpt.items() if k != "model"}


@torch.no_grad()
def predict_files(
    model: nn.Module,
    paths: Sequence[Path],
    output_dir: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    score_threshold: float = 0.5,
    class_names: Sequence[str] | None = None,
    label_to_category_id: Mapping[int, int] | None = None,
    write_overlays: bool = True,
) -> list[dict]:
    """Run ``model`` (eval mode, MaskRCNN call convention) on each image file and write the outputs.

    Writes ``output_dir/predictions.json`` (COCO results list of the detections with score >=
    ``score_threshold``), ``output_dir/image_ids.json`` ({file name: image_id}) and, if ``write_overlays``,
    one ``output_dir/<stem>.png`` overlay per image. Returns the COCO results list.
    """
    from segdet.utils.visualize import draw_instances

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    image_ids = assign_image_ids(paths)
    model.eval()
    device = torch.device(device)
    results: list[dict] = []
    used_names: set[str] = set()
    for path, image_id in zip(paths, image_ids):
        image = read_image(path)
        (pred,) = model([image.to(device)])
        keep = pred["scores"] >= score_threshold
        pred = {k: v[keep].cpu() for k, v in pred.items()}
        results.extend(to_coco_results(pred, image_id, label_to_category_id))
        if write_overlays:
            name = path.stem if path.stem not in used_names else f"{path.stem}_{image_id}"
            used_names.add(name)
            picture = draw_instances(image, pred["boxes"], pred["labels"], pred["scores"], pred.get("masks"),
                                     class_names)
            picture.save(output_dir / f"{name}.png")
        logger.info("%s: %d detections", path, int(keep.sum()))
    (output_dir / "predictions.json").write_text(json.dumps(results))
    (output_dir / "image_ids.json").write_text(json.dumps({p.name: i for p, i in zip(paths, image_ids)}, indent=1))
    return results


def resolve_class_names(explicit: Sequence[str] | None, checkpoint_info: Mapping, num_classes: int) -> list[str]:
    """Names for labels 1..K: ``explicit`` if given, else the checkpoint's "class_names", else
    ``default_class_names(num_classes)``."""
    for source, names in (("class_names", explicit), ("the checkpoint's class_names", checkpoint_info.get("class_names"))):
        if names is None:
            continue
        names = [str(n) for n in names]
        if len(names) != num_classes:
            raise ValueError(f"{source} has {len(names)} names but the model has num_classes={num_classes}")
        return names
    return default_class_names(num_classes)


def predict(
    *,
    cfg_model,
    checkpoint: str | os.PathLike,
    input: str | os.PathLike,  # noqa: A002 - the CLI key
    output: str | os.PathLike,
    device: str = "cpu",
    score_threshold: float = 0.5,
    class_names: Sequence[str] | None = None,
) -> list[dict]:
    """Everything ``scripts/predict.py`` does: list the inputs, load the model, predict, write results.

    category_id in the results is the checkpoint's ``label_to_category_id[label]`` when the checkpoint
    stores that mapping, the model label otherwise.
    """
    if not 0.0 <= float(score_threshold) <= 1.0:
        raise ValueError(f"score_threshold must be in [0, 1], got {score_threshold}")
    paths = list_images(input)  # before the (slow) model build, so a wrong path fails at once
    model, info = load_model(cfg_model, checkpoint, device)
    names = resolve_class_names(class_names, info, int(model.num_classes))
    mapping = info.get("label_to_category_id")
    if mapping is not None:
        mapping = {int(k): int(v) for k, v in mapping.items()}
    results = predict_files(model, paths, output, device=device, score_threshold=float(score_threshold),
                            class_names=names, label_to_category_id=mapping)
    logger.info("Wrote %d detections on %d images to %s", len(results), len(paths), output)
    return results
