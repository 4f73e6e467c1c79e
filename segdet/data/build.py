"""Datasets and loaders from plain values; ``DetectionData`` is what conf/data/*.yaml instantiates.

Batches are ``(images, targets)``: a list of uint8 Tensor[3, H, W] and a list of target dicts; no padding, the
model batches images itself.
"""
from __future__ import annotations

import logging
import random
import signal
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .coco import COCODataset
from .samplers import InferenceSampler, TrainingBatchSampler, aspect_ratio_groups
from .shapes import ShapesParams, ensure_shapes_dataset
from .transforms import build_transforms

logger = logging.getLogger(__name__)


def collate_list(batch: Sequence[tuple]) -> tuple[list, list]:
    """[(image, target), ...] -> ([image, ...], [target, ...])."""
    images, targets = zip(*batch)
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


@dataclass(frozen=True)
class SplitFiles:
    """Where one split of a COCO-format dataset lives: its instances json and the folder of its images."""

    ann_file: str
    img_dir: str


class DetectionData:
    """A COCO-format dataset's train and val splits and how they are loaded: the ``_target_`` of conf/data/*.yaml.

    Args (keyword-only, plain values and built parts):
        name: short name for log lines ("shapes", "coco").
        train, val: the splits' files.
        num_classes: foreground classes K; None takes them from the annotation file's categories, a number is
            checked against them.
        root: the dataset's root folder (where ``generator`` writes).
        generator: parameters of the synthetic shapes data to generate into ``root`` on first use; None for data
            that must already exist (COCO).
        filter_empty: drop training images without instances (evaluation always keeps every image).
        skip_bad_images: skip missing/unreadable images with a warning instead of raising.
        num_workers: loader worker processes per rank.
        aspect_ratio_grouping: batch only landscape or only portrait images together in training.
        val_batch_size: images per rank per evaluation step.
        transforms: ``is_train -> transform`` factory (``build_transforms`` with its options bound).
    """

    def __init__(self, *, name: str, train: SplitFiles, val: SplitFiles, num_classes: int | None = None,
                 root: str | None = None, generator: ShapesParams | None = None, filter_empty: bool = True,
                 skip_bad_images: bool = False, num_workers: int = 0, aspect_ratio_grouping: bool = True,
                 val_batch_size: int = 1, transforms: Callable[..., Any] | None = None):
        if generator is not None and root is None:
            raise ValueError("data.generator needs data.root (the folder the generated dataset is written to)")
        if num_classes is not None and (isinstance(num_classes, bool) or int(num_classes) < 1):
            raise ValueError(f"data.num_classes must be a positive integer or null (from the annotations), "
                             f"got {num_classes!r}")
        self.name = str(name)
        self.splits = {"train": train, "val": val}
        self.num_classes = None if num_classes is None else int(num_classes)
        self.root = root
        self.generator = generator
        self.filter_empty = bool(filter_empty)
        self.skip_bad_images = bool(skip_bad_images)
        self.num_workers = int(num_workers)
        self.aspect_ratio_grouping = bool(aspect_ratio_grouping)
        self.val_batch_size = int(val_batch_size)
        self.transforms = transforms if transforms is not None else build_transforms

    def prepare(self) -> None:
        """Generate the synthetic data into ``root`` unless it is there; nothing for data already on disk. Call it
        on one process before the others build (they wait on a file lock anyway)."""
        if self.generator is not None:
            ensure_shapes_dataset(self.root, **asdict(self.generator))

    def build(self, split: str, *, global_batch_size: int | None = None, seed: int = 0, rank: int | None = None,
              world_size: int | None = None):
        """(dataset, loader) of ``split`` ("train" or "val"). Train needs ``global_batch_size`` and returns an
        infinite ``TrainLoader``; val a finite loader of ``val_batch_size`` images per rank.

        Raises ValueError with both numbers when ``num_classes`` was given and the annotation file has another
        number of categories.
        """
        if split not in self.splits:
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if split == "train" and global_batch_size is None:
            raise ValueError("DetectionData.build('train') needs global_batch_size")
        self.prepare()
        files = self.splits[split]
        is_train = split == "train"
        dataset = build_dataset(ann_file=files.ann_file, img_dir=files.img_dir,
                                filter_empty=self.filter_empty and is_train, skip_bad_images=self.skip_bad_images,
                                transforms=self.transforms(is_train=is_train))
        if self.num_classes is not None and dataset.num_classes != self.num_classes:
            raise ValueError(f"data.num_classes={self.num_classes} but {files.ann_file} has {dataset.num_classes} "
                             "categories (leave data.num_classes null to take them from the file)")
        rank_world = {"rank": rank, "world_size": world_size}
        if is_train:
            loader = build_train_loader(dataset, global_batch_size=global_batch_size, num_workers=self.num_workers,
                                        seed=seed, aspect_ratio_grouping=self.aspect_ratio_grouping, **rank_world)
        else:
            loader = build_test_loader(dataset, batch_size=self.val_batch_size, num_workers=self.num_workers,
                                       **rank_world)
        return dataset, loader
