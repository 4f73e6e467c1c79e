import itertools
import os

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from segdet.data import DetectionData, build_dataset, build_test_loader, build_train_loader, build_transforms
from segdet.data.shapes import annotation_file, ensure_shapes_dataset, image_dir

CONF_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "conf", "data")


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return ensure_shapes_dataset(tmp_path_factory.mktemp("shapes") / "s", image_size=48, num_train=20, num_val=7)


def _train_set(root):
    return build_dataset(ann_file=annotation_file(root, "train"), img_dir=image_dir(root, "train"), filter_empty=True,
                         transforms=build_transforms(is_train=True, min_size=[32, 40, 48], max_size=100, flip_prob=0.5))


def _same_batches(a, b):
    for (images_a, targets_a), (images_b, targets_b) in zip(a, b, strict=True):
        assert len(images_a) == len(images_b)
        for x, y, tx, ty in zip(images_a, images_b, targets_a, targets_b):
            assert torch.equal(x, y) and torch.equal(tx["boxes"], ty["boxes"]) and torch.equal(tx["masks"], ty["masks"])
            assert tx["image_id"] == ty["image_id"]


def test_train_loader_batches_and_exact_resume_with_workers(shapes_root):
    dataset = _train_set(shapes_root)
    reference = list(itertools.islice(build_train_loader(dataset, global_batch_size=3, seed=2, num_workers=0), 8))
    images, targets = reference[0]
    assert isinstance(images, list) and isinstance(targets, list) and len(images) == len(targets) == 3
    assert all(im.dtype == torch.uint8 and im.shape[0] == 3 for im in images)
    assert len({tuple(im.shape) for batch in reference for im in batch[0]}) > 1  # multi-scale happened

    loader = build_train_loader(dataset, global_batch_size=3, seed=2, num_workers=2)
    first = list(itertools.islice(loader, 5))
    _same_batches(first, reference[:5])  # workers do not change the data or its augmentation
    state = loader.state_dict()
    assert state["num_batches"] == 5  # delivered batches, not the ones the workers prefetched

    resumed = build_train_loader(dataset, global_batch_size=3, seed=2, num_workers=2)
    resumed.load_state_dict(state)
    _same_batches(list(itertools.islice(resumed, 3)), reference[5:8])


def test_train_loader_shards_per_rank(shapes_root):
    dataset = _train_set(shapes_root)
    whole = next(iter(build_train_loader(dataset, global_batch_size=4, seed=0, rank=0, world_size=1)))
    parts = [next(iter(build_train_loader(dataset, global_batch_size=4, seed=0, rank=r, world_size=2)))
             for r in range(2)]
    assert [len(p[0]) for p in parts] == [2, 2]
    assert [t["image_id"] for p in parts for t in p[1]] == [t["image_id"] for t in whole[1]]
    with pytest.raises(ValueError, match="multiple of world_size"):
        build_train_loader(dataset, global_batch_size=3, rank=0, world_size=2)


def test_test_loader_covers_every_image_once_across_ranks(shapes_root):
    dataset = build_dataset(ann_file=annotation_file(shapes_root, "val"), img_dir=image_dir(shapes_root, "val"))
    seen = []
    for rank in range(3):
        for images, targets in build_test_loader(dataset, batch_size=2, rank=rank, world_size=3):
            assert len(images) == len(targets) <= 2
            seen += [t["image_id"] for t in targets]
    assert seen == dataset.image_ids and len(seen) == 7


def _data(name, **overrides) -> DetectionData:
    cfg = OmegaConf.create({"data": OmegaConf.load(os.path.join(CONF_DIR, f"{name}.yaml"))})
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value)
    return instantiate(cfg.data, _convert_="all")


def test_shapes_config_builds_train_and_val(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGDET_CACHE", str(tmp_path / "cache"))
    data = _data("shapes", **{"data.generator.num_train": 8, "data.generator.num_val": 4,
                              "data.generator.image_size": 32, "data.num_workers": 0})
    assert data.num_classes == 4 and data.root.startswith(str(tmp_path / "cache") + "/shapes-")
    train_set, train_loader = data.build("train", global_batch_size=2, seed=0)
    images, targets = next(iter(train_loader))
    assert len(images) == 2 and images[0].shape == (3, 32, 32)
    assert train_set.num_classes == 4
    val_set, val_loader = data.build("val")
    assert len(val_set) == 4 and sum(len(b[0]) for b in val_loader) == 4
    assert val_set.transforms is None  # outputs stay in annotation coordinates for evaluation
    with pytest.raises(ValueError, match="global_batch_size"):
        data.build("train")


def test_num_classes_from_the_annotations_or_checked_against_them(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGDET_CACHE", str(tmp_path / "cache"))
    small = {"data.generator.num_train": 2, "data.generator.num_val": 2, "data.generator.image_size": 32}
    val_set, _ = _data("shapes", **small, **{"data.num_classes": None}).build("val")
    assert val_set.num_classes == 4
    with pytest.raises(ValueError, match=r"data.num_classes=5 but .*instances_val.json has 4 categories"):
        _data("shapes", **small, **{"data.num_classes": 5}).build("val")


def test_coco_config_points_to_the_standard_layout(tmp_path):
    data = _data("coco", **{"data.root": str(tmp_path)})
    assert data.num_classes is None  # taken from the annotation file's categories
    assert data.splits["train"].ann_file == str(tmp_path / "annotations" / "instances_train2017.json")
    assert data.splits["val"].img_dir == str(tmp_path / "val2017")
    with pytest.raises(FileNotFoundError, match="instances_val2017.json does not exist"):
        data.build("val")
