import json
import logging
import os

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from segdet.data.coco import COCODataset, COCOFormatError, load_coco_json
from segdet.data.transforms import RandomHorizontalFlip


def _box_of(mask: np.ndarray):
    ys, xs = np.nonzero(mask)
    return [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_polygon_annotation_and_category_mapping(coco_writer):
    # triangle (2,2) (12,2) (12,10) in a 20 x 30 image; category 7 is the second category -> label 2
    poly = [2, 2, 12, 2, 12, 10]
    ann_file, img_dir = coco_writer(
        [(5, 20, 30)],
        [{"image_id": 5, "category_id": 7, "bbox": [2, 2, 10, 8], "segmentation": [poly]}],
    )
    ds = COCODataset(ann_file, img_dir)
    assert ds.class_names == ["cat", "dog"]
    assert ds.label_to_category_id == {1: 3, 2: 7}
    assert ds.category_id_to_label == {3: 1, 7: 2}
    image, target = ds[0]
    assert image.dtype == torch.uint8 and image.shape == (3, 20, 30)
    assert target["image_id"] == 5 and target["orig_size"] == (20, 30)
    assert target["labels"].tolist() == [2]
    assert target["boxes"].dtype == torch.float32 and target["boxes"].tolist() == [[2.0, 2.0, 12.0, 10.0]]
    expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([poly], 20, 30)))
    assert target["masks"].dtype == torch.uint8 and target["masks"].shape == (1, 20, 30)
    np.testing.assert_array_equal(target["masks"][0].numpy(), expected)
    assert expected.sum() > 20
    # the image is the PNG on disk, RGB
    from PIL import Image
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), np.array(Image.open(os.path.join(img_dir, "5.png"))))


def test_compressed_and_uncompressed_rle(coco_writer):
    h, w = 16, 24
    m1 = np.zeros((h, w), np.uint8)
    m1[3:9, 4:15] = 1
    m2 = np.zeros((h, w), np.uint8)
    m2[10:14, 1:5] = 1
    m2[0:2, 20:24] = 1
    compressed = mask_utils.encode(np.asfortranarray(m1))
    compressed = {"size": [h, w], "counts": compressed["counts"].decode()}
    # uncompressed RLE: column-major run lengths starting with zeros
    flat = m2.flatten(order="F")
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    uncompressed = {"size": [h, w], "counts": counts}
    ann_file, img_dir = coco_writer(
        [(1, h, w)],
        [{"image_id": 1, "category_id": 3, "bbox": [4, 3, 11, 6], "segmentation": compressed},
         {"image_id": 1, "category_id": 7, "bbox": [1, 0, 23, 14], "segmentation": uncompressed}],
    )
    _, target = COCODataset(ann_file, img_dir)[0]
    np.testing.assert_array_equal(target["masks"][0].numpy(), m1)
    np.testing.assert_array_equal(target["masks"][1].numpy(), m2)
    assert target["labels"].tolist() == [1, 2]


