"""COCO-format instance segmentation dataset (annotations parsed up front, images and masks decoded per item)."""
from __future__ import annotations

import json
import logging
import os
import pickle
from collections import Counter
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils

logger = logging.getLogger(__name__)

Transform = Callable[..., tuple]


class COCOFormatError(ValueError):
    """An annotation file that does not follow the COCO instances format."""


def load_coco_json(path: str) -> dict:
    """Read and validate a COCO instances json; returns the parsed dict.

    Raises FileNotFoundError / COCOFormatError naming ``path`` and what is wrong: not JSON, missing
    "images"/"annotations"/"categories", entries without their required keys, duplicate ids, annotations that
    refer to an unknown image or category, bboxes that are not 4 numbers.
    """
    path = os.path.expanduser(str(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"annotation file {path} does not exist")
    try:
        with open(path) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise COCOFormatError(f"annotation file {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise COCOFormatError(f"annotation file {path}: top level must be a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise COCOFormatError(f"annotation file {path} has no {key!r} list (a COCO instances file needs it)")
        if not isinstance(data[key], list):
            raise COCOFormatError(f"annotation file {path}: {key!r} must be a list, got {type(data[key]).__name__}")

    def require(entry, kind, keys, pos):
        if not isinstance(entry, dict):
            raise COCOFormatError(f"annotation file {path}: {kind}[{pos}] must be an object")
        missing = [k for k in keys if k not in entry]
        if missing:
            raise COCOFormatError(f"annotation file {path}: {kind}[{pos}] lacks key(s) {missing}")

    image_ids, category_ids = set(), set()
    for pos, img in enumerate(data["images"]):
        require(img, "images", ("id", "file_name", "height", "width"), pos)
        if img["id"] in image_ids:
            raise COCOFormatError(f"annotation file {path}: duplicate image id {img['id']}")
        image_ids.add(img["id"])
    for pos, cat in enumerate(data["categories"]):
        require(cat, "categories", ("id", "name"), pos)
        if cat["id"] in category_ids:
            raise COCOFormatError(f"annotation file {path}: duplicate category id {cat['id']}")
        category_ids.add(cat["id"])
    for pos, ann in enumerate(data["annotations"]):
        require(ann, "annotations", ("image_id", "category_id", "bbox"), pos)
        name = f"annotation {ann.get('id', f'#{pos}')}"
        if ann["image_id"] not in image_ids:
            raise COCOFormatError(f"annotation file {path}: {name} refers to unknown image id {ann['image_id']}")
        if ann["category_id"] not in category_ids:
            raise COCOFormatError(
                f"annotation file {path}: {name} refers to unknown category id {ann['category_id']}"
            )
        bbox = ann["bbox"]
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
            raise COCOFormatError(f"annotation file {path}: {name} bbox must be 4 numbers [x, y, w, h], got {bbox!r}")
    return data


def _clean_polygons(segm: list) -> list:
    """Polygon parts with at least 3 points (6 coords); others cannot enclose any area."""
    return [list(map(float, p)) for p in segm if isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0]


def _parse_annotation(ann: dict, height: int, width: int, path: str):
    """Returns (record or None, reason it was dropped or None). Record boxes are x1y1x2y2 clipped to the image."""
    x, y, w, h = (float(v) for v in ann["bbox"])
    x1, y1 = max(x, 0.0), max(y, 0.0)
    x2, y2 = min(x + max(w, 0.0), float(width)), min(y + max(h, 0.0), float(height))
    if w <= 0 or h <= 0:
        return None, "zero-area box"
    if x2 <= x1 or y2 <= y1:
        return None, "box outside image"
    segm = ann.get("segmentation")
    if isinstance(segm, list):
        segm = _clean_polygons(segm)
        if not segm:
            return None, "polygon with < 3 points"
    elif isinstance(segm, dict):
        if "counts" not in segm or "size" not in segm:
            raise COCOFormatError(f"annotation file {path}: annotation {ann.get('id')} RLE lacks 'counts'/'size'")
        if list(segm["size"]) != [height, width]:
            raise COCOFormatError(
                f"annotation file {path}: annotation {ann.get('id')} RLE size {segm['size']} differs from its "
                f"image size [{height}, {width}]"
            )
    else:
        return None, "no segmentation"
    return {"box": (x1, y1, x2, y2), "category_id": ann["category_id"], "segmentation": segm}, None


def decode_segmentation(segm: Any, height: int, width: int) -> np.ndarray:
    """uint8 [height, width] mask of a COCO segmentation: polygon list, uncompressed or compressed RLE."""
    if isinstance(segm, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
    elif isinstance(segm["counts"], list):
        rle = mask_utils.frPyObjects(segm, height, width)
    else:
        rle = segm
    return mask_utils.decode(rle)


class _PackedList:
    """A list of picklable records stored as one byte buffer.

    DataLoader workers fork the dataset; a Python list of dicts would have its pages copied as refcounts change,
    multiplying memory by the worker count on large datasets such as COCO.
    """

    def __init__(self, items: list):
        blobs = [pickle.dumps(it, protocol=pickle.HIGHEST_PROTOCOL) for it in items]
        self._offsets = np.cumsum([0] + [len(b) for b in blobs], dtype=np.int64)
        self._buffer = np.frombuffer(b"".join(blobs), dtype=np.uint8) if blobs else np.zeros(0, np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def __getitem__(self, i: int):
        return pickle.loads(self._buffer[self._offsets[i]:self._offsets[i + 1]].tobytes())


class COCODataset(torch.utils.data.Dataset):
    """Instances of a COCO-format annotation file.

    Item ``i`` (or ``(i, seed)``, where ``seed`` seeds the random transforms) is ``(image, target)``:
      image: uint8 Tensor[3, H, W] RGB;
      target: {"boxes": float32 Tensor[M, 4] (x1, y1, x2, y2) absolute pixels, "labels": int64 Tensor[M] in
      1..num_classes, "masks": uint8 Tensor[M, H, W], "image_id": int, "orig_size": (H, W) before transforms}.
    Crowd annotations (iscrowd=1) are left out of targets; evaluation sees them through the annotation file.
    Degenerate annotations (zero-area boxes, boxes wholly outside the image, polygons with < 3 points, no
    segmentation) are dropped and counted in one log line.

    Args:
        ann_file: COCO instances json.
        img_dir: folder the images' ``file_name`` are relative to.
        filter_empty: drop images without any usable (non-crowd, non-degenerate) instance.
        skip_bad_images: skip missing or unreadable images with a warning instead of raising.
        transforms: callable ``(image, target, generator) -> (image, target)`` (see segdet.data.transforms).
    """

    def __init__(self, ann_file: str, img_dir: str, *, filter_empty: bool = False, skip_bad_images: bool = False,
                 transforms: Transform | None = None):
        self.ann_file = os.path.abspath(os.path.expanduser(str(ann_file)))
        self.img_dir = os.path.abspath(os.path.expanduser(str(img_dir)))
        self.skip_bad_images = bool(skip_bad_images)
        self.transforms = transforms
        data = load_coco_json(self.ann_file)

        categories = sorted(data["categories"], key=lambda c: c["id"])
        self.class_names = [c["name"] for c in categories]
        self.label_to_category_id = {i + 1: c["id"] for i, c in enumerate(categories)}
        self.category_id_to_label = {c: label for label, c in self.label_to_category_id.items()}

        per_image: dict[Any, list] = {img["id"]: [] for img in data["images"]}
        dropped: Counter = Counter()
        num_crowd = 0
        sizes = {img["id"]: (int(img["height"]), int(img["width"])) for img in data["images"]}
        for ann in data["annotations"]:
            if ann.get("iscrowd", 0):
                num_crowd += 1
                continue
            height, width = sizes[ann["image_id"]]
            record, reason = _parse_annotation(ann, height, width, self.ann_file)
            if record is None:
                dropped[reason] += 1
                continue
            record["label"] = self.category_id_to_label[record.pop("category_id")]
            per_image[ann["image_id"]].append(record)

        records, num_empty, missing = [], 0, []
        for img in data["images"]:
            anns = per_image[img["id"]]
            if filter_empty and not anns:
                num_empty += 1
                continue
            file_path = os.path.join(self.img_dir, img["file_name"])
            if not os.path.isfile(file_path):
                missing.append(file_path)
                continue
            records.append({"image_id": img["id"], "file": file_path, "height": int(img["height"]),
                            "width": int(img["width"]), "anns": anns})
        if missing:
            if not self.skip_bad_images:
                raise FileNotFoundError(
                    f"image {missing[0]} listed in {self.ann_file} does not exist ({len(missing)} image(s) missing "
                    "in all; set skip_bad_images=true to skip them)"
                )
            logger.warning("%s: skipped %d missing image(s), e.g. %s", self.ann_file, len(missing), missing[0])
        self.num_missing_images = len(missing)
        self.dropped_annotations = dict(dropped)
        self.image_ids = [r["image_id"] for r in records]
        self.aspect_ratios = np.asarray([r["width"] / r["height"] for r in records], dtype=np.float64)
        self.num_instances = sum(len(r["anns"]) for r in records)
        self._records = _PackedList(records)
        self._bad_items: set[int] = set()
        dropped_text = ", ".join(f"{n} {reason}" for reason, n in sorted(dropped.items())) or "none"
        logger.info(
            "%s: %d images (%d without instances filtered, %d missing skipped), %d instances of %d classes; "
            "degenerate annotations dropped: %s; %d crowd regions left to evaluation",
            self.ann_file, len(records), num_empty, len(missing), self.num_instances, self.num_classes,
            dropped_text, num_crowd,
        )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self._records)

    def record(self, index: int) -> dict:
        """Parsed annotation record of image ``index``: image_id, file, height, width, anns (box, label,
        segmentation)."""
        return self._records[index]

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} images")
        for attempt in range(len(self)):
            i = (index + attempt) % len(self)
            try:
                item = self._load(i)
                break
            except (OSError, ValueError) as exc:
                if not self.skip_bad_images:
                    raise
                self._bad_items.add(i)
                logger.warning("skipping unreadable image (%d so far in this process): %s", len(self._bad_items), exc)
        else:
            raise RuntimeError(f"no readable image in {self.ann_file}")
        if self.transforms is not None:
            generator = torch.Generator().manual_seed(seed) if seed is not None else None
            item = self.transforms(*item, generator=generator)
        return item

    def _load(self, index: int):
        rec = self._records[index]
        height, width = rec["height"], rec["width"]
        try:
            with Image.open(rec["file"]) as img:
                img = img.convert("RGB")
        except (OSError, ValueError) as exc:
            raise OSError(f"cannot read image {rec['file']}: {exc}") from exc
        if img.size != (width, height):
            raise ImageSizeError(
                f"image {rec['file']} is {img.size[0]}x{img.size[1]} (WxH) but {self.ann_file} says "
                f"{width}x{height}"
            )
        # the HWC -> CHW copy is done by numpy: a tiny torch copy in the main process can wait on its thread pool
        image = torch.from_numpy(np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)))
        anns = rec["anns"]
        if anns:
            masks = np.stack([decode_segmentation(a["segmentation"], height, width) for a in anns])
        else:
            masks = np.zeros((0, height, width), dtype=np.uint8)
        target = {
            "boxes": torch.tensor([a["box"] for a in anns], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([a["label"] for a in anns], dtype=torch.int64),
            "masks": torch.from_numpy(masks),
            "image_id": rec["image_id"],
            "orig_size": (height, width),
        }
        return image, target


class ImageSizeError(ValueError):
    """An image whose pixel size differs from the size its annotation file records."""
