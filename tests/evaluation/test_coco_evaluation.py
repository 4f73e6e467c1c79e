import json
import math
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from segdet.data.coco import COCODataset
from segdet.data.shapes import annotation_file, ensure_shapes_dataset, image_dir
from segdet.evaluation import COCOEvaluator, encode_mask_results


@pytest.fixture(scope="module")
def val_set(tmp_path_factory):
    root = ensure_shapes_dataset(tmp_path_factory.mktemp("shapes") / "s", image_size=64, num_train=0, num_val=12,
                                 min_shapes=2, max_shapes=4)
    return COCODataset(annotation_file(root, "val"), image_dir(root, "val"))


def _gt_outputs(dataset, shift=0):
    """Ground truth as model outputs; ``shift`` moves every box and mask right by that many pixels."""
    ids, outputs = [], []
    for i in range(len(dataset)):
        _, target = dataset[i]
        boxes = target["boxes"].clone()
        boxes[:, 0::2] += shift
        masks = torch.roll(target["masks"].bool(), shifts=shift, dims=-1)
        ids.append(target["image_id"])
        outputs.append({"boxes": boxes, "scores": torch.linspace(1.0, 0.5, len(boxes)), "labels": target["labels"],
                        "masks": masks})
    return ids, outputs


def test_ground_truth_as_predictions_scores_100(val_set, capsys):
    evaluator = COCOEvaluator(val_set.ann_file, val_set.label_to_category_id)
    ids, outputs = _gt_outputs(val_set)
    evaluator.process(ids[:5], outputs[:5])
    evaluator.process(ids[5:], outputs[5:])
    metrics = evaluator.evaluate()
    assert set(metrics) == {f"{t}/{k}" for t in ("bbox", "segm") for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")}
    for key in ("bbox/AP", "bbox/AP50", "bbox/AP75", "segm/AP", "segm/AP50", "segm/AP75"):
        assert metrics[key] == pytest.approx(100.0), key
    printed = capsys.readouterr().out
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all" in printed and "COCO segm metrics" in printed


def test_shifted_predictions_score_less(val_set):
    evaluator = COCOEvaluator(val_set.ann_file, val_set.label_to_category_id)
    evaluator.process(*_gt_outputs(val_set, shift=4))
    metrics = evaluator.evaluate()
    assert 0.0 < metrics["bbox/AP"] < 95.0 and 0.0 < metrics["segm/AP"] < 95.0
    assert metrics["bbox/AP50"] > metrics["bbox/AP75"]


def test_wrong_labels_score_zero_and_subset_evaluation(val_set):
    evaluator = COCOEvaluator(val_set.ann_file, val_set.label_to_category_id, iou_types=("bbox",))
    ids, outputs = _gt_outputs(val_set)
    evaluator.process(ids[:3], outputs[:3])  # only these images count
    assert evaluator.evaluate()["bbox/AP"] == pytest.approx(100.0)
    evaluator.reset()
    for out in outputs:
        out["labels"] = out["labels"] % 4 + 1
    evaluator.process(ids, outputs)
    assert evaluator.evaluate()["bbox/AP"] == pytest.approx(0.0)


def test_empty_predictions_give_zeros(val_set):
    evaluator = COCOEvaluator(val_set.ann_file, val_set.label_to_category_id)
    assert all(v == 0.0 for v in evaluator.evaluate().values())  # nothing processed at all
    empty = {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64),
             "masks": torch.zeros(0, 64, 64, dtype=torch.bool)}
    evaluator.process([val_set.image_ids[0]], [empty])
    metrics = evaluator.evaluate()
    assert len(metrics) == 12 and all(v == 0.0 for v in metrics.values())


