"""Fake kernel of ``torch.ops.segdet.check_image`` (csrc/ops/check_image.cpp), the input check an exported
model runs as its first op. Traced, the checks that do not depend on the (symbolic) size run at export time."""
import torch

from segdet import _C  # noqa: F401  (loads the op)


@torch.library.register_fake("segdet::check_image")
def _check_image_fake(image, min_side, max_side):
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"segdet model: image must be an RGB uint8 Tensor[3, H, W], got shape {tuple(image.shape)}")
    if image.dtype != torch.uint8:
        raise TypeError(f"segdet model: image must be an RGB uint8 Tensor[3, H, W] (0..255), got dtype {image.dtype}")
    return torch.empty_like(image, memory_format=torch.contiguous_format)
