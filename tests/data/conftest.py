"""Small COCO-format files written into tmp_path."""
import json
import os

import numpy as np
import pytest
from PIL import Image


def write_coco(root, images, annotations, categories=None, *, write_images=True, ann_name="ann.json"):
    """images: [(id, height, width)]; writes a noise PNG per image (file name "<id>.png") and the json.
    Returns (ann_file, img_dir)."""
    img_dir = os.path.join(root, "images")
    os.makedirs(img_dir, exist_ok=True)
    rng = np.random.default_rng(0)
    entries = []
    for image_id, height, width in images:
        name = f"{image_id}.png"
        if write_images:
            Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(os.path.join(img_dir, name))
        entries.append({"id": image_id, "file_name": name, "height": height, "width": width})
    if categories is None:
        categories = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
    for k, ann in enumerate(annotations):
        ann.setdefault("id", k + 1)
        ann.setdefault("iscrowd", 0)
    ann_file = os.path.join(root, ann_name)
    with open(ann_file, "w") as f:
        json.dump({"images": entries, "annotations": annotations, "categories": categories}, f)
    return ann_file, img_dir


@pytest.fixture
def coco_writer(tmp_path):
    return lambda *args, **kwargs: write_coco(str(tmp_path), *args, **kwargs)