def test_crowd_regions_neither_reward_nor_penalise(tmp_path):
    h = w = 40
    person = np.zeros((h, w), np.uint8)
    person[5:20, 5:15] = 1
    crowd = np.zeros((h, w), np.uint8)
    crowd[22:38, 20:38] = 1
    crowd_rle = encode_mask_results(torch.from_numpy(crowd)[None])[0]
    gt = {
        "images": [{"id": 1, "file_name": "1.png", "height": h, "width": w}],
        "categories": [{"id": 1, "name": "person"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 10, 15], "area": 150, "iscrowd": 0,
             "segmentation": encode_mask_results(torch.from_numpy(person)[None])[0]},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [20, 22, 18, 16], "area": int(crowd.sum()),
             "iscrowd": 1, "segmentation": crowd_rle},
        ],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    evaluator = COCOEvaluator(str(path), {1: 1})
    # a confident detection inside the crowd region ranks first; it must be ignored, not counted as a false positive
    evaluator.process([1], [{
        "boxes": torch.tensor([[22.0, 24.0, 30.0, 32.0], [5.0, 5.0, 15.0, 20.0]]),
        "scores": torch.tensor([0.99, 0.9]),
        "labels": torch.tensor([1, 1]),
        "masks": torch.stack([torch.zeros(h, w, dtype=torch.bool).index_fill_(0, torch.arange(24, 32), True)
                              & torch.zeros(h, w, dtype=torch.bool).index_fill_(1, torch.arange(22, 30), True),
                              torch.from_numpy(person).bool()]),
    }])
    metrics = evaluator.evaluate()
    assert metrics["bbox/AP"] == pytest.approx(100.0) and metrics["segm/AP"] == pytest.approx(100.0)
    assert math.isnan(metrics["bbox/APl"])  # no large object in the ground truth: undefined, not 0 or -100


def test_bad_outputs_raise_clear_errors(val_set):
    evaluator = COCOEvaluator(val_set.ann_file, val_set.label_to_category_id)
    ids, outputs = _gt_outputs(val_set)
    with pytest.raises(ValueError, match="image_ids but"):
        evaluator.process(ids[:2], outputs[:1])
    with pytest.raises(ValueError, match="image_id 999 is not in the ground truth"):
        evaluator.process([999], outputs[:1])
    bad = dict(outputs[0], labels=torch.full_like(outputs[0]["labels"], 9))
    with pytest.raises(ValueError, match="label 9 has no category id"):
        evaluator.process(ids[:1], [bad])
    with pytest.raises(ValueError, match="iou_types"):
        COCOEvaluator(val_set.ann_file, val_set.label_to_category_id, iou_types=("keypoints",))


def _distributed_worker(rank, world_size, init_file, ann_file, label_map, ids, outputs, queue):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        evaluator = COCOEvaluator(ann_file, label_map)
        share = slice(rank, None, world_size)
        evaluator.process(ids[share], outputs[share])
        queue.put((rank, evaluator.evaluate()))
    finally:
        dist.destroy_process_group()


def test_results_are_gathered_over_ranks(val_set, tmp_path):
    # rank 0 holds exact predictions for its images, rank 1 shifted ones: only the gathered set gives the mix's AP
    ids, exact = _gt_outputs(val_set)
    _, shifted = _gt_outputs(val_set, shift=4)
    outputs = [exact[i] if i % 2 == 0 else shifted[i] for i in range(len(ids))]
    single = COCOEvaluator(val_set.ann_file, val_set.label_to_category_id)
    single.process(ids, outputs)
    expected = single.evaluate()
    assert 5.0 < expected["bbox/AP"] < 95.0

    ctx = mp.get_context("fork")  # spawn would re-import torch in each child: seconds per process
    queue = ctx.Queue()
    procs = [ctx.Process(target=_distributed_worker,
                         args=(r, 2, str(tmp_path / "init"), val_set.ann_file, val_set.label_to_category_id, ids,
                               outputs, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for rank in range(2):
        for key in ("bbox/AP", "segm/AP", "bbox/AP50"):
            assert results[rank][key] == pytest.approx(expected[key]), (rank, key)


def test_ground_truth_path_may_start_with_home(val_set, monkeypatch):
    home = os.path.dirname(val_set.ann_file)
    monkeypatch.setenv("HOME", home)
    evaluator = COCOEvaluator(os.path.join("~", os.path.basename(val_set.ann_file)), val_set.label_to_category_id)
    assert len(evaluator.coco_gt.imgs) == len(val_set)
