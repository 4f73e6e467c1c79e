"""Emulated CUDA roi_align forward and both backward kernels against the CPU kernels.

Forward and the deterministic backward must equal the CPU kernel bit for bit (same math headers,
same operation order, no contraction); the atomic backward sums in an order that depends on the
schedule, so it is compared within a few float32 ulps.
"""
import math

import pytest
import torch

from _cases import case_id, cpu_test_module, sweep
from _harness import emulated, record

T = cpu_test_module("test_roi_align")
make_case = T.make_case

CASES = []
# test_matches_torchvision_float32: layouts x scales x sampling ratios x aligned, float32.
for c in sweep(T.test_matches_torchvision_float32):
    seed = hash((c["aligned"], c["sampling_ratio"], c["spatial_scale"])) % 2**31
    CASES.append(("tv_sweep", c, dict(seed=seed, spatial_scale=c["spatial_scale"], channels_last=c["channels_last"]),
                  dict(output_size=(7, 5), sampling_ratio=c["sampling_ratio"], aligned=c["aligned"])))
# test_matches_reference_float64.
for c in sweep(T.test_matches_reference_float64):
    CASES.append(("f64_sweep", c, dict(seed=7, spatial_scale=c["spatial_scale"], c=3, h=9, w=11, k=10,
                                       dtype=torch.float64, channels_last=c["channels_last"]),
                  dict(output_size=(3, 4), sampling_ratio=c["sampling_ratio"], aligned=c["aligned"])))
# test_cuda_matches_cpu: every dtype (half types accumulate in float) x layout x sampling mode.
for c in sweep(T.test_cuda_matches_cpu):
    CASES.append(("dtype_sweep", c, dict(seed=13, spatial_scale=0.25, c=6, dtype=c["dtype"],
                                         channels_last=c["channels_last"]),
                  dict(output_size=(7, 5), sampling_ratio=c["sampling_ratio"], aligned=c["aligned"])))
# test_reduced_precision_close_to_float32.
for c in sweep(T.test_reduced_precision_close_to_float32):
    CASES.append(("half_sweep", c, dict(seed=5, spatial_scale=0.5, c=8, dtype=c["dtype"],
                                        channels_last=c["channels_last"]),
                  dict(output_size=5, sampling_ratio=2, aligned=True)))


def _pair(size):
    return size if isinstance(size, tuple) else (size, size)


def same(a, b):
    """Equal values (NaN equal to NaN), shape, dtype and memory layout."""
    if a.shape != b.shape or a.dtype != b.dtype or a.stride() != b.stride():
        return False
    return bool(((a == b) | (a.isnan() & b.isnan())).all())


def close(a, b, dtype):
    if a.shape != b.shape or a.dtype != b.dtype or a.stride() != b.stride():
        return False
    tol = {torch.float64: 1e-12, torch.float32: 1e-5}.get(dtype, 2e-2 if dtype == torch.bfloat16 else 2e-3)
    return torch.allclose(a.double(), b.double(), atol=tol, rtol=tol, equal_nan=True)


def check_all(emu, x, rois, output_size, spatial_scale, sampling_ratio, aligned, grad_seed=0, label=""):
    """Runs forward, both backward kernels and the flag-selected backward; records each comparison."""
    ph, pw = _pair(output_size)
    args = (spatial_scale, ph, pw, sampling_ratio, aligned)
    expected = torch.ops.segdet.roi_align(x, rois, *args)
    got = emulated(emu.roi_align, x, rois, *args, source="roi_align_kernel.cu", must_launch=expected.numel() > 0)
    ok_fwd = same(got, expected)
    record("roi_align_forward", ok_fwd)

    g = torch.randn(expected.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=torch.float64)
    g = torch.empty_like(expected).copy_(g)  # same layout as the forward output
    n, c, h, w = x.shape
    bargs = (rois, spatial_scale, ph, pw, n, c, h, w, sampling_ratio, aligned)
    expected_grad = torch.ops.segdet._roi_align_backward(g, *bargs)
    launches = g.numel() > 0 and x.numel() > 0
    atomic = emulated(emu._roi_align_backward_atomic, g, *bargs, source="roi_align_kernel.cu", must_launch=launches)
    deterministic = emulated(emu._roi_align_backward_deterministic, g, *bargs, source="roi_align_kernel.cu",
                             must_launch=launches)
    ok_atomic = close(atomic, expected_grad, x.dtype)
    ok_det = same(deterministic, expected_grad)
    record("roi_align_backward", ok_atomic)
    record("roi_align_backward_deterministic", ok_det)
    detail = []
    if not ok_fwd:
        detail.append(f"forward differs: max |diff| {(got.double() - expected.double()).abs().nan_to_num(9e9).max()}")
    if not ok_atomic:
        detail.append(f"atomic backward differs: max |diff| {(atomic.double() - expected_grad.double()).abs().max()}")
    if not ok_det:
        detail.append(f"deterministic backward differs: max |diff| "
                      f"{(deterministic.double() - expected_grad.double()).abs().max()}")
    assert not detail, f"{label}: " + "; ".join(detail)


