"""Balanced sampling of positive / negative training examples per image."""
from __future__ import annotations

import torch


def subsample_labels(labels: torch.Tensor, num_samples: int, positive_fraction: float, bg_label: int = 0):
    """Randomly pick at most ``num_samples`` examples, at most ``positive_fraction`` of them positive.

    Args:
        labels: int Tensor[N]; -1 = ignore, ``bg_label`` = negative, anything else = positive.
        num_samples: total samples wanted (fewer if there are not enough examples).
        positive_fraction: the largest share of positives; negatives fill the rest.
    Returns:
        (pos_idx, neg_idx): int64 Tensors of indices into ``labels``.
    """
    positive = torch.nonzero((labels != -1) & (labels != bg_label)).squeeze(1)
    negative = torch.nonzero(labels == bg_label).squeeze(1)
    num_pos = min(positive.numel(), int(num_samples * positive_fraction))
    num_neg = min(negative.numel(), num_samples - num_pos)
    perm_pos = torch.randperm(positive.numel(), device=positive.device)[:num_pos]
    perm_neg = torch.randperm(negative.numel(), device=negative.device)[:num_neg]
    return positive[perm_pos], negative[perm_neg]


class BalancedPositiveNegativeSampler:
    """Per-image sampler: ``batch_size_per_image`` examples, ``positive_fraction`` of them positive at most."""

    def __init__(self, batch_size_per_image: int, positive_fraction: float):
        if not 0.0 <= positive_fraction <= 1.0:
            raise ValueError(f"positive_fraction must be in [0, 1], got {positive_fraction}")
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = float(positive_fraction)

    def __call__(self, labels: torch.Tensor):
        """labels: int Tensor[N] (-1 ignore, 0 negative, > 0 positive) -> (pos_idx, neg_idx) int64 Tensors."""
        return subsample_labels(labels, self.batch_size_per_image, self.positive_fraction)
