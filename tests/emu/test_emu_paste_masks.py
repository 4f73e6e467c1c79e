"""Emulated CUDA paste_masks against the CPU kernel: identical bool masks.

The CPU tests' sweeps run at a quarter of their image size (120 x 160 instead of 480 x 640, boxes
scaled alike): the emulator executes every pixel's thread under the sanitizers, and the smaller
image still has boxes inside, across and outside its borders."""
import pytest
import torch

from _cases import case_id, cpu_test_module, sweep
from _harness import emulated, record

T = cpu_test_module("test_paste_masks")
make_inputs = T.make_inputs
H, W = 120, 160


def check(emu, masks, boxes, height, width, threshold=0.5, label="", borderline=None):
    """borderline: bool mask of pixels allowed to differ (see test_borderline_pixels)."""
    expected = torch.ops.segdet.paste_masks(masks, boxes, height, width, threshold)
    got = emulated(emu.paste_masks, masks, boxes, height, width, threshold, source="paste_masks_kernel.cu",
                   must_launch=expected.numel() > 0)
    ok = got.dtype == torch.bool and got.shape == expected.shape
    if ok:
        differ = got != expected
        ok = not bool((differ & ~borderline).any() if borderline is not None else differ.any())
    record("paste_masks", ok)
    assert ok, f"{label}: {int((got != expected).sum()) if got.shape == expected.shape else 'shape'} pixels differ"


CASES = sweep(T.test_matches_reference)


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_sweep(emu_library, schedule, case):
    masks, boxes = make_inputs(40, height=H, width=W, max_side=case["max_side"] / 4, dtype=case["dtype"],
                               seed=int(case["max_side"]))
    check(emu_library, masks, boxes, H, W, case["threshold"], label=str(case))


MASK_SIZES = sweep(T.test_matches_torchvision)


@pytest.mark.parametrize("case", MASK_SIZES, ids=[case_id(c) for c in MASK_SIZES])
def test_mask_sizes(emu_library, schedule, case):
    masks, boxes = make_inputs(30, height=H, width=W, mask_size=case["mask_size"], seed=case["mask_size"])
    check(emu_library, masks, boxes, H, W, label=str(case))


def test_borderline_pixels(emu_library, schedule):
    # tests/ops' masks of exactly the threshold +- a few ulps. The CUDA kernel interpolates in the
    # order of ATen's CUDA upsampling (which nvcc contracts into FMAs), the CPU kernel in the CPU
    # order, so pixels whose value is within rounding of the threshold may differ: those are the
    # pixels the float64 reference puts within 1e-6 of it. Every other pixel must agree.
    # Only part of each mask sits at the threshold, so that most pixels are not borderline.
    g = torch.Generator().manual_seed(3)
    masks, _ = make_inputs(60, seed=3)
    at_threshold = (0.5 + (torch.randint(-2, 3, (60, 28, 28), generator=g) * 2.0**-24)).float()
    masks = torch.where(torch.rand(60, 28, 28, generator=g) < 0.3, at_threshold, masks)
    x1, y1 = torch.rand(60, generator=g) * 80, torch.rand(60, generator=g) * 80
    wh = torch.rand(60, 2, generator=g) * 60 + 3
    boxes = torch.stack([x1, y1, x1 + wh[:, 0], y1 + wh[:, 1]], dim=1)
    near = T.paste_masks_reference(masks.double(), boxes.double(), 100, 100, 0.5 - 1e-6)
    above = T.paste_masks_reference(masks.double(), boxes.double(), 100, 100, 0.5 + 1e-6)
    borderline = near & ~above
    assert 0 < int(borderline.sum()) < int(near.sum()) // 4
    check(emu_library, masks, boxes, 100, 100, label="borderline", borderline=borderline)


def test_thresholds_and_dtypes(emu_library, schedule):
    masks, boxes = make_inputs(20, height=H, width=W, seed=5)
    for threshold in (0.0, 1.0, -1.0):
        check(emu_library, masks, boxes, H, W, threshold, label=f"threshold {threshold}")
    check(emu_library, masks, boxes.double(), H, W, label="float64 boxes")
    check(emu_library, masks.transpose(1, 2).contiguous().transpose(1, 2), boxes.t().contiguous().t(), H, W,
          label="strided")


def test_boxes_outside_degenerate_and_non_finite(emu_library, schedule):
    masks = torch.ones(6, 28, 28)
    boxes = torch.tensor([[-500.0, -500.0, -100.0, -100.0], [700.0, 10.0, 900.0, 50.0], [-50.0, -40.0, 60.0, 70.0],
                          [100.0, 90.0, 200.0, 160.0], [-100.0, 30.0, 800.0, 60.0], [0.0, 0.0, 159.0, 119.0]])
    check(emu_library, masks, boxes, H, W, label="outside/across")
    boxes = torch.tensor([[10.0, 10.0, 10.0, 10.0], [10.0, 10.0, 10.0, 60.0], [50.0, 50.0, 20.0, 80.0],
                          [5.3, 7.9, 5.6, 8.1], [3.0, 3.0, 3.0 - 1e-6, 3.0]])
    check(emu_library, torch.ones(5, 28, 28), boxes, 100, 100, label="degenerate")
    nan, inf = float("nan"), float("inf")
    boxes = torch.tensor([[nan, 10.0, 50.0, 60.0], [10.0, 10.0, 50.0, nan], [-inf, 10.0, inf, 60.0],
                          [10.0, 10.0, 50.0, 60.0], [1e30, 1e30, 2e30, 2e30]])
    check(emu_library, torch.ones(5, 28, 28), boxes, 100, 100, label="non-finite boxes")
    masks, boxes = make_inputs(10, height=H, width=W, seed=8)
    masks[:, 10:14] = nan
    check(emu_library, masks, boxes, H, W, label="NaN masks")


def test_empty(emu_library, schedule):
    check(emu_library, torch.rand(0, 28, 28), torch.zeros(0, 4), 100, 200, label="no detections")
    masks, boxes = make_inputs(3)
    for h, w in ((0, 640), (480, 0), (0, 0)):
        check(emu_library, masks, boxes, h, w, label=f"{h}x{w}")