def test_crowd_regions_dropped_and_empty_images(coco_writer, caplog):
    anns = [
        {"image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5], "segmentation": [[1, 1, 6, 1, 6, 6, 1, 6]]},
        {"image_id": 1, "category_id": 7, "bbox": [0, 0, 10, 10], "iscrowd": 1,
         "segmentation": {"size": [12, 12], "counts": [0, 144]}},
        {"image_id": 2, "category_id": 3, "bbox": [0, 0, 4, 4], "iscrowd": 1,
         "segmentation": {"size": [12, 12], "counts": [0, 144]}},
    ]
    ann_file, img_dir = coco_writer([(1, 12, 12), (2, 12, 12), (3, 12, 12)], anns)
    with caplog.at_level(logging.INFO, logger="segdet.data.coco"):
        kept = COCODataset(ann_file, img_dir, filter_empty=False)
    assert "2 crowd regions" in caplog.text
    assert kept.image_ids == [1, 2, 3]
    _, t1 = kept[0]
    assert t1["labels"].tolist() == [1]  # the crowd region of image 1 is not a training target
    for i in (1, 2):  # image 2 holds only a crowd region, image 3 nothing: empty, well-formed targets
        _, t = kept[i]
        assert t["boxes"].shape == (0, 4) and t["labels"].shape == (0,) and t["masks"].shape == (0, 12, 12)
        assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64
    filtered = COCODataset(ann_file, img_dir, filter_empty=True)
    assert filtered.image_ids == [1]


def test_degenerate_annotations_dropped_and_counted(coco_writer, caplog):
    seg = [[1, 1, 6, 1, 6, 6]]
    anns = [
        {"image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5], "segmentation": seg},  # good
        {"image_id": 1, "category_id": 3, "bbox": [1, 1, 0, 5], "segmentation": seg},  # zero width
        {"image_id": 1, "category_id": 3, "bbox": [50, 50, 5, 5], "segmentation": seg},  # outside 20 x 20
        {"image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5], "segmentation": [[1, 1, 6, 1]]},  # 2 points
        {"image_id": 1, "category_id": 3, "bbox": [1, 1, 5, 5]},  # no segmentation
        # a short part next to a valid one: only the short part goes
        {"image_id": 1, "category_id": 7, "bbox": [1, 1, 9, 9], "segmentation": [[1, 1], [1, 1, 10, 1, 10, 10]]},
    ]
    ann_file, img_dir = coco_writer([(1, 20, 20)], anns)
    with caplog.at_level(logging.INFO, logger="segdet.data.coco"):
        ds = COCODataset(ann_file, img_dir)
    assert ds.dropped_annotations == {"zero-area box": 1, "box outside image": 1, "polygon with < 3 points": 1,
                                      "no segmentation": 1}
    summary = [r.getMessage() for r in caplog.records if "degenerate" in r.getMessage()]
    assert len(summary) == 1 and "1 zero-area box" in summary[0] and "1 box outside image" in summary[0]
    _, target = ds[0]
    assert target["labels"].tolist() == [1, 2]
    assert target["masks"][1].sum() > 0


def test_boxes_clipped_to_image(coco_writer):
    ann_file, img_dir = coco_writer(
        [(1, 10, 10)], [{"image_id": 1, "category_id": 3, "bbox": [-3, 4, 20, 3], "segmentation": [[0, 4, 9, 4, 9, 7]]}]
    )
    _, target = COCODataset(ann_file, img_dir)[0]
    assert target["boxes"].tolist() == [[0.0, 4.0, 10.0, 7.0]]


def _write_json(tmp_path, data, name="bad.json"):
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


GOOD = {"images": [{"id": 1, "file_name": "1.png", "height": 4, "width": 4}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 2, 2]}],
        "categories": [{"id": 1, "name": "a"}]}


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.pop("images"), "no 'images'"),
    (lambda d: d.pop("annotations"), "no 'annotations'"),
    (lambda d: d.pop("categories"), "no 'categories'"),
    (lambda d: d["annotations"][0].update(image_id=9), "unknown image id 9"),
    (lambda d: d["annotations"][0].update(category_id=4), "unknown category id 4"),
    (lambda d: d["annotations"][0].update(bbox=[0, 0, 2]), "bbox must be 4 numbers"),
    (lambda d: d["images"][0].pop("height"), "lacks key(s) ['height']"),
    (lambda d: d["images"].append(dict(d["images"][0])), "duplicate image id 1"),
    (lambda d: d.update(images={}), "'images' must be a list"),
])
def test_malformed_annotation_file(tmp_path, mutate, message):
    data = json.loads(json.dumps(GOOD))
    mutate(data)
    path = _write_json(tmp_path, data)
    with pytest.raises(COCOFormatError) as info:
        load_coco_json(path)
    assert path in str(info.value) and message in str(info.value)
    with pytest.raises(COCOFormatError):
        COCODataset(path, str(tmp_path))


