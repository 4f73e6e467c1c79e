"""segdet.evaluation.coco_results: the one COCO results conversion, RLE straight from box-sized crops, and the
deferred (box-by-box) mask path evaluation and prediction use."""
import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from segdet.evaluation import COCOEvaluator
from segdet.evaluation.coco_results import (
    crop_to_rle,
    deferred_mask_pasting,
    encode_mask_results,
    iter_mask_crops,
    mask_probs_to_rles,
    to_coco_results,
)
from segdet.ops import paste_masks


def _full_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def test_crop_to_rle_equals_pycocotools_on_the_full_mask():
    rng = np.random.default_rng(0)
    cases = 0
    for height, width in [(1, 1), (7, 5), (30, 41), (64, 3)]:
        for _ in range(60):
            h = int(rng.integers(0, height + 1))
            w = int(rng.integers(0, width + 1))
            y = int(rng.integers(0, height - h + 1))
            x = int(rng.integers(0, width - w + 1))
            density = rng.choice([0.0, 0.1, 0.5, 0.95, 1.0])
            crop = rng.random((h, w)) < density
            full = np.zeros((height, width), bool)
            full[y:y + h, x:x + w] = crop
            assert crop_to_rle(crop, x, y, height, width) == _full_rle(full), (height, width, x, y, h, w, density)
            cases += 1
    # Crops spanning the full height with set bottom/top pixels: runs of adjacent columns join across columns.
    full = np.zeros((4, 6), bool)
    full[:, 1:4] = True
    assert crop_to_rle(full[:, 1:4], 1, 0, 4, 6) == _full_rle(full)
    assert cases == 240
    with pytest.raises(ValueError, match="does not fit"):
        crop_to_rle(np.ones((3, 3), bool), 5, 0, 4, 6)


def test_mask_probs_to_rles_match_full_paste_in_small_chunks():
    g = torch.Generator().manual_seed(0)
    num, height, width = 40, 70, 90
    ctr = torch.rand(num, 2, generator=g) * 1.4 - 0.2
    side = torch.rand(num, 2, generator=g) * 1.2
    boxes = torch.cat([ctr - side / 2, ctr + side / 2], 1) * torch.tensor([width, height] * 2)
    boxes[3] = torch.tensor([200.0, 200.0, 300.0, 300.0])  # outside: empty mask
    probs = torch.rand(num, 28, 28, generator=g)
    expected = encode_mask_results(paste_masks(probs, boxes, height, width, 0.5))
    # A budget of 500 pixels splits the detections into many chunks (and forces some boxes to go alone).
    assert mask_probs_to_rles(probs, boxes, height, width, 0.5, max_pixels=500) == expected
    assert mask_probs_to_rles(probs, boxes, height, width, 0.5) == expected
    crops = list(iter_mask_crops(probs, boxes, height, width, 0.5, max_pixels=500))
    assert len(crops) == num and crops[3][0].size == 0
    assert max(c.size for c, _, _ in crops) < height * width  # box-sized, not image-sized
    assert mask_probs_to_rles(probs[:0], boxes[:0], height, width) == []
    # Half-precision outputs (autocast) are pasted in float32, as MaskRCNN.postprocess pastes them.
    half = encode_mask_results(paste_masks(probs.half().float(), boxes.half().float(), height, width, 0.5))
    assert mask_probs_to_rles(probs.half(), boxes.half(), height, width, 0.5) == half


