"""Emulated CUDA decode_boxes against the CPU kernel, within the CPU tests' CUDA tolerances: both run
the explicitly rounded box_coder math (half types in float), but the CPU kernel exponentiates with
ATen's vectorised exp and the CUDA kernel with expf/exp, which differ in the last bits (as a real GPU's
expf does). NaNs must be in the same places."""
import math

import pytest
import torch

from _cases import case_id, cpu_test_module, sweep
from _harness import emulated, record

T = cpu_test_module("test_decode_boxes")
make_inputs = T.make_inputs
CLIP = T.CLIP


def check(emu, rel_codes, boxes, weights=(1.0, 1.0, 1.0, 1.0), clip=CLIP, image_size=None, label=""):
    args = (rel_codes, boxes, list(weights), clip, None if image_size is None else list(image_size))
    expected = torch.ops.segdet.decode_boxes(*args)
    got = emulated(emu.decode_boxes, *args, source="decode_boxes_kernel.cu", must_launch=rel_codes.numel() > 0)
    ok = (got.shape == expected.shape and got.dtype == expected.dtype
          and torch.equal(got.isnan(), expected.isnan())
          and torch.allclose(got.double(), expected.double(), equal_nan=True, **T.TOLERANCES[got.dtype]))
    record("decode_boxes", ok)
    assert ok, f"{label}: decode_boxes differs"


CASES = sweep(T.test_matches_reference)


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_sweep(emu_library, schedule, case):
    rel_codes, boxes = make_inputs(257, case["num_classes"], dtype=case["dtype"], delta_scale=2.0)
    check(emu_library, rel_codes, boxes, case["weights"], CLIP, case["image_size"], label=str(case))


def test_class_specific_deltas_and_clamp(emu_library, schedule):
    rel_codes, boxes = make_inputs(64, 4, seed=4)
    check(emu_library, rel_codes, boxes, T.BOX_HEAD_WEIGHTS, label="class-specific")
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0]] * 4)
    extreme = torch.tensor([[0.0, 0.0, 1e4, 1e4], [0.0, 0.0, math.inf, math.inf], [0.0, 0.0, -1e4, -1e4],
                            [0.0, 0.0, CLIP, CLIP]])
    check(emu_library, extreme, boxes, label="clamp")
    check(emu_library, extreme[:1], boxes[:1], clip=0.0, label="clip 0")
    rel_codes, boxes = make_inputs(2000, 3, delta_scale=3.0, seed=5, height=100, width=200)
    check(emu_library, rel_codes, boxes, image_size=(100, 200), label="clip to image")


@pytest.mark.parametrize("image_size", [None, (50, 50)])
def test_nan_and_inf(emu_library, schedule, image_size):
    nan, inf = math.nan, math.inf
    rel_codes = torch.tensor([[nan, 0, 0, 0], [0, nan, 0, nan], [inf, 0, 0, 0], [-inf, 0, 0, 0], [0, 0, -inf, 0],
                              [0, 0, 0, inf]])
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]] * 5 + [[nan, 0.0, 10.0, inf]])
    check(emu_library, rel_codes, boxes, image_size=image_size, label="non-finite")


@pytest.mark.parametrize("shape", [(0, 4), (0, 0), (5, 0), (0, 364)])
def test_empty(emu_library, schedule, shape):
    check(emu_library, torch.empty(shape), torch.empty(shape[0], 4), image_size=(10, 10), label=str(shape))


def test_non_contiguous(emu_library, schedule):
    rel_codes, boxes = make_inputs(100, 2, seed=6)
    check(emu_library, rel_codes.t().contiguous().t(), boxes.t().contiguous().t(), T.BOX_HEAD_WEIGHTS,
          label="strided")


def test_nan_clip_is_rejected_before_the_empty_return_like_the_cpu(emu_library, schedule):
    """The CUDA glue checks bbox_xform_clip before returning early on zero boxes, as the CPU kernel does."""
    args = (torch.empty(0, 4), torch.empty(0, 4), [1.0, 1.0, 1.0, 1.0], float("nan"), None)
    errors = []
    for op in (torch.ops.segdet.decode_boxes, emu_library.decode_boxes):
        try:
            op(*args)
            errors.append(None)
        except ValueError as exc:
            errors.append(str(exc))
    ok = errors[0] is not None and errors[0] == errors[1]
    record("decode_boxes", ok)
    assert ok, f"CPU and emulated CUDA disagree on a NaN bbox_xform_clip with zero boxes: {errors}"