def test_not_json_and_missing_file(tmp_path):
    path = _write_json(tmp_path, "{not json", name="broken.json")
    with pytest.raises(COCOFormatError, match="broken.json is not valid JSON"):
        COCODataset(path, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="nothere.json does not exist"):
        COCODataset(str(tmp_path / "nothere.json"), str(tmp_path))


def test_rle_size_mismatch_is_an_error(coco_writer):
    ann_file, img_dir = coco_writer(
        [(1, 10, 10)], [{"image_id": 1, "category_id": 3, "bbox": [0, 0, 2, 2],
                         "segmentation": {"size": [5, 5], "counts": [0, 25]}}])
    with pytest.raises(COCOFormatError, match=r"RLE size \[5, 5\] differs"):
        COCODataset(ann_file, img_dir)


def test_missing_image_error_or_skip(coco_writer, caplog):
    ann_file, img_dir = coco_writer([(1, 8, 8), (2, 8, 8), (3, 8, 8)], [])
    os.remove(os.path.join(img_dir, "2.png"))
    with pytest.raises(FileNotFoundError, match=r"2\.png .*1 image\(s\) missing"):
        COCODataset(ann_file, img_dir)
    with caplog.at_level(logging.WARNING, logger="segdet.data.coco"):
        ds = COCODataset(ann_file, img_dir, skip_bad_images=True)
    assert ds.image_ids == [1, 3] and ds.num_missing_images == 1
    assert "skipped 1 missing image(s)" in caplog.text


def test_unreadable_image_error_or_skip(coco_writer, caplog):
    ann_file, img_dir = coco_writer([(1, 8, 8), (2, 8, 8)], [])
    with open(os.path.join(img_dir, "1.png"), "wb") as f:
        f.write(b"this is not a png")
    with pytest.raises(OSError, match=r"cannot read image .*1\.png"):
        COCODataset(ann_file, img_dir)[0]
    ds = COCODataset(ann_file, img_dir, skip_bad_images=True)
    with caplog.at_level(logging.WARNING, logger="segdet.data.coco"):
        _, target = ds[0]
    assert target["image_id"] == 2  # the next readable image stands in
    assert "skipping unreadable image" in caplog.text and "1.png" in caplog.text


def test_image_size_mismatch_is_an_error(coco_writer):
    ann_file, img_dir = coco_writer([(1, 8, 8)], [])
    from PIL import Image
    Image.new("RGB", (9, 8)).save(os.path.join(img_dir, "1.png"))
    with pytest.raises(ValueError, match=r"1\.png is 9x8 .* says 8x8"):
        COCODataset(ann_file, img_dir)[0]


def test_grayscale_image_becomes_rgb(coco_writer):
    ann_file, img_dir = coco_writer([(1, 6, 7)], [])
    from PIL import Image
    Image.new("L", (7, 6), color=77).save(os.path.join(img_dir, "1.png"))
    image, _ = COCODataset(ann_file, img_dir)[0]
    assert image.shape == (3, 6, 7) and bool((image == 77).all())


def test_seeded_key_makes_transforms_reproducible(coco_writer):
    ann_file, img_dir = coco_writer(
        [(1, 10, 16)], [{"image_id": 1, "category_id": 3, "bbox": [0, 0, 4, 4], "segmentation": [[0, 0, 4, 0, 4, 4]]}]
    )
    ds = COCODataset(ann_file, img_dir, transforms=RandomHorizontalFlip(0.5))
    flips = []
    for seed in range(16):
        a, ta = ds[(0, seed)]
        b, tb = ds[(0, seed)]
        assert torch.equal(a, b) and torch.equal(ta["boxes"], tb["boxes"])
        flips.append(ta["boxes"][0, 0].item() != 0.0)
    assert 0 < sum(flips) < 16


def test_index_out_of_range(coco_writer):
    ann_file, img_dir = coco_writer([(1, 8, 8), (2, 8, 8)], [])
    ds = COCODataset(ann_file, img_dir)
    assert ds[-1][1]["image_id"] == 2
    with pytest.raises(IndexError, match="index 2 out of range"):
        ds[2]
