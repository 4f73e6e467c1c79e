"""RoIAlign (Mask R-CNN, He et al. 2017): bilinear pooling of box regions to a fixed grid.

Drop-in for ``torchvision.ops.roi_align`` / ``torchvision.ops.RoIAlign`` (same arguments, same
values), computed by the compiled ``torch.ops.segdet.roi_align`` (CPU and CUDA kernels). This module
also registers the op's fake kernels (shape propagation for ``torch.compile``/``opcheck``) and its
autograd formula: the gradient flows to ``input`` only, never to the boxes.
"""
from __future__ import annotations

from numbers import Integral
from typing import Sequence, Union

import torch
from torch import Tensor, nn

from segdet import _C  # loads the ops; check_* are their argument checks (csrc/ops/roi_align.h)
from segdet.structures.boxes import boxes_to_rois

__all__ = ["RoIAlign", "roi_align"]

BoxesLike = Union[Tensor, Sequence[Tensor]]


def _pair(output_size) -> tuple[int, int]:
    # Only the Python form is checked here; positivity is checked by the op (csrc/ops/roi_align.h).
    if isinstance(output_size, (list, tuple)):
        if len(output_size) != 2:
            raise ValueError(f"roi_align: output_size must be an int or a pair (height, width), got {output_size!r}")
        height, width = output_size
    else:
        height = width = output_size
    for v in (height, width):
        if isinstance(v, bool) or not isinstance(v, (Integral, torch.SymInt)):
            raise TypeError(f"roi_align: output_size must hold ints, got {output_size!r}")
    return height, width


def _boxes_to_rois(boxes: BoxesLike, input: Tensor) -> Tensor:
    """Tensor[K, 5] (batch_index, x1, y1, x2, y2) from a tensor of that form or a per-image list of Tensor[L, 4]."""
    if isinstance(boxes, Tensor):
        return boxes
    if not isinstance(boxes, (list, tuple)):
        raise TypeError(
            f"roi_align: boxes must be a Tensor[K, 5] or a list of Tensor[L, 4] (one per image), got {type(boxes)}"
        )
    return boxes_to_rois(boxes, like=input, name="roi_align: boxes")


def roi_align(
    input: Tensor,
    boxes: BoxesLike,
    output_size: Union[int, tuple[int, int]],
    spatial_scale: float = 1.0,
    sampling_ratio: int = -1,
    aligned: bool = False,
) -> Tensor:
    """Pool every box of ``boxes`` from ``input`` to an ``output_size`` grid by bilinear averaging.

    Args:
        input: Tensor[N, C, H, W] feature map, float32/float64/float16/bfloat16, contiguous or
            channels_last (then the result is channels_last too).
        boxes: Tensor[K, 5] rows (batch_index, x1, y1, x2, y2), or a list of N Tensor[L_i, 4]
            (x1, y1, x2, y2) boxes, one per image. Coordinates are absolute pixels of the image
            the map was computed from; same dtype and device as ``input``, or float32 with a
            float16/bfloat16 ``input`` on the CPU (the kernels pool in float either way; CPU
            autocast passes bf16 maps this way, so the coordinates are not rounded to bf16).
        output_size: (pooled_height, pooled_width), or one int for both.
        spatial_scale: map pixels per box-coordinate pixel (e.g. 0.25 for a stride-4 map).
        sampling_ratio: samples per bin along each axis; <= 0 picks ceil(bin size in map pixels).
        aligned: shift boxes by -0.5 map pixel so that sample positions are pixel-centred
            (the Detectron2 convention); False reproduces the original, half-pixel-misaligned
            RoIAlign, which also treats boxes smaller than one map pixel as 1x1.

    Returns:
        Tensor[K, C, pooled_height, pooled_width]: the average of the bilinear samples of each bin.
        Bins of boxes with non-finite coordinates are zero (torchvision's behaviour there is undefined).

    Raises:
        ValueError: a bad shape, size or value (output_size <= 0), tensors on different devices,
            or (CPU) a batch index outside [0, N). The CUDA kernel cannot raise on data without a
            device sync: such RoIs pool to zeros there.
        TypeError: an unsupported dtype, rois' dtype differing from input's (other than the
            float32 rois above), or an argument of the wrong Python type.
    """
    if not isinstance(input, Tensor):
        raise TypeError(f"roi_align: input must be a Tensor[N, C, H, W], got {type(input)}")
    rois = _boxes_to_rois(boxes, input)
    pooled_height, pooled_width = _pair(output_size)
    return torch.ops.segdet.roi_align(
        input, rois, float(spatial_scale), pooled_height, pooled_width, int(sampling_ratio), bool(aligned)
    )


