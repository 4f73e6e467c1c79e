"""Emulated CUDA paste_masks_aligned / paste_masks_aligned_crops (csrc/ops/cuda/paste_masks_aligned_kernel.cu run in
the CPU emulator) against the CPU kernels: the same bool masks, crops and regions, bit for bit (both compute
ops/paste_masks_aligned_math.h with every step rounded on its own). Runs only from scripts/run_cuda_emulation.sh."""
import pytest
import torch

from _cases import cpu_test_module
from _harness import emulated, record

T = cpu_test_module("test_paste_masks_aligned")
SOURCE = "paste_masks_aligned_kernel.cu"


def check_full(emu, masks, boxes, height, width, threshold, label):
    expected = torch.ops.segdet.paste_masks_aligned(masks, boxes, height, width, threshold)
    got = emulated(emu.paste_masks_aligned, masks, boxes, height, width, threshold, source=SOURCE,
                   must_launch=expected.numel() > 0)
    ok = got.dtype == torch.bool and got.shape == expected.shape and torch.equal(got, expected)
    record("paste_masks_aligned", ok)
    assert ok, f"{label}: {int((got != expected).sum()) if got.shape == expected.shape else 'shape'} pixels differ"


def check_crops(emu, masks, boxes, height, width, threshold, label):
    crops, regions = torch.ops.segdet.paste_masks_aligned_crops(masks, boxes, height, width, threshold)
    got_crops, got_regions = emulated(emu.paste_masks_aligned_crops, masks, boxes, height, width, threshold,
                                      source=SOURCE, must_launch=crops.numel() > 0)
    ok = torch.equal(got_regions, regions) and torch.equal(got_crops, crops)
    record("paste_masks_aligned_crops", ok)
    assert ok, f"{label}: crops or regions differ from the CPU op's"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("threshold", [0.5, 0.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_random_boxes_inside_across_and_outside(emu_library, schedule, dtype, threshold, seed):
    # 24 boxes of 0.3 to 45 px on a 61 x 77 image, some across its left/top edges (the CPU tests' case maker).
    masks, boxes, h, w = T._random_case(seed)
    masks = masks.to(dtype)
    boxes = boxes.float() if dtype != torch.float64 else boxes
    check_full(emu_library, masks, boxes, h, w, threshold, f"{dtype} t={threshold} seed {seed}")
    check_crops(emu_library, masks, boxes, h, w, threshold, f"{dtype} t={threshold} seed {seed}")


@pytest.mark.parametrize("mask_size", [1, 7, 28])
def test_mask_sizes_and_large_boxes(emu_library, schedule, mask_size):
    g = torch.Generator().manual_seed(mask_size)
    masks = torch.rand(5, mask_size, mask_size, generator=g)
    boxes = torch.tensor([[-30.0, -20.0, 150.0, 90.0], [10.5, 3.25, 11.0, 70.0], [0.0, 0.0, 80.0, 60.0],
                          [79.6, 59.6, 200.0, 300.0], [33.3, 12.1, 47.9, 40.4]])
    check_full(emu_library, masks, boxes, 60, 80, 0.5, f"S={mask_size}")
    check_crops(emu_library, masks, boxes, 60, 80, 0.5, f"S={mask_size}")


def test_degenerate_and_non_finite_boxes(emu_library, schedule):
    masks = torch.ones(6, 28, 28)
    masks[5] = float("nan")
    nan, inf = float("nan"), float("inf")
    boxes = torch.tensor([[5.0, 5.0, 5.0, 9.0], [nan, 0, 4, 4], [0, 0, inf, 9], [50.0, 50.0, 60.0, 60.0],
                          [2, 2, 1, 1.0], [1.0, 1.0, 15.0, 15.0]])
    check_full(emu_library, masks, boxes, 20, 20, 0.5, "degenerate")
    crops, regions = emu_library.paste_masks_aligned_crops(masks, boxes, 20, 20, 0.5)
    expected = torch.zeros(6, 4, dtype=torch.int64)
    expected[5] = torch.tensor([0, 0, 16, 16])  # the NaN mask's box is valid: its region is kept, its pixels False
    ok = torch.equal(regions, expected) and crops.numel() == 256 and not crops.any()
    record("paste_masks_aligned_crops", ok)
    assert ok, f"regions {regions.tolist()}, {crops.numel()} crop pixels"


def test_empty_inputs(emu_library, schedule):
    for masks, boxes, h, w in ((torch.zeros(0, 28, 28), torch.zeros(0, 4), 7, 9),
                               (torch.rand(3, 28, 28), torch.rand(3, 4) * 5, 0, 9)):
        out = emu_library.paste_masks_aligned(masks, boxes, h, w, 0.5)
        crops, regions = emu_library.paste_masks_aligned_crops(masks, boxes, h, w, 0.5)
        ok = out.shape == (len(masks), h, w) and crops.numel() == 0 and regions.shape == (len(masks), 4)
        record("paste_masks_aligned", ok)
        assert ok


def test_errors_match_the_cpu_op(emu_library):
    for args in ((torch.rand(2, 28, 27), torch.rand(2, 4), 8, 8, 0.5), (torch.rand(2, 28, 28), torch.rand(2, 4), 8, 8, 1.0),
                 (torch.rand(2, 28, 28).int(), torch.rand(2, 4), 8, 8, 0.5)):
        for name in ("paste_masks_aligned", "paste_masks_aligned_crops"):
            with pytest.raises((ValueError, TypeError)) as cpu:
                getattr(torch.ops.segdet, name)(*args)
            with pytest.raises(cpu.type) as emu:
                getattr(emu_library, name)(*args)
            ok = str(emu.value).splitlines()[0] == str(cpu.value).splitlines()[0]
            record(name, ok)
            assert ok, (str(emu.value), str(cpu.value))
