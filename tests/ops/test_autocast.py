"""Autocast behaviour of the box ops: nms, batched_nms, decode_boxes and paste_masks run in float32.

Under autocast the network's heads emit bf16/fp16 while anchors and proposals are float32; each op
must accept the mix, compute exactly what the float32 op computes on the widened inputs, and return
float32 boxes (decode_boxes), int64 indices (nms) or bool masks (paste_masks).
"""
import pytest
import torch

import segdet.ops as ops

OPS = ["nms", "batched_nms", "decode_boxes", "paste_masks", "roi_align", "_roi_align_backward"]
LOW = [torch.bfloat16, torch.float16]


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("key", ["AutocastCPU", "AutocastCUDA"])
def test_autocast_kernels_registered(op, key):
    assert torch._C._dispatch_has_kernel_for_dispatch_key(f"segdet::{op}", key)


def _boxes(n, gen, scale=100.0):
    xy = torch.rand(n, 2, generator=gen) * scale
    wh = torch.rand(n, 2, generator=gen) * scale / 4 + 1
    return torch.cat([xy, xy + wh], 1)


@pytest.mark.parametrize("dtype", LOW)
def test_nms_under_autocast_equals_float32_on_widened_inputs(dtype):
    gen = torch.Generator().manual_seed(0)
    boxes = _boxes(300, gen)
    scores = torch.rand(300, generator=gen).to(dtype)  # a head's output: low precision, many ties
    idxs = torch.randint(0, 5, (300,), generator=gen)
    with torch.autocast("cpu", dtype=dtype):
        keep = ops.nms(boxes, scores, 0.5)
        keep_b = ops.batched_nms(boxes, scores, idxs, 0.5)
    assert keep.dtype == torch.int64
    torch.testing.assert_close(keep, ops.nms(boxes, scores.float(), 0.5), rtol=0, atol=0)
    torch.testing.assert_close(keep_b, ops.batched_nms(boxes, scores.float(), idxs, 0.5), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", LOW)
def test_decode_boxes_under_autocast_returns_float32(dtype):
    gen = torch.Generator().manual_seed(1)
    anchors = _boxes(200, gen)
    deltas = (torch.randn(200, 8, generator=gen) * 0.5).to(dtype)
    with torch.autocast("cpu", dtype=dtype):
        out = ops.decode_boxes(deltas, anchors, weights=(10, 10, 5, 5), image_size=(90, 120))
    assert out.dtype == torch.float32
    ref = ops.decode_boxes(deltas.float(), anchors, weights=(10, 10, 5, 5), image_size=(90, 120))
    torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_decode_boxes_autocast_keeps_gradient_flowing_to_low_precision_deltas():
    gen = torch.Generator().manual_seed(2)
    anchors = _boxes(20, gen)
    deltas = (torch.randn(20, 4, generator=gen) * 0.1).bfloat16().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = ops.decode_boxes(deltas, anchors, weights=(1, 1, 1, 1))
    out.sum().backward()
    assert deltas.grad is not None and deltas.grad.dtype == torch.bfloat16 and deltas.grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", LOW)
def test_paste_masks_under_autocast_equals_float32(dtype):
    gen = torch.Generator().manual_seed(3)
    boxes = _boxes(12, gen, scale=60.0)
    masks = torch.rand(12, 28, 28, generator=gen).to(dtype)
    with torch.autocast("cpu", dtype=dtype):
        out = ops.paste_masks(masks, boxes, 80, 90, 0.5)
    assert out.dtype == torch.bool
    torch.testing.assert_close(out, ops.paste_masks(masks.float(), boxes, 80, 90, 0.5), rtol=0, atol=0)


def test_paste_masks_under_autocast_keeps_a_symbolic_image_size():
    """The autocast kernel passes SymInt sizes on: traced under autocast with a dynamic image size, the graph
    must not specialise to the example's size (an int64_t signature did: 'specialized it to be a constant')."""

    class Paste(torch.nn.Module):
        def forward(self, image, masks, boxes):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return ops.paste_masks(masks.bfloat16(), boxes, image.shape[-2], image.shape[-1], 0.5)

    gen = torch.Generator().manual_seed(5)
    boxes = _boxes(6, gen, scale=40.0)
    masks = torch.rand(6, 28, 28, generator=gen)
    dims = {"image": {0: torch.export.Dim("h", min=8, max=256), 1: torch.export.Dim("w", min=8, max=256)},
            "masks": None, "boxes": None}
    ep = torch.export.export(Paste(), (torch.zeros(50, 60), masks, boxes), dynamic_shapes=dims, strict=True)
    out = ep.module()(torch.zeros(70, 45), masks, boxes)
    assert out.shape == (6, 70, 45)
    torch.testing.assert_close(out, ops.paste_masks(masks.bfloat16().float(), boxes, 70, 45, 0.5), rtol=0, atol=0)


def test_box_ops_outside_autocast_still_reject_mixed_dtypes():
    """The casts belong to autocast only: a plain call with mixed dtypes is still a TypeError."""
    gen = torch.Generator().manual_seed(4)
    boxes = _boxes(10, gen)
    with pytest.raises(TypeError, match="scores"):
        ops.nms(boxes, torch.rand(10, generator=gen).bfloat16(), 0.5)