def test_to_coco_results_fields_mapping_and_errors():
    masks = torch.zeros(2, 10, 12, dtype=torch.bool)
    masks[0, 2:5, 3:9] = True
    out = {"boxes": torch.tensor([[3.0, 2.0, 9.0, 5.0], [0.0, 7.0, 2.0, 10.0]]), "scores": torch.tensor([0.9, 0.4]),
           "labels": torch.tensor([2, 1]), "masks": masks}
    results = to_coco_results(out, 5, {1: 10, 2: 20})
    assert [r["category_id"] for r in results] == [20, 10]
    assert results[0]["bbox"] == pytest.approx([3.0, 2.0, 6.0, 3.0])
    assert "segmentation" not in to_coco_results(out, 5, with_masks=False)[0]
    with pytest.raises(ValueError, match="label 2 has no category id"):
        to_coco_results(out, 5, {1: 10})
    with pytest.raises(ValueError, match="must agree in length"):
        to_coco_results(dict(out, scores=torch.tensor([0.9])), 5)
    assert to_coco_results({"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0)}, 1) == []


@pytest.fixture(scope="module")
def shapes_eval(tmp_path_factory):
    from segdet.data.coco import COCODataset
    from segdet.data.shapes import annotation_file, ensure_shapes_dataset, image_dir

    root = ensure_shapes_dataset(tmp_path_factory.mktemp("shapes") / "s", image_size=64, num_train=0, num_val=6,
                                 min_shapes=2, max_shapes=3)
    return COCODataset(annotation_file(root, "val"), image_dir(root, "val"))


class _ProbsModel(torch.nn.Module):
    """Returns each image's ground truth boxes with blob masks, pasted or deferred like MaskRCNN."""

    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset
        self.mask_output = "image"
        self.seen_modes: list[str] = []

    def forward(self, images):
        outs = []
        for img in images:
            index = int(img[0, 0, 0])  # the test loader stamps the dataset index into pixel (0, 0)
            _, target = self.dataset[index]
            boxes = target["boxes"].float()
            probs = torch.rand(len(boxes), 28, 28, generator=torch.Generator().manual_seed(index)) * 0.4 + 0.4
            h, w = img.shape[-2:]
            out = {"boxes": boxes, "scores": torch.linspace(1.0, 0.5, len(boxes)), "labels": target["labels"]}
            self.seen_modes.append(self.mask_output)
            if self.mask_output == "deferred":
                out.update(mask_probs=probs, image_size=(h, w), mask_threshold=0.5)
            else:
                out["masks"] = paste_masks(probs, boxes, h, w, 0.5)
            outs.append(out)
        return outs


def test_evaluation_pastes_box_by_box_with_the_same_metrics(shapes_eval):
    from segdet.engine.evaluation import inference_on_dataset

    loader = []
    for i in range(len(shapes_eval)):
        image, target = shapes_eval[i]
        image = image.clone()
        image[0, 0, 0] = i
        loader.append(([image], [target]))
    model = _ProbsModel(shapes_eval)
    evaluator = COCOEvaluator(shapes_eval.ann_file, shapes_eval.label_to_category_id)
    deferred = inference_on_dataset(model, loader, evaluator, device="cpu")
    assert set(model.seen_modes) == {"deferred"} and model.mask_output == "image"
    # The same outputs pasted into full images first, as before.
    full_results = []
    for images, targets in loader:
        (out,) = model(images)
        full_results.extend(to_coco_results(out, int(targets[0]["image_id"]), evaluator.label_to_category_id))
    assert model.seen_modes[-1] == "image"
    evaluator.reset()
    evaluator._results = full_results
    evaluator._image_ids = [int(t["image_id"]) for _, (t,) in loader]
    full = evaluator.evaluate()
    assert set(full) == set(deferred)
    assert all(full[k] == deferred[k] or (np.isnan(full[k]) and np.isnan(deferred[k])) for k in full), (full, deferred)
    assert 0 < deferred["segm/AP"] < 100


def test_deferred_mask_pasting_restores_and_ignores_other_models():
    class Plain(torch.nn.Module):
        pass

    with deferred_mask_pasting(Plain()):
        pass
    m = Plain()
    m.mask_output = "image"
    with pytest.raises(RuntimeError):
        with deferred_mask_pasting(m):
            assert m.mask_output == "deferred"
            raise RuntimeError("boom")
    assert m.mask_output == "image"
    with deferred_mask_pasting(m, enabled=False):
        assert m.mask_output == "image"
