"""Emulated CUDA paste_masks_crops (csrc/ops/cuda/paste_masks_crops_kernel.cu run in the CPU emulator) against
the emulated CUDA full-image paste_masks: each crop holds exactly that kernel's pixels, and the regions are the
CPU op's. Runs only from scripts/run_cuda_emulation.sh (SEGDET_EMU_LIB set, csrc/emu/register_emu.cpp
registering segdet_emu::paste_masks_crops)."""
import os

import pytest
import torch

if not os.environ.get("SEGDET_EMU_LIB"):
    pytest.skip("emulated CUDA tests run from scripts/run_cuda_emulation.sh", allow_module_level=True)

from _harness import emulated, record  # noqa: E402  (tests/emu/, on the path when the harness runs)

H, W = 60, 80


def random_inputs(num, seed, dtype=torch.float32, mask_size=28):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ops"))
    from test_paste_masks_crops import random_inputs as cpu_random_inputs

    return cpu_random_inputs(num, H, W, mask_size=mask_size, dtype=dtype, seed=seed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", [0, 1])
def test_crops_equal_emulated_full_paste(emu_library, schedule, dtype, seed):
    masks, boxes = random_inputs(24, seed, dtype)
    full = emu_library.paste_masks(masks, boxes, H, W, 0.5)
    crops, regions = emulated(emu_library.paste_masks_crops, masks, boxes, H, W, 0.5,
                              source="paste_masks_crops_kernel.cu", must_launch=True)
    cpu_crops, cpu_regions = torch.ops.segdet.paste_masks_crops(masks, boxes, H, W, 0.5)
    ok = torch.equal(regions, cpu_regions) and crops.numel() == cpu_crops.numel()
    record("paste_masks_crops", ok)
    assert ok, "regions or crop sizes differ from the CPU op's"
    offset = 0
    for i, (x, y, w, h) in enumerate(regions.tolist()):
        crop = crops[offset:offset + w * h].reshape(h, w)
        offset += w * h
        rest = full[i].clone()
        rest[y:y + h, x:x + w] = False
        ok = torch.equal(crop, full[i, y:y + h, x:x + w]) and not rest.any()
        record("paste_masks_crops", ok)
        assert ok, f"detection {i}: crop differs from the emulated full paste, or pixels lie outside its region"


def test_all_empty(emu_library, schedule):
    masks = torch.rand(3, 14, 14)
    boxes = torch.tensor([[-50.0, -50.0, -10.0, -10.0], [float("nan"), 0, 1, 1], [500.0, 5, 600, 9]])
    crops, regions = emu_library.paste_masks_crops(masks, boxes, H, W, 0.5)
    ok = crops.numel() == 0 and bool(regions.eq(0).all())
    record("paste_masks_crops", ok)
    assert ok
