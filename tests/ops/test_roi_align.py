"""Tests of segdet.ops.roi_align / RoIAlign and the segdet::roi_align, segdet::_roi_align_backward ops.

Oracles: the pure-PyTorch loop reference (float64) and torchvision.ops.roi_align (float32, 1e-5).
CUDA cases compare the GPU kernels with the CPU ones and skip without a GPU. Argument errors:
test_error_contract.py.
"""
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from segdet.ops import RoIAlign, roi_align
from segdet.ops._reference import roi_align_reference

try:
    import torchvision
except ImportError:  # torchvision is a test oracle only
    torchvision = None

needs_torchvision = pytest.mark.skipif(torchvision is None, reason="torchvision is not installed")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, needs_cuda])]
TOL32 = dict(atol=1e-5, rtol=1e-5)


def random_rois(gen, num, n_images, image_h, image_w, dtype=torch.float32):
    """Tensor[num, 5] boxes in image pixels: mostly inside, some partly or wholly outside, some empty."""
    u = lambda: torch.rand(num, generator=gen, dtype=torch.float64)  # noqa: E731
    x1 = (u() * 1.7 - 0.5) * image_w
    y1 = (u() * 1.7 - 0.5) * image_h
    keep = (u() > 0.15).double()  # about 15% zero-width and 15% zero-height boxes
    x2 = x1 + u() * 0.9 * image_w * keep
    y2 = y1 + u() * 0.9 * image_h * (u() > 0.15).double()
    batch = torch.randint(0, n_images, (num,), generator=gen).double()
    rois = torch.stack([batch, x1, y1, x2, y2], dim=1)
    rois[:2, 1:] = torch.tensor([[-3.0 * image_w, 0.0, -2.0 * image_w, image_h], [0.0, 2 * image_h, image_w, 3 * image_h]])
    return rois.to(dtype)


def make_case(seed, spatial_scale, n=2, c=21, h=13, w=17, k=40, dtype=torch.float32, channels_last=False):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    rois = random_rois(gen, k, n, h / spatial_scale, w / spatial_scale, dtype)
    return x, rois


def forward_backward(fn, x, rois, grad_seed=0, **kwargs):
    x = x.detach().clone().requires_grad_(True)
    out = fn(x, rois, **kwargs)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed), dtype=torch.float64)
    # empty_like keeps a channels_last output's layout, so channels_last runs the NHWC backward kernel.
    out.backward(torch.empty_like(out).copy_(grad_out))
    return out.detach(), x.grad


# ---- agreement with the oracles ----------------------------------------------------------------


