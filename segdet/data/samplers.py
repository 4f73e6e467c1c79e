"""Samplers: an infinite, sharded, resumable training batch sampler and a sharded inference sampler.

The training stream is defined globally, independent of the number of processes: epoch ``e`` visits the dataset
in the order of a permutation seeded by (seed, e); consecutive samples form global batches (optionally grouped
by aspect ratio); rank ``r`` of ``W`` takes slice ``r`` of each global batch. Every sample also carries its own
augmentation seed derived from (seed, position in the stream). Hence the data a run sees, augmentations
included, depends only on (seed, global batch size), and resuming from a batch count reproduces it exactly,
even with a different number of processes or DataLoader workers.
"""
from __future__ import annotations

import logging
import math
from typing import Iterator, Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)

_MASK64 = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """A well-mixed 63-bit seed from integers (splitmix64 rounds), stable across runs and platforms."""
    state = 0x9E3779B97F4A7C15
    for v in values:
        state = (state ^ (int(v) & _MASK64)) & _MASK64
        state = (state + 0x9E3779B97F4A7C15) & _MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
        state = z ^ (z >> 31)
    return state >> 1


def aspect_ratio_groups(aspect_ratios: Sequence[float]) -> np.ndarray:
    """int64 [N] group id per image: 0 for landscape or square (width >= height), 1 for portrait."""
    return (np.asarray(aspect_ratios, dtype=np.float64) < 1.0).astype(np.int64)


class TrainingBatchSampler(torch.utils.data.Sampler):
    """Infinite stream of this rank's per-rank batches of ``(dataset index, augmentation seed)`` keys.

    Args:
        dataset_size: number of items.
        global_batch_size: images per optimiser step over all ranks; must be divisible by ``world_size``.
        rank, world_size: this process's share.
        seed: seed of the order and of the augmentations.
        shuffle: permute each epoch (else visit in index order).
        group_ids: optional int [dataset_size]; a batch then holds images of one group only (e.g. aspect ratio).

    ``num_batches`` counts batches the consumer has received; the loader (segdet.data.build.TrainLoader) advances
    it per delivered batch, since DataLoader prefetching runs the iterator ahead of training. A new iterator
    starts at ``num_batches``; ``state_dict``/``load_state_dict`` save and restore it.
    """

    def __init__(self, dataset_size: int, *, global_batch_size: int, rank: int = 0, world_size: int = 1,
                 seed: int = 0, shuffle: bool = True, group_ids: Sequence[int] | None = None):
        if dataset_size <= 0:
            raise ValueError(f"dataset_size must be > 0, got {dataset_size}")
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if global_batch_size <= 0 or global_batch_size % world_size:
            raise ValueError(
                f"global_batch_size ({global_batch_size}) must be a positive multiple of world_size ({world_size}) "
                "so that every rank gets the same share"
            )
        if group_ids is not None:
            group_ids = np.asarray(group_ids, dtype=np.int64)
            if group_ids.shape != (dataset_size,):
                raise ValueError(f"group_ids must have shape [{dataset_size}], got {list(group_ids.shape)}")
        self.dataset_size = dataset_size
        self.global_batch_size = global_batch_size
        self.batch_size = global_batch_size // world_size
        self.rank, self.world_size = rank, world_size
        self.seed = int(seed)
        self.shuffle = shuffle
        self.group_ids = group_ids
        self.num_batches = 0

    # -- the global stream ---------------------------------------------------------------------------------------
    def _epoch_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.dataset_size)
        g = torch.Generator().manual_seed(mix_seed(self.seed, 0, epoch))
        return torch.randperm(self.dataset_size, generator=g).numpy()

    def _samples(self, start: int = 0) -> Iterator[tuple[int, int]]:
        """(index, position in the stream) of the global stream from sample position ``start`` on."""
        epoch, offset = divmod(start, self.dataset_size)
        position = start
        while True:
            order = self._epoch_order(epoch)
            for index in order[offset:]:
                yield int(index), position
                position += 1
            epoch, offset = epoch + 1, 0

    def _keys(self, batch: list[tuple[int, int]]) -> list[tuple[int, int]]:
        return [(index, mix_seed(self.seed, 1, position)) for index, position in batch]

    def global_batches(self, start: int = 0) -> Iterator[list[tuple[int, int]]]:
        """Global batches of (dataset index, augmentation seed) from batch number ``start`` on."""
        size = self.global_batch_size
        if self.group_ids is None:
            samples = self._samples(start * size)
            while True:
                yield self._keys([next(samples) for _ in range(size)])
        # Grouping holds back samples until their group fills a batch, so batch b depends on everything drawn
        # before it: replay the stream from the beginning.
        buckets: dict[int, list] = {}
        produced = 0
        for sample in self._samples(0):
            bucket = buckets.setdefault(int(self.group_ids[sample[0]]), [])
            bucket.append(sample)
            if len(bucket) == size:
                if produced >= start:
                    yield self._keys(bucket)
                bucket.clear()
                produced += 1

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        lo = self.rank * self.batch_size
        for batch in self.global_batches(self.num_batches):
            yield batch[lo:lo + self.batch_size]

    def __len__(self) -> int:
        raise TypeError("TrainingBatchSampler is infinite")

    # -- resume ---------------------------------------------------------------------------------------------------
    @property
    def epoch(self) -> float:
        """Passes over the dataset made by the consumed batches (fractional)."""
        return self.num_batches * self.global_batch_size / self.dataset_size

    def state_dict(self) -> dict:
        return {
            "num_batches": self.num_batches,
            "epoch": self.epoch,
            "seed": self.seed,
            "global_batch_size": self.global_batch_size,
            "dataset_size": self.dataset_size,
            "grouped": self.group_ids is not None,
            "shuffle": self.shuffle,
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume after ``state["num_batches"]`` batches. The data order is exactly the saved run's when seed,
        global batch size, dataset size, grouping and shuffling match (world size may differ); otherwise the
        position is carried over in samples seen and a warning names what changed."""
        if "num_batches" not in state:
            raise KeyError(f"sampler state must contain 'num_batches', got keys {sorted(state)}")
        changed = [k for k in ("seed", "global_batch_size", "dataset_size", "grouped", "shuffle")
                   if k in state and state[k] != self.state_dict()[k]]
        num_batches = int(state["num_batches"])
        if changed:
            samples = num_batches * int(state.get("global_batch_size", self.global_batch_size))
            num_batches = math.ceil(samples / self.global_batch_size)
            logger.warning(
                "resuming the data stream with changed %s; continuing at batch %d but the order differs from the "
                "saved run", ", ".join(f"{k} ({state[k]} -> {self.state_dict()[k]})" for k in changed), num_batches,
            )
        self.num_batches = num_batches


class InferenceSampler(torch.utils.data.Sampler):
    """Each dataset index exactly once over all ranks: rank ``r`` gets a contiguous block, sizes differing by at
    most one, so evaluation results gathered from every rank cover the dataset without duplicates."""

    def __init__(self, dataset_size: int, *, rank: int = 0, world_size: int = 1):
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.begin = dataset_size * rank // world_size
        self.end = dataset_size * (rank + 1) // world_size

    def __iter__(self):
        return iter(range(self.begin, self.end))

    def __len__(self) -> int:
        return self.end - self.begin
