import json
import os

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from segdet.data import shapes
from segdet.data.coco import COCODataset
from segdet.data.shapes import CLASS_NAMES, ShapesParams, annotation_file, ensure_shapes_dataset, image_dir, render_image

SMALL = dict(image_size=64, num_train=6, num_val=3, min_shapes=2, max_shapes=4)


def _tree_bytes(root):
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def test_same_seed_same_bytes_other_seed_other_data(tmp_path):
    a = ensure_shapes_dataset(tmp_path / "a", **SMALL)
    b = ensure_shapes_dataset(tmp_path / "b", **SMALL)
    c = ensure_shapes_dataset(tmp_path / "c", **{**SMALL, "seed": 1})
    files_a, files_b, files_c = _tree_bytes(a), _tree_bytes(b), _tree_bytes(c)
    assert len(files_a) == 6 + 3 + 2 + 1
    assert files_a == files_b
    assert files_a["train/000000.png"] != files_c["train/000000.png"]
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]


@pytest.mark.parametrize("index", range(6))
def test_masks_are_exactly_the_visible_painted_pixels(index):
    params = ShapesParams(image_size=96, min_shapes=3, max_shapes=5, noise=0)
    image, labels, masks, colours = render_image(params, "train", index)
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    assert masks.shape == (len(labels), 96, 96) and len(labels) >= 1
    assert all(1 <= label <= len(CLASS_NAMES) for label in labels)
    assert masks.sum(0).max() <= 1  # visible parts never overlap
    for mask, colour in zip(masks, colours):
        assert mask.sum() >= params.min_visible_area
        painted = np.all(image == np.clip(np.rint(colour), 0, 255).astype(np.uint8), axis=-1)
        # every visible pixel carries the shape's colour ...
        assert painted[mask].all()
        # ... and outside the instance that exact colour only appears by coincidence (background gradient)
        assert (painted & ~mask).sum() <= 0.05 * mask.sum()


def test_written_annotations_match_rendering(tmp_path):
    root = ensure_shapes_dataset(tmp_path / "s", **SMALL)
    for split, count in (("train", 6), ("val", 3)):
        with open(annotation_file(root, split)) as f:
            data = json.load(f)
        assert [c["name"] for c in data["categories"]] == list(CLASS_NAMES)
        assert len(data["images"]) == count
        for entry in data["images"]:
            index = entry["id"] - 1
            image, labels, masks, _ = render_image(ShapesParams(**SMALL), split, index)
            on_disk = np.array(Image.open(os.path.join(image_dir(root, split), entry["file_name"])))
            np.testing.assert_array_equal(on_disk, image)
            anns = [a for a in data["annotations"] if a["image_id"] == entry["id"]]
            assert [a["category_id"] for a in anns] == labels
            for ann, mask in zip(anns, masks):
                decoded = mask_utils.decode(ann["segmentation"])
                np.testing.assert_array_equal(decoded, mask)
                assert ann["area"] == int(mask.sum())
                ys, xs = np.nonzero(mask)
                assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    ds = COCODataset(annotation_file(root, "train"), image_dir(root, "train"))
    _, target = ds[0]
    assert len(ds) == 6 and ds.class_names == list(CLASS_NAMES) and target["masks"].shape[1:] == (64, 64)


def test_generation_is_atomic_and_runs_once(tmp_path, monkeypatch):
    real_write = shapes._write_split

    def failing_write(params, split, root):
        if split == "val":
            raise KeyboardInterrupt("killed mid-generation")
        real_write(params, split, root)

    monkeypatch.setattr(shapes, "_write_split", failing_write)
    with pytest.raises(KeyboardInterrupt):
        ensure_shapes_dataset(tmp_path / "s", **SMALL)
    assert not (tmp_path / "s").exists()
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p]

    calls = []
    monkeypatch.setattr(shapes, "_write_split", lambda *a: (calls.append(a[1]), real_write(*a)))
    root = ensure_shapes_dataset(tmp_path / "s", **SMALL)
    assert calls == ["train", "val"]
    assert ensure_shapes_dataset(tmp_path / "s", **SMALL) == root
    assert calls == ["train", "val"]  # reused, not regenerated


def test_existing_root_with_other_params_or_incomplete_is_an_error(tmp_path):
    ensure_shapes_dataset(tmp_path / "s", **SMALL)
    with pytest.raises(ValueError, match="generated with"):
        ensure_shapes_dataset(tmp_path / "s", **{**SMALL, "num_train": 7})
    (tmp_path / "partial").mkdir()
    with pytest.raises(ValueError, match="not a complete shapes dataset"):
        ensure_shapes_dataset(tmp_path / "partial", **SMALL)


@pytest.mark.parametrize("bad", [dict(image_size=8), dict(min_shapes=3, max_shapes=2), dict(num_train=-1)])
def test_bad_parameters(tmp_path, bad):
    with pytest.raises(ValueError):
        ensure_shapes_dataset(tmp_path / "s", **{**SMALL, **bad})
    with pytest.raises(TypeError):
        ensure_shapes_dataset(tmp_path / "s", colour="red")