@pytest.mark.parametrize("sweep_name,case,make,kwargs", CASES, ids=[f"{s}-{case_id(c)}" for s, c, _, _ in CASES])
def test_sweeps(emu_library, schedule, sweep_name, case, make, kwargs):
    x, rois = make_case(**make)
    check_all(emu_library, x, rois, kwargs["output_size"], make["spatial_scale"], kwargs["sampling_ratio"],
              kwargs["aligned"], label=f"{sweep_name} {case}")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_boxes(emu_library, schedule, bad):
    x, rois = make_case(6, 1.0, k=6)
    for col in range(1, 5):
        rois[col, col] = bad
    check_all(emu_library, x, rois, 3, 1.0, -1, False)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("extent", [1e4, 1e6])
def test_huge_boxes(emu_library, schedule, dtype, extent):
    x = torch.randn(1, 2, 10, 12, dtype=dtype, generator=torch.Generator().manual_seed(1))
    rois = torch.tensor([[0, -extent, -extent / 3, extent / 2, extent]], dtype=dtype)
    for aligned in (False, True):
        check_all(emu_library, x, rois, (2, 3), 1.0, -1, aligned)


# Zero-size maps with boxes touching their edges (the review's crash), zero channels, no boxes.
ZERO_SIZE = [
    (1, 2, 0, 5), (1, 2, 5, 0), (1, 2, 0, 0), (2, 0, 8, 8), (1, 3, 1, 1), (1, 1, 1, 7),
]


@pytest.mark.parametrize("shape", ZERO_SIZE, ids=[str(s) for s in ZERO_SIZE])
@pytest.mark.parametrize("sampling_ratio,aligned", [(-1, False), (-1, True), (2, False), (0, True)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_degenerate_maps(emu_library, schedule, shape, sampling_ratio, aligned, channels_last):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    h, w = shape[2], shape[3]
    rois = torch.tensor([[0, 0, 0, w, h], [0, -1, -1, w + 1, h + 1], [0, w, h, w + 2, h + 2], [0, 0, 0, 0, 0],
                         [0, 0.5, 0.5, 0.5, 3]], dtype=torch.float32)
    check_all(emu_library, x, rois, 2, 1.0, sampling_ratio, aligned)


def test_empty_rois(emu_library, schedule):
    x = torch.randn(2, 3, 8, 8)
    check_all(emu_library, x, torch.zeros(0, 5), (2, 3), 1.0, -1, False)


def test_deterministic_flag_selects_the_gather_kernel(emu_library, schedule):
    x, rois = make_case(21, 0.5, c=4, k=30)
    args = (rois, 0.5, 3, 3, 2, 4, 13, 17, 2, True)
    g = torch.randn(30, 4, 3, 3, generator=torch.Generator().manual_seed(3))
    deterministic = emu_library._roi_align_backward_deterministic(g, *args)
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        chosen = emu_library._roi_align_backward(g, *args)
        # The atomic kernel must refuse to run in deterministic mode (alertNotDeterministic).
        with pytest.raises(RuntimeError, match="deterministic"):
            emu_library._roi_align_backward_atomic(g, *args)
    finally:
        torch.use_deterministic_algorithms(previous)
    ok = torch.equal(chosen, deterministic) and torch.equal(chosen, torch.ops.segdet._roi_align_backward(g, *args))
    record("roi_align_backward_deterministic", ok)
    assert ok
