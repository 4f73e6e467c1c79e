"""IoU matcher: assigns every prediction (anchor / proposal) to at most one ground-truth box."""
from __future__ import annotations

import torch


class Matcher:
    """Assign each column of an IoU matrix to its best row, with thresholds.

    Results per prediction: the index of the matched ground truth (>= 0),
    ``BELOW_LOW_THRESHOLD`` (-1, a negative) or ``BETWEEN_THRESHOLDS`` (-2, ignored).

    Args:
        high_threshold: IoU >= this is a positive match.
        low_threshold: IoU < this is a negative; in between is ignored.
        allow_low_quality_matches: also match, for every ground truth, the predictions that
            reach its highest IoU (even below ``high_threshold``), so that every GT gets at
            least one positive (Faster R-CNN's RPN rule).
    """

    BELOW_LOW_THRESHOLD = -1
    BETWEEN_THRESHOLDS = -2

    def __init__(self, high_threshold: float, low_threshold: float, allow_low_quality_matches: bool = False):
        if low_threshold > high_threshold:
            raise ValueError(f"low_threshold ({low_threshold}) must be <= high_threshold ({high_threshold})")
        self.high_threshold = float(high_threshold)
        self.low_threshold = float(low_threshold)
        self.allow_low_quality_matches = bool(allow_low_quality_matches)

    def __call__(self, match_quality_matrix: torch.Tensor) -> torch.Tensor:
        """
        Args:
            match_quality_matrix: Tensor[G, N] of IoUs between G ground truths and N predictions.
        Returns:
            int64 Tensor[N]: matched GT index, or -1 / -2 as described in the class docstring.
        """
        if match_quality_matrix.dim() != 2:
            raise ValueError(f"match_quality_matrix must be Tensor[G, N], got shape {tuple(match_quality_matrix.shape)}")
        num_gt, num_pred = match_quality_matrix.shape
        if num_gt == 0:
            return torch.full((num_pred,), self.BELOW_LOW_THRESHOLD, dtype=torch.int64, device=match_quality_matrix.device)
        matched_vals, matches = match_quality_matrix.max(dim=0)
        all_matches = matches.clone() if self.allow_low_quality_matches else None
        matches[matched_vals < self.low_threshold] = self.BELOW_LOW_THRESHOLD
        matches[(matched_vals >= self.low_threshold) & (matched_vals < self.high_threshold)] = self.BETWEEN_THRESHOLDS
        if all_matches is not None:
            # Every prediction tied for a GT's best IoU keeps its original argmax GT (not
            # necessarily that GT), exactly as torchvision/detectron2 do.
            best_per_gt, _ = match_quality_matrix.max(dim=1)
            pred_idx = torch.nonzero(match_quality_matrix == best_per_gt[:, None])[:, 1]
            matches[pred_idx] = all_matches[pred_idx]
        return matches