@needs_torchvision
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("spatial_scale", [1.0, 0.5, 0.25, 1 / 16])
@pytest.mark.parametrize("sampling_ratio", [-1, 0, 1, 2, 3])
@pytest.mark.parametrize("aligned", [False, True])
def test_matches_torchvision_float32(aligned, sampling_ratio, spatial_scale, channels_last):
    seed = hash((aligned, sampling_ratio, spatial_scale)) % 2**31
    x, rois = make_case(seed, spatial_scale, channels_last=channels_last)
    kwargs = dict(output_size=(7, 5), spatial_scale=spatial_scale, sampling_ratio=sampling_ratio, aligned=aligned)
    out, grad = forward_backward(roi_align, x, rois, **kwargs)
    ref_out, ref_grad = forward_backward(torchvision.ops.roi_align, x.contiguous(), rois, **kwargs)
    torch.testing.assert_close(out, ref_out, **TOL32)
    torch.testing.assert_close(grad, ref_grad, **TOL32)
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("spatial_scale", [1.0, 0.5])
@pytest.mark.parametrize("sampling_ratio", [-1, 1, 2])
@pytest.mark.parametrize("aligned", [False, True])
def test_matches_reference_float64(aligned, sampling_ratio, spatial_scale, channels_last):
    x, rois = make_case(7, spatial_scale, c=3, h=9, w=11, k=10, dtype=torch.float64, channels_last=channels_last)
    kwargs = dict(output_size=(3, 4), spatial_scale=spatial_scale, sampling_ratio=sampling_ratio, aligned=aligned)
    out, grad = forward_backward(roi_align, x, rois, **kwargs)
    ref_out, ref_grad = forward_backward(roi_align_reference, x, rois, **kwargs)
    torch.testing.assert_close(out, ref_out, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(grad, ref_grad, atol=1e-12, rtol=1e-12)


def test_list_of_boxes_matches_tensor_form():
    x, rois = make_case(3, 0.5, n=3, k=30)
    per_image = [rois[rois[:, 0] == i, 1:] for i in range(3)]
    ordered = torch.cat([torch.cat([torch.full((len(b), 1), float(i)), b], 1) for i, b in enumerate(per_image)])
    expected = roi_align(x, ordered, 4, 0.5, 2, True)
    torch.testing.assert_close(roi_align(x, per_image, 4, 0.5, 2, True), expected, atol=0, rtol=0)
    torch.testing.assert_close(roi_align(x, tuple(per_image), (4, 4), 0.5, 2, True), expected, atol=0, rtol=0)
    assert roi_align(x, [x.new_zeros(0, 4)] * 3, 2).shape == (0, x.shape[1], 2, 2)


def test_module_matches_function_and_repr():
    x, rois = make_case(4, 0.25)
    module = RoIAlign((7, 7), spatial_scale=0.25, sampling_ratio=2, aligned=True)
    torch.testing.assert_close(module(x, rois), roi_align(x, rois, 7, 0.25, 2, True), atol=0, rtol=0)
    assert repr(module) == "RoIAlign(output_size=(7, 7), spatial_scale=0.25, sampling_ratio=2, aligned=True)"


@pytest.mark.parametrize("dtype,atol", [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_reduced_precision_close_to_float32(dtype, atol, channels_last):
    x, rois = make_case(5, 0.5, c=8, dtype=dtype, channels_last=channels_last)
    kwargs = dict(output_size=5, spatial_scale=0.5, sampling_ratio=2, aligned=True)
    out, grad = forward_backward(roi_align, x, rois, **kwargs)
    ref_out, ref_grad = forward_backward(roi_align, x.float(), rois.float(), **kwargs)
    assert out.dtype == dtype and grad.dtype == dtype
    torch.testing.assert_close(out.float(), ref_out, atol=atol, rtol=atol)
    torch.testing.assert_close(grad.float(), ref_grad, atol=atol, rtol=atol)


# ---- edge cases -------------------------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_boxes_give_zeros(device, bad):
    x, rois = make_case(6, 1.0, k=6)
    x, rois = x.to(device), rois.to(device)
    broken = rois.clone()
    for col in range(1, 5):
        broken[col, col] = bad  # one bad coordinate in each of rows 1..4
    out, grad = forward_backward(roi_align, x, broken, output_size=3, sampling_ratio=-1)
    ok_out, ok_grad = forward_backward(roi_align, x, rois[[0, 5]], output_size=3, sampling_ratio=-1)
    assert torch.all(out[1:5] == 0)
    torch.testing.assert_close(out[[0, 5]], ok_out)
    # Only rows 0 and 5 receive gradient; the random grad_out differs, so compare by recomputing.
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64).float()
    grad_out[1:5] = 0
    xx = x.detach().clone().requires_grad_(True)
    roi_align(xx, broken, 3, 1.0, -1).backward(grad_out.to(device))
    yy = x.detach().clone().requires_grad_(True)
    roi_align(yy, rois, 3, 1.0, -1).backward(grad_out.to(device))
    torch.testing.assert_close(xx.grad, yy.grad)
    assert torch.isfinite(grad).all()


def _in_range_fraction(start, end, pooled, size, dtype, aligned):
    """Per bin: fraction of a bin's adaptive samples that land in [-1, size], computed sample by sample."""
    f = np.float32 if dtype == torch.float32 else np.float64
    offset = f(0.5) if aligned else f(0)
    lo, hi = f(start) * f(1) - offset, f(end) * f(1) - offset
    bin_size = (hi - lo) / f(pooled)
    grid = int(np.ceil((hi - lo) / f(pooled)))
    i = np.arange(grid, dtype=np.float64).astype(f)
    out = []
    for p in range(pooled):
        coord = lo + f(p) * bin_size + (i + f(0.5)) * bin_size / f(grid)
        out.append(np.count_nonzero((coord >= -1) & (coord <= size)) / grid)
    return np.array(out)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("extent", [1e4, 1e6])
def test_huge_boxes_are_exact_and_fast(dtype, extent):
    # A constant map makes each bin the fraction of its samples that touch the map; the kernel must
    # count the same samples as a sample-by-sample walk while visiting only those near the map.
    x = torch.ones(1, 2, 10, 12, dtype=dtype)
    rois = torch.tensor([[0, -extent, -extent / 3, extent / 2, extent]], dtype=dtype)
    out = roi_align(x, rois, (2, 3), 1.0, -1, True)
    fy = _in_range_fraction(-extent / 3, extent, 2, 10, dtype, True)
    fx = _in_range_fraction(-extent, extent / 2, 3, 12, dtype, True)
    expected = torch.tensor(np.outer(fy, fx), dtype=dtype).expand(1, 2, 2, 3)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    assert (out > 0).any()


@pytest.mark.parametrize("device", DEVICES)
def test_empty_inputs(device):
    x = torch.randn(2, 3, 8, 8, device=device, requires_grad=True)
    empty = torch.zeros(0, 5, device=device)
    out = roi_align(x, empty, (2, 3))
    assert out.shape == (0, 3, 2, 3)
    out.sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    no_channels = torch.randn(2, 0, 8, 8, device=device, requires_grad=True)
    out = roi_align(no_channels, torch.tensor([[1, 0, 0, 4, 4.0]], device=device), 2)
    assert out.shape == (1, 0, 2, 2)
    out.sum().backward()
    assert no_channels.grad.shape == (2, 0, 8, 8)


def test_deterministic_across_thread_counts():
    x, rois = make_case(8, 0.25, c=16, k=200)
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            for cl in (False, True):
                xx = x.contiguous(memory_format=torch.channels_last) if cl else x
                results.append((cl, *forward_backward(roi_align, xx, rois, output_size=7, spatial_scale=0.25)))
    finally:
        torch.set_num_threads(threads)
    for cl, out, grad in results:
        first = next(r for r in results if r[0] == cl)
        assert torch.equal(out, first[1]) and torch.equal(grad, first[2])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grad_input_keeps_the_maps_layout_whatever_the_grads(dtype):
    # A box head flattens the pooled features, so the gradient reaching roi_align's backward is contiguous
    # even when the feature map is channels_last. The map's gradient must still be channels_last (the RPN's
    # gradient of the same map is, and adding mixed layouts is several times slower), with the same values.
    x, rois = make_case(12, 0.5, c=16, dtype=dtype)
    expected = {}
    for cl in (False, True):
        leaf = (x.contiguous(memory_format=torch.channels_last) if cl else x).detach().requires_grad_(True)
        # A non-leaf map, as in a model: a leaf's .grad is re-laid out by autograd to match the leaf.
        xx = leaf * 1
        out = roi_align(xx, rois, 3, 0.5, 2, True)
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).to(dtype).contiguous()
        (expected[cl],) = torch.autograd.grad(out, xx, grad_out)
    assert expected[True].is_contiguous(memory_format=torch.channels_last) and not expected[True].is_contiguous()
    assert expected[False].is_contiguous()
    assert torch.equal(expected[True], expected[False])


# ---- autograd, opcheck, torch.compile, autocast --------------------------------------------


def test_gradcheck_and_gradgradcheck_float64():
    x, rois = make_case(9, 0.5, n=2, c=2, h=6, w=7, k=5, dtype=torch.float64)
    for aligned, sampling_ratio in [(False, -1), (True, 2)]:
        fn = lambda t: roi_align(t, rois, (3, 2), 0.5, sampling_ratio, aligned)  # noqa: E731
        xg = x.clone().requires_grad_(True)
        assert torch.autograd.gradcheck(fn, (xg,))
        assert torch.autograd.gradgradcheck(fn, (xg,), fast_mode=True)


def sample_inputs(device, *, requires_grad=False):
    """Argument tuples of segdet::roi_align for opcheck: both layouts, float32/float64, fixed and
    adaptive sampling, both alignments, and a call without RoIs."""
    samples = []
    configs = [
        (torch.float32, False, 0.5, 2, True),
        (torch.float32, True, 0.25, -1, False),
        (torch.float64, True, 1.0, 0, True),
    ]
    for seed, (dtype, channels_last, spatial_scale, sampling_ratio, aligned) in enumerate(configs):
        x, rois = make_case(seed, spatial_scale, n=2, c=3, h=8, w=9, k=6, dtype=dtype, channels_last=channels_last)
        x = x.to(device).requires_grad_(requires_grad)
        samples.append((x, rois.to(device), spatial_scale, 3, 2, sampling_ratio, aligned))
    x, rois, *rest = samples[0]
    samples.append((x, rois[:0], *rest))
    return samples


def backward_sample_inputs(device, *, requires_grad=False):
    """Argument tuples of segdet::_roi_align_backward matching each forward sample."""
    samples = []
    for seed, (x, rois, spatial_scale, ph, pw, sampling_ratio, aligned) in enumerate(sample_inputs(device)):
        gen = torch.Generator().manual_seed(seed)
        grad = torch.randn(rois.shape[0], x.shape[1], ph, pw, generator=gen, dtype=torch.float64).to(device, x.dtype)
        if roi_align_uses_channels_last(x):
            grad = grad.contiguous(memory_format=torch.channels_last)
        grad.requires_grad_(requires_grad)
        samples.append((grad, rois, spatial_scale, ph, pw, *x.shape, sampling_ratio, aligned))
    return samples


def roi_align_uses_channels_last(x):
    return not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(device, requires_grad):
    for args in sample_inputs(device, requires_grad=requires_grad):
        torch.library.opcheck(torch.ops.segdet.roi_align.default, args)
    for args in backward_sample_inputs(device, requires_grad=requires_grad):
        torch.library.opcheck(torch.ops.segdet._roi_align_backward.default, args)


def test_torch_compile_fullgraph():
    x, rois = make_case(11, 0.25, k=12)
    boxes = [rois[rois[:, 0] == i, 1:] for i in range(2)]

    def pooled_sum(feature, boxes):
        return (roi_align(feature, boxes, 7, 0.25, 2, True) ** 2).sum()

    torch._dynamo.reset()
    compiled = torch.compile(pooled_sum, fullgraph=True, backend="aot_eager")
    xc, xe = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    got, expected = compiled(xc, boxes), pooled_sum(xe, boxes)
    got.backward()
    expected.backward()
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(xc.grad, xe.grad)


def test_autocast_cpu_computes_in_float_and_keeps_input_dtype():
    # bf16 maps run natively on the CPU with float accumulation; the result equals the float32 op rounded once.
    assert torch._C._dispatch_has_kernel_for_dispatch_key("segdet::roi_align", "AutocastCPU")
    assert torch._C._dispatch_has_kernel_for_dispatch_key("segdet::roi_align", "AutocastCUDA")
    x, rois = make_case(12, 0.5, dtype=torch.bfloat16)
    x.requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = roi_align(x, rois, 4, 0.5, 2, True)
        out32 = roi_align(x.detach().float(), rois.float(), 4, 0.5, 2, True)
    assert out.dtype == torch.bfloat16 and out32.dtype == torch.float32
    torch.testing.assert_close(out, roi_align(x.detach().float(), rois.float(), 4, 0.5, 2, True).bfloat16())
    out.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and x.grad.abs().sum() > 0


# ---- properties -------------------------------------------------------------------------------

coords = st.floats(-12.0, 24.0, allow_nan=False, width=32)


@given(
    box=st.tuples(coords, coords, coords, coords),
    sampling_ratio=st.integers(-1, 3),
    aligned=st.booleans(),
    output_size=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    spatial_scale=st.sampled_from([1.0, 0.5, 0.75]),
)
def test_property_matches_reference(box, sampling_ratio, aligned, output_size, spatial_scale):
    x = torch.randn(1, 2, 7, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    rois = torch.tensor([[0.0, *box]], dtype=torch.float64)
    args = (output_size, spatial_scale, sampling_ratio, aligned)
    torch.testing.assert_close(roi_align(x, rois, *args), roi_align_reference(x, rois, *args), atol=1e-12, rtol=1e-12)


@given(
    corner=st.tuples(st.floats(0, 8), st.floats(0, 6)),
    size=st.tuples(st.floats(0, 8), st.floats(0, 6)),
    sampling_ratio=st.integers(-1, 3),
    output_size=st.integers(1, 4),
)
def test_property_constant_map_pools_to_constant(corner, size, sampling_ratio, output_size):
    # Bins are averages with weights summing to one wherever every sample is inside the map.
    x = torch.full((1, 3, 8, 10), 2.5, dtype=torch.float64)
    x1, y1 = corner
    x2, y2 = min(x1 + size[0], 9.0), min(y1 + size[1], 7.0)
    rois = torch.tensor([[0.0, x1, y1, x2, y2]], dtype=torch.float64)
    out = roi_align(x, rois, output_size, 1.0, sampling_ratio, True)
    # An adaptive grid has no samples, hence zero bins, when the box is empty after the -0.5 shift.
    empty_adaptive = sampling_ratio <= 0 and ((x2 - 0.5) - (x1 - 0.5) <= 0 or (y2 - 0.5) - (y1 - 0.5) <= 0)
    torch.testing.assert_close(out, torch.full_like(out, 0.0 if empty_adaptive else 2.5), atol=1e-12, rtol=0)


@given(seed=st.integers(0, 2**16), sampling_ratio=st.integers(-1, 2), aligned=st.booleans())
def test_property_backward_is_adjoint_of_forward(seed, sampling_ratio, aligned):
    x, rois = make_case(seed, 0.5, n=2, c=2, h=6, w=8, k=5, dtype=torch.float64)
    out = roi_align(x, rois, 3, 0.5, sampling_ratio, aligned)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    grad_input = torch.ops.segdet._roi_align_backward(g, rois, 0.5, 3, 3, 2, 2, 6, 8, sampling_ratio, aligned)
    torch.testing.assert_close((out * g).sum(), (x * grad_input).sum(), atol=1e-10, rtol=1e-10)


# ---- CUDA against CPU ---------------------------------------------------------------------------


@pytest.mark.cuda
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("sampling_ratio,aligned", [(-1, False), (2, True), (0, True), (3, False)])
def test_cuda_matches_cpu(dtype, channels_last, sampling_ratio, aligned):
    x, rois = make_case(13, 0.25, c=6, dtype=dtype, channels_last=channels_last)
    kwargs = dict(output_size=(7, 5), spatial_scale=0.25, sampling_ratio=sampling_ratio, aligned=aligned)
    out, grad = forward_backward(roi_align, x, rois, **kwargs)
    out_gpu, grad_gpu = forward_backward(roi_align, x.cuda(), rois.cuda(), **kwargs)
    tol = {torch.float16: 2e-3, torch.bfloat16: 2e-2}.get(dtype, 1e-5)
    torch.testing.assert_close(out_gpu.cpu(), out, atol=tol, rtol=tol)
    torch.testing.assert_close(grad_gpu.cpu().float(), grad.float(), atol=tol, rtol=tol)


@pytest.mark.cuda
@needs_cuda
def test_cuda_out_of_range_batch_index_is_zero():
    x = torch.randn(2, 3, 8, 8, device="cuda", requires_grad=True)
    rois = torch.tensor([[2, 0, 0, 4, 4.0], [-1, 0, 0, 4, 4.0], [1, 0, 0, 4, 4.0]], device="cuda")
    out = roi_align(x, rois, 2)
    assert torch.all(out[:2] == 0)
    torch.testing.assert_close(out[2:], roi_align(x, rois[2:], 2))
    out.sum().backward()
    assert torch.all(x.grad[0] == 0)
