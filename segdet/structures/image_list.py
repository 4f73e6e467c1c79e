"""``ImageList``: images of different sizes batched into one zero-padded tensor."""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["ImageList"]


class ImageList:
    """A padded batch ``tensor`` Tensor[N, C, Hp, Wp] plus each image's true (height, width).

    Images sit at the top-left corner of their slot; the padding is on the bottom and right so pixel
    coordinates (x1, y1, x2, y2, absolute pixels) are the same in the batch as in the single image.

    Args:
        tensor: Tensor[N, C, Hp, Wp] padded batch.
        image_sizes: N pairs (height, width) of the unpadded images, each <= (Hp, Wp).
    """

    def __init__(self, tensor: Tensor, image_sizes: Sequence[tuple[int, int]]) -> None:
        if not isinstance(tensor, Tensor) or tensor.dim() != 4:
            raise ValueError(
                f"tensor must be a Tensor[N, C, H, W], got "
                f"{tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor).__name__}"
            )
        if len(image_sizes) != tensor.shape[0]:
            raise ValueError(f"image_sizes has {len(image_sizes)} entries for a batch of {tensor.shape[0]} images")
        sizes = [(int(h), int(w)) for h, w in image_sizes]
        for i, (h, w) in enumerate(sizes):
            if h > tensor.shape[-2] or w > tensor.shape[-1]:
                raise ValueError(f"image_sizes[{i}] = {(h, w)} exceeds the padded size {tuple(tensor.shape[-2:])}")
        self.tensor = tensor
        self.image_sizes: list[tuple[int, int]] = sizes

    def __len__(self) -> int:
        return len(self.image_sizes)

    def __getitem__(self, idx: int) -> Tensor:
        """Image ``idx`` without its padding: Tensor[C, h, w] (a view)."""
        h, w = self.image_sizes[idx]
        return self.tensor[idx, ..., :h, :w]

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def to(self, *args, **kwargs) -> "ImageList":
        return ImageList(self.tensor.to(*args, **kwargs), self.image_sizes)

    @staticmethod
    def from_tensors(
        tensors: Sequence[Tensor], size_divisibility: int = 32, pad_value: float = 0.0
    ) -> "ImageList":
        """Pad and stack Tensor[C, H_i, W_i] images (same C, dtype, device) into an ``ImageList``.

        The padded height/width is the largest H_i/W_i rounded up to a multiple of ``size_divisibility``
        (so every FPN level down to stride ``size_divisibility`` has an integer size); 0 or 1 disables
        the rounding. Padding pixels are ``pad_value``.
        """
        if len(tensors) == 0:
            raise ValueError("tensors must contain at least one image Tensor[C, H, W]")
        for i, t in enumerate(tensors):
            if not isinstance(t, Tensor) or t.dim() != 3:
                shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
                raise ValueError(f"tensors[{i}] must be a Tensor[C, H, W], got {shape}")
            if t.shape[0] != tensors[0].shape[0]:
                raise ValueError(f"tensors[{i}] has {t.shape[0]} channels, tensors[0] has {tensors[0].shape[0]}")
        if size_divisibility < 0:
            raise ValueError(f"size_divisibility must be >= 0, got {size_divisibility}")
        image_sizes = [(int(t.shape[-2]), int(t.shape[-1])) for t in tensors]
        max_h = max(h for h, _ in image_sizes)
        max_w = max(w for _, w in image_sizes)
        if size_divisibility > 1:
            # Integer ceil-division: exact, and it keeps a symbolic size an integer expression under torch.export
            # (math.ceil of a float would put a float op into the exported graph).
            max_h = (max_h + size_divisibility - 1) // size_divisibility * size_divisibility
            max_w = (max_w + size_divisibility - 1) // size_divisibility * size_divisibility
        # Padding by F.pad (not by copying into slices of a filled batch): under torch.export the sizes are
        # symbolic, and a slice would make the graph branch on whether an image already has the padded size.
        batch = torch.stack(
            [F.pad(t, (0, max_w - w, 0, max_h - h), value=pad_value) for t, (h, w) in zip(tensors, image_sizes)]
        )
        return ImageList(batch, image_sizes)