class RoIAlign(nn.Module):
    """Module form of :func:`roi_align`: ``RoIAlign(7, 0.25, 2, aligned=True)(x, boxes)``."""

    def __init__(
        self,
        output_size: Union[int, tuple[int, int]],
        spatial_scale: float,
        sampling_ratio: int,
        aligned: bool = False,
    ):
        super().__init__()
        self.output_size = _pair(output_size)
        self.spatial_scale = float(spatial_scale)
        self.sampling_ratio = int(sampling_ratio)
        self.aligned = bool(aligned)

    def forward(self, input: Tensor, rois: BoxesLike) -> Tensor:
        """input Tensor[N, C, H, W], rois Tensor[K, 5] or list of Tensor[L, 4] -> Tensor[K, C, oh, ow]."""
        return roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return (
            f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
            f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}"
        )


# ---- fake kernels and autograd ------------------------------------------------------------------


def _uses_channels_last(t: Tensor) -> bool:
    # The rule of roi_align_detail::use_channels_last in csrc/ops/roi_align.h.
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


@torch.library.register_fake("segdet::roi_align")
def _roi_align_fake(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    _C.check_roi_align_args(input, rois, pooled_height, pooled_width)
    fmt = torch.channels_last if _uses_channels_last(input) else torch.contiguous_format
    shape = (rois.shape[0], input.shape[1], pooled_height, pooled_width)
    return torch.empty(shape, dtype=input.dtype, device=input.device, memory_format=fmt)


@torch.library.register_fake("segdet::_roi_align_backward")
def _roi_align_backward_fake(
    grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height, width, sampling_ratio, aligned
):
    _C.check_roi_align_backward_args(grad, rois, pooled_height, pooled_width, batch_size, channels, height, width)
    fmt = torch.channels_last if _uses_channels_last(grad) else torch.contiguous_format
    return torch.empty((batch_size, channels, height, width), dtype=grad.dtype, device=grad.device, memory_format=fmt)


def _forward_setup_context(ctx, inputs, output):
    input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned = inputs
    ctx.save_for_backward(rois)
    ctx.input_shape = tuple(input.shape)
    ctx.input_channels_last = _uses_channels_last(input)
    ctx.args = (spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)


def _forward_backward(ctx, grad):
    grad_input = None
    if ctx.needs_input_grad[0]:
        (rois,) = ctx.saved_tensors
        spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned = ctx.args
        batch_size, channels, height, width = ctx.input_shape
        if ctx.input_channels_last and not _uses_channels_last(grad):
            # The kernels lay grad_input out as grad is laid out. The pooled grad usually arrives contiguous
            # (the box head flattens it), so without this a channels_last feature map would get a contiguous
            # gradient, and adding it to the map's other gradient (the RPN's) would mix layouts: 134 ms
            # against 18 ms for one [2, 256, 200, 304] bf16 add on 2 CPU threads. Converting the small pooled
            # grad is cheap and the channels_last kernels scatter whole channel vectors.
            grad = grad.contiguous(memory_format=torch.channels_last)
        grad_input = torch.ops.segdet._roi_align_backward(
            grad, rois, spatial_scale, pooled_height, pooled_width,
            batch_size, channels, height, width, sampling_ratio, aligned,
        )  # fmt: skip
    return grad_input, None, None, None, None, None, None


def _backward_setup_context(ctx, inputs, output):
    grad, rois, spatial_scale, pooled_height, pooled_width, _, _, _, _, sampling_ratio, aligned = inputs
    ctx.save_for_backward(rois)
    ctx.args = (spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)


def _backward_backward(ctx, grad_grad_input):
    # _roi_align_backward is linear in grad and is roi_align's adjoint, so its own adjoint is roi_align.
    grad_grad = None
    if ctx.needs_input_grad[0]:
        (rois,) = ctx.saved_tensors
        spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned = ctx.args
        grad_grad = torch.ops.segdet.roi_align(
            grad_grad_input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned
        )
    return (grad_grad,) + (None,) * 10


torch.library.register_autograd("segdet::roi_align", _forward_backward, setup_context=_forward_setup_context)
torch.library.register_autograd(
    "segdet::_roi_align_backward", _backward_backward, setup_context=_backward_setup_context
)
