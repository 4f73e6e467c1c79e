"""Builders of datasets and loaders from plain values (the config edge converts Hydra nodes before calling).

Batches are ``(images, targets)``: a list of uint8 Tensor[3, H, W] and a list of target dicts; no padding, the
model batches images itself.
"""
from __future__ import annotations

import logging
import random
import signal
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from .coco import COCODataset
from .samplers import InferenceSampler, TrainingBatchSampler, aspect_ratio_groups
from .shapes import ensure_shapes_dataset
from .transforms import build_transforms

logger = logging.getLogger(__name__)


def collate_list(batch: Sequence[tuple]) -> tuple[list, list]:
    """[(image, target), ...] -> ([image, ...], [target, ...])."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)


def dist_info() -> tuple[int, int]:
    """(rank, world_size) of the default process group, (0, 1) when not distributed."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _seed_worker(worker_id: int) -> None:
    # torch seeds each worker from the loader's generator; numpy and random are derived from it so any code
    # using them in a worker is as reproducible as torch.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    # Ctrl-C goes to the whole process group; only the trainer should act on it (save, then exit),
    # not the workers, whose death mid-fetch would break the main process's clean shutdown.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def build_dataset(*, ann_file: str, img_dir: str, filter_empty: bool = False, skip_bad_images: bool = False,
                  transforms=None) -> COCODataset:
    """A COCO-format dataset (see COCODataset for items). ``transforms``: callable (image, target, generator)."""
    return COCODataset(ann_file, img_dir, filter_empty=filter_empty, skip_bad_images=skip_bad_images,
                       transforms=transforms)


class TrainLoader:
    """Infinite iterable of per-rank training batches whose position survives checkpoints.

    Each delivered batch advances ``batch_sampler.num_batches``; ``state_dict()`` saves it and
    ``load_state_dict()`` (before iterating) makes the next iteration continue with the batch after the last one
    delivered, with the same images and augmentations as the original run.
    """

    def __init__(self, dataloader: torch.utils.data.DataLoader, batch_sampler: TrainingBatchSampler):
        self.dataloader = dataloader
        self.batch_sampler = batch_sampler

    @property
    def batch_size(self) -> int:
        return self.batch_sampler.batch_size

    def __iter__(self):
        for batch in self.dataloader:
            self.batch_sampler.num_batches += 1
            yield batch

    def state_dict(self) -> dict:
        return self.batch_sampler.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.batch_sampler.load_state_dict(state)


def build_train_loader(dataset, *, global_batch_size: int, num_workers: int = 0, seed: int = 0,
                       aspect_ratio_grouping: bool = True, rank: int | None = None, world_size: int | None = None,
                       pin_memory: bool = False) -> TrainLoader:
    """Infinite loader of this rank's ``global_batch_size // world_size`` images per step.

    rank/world_size default to the initialised process group (torchrun). ``aspect_ratio_grouping`` puts only
    landscape or only portrait images in a batch (needs ``dataset.aspect_ratios``), which wastes less padding.
    """
    default_rank, default_world = dist_info()
    rank = default_rank if rank is None else rank
    world_size = default_world if world_size is None else world_size
    group_ids = None
    if aspect_ratio_grouping:
        ratios = getattr(dataset, "aspect_ratios", None)
        if ratios is None:
            raise ValueError("aspect_ratio_grouping=True needs a dataset with an 'aspect_ratios' attribute")
        group_ids = aspect_ratio_groups(ratios)
    sampler = TrainingBatchSampler(len(dataset), global_batch_size=global_batch_size, rank=rank,
                                   world_size=world_size, seed=seed, group_ids=group_ids)
    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate_list,
        worker_init_fn=_seed_worker, generator=torch.Generator().manual_seed(seed + rank), pin_memory=pin_memory,
    )
    return TrainLoader(loader, sampler)


def build_test_loader(dataset, *, batch_size: int = 1, num_workers: int = 0, rank: int | None = None,
                      world_size: int | None = None) -> torch.utils.data.DataLoader:
    """Finite loader visiting this rank's contiguous share of the dataset once, in order."""
    default_rank, default_world = dist_info()
    rank = default_rank if rank is None else rank
    world_size = default_world if world_size is None else world_size
    sampler = InferenceSampler(len(dataset), rank=rank, world_size=world_size)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers, collate_fn=collate_list,
        worker_init_fn=_seed_worker,
    )


def prepare_data(data: Mapping[str, Any]) -> None:
    """Create what the data config points to when it is generated (``data["generator"]``: shapes parameters,
    written once into ``data["root"]``); nothing for datasets that already exist on disk such as COCO."""
    generator = data.get("generator")
    if generator:
        ensure_shapes_dataset(data["root"], **dict(generator))


def build_from_config(data: Mapping[str, Any], *, split: str, global_batch_size: int | None = None,
                      seed: int = 0, rank: int | None = None, world_size: int | None = None):
    """(dataset, loader) of ``split`` ("train" or "val") from a plain dict of conf/data/*.yaml (resolved, e.g.
    ``OmegaConf.to_container(cfg.data, resolve=True)``). Train needs ``global_batch_size`` and returns a
    TrainLoader; val returns a finite loader (``data["val_batch_size"]`` images per rank, default 1)."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    prepare_data(data)
    rank_world = {"rank": rank, "world_size": world_size}
    t = dict(data.get("transforms") or {})
    transforms = build_transforms(is_train=split == "train", **t)
    split_cfg = dict(data[split])
    dataset = build_dataset(
        ann_file=split_cfg["ann_file"], img_dir=split_cfg["img_dir"],
        filter_empty=split_cfg.get("filter_empty", data.get("filter_empty", False) if split == "train" else False),
        skip_bad_images=split_cfg.get("skip_bad_images", data.get("skip_bad_images", False)),
        transforms=transforms,
    )
    num_workers = int(data.get("num_workers", 0))
    if split == "train":
        if global_batch_size is None:
            raise ValueError("build_from_config(split='train') needs global_batch_size")
        loader = build_train_loader(dataset, global_batch_size=global_batch_size, num_workers=num_workers,
                                    seed=seed, aspect_ratio_grouping=bool(data.get("aspect_ratio_grouping", True)),
                                    **rank_world)
    else:
        loader = build_test_loader(dataset, batch_size=int(data.get("val_batch_size", 1)),
                                   num_workers=num_workers, **rank_world)
    return dataset, loader
