"""Anchor generation for the RPN: one grid of anchors per feature level."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def _as_per_level(values, num_levels: int, name: str) -> list[tuple[float, ...]]:
    """Broadcast ``values`` (one tuple for all levels, or one tuple per level) to ``num_levels`` tuples."""
    values = list(values)
    if values and not isinstance(values[0], (list, tuple)):
        values = [tuple(values)] * num_levels
    if len(values) != num_levels:
        raise ValueError(f"{name} must have one entry per level ({num_levels}), got {len(values)}")
    return [tuple(float(v) for v in level) for level in values]


class AnchorGenerator(nn.Module):
    """Anchors (x1, y1, x2, y2, absolute input pixels) for each feature-map location.

    For level ``l`` and location ``(i, j)`` the anchors are the base anchors of that level
    shifted by ``(j * stride_w, i * stride_h)``; the order is (H, W, A) row-major, which is
    the order the RPN head's outputs are flattened in.

    Args:
        sizes: per level, the anchor sizes (sqrt of area, pixels), e.g. ``((32,), (64,), ...)``.
        aspect_ratios: height / width ratios; one tuple for all levels or one per level.
        strides: per-level strides in pixels. ``None`` infers them as
            ``padded_image_size // feature_size`` per dimension (torchvision's convention, which
            for an FPN's p6 can differ from 64 when the padded size is not a multiple of 64).
        round_base: round base anchors to integers (torchvision does; detectron2 does not).
    """

    def __init__(
        self,
        *,
        sizes: Sequence[Sequence[float]] = ((32,), (64,), (128,), (256,), (512,)),
        aspect_ratios: Sequence = (0.5, 1.0, 2.0),
        strides: Sequence[int] | None = None,
        round_base: bool = True,
    ):
        super().__init__()
        self.sizes = [tuple(float(s) for s in level) for level in sizes]
        self.aspect_ratios = _as_per_level(aspect_ratios, len(self.sizes), "aspect_ratios")
        if strides is not None and len(strides) != len(self.sizes):
            raise ValueError(f"strides must have one entry per level ({len(self.sizes)}), got {len(strides)}")
        self.strides = None if strides is None else [int(s) for s in strides]
        self.round_base = bool(round_base)
        self._cache: dict[tuple, list[torch.Tensor]] = {}

    @property
    def num_anchors_per_location(self) -> list[int]:
        return [len(s) * len(r) for s, r in zip(self.sizes, self.aspect_ratios)]

    def base_anchors(self, level: int) -> torch.Tensor:
        """Tensor[A, 4] of anchors centred on (0, 0), ratio-major then size (torchvision's order)."""
        scales = torch.tensor(self.sizes[level], dtype=torch.float32)
        ratios = torch.tensor(self.aspect_ratios[level], dtype=torch.float32)
        h_ratios = torch.sqrt(ratios)
        w_ratios = 1.0 / h_ratios
        ws = (w_ratios[:, None] * scales[None, :]).reshape(-1)
        hs = (h_ratios[:, None] * scales[None, :]).reshape(-1)
        base = torch.stack([-ws, -hs, ws, hs], dim=1) / 2
        return base.round() if self.round_base else base

    def _grid(self, level: int, feat_hw: tuple[int, int], stride_hw: tuple[int, int], device) -> torch.Tensor:
        base = self.base_anchors(level).to(device)
        sy, sx = stride_hw
        shift_x = torch.arange(feat_hw[1], dtype=torch.int32, device=device) * sx
        shift_y = torch.arange(feat_hw[0], dtype=torch.int32, device=device) * sy
        yy, xx = torch.meshgrid(shift_y, shift_x, indexing="ij")
        xx, yy = xx.reshape(-1), yy.reshape(-1)
        shifts = torch.stack([xx, yy, xx, yy], dim=1).to(torch.float32)
        return (shifts[:, None, :] + base[None, :, :]).reshape(-1, 4)

    def forward(self, image_hw: tuple[int, int], feature_shapes: Sequence[tuple[int, int]], device=None) -> list[torch.Tensor]:
        """Anchors for one (padded) batch image size.

        Args:
            image_hw: (height, width) of the padded batch tensor, pixels.
            feature_shapes: per level the (height, width) of the feature map.
        Returns:
            list (per level) of float32 Tensor[H_l * W_l * A_l, 4], x1y1x2y2 in input pixels.
            The result is cached per (image size, feature shapes, device) and shared: do not modify it.
        """
        # Traced (torch.export / torch.compile with dynamic shapes) the sizes are symbolic: a cache lookup would
        # specialise the graph to the example's size, so the grid is built in the graph instead, uncached.
        tracing = torch.compiler.is_compiling()
        if not tracing:
            feature_shapes = [tuple(int(v) for v in s) for s in feature_shapes]
        else:
            feature_shapes = [tuple(s) for s in feature_shapes]
        if len(feature_shapes) != len(self.sizes):
            raise ValueError(
                f"feature_shapes has {len(feature_shapes)} levels but the anchor generator has {len(self.sizes)} sizes"
            )
        if tracing:
            key = None
        else:
            key = (tuple(int(v) for v in image_hw), tuple(feature_shapes), str(device))
            cached = self._cache.get(key)
            if cached is not None:
                return cached
        out = []
        for level, feat_hw in enumerate(feature_shapes):
            if self.strides is None:
                stride_hw = (image_hw[0] // feat_hw[0], image_hw[1] // feat_hw[1])
            else:
                stride_hw = (self.strides[level], self.strides[level])
            out.append(self._grid(level, feat_hw, stride_hw, device))
        if tracing:
            return out
        if len(self._cache) > 64:  # multi-scale training sees a bounded number of sizes; stay bounded anyway
            self._cache.clear()
        self._cache[key] = out
        return out

