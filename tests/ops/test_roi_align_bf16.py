"""bfloat16 (and float16) feature maps in the CPU kernels of segdet::roi_align / _roi_align_backward.

The CPU kernels read and write the reduced-precision map but pool, scatter and accumulate in float,
with the rois in float (a float32 rois tensor is accepted next to a bf16/fp16 map on the CPU). Two
oracles:
- exact: the float32 kernel on the widened map, rounded once to the map's dtype. Widening is exact
  and the native kernel runs the same float arithmetic in the same order, so any difference is a
  bug (e.g. a sum kept in bf16, a box coordinate rounded to bf16);
- bounded: the float64 reference (segdet.ops._reference), within the error bf16 allows (see
  bf16_bound).
CPU autocast passes bf16 maps to these kernels natively (csrc/ops/autocast/roi_align_autocast.cpp).
"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from segdet import _C
from segdet.ops import roi_align
from segdet.ops._reference import roi_align_reference

from test_roi_align import make_case

LOW = [torch.bfloat16, torch.float16]
# Unit roundoff of the format: rounding to nearest moves a value by at most u * |value|.
UNIT_ROUNDOFF = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}
# Float32 accumulation over a bin's or a pixel's terms, relative to the sum of their magnitudes:
# n terms err by at most about n * 2^-24; the cases here have n < 2^10.
FLOAT_ACCUMULATION = 2.0**-14
ARGS = dict(output_size=(5, 4), spatial_scale=0.5, sampling_ratio=2, aligned=True)


def _args(kw):
    return (kw["output_size"], kw["spatial_scale"], kw["sampling_ratio"], kw["aligned"])


def bf16_bound(dtype, ref, magnitude, input_rounding=None):
    """Largest |native - float64 reference| allowed, elementwise.

    ref: the float64 result on the same (already rounded) inputs; magnitude: the same linear map
    applied to |inputs|, i.e. the sum of |w_i x_i| of each output element. The result is rounded
    once (u * |ref|) after a float32 accumulation (FLOAT_ACCUMULATION * magnitude). input_rounding:
    the magnitude of the inputs' own rounding, when ref is on the unrounded inputs (u * magnitude).
    """
    u = UNIT_ROUNDOFF[dtype]
    bound = u * ref.abs() + FLOAT_ACCUMULATION * magnitude
    if input_rounding is not None:
        bound = bound + u * (1 + u) * input_rounding
    return bound


def assert_within(got, ref, bound):
    err = (got.double() - ref).abs()
    worst = (err - bound).max().item() if err.numel() else 0.0
    assert worst <= 0.0, f"error exceeds the bound by {worst:.3g}; max error {err.max().item():.3g}"


def backward(grad, rois, x_shape, kw):
    ph, pw = kw["output_size"]
    n, c, h, w = x_shape
    return torch.ops.segdet._roi_align_backward(grad, rois, kw["spatial_scale"], ph, pw, n, c, h, w,
                                                kw["sampling_ratio"], kw["aligned"])


def low_case(dtype, channels_last, seed=21, rois_float=True, c=21, k=40):
    """A map in dtype and rois in float32 (most coordinates not representable in dtype) or in dtype."""
    x, rois = make_case(seed, 0.5, c=c, k=k, channels_last=channels_last)
    return x.to(dtype), (rois if rois_float else rois.to(dtype))


def grad_like(out, seed=0):
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.empty_like(out).copy_(g)  # the output's dtype and layout


# ---- exact: the float32 kernel on the widened map, rounded once ------------------------------------


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("rois_float", [True, False])
@pytest.mark.parametrize("sampling_ratio,aligned", [(2, True), (-1, False)])
def test_native_equals_float32_kernel_rounded_once(dtype, channels_last, rois_float, sampling_ratio, aligned):
    x, rois = low_case(dtype, channels_last, rois_float=rois_float)
    kw = dict(ARGS, sampling_ratio=sampling_ratio, aligned=aligned)
    out = roi_align(x, rois, *_args(kw))
    expected = roi_align(x.float(), rois.float(), *_args(kw)).to(dtype)
    assert out.dtype == dtype and out.stride() == expected.stride()
    assert torch.equal(out, expected)
    g = grad_like(out)
    grad = backward(g, rois, x.shape, kw)
    expected_grad = backward(g.float(), rois.float(), x.shape, kw).to(dtype)
    assert grad.dtype == dtype and grad.stride() == expected_grad.stride()
    assert torch.equal(grad, expected_grad)
    assert grad.abs().sum() > 0 and out.abs().sum() > 0


def test_float32_rois_keep_their_precision():
    # Coordinates that bf16 cannot hold (steps of 4 px in [512, 1024)): on a map whose value is its
    # column index mod 256 (exact in bf16), a 1x1 bin pools the x of the box centre, which must be
    # the float32 box's (601 -> 610: 93; 777 -> 781: 10.5), not the bf16-rounded box's (600 -> 608: 91.5).
    w = 1024
    x = torch.arange(w, dtype=torch.float32).remainder(256).expand(1, 1, 4, w).bfloat16()
    rois = torch.tensor([[0, 601.0, 0.0, 610.0, 4.0], [0, 777.0, 0.0, 781.0, 4.0]])
    out = roi_align(x, rois, (1, 1), 1.0, 1, True)
    expected = roi_align(x.float(), rois, (1, 1), 1.0, 1, True).bfloat16()
    assert torch.equal(out, expected) and out.flatten().tolist() == [93.0, 10.5]
    rounded = roi_align(x, rois.bfloat16(), (1, 1), 1.0, 1, True)
    assert not torch.equal(out, rounded), "the case does not tell float32 boxes from bf16 ones"


# ---- bounded: against the float64 reference ------------------------------------------------------


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("channels_last", [False, True])
def test_forward_within_bf16_error_of_float64_reference(dtype, channels_last):
    x64, rois = make_case(22, 0.5, c=5, h=9, w=11, k=12, dtype=torch.float64, channels_last=channels_last)
    x = x64.to(dtype)
    out = roi_align(x, rois.float(), *_args(ARGS))
    # On the rounded map: only the output rounding and the float32 sums.
    ref = roi_align_reference(x.double(), rois, *_args(ARGS))
    magnitude = roi_align_reference(x.double().abs(), rois, *_args(ARGS))
    assert_within(out, ref, bf16_bound(dtype, ref, magnitude))
    # On the unrounded map: plus each input's rounding, weighted as the bin weights it.
    ref64 = roi_align_reference(x64, rois, *_args(ARGS))
    magnitude64 = roi_align_reference(x64.abs(), rois, *_args(ARGS))
    assert_within(out, ref64, bf16_bound(dtype, ref64, magnitude, input_rounding=magnitude64))


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("channels_last", [False, True])
def test_backward_within_bf16_error_of_float64_reference(dtype, channels_last):
    # Many overlapping RoIs, so grad_input sums hundreds of terms per pixel: a sum kept in the map's
    # dtype would lose the small ones.
    x, rois = make_case(23, 0.5, c=5, h=9, w=11, k=60, dtype=dtype, channels_last=channels_last)
    rois = rois.float()
    out = roi_align(x, rois, *_args(ARGS))
    g = grad_like(out, seed=3)
    grad = backward(g, rois, x.shape, ARGS)
    x64 = x.double().detach().requires_grad_(True)
    ref_out = roi_align_reference(x64, rois.double(), *_args(ARGS))
    (ref,) = torch.autograd.grad(ref_out, x64, g.double(), retain_graph=True)
    (magnitude,) = torch.autograd.grad(ref_out, x64, g.double().abs())
    assert grad.dtype == dtype
    assert_within(grad, ref, bf16_bound(dtype, ref, magnitude))


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("channels_last", [False, True])
def test_backward_is_adjoint_of_forward(dtype, channels_last):
    # Gradcheck-like: <roi_align(x), g> = <x, backward(g)>, both sides in float64 from the native
    # results. Each side's only rounding is its result's (u relative) after float sums, so they agree
    # within (u + float) times the sum of the products' magnitudes. A positive map and gradient keep
    # the sums free of cancellation, so the bound is ~2u of the value and a wrong weight shows.
    x, rois = make_case(24, 0.5, c=6, h=8, w=10, k=15, dtype=dtype, channels_last=channels_last)
    x, rois = x.abs(), rois.float()
    out = roi_align(x, rois, *_args(ARGS))
    g = grad_like(out, seed=4).abs()
    grad = backward(g, rois, x.shape, ARGS)
    lhs = (out.double() * g.double()).sum()
    rhs = (x.double() * grad.double()).sum()
    u = UNIT_ROUNDOFF[dtype]
    assert abs(lhs - rhs) <= (u + FLOAT_ACCUMULATION) * (lhs + rhs)
    assert lhs > 0


# ---- empty inputs, layouts, determinism ----------------------------------------------------------


@pytest.mark.parametrize("dtype", LOW)
@pytest.mark.parametrize("rois_dtype", [torch.float32, None])
def test_empty_rois(dtype, rois_dtype):
    x = torch.randn(2, 3, 8, 8).to(dtype).requires_grad_(True)
    empty = torch.zeros(0, 5, dtype=rois_dtype or dtype)
    out = roi_align(x, empty, (2, 3))
    assert out.shape == (0, 3, 2, 3) and out.dtype == dtype
    out.sum().backward()
    assert x.grad.dtype == dtype and torch.equal(x.grad, torch.zeros_like(x))
    # The batch index is still checked with no pooling to do.
    with pytest.raises(ValueError, match="batch index"):
        roi_align(x[:, :0], torch.tensor([[5, 0, 0, 1, 1.0]], dtype=rois_dtype or dtype), 2)


def test_bf16_backward_deterministic_across_thread_counts():
    x, rois = make_case(25, 0.25, c=40, k=200, dtype=torch.bfloat16)
    rois = rois.float()
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 3):
            torch.set_num_threads(n)
            for cl in (False, True):
                xx = x.contiguous(memory_format=torch.channels_last) if cl else x
                out = roi_align(xx, rois, 7, 0.25)
                results.append((cl, out, backward(grad_like(out), rois, x.shape, dict(
                    output_size=(7, 7), spatial_scale=0.25, sampling_ratio=-1, aligned=False))))
    finally:
        torch.set_num_threads(threads)
    for cl, out, grad in results:
        first = next(r for r in results if r[0] == cl)
        assert torch.equal(out, first[1]) and torch.equal(grad, first[2])


# ---- dtype rule, opcheck, autocast ----------------------------------------------------------------


def test_float32_rois_only_with_a_reduced_cpu_map():
    x = torch.randn(1, 2, 6, 6)
    rois = torch.tensor([[0, 0, 0, 3, 3.0]])
    with pytest.raises(TypeError, match=r"rois dtype \(Double\) must match input dtype \(BFloat16\) or be float32"):
        roi_align(x.bfloat16(), rois.double(), 2)
    with pytest.raises(TypeError, match=r"rois dtype \(Float\) must match input dtype \(Double\)$"):
        roi_align(x.double(), rois, 2)
    # Off the CPU (here meta tensors, as the CUDA kernels' rule) the dtypes must match.
    with pytest.raises(TypeError, match=r"rois dtype \(Float\) must match input dtype \(BFloat16\)$"):
        _C.check_roi_align_args(x.bfloat16().to("meta"), rois.to("meta"), 2, 2)
    with pytest.raises(TypeError, match=r"rois dtype \(Float\) must match grad dtype \(BFloat16\)$"):
        _C.check_roi_align_backward_args(torch.empty(1, 2, 2, 2, dtype=torch.bfloat16, device="meta"),
                                         rois.to("meta"), 2, 2, 1, 2, 6, 6)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck_reduced_maps(requires_grad):
    for seed, (dtype, channels_last, rois_float) in enumerate(
            [(torch.bfloat16, False, True), (torch.bfloat16, True, False), (torch.float16, True, True)]):
        x, rois = make_case(seed, 0.5, n=2, c=3, h=8, w=9, k=6, dtype=dtype, channels_last=channels_last)
        rois = rois.float() if rois_float else rois
        x.requires_grad_(requires_grad)
        torch.library.opcheck(torch.ops.segdet.roi_align.default, (x, rois, 0.5, 3, 2, 2, True))
        g = grad_like(roi_align(x.detach(), rois, (3, 2), 0.5, 2, True), seed).requires_grad_(requires_grad)
        torch.library.opcheck(torch.ops.segdet._roi_align_backward.default,
                              (g, rois, 0.5, 3, 2, *x.shape, 2, True))


class _OpLog(TorchDispatchMode):
    """Records (op name, dtypes of its tensor arguments) of every op dispatched below autograd."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append((str(func), [a.dtype for a in args if isinstance(a, torch.Tensor)]))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("channels_last", [False, True])
def test_cpu_autocast_runs_bf16_natively(channels_last):
    x, rois = low_case(torch.bfloat16, channels_last, seed=26, c=16)  # the pooler's rois are float32 boxes
    leaf = x.detach().requires_grad_(True)
    log = _OpLog()
    with torch.autocast("cpu", dtype=torch.bfloat16), log:
        out = roi_align(leaf, rois, 4, 0.5, 2, True)
        g = grad_like(out, seed=5)
        out.backward(g)
    # The map reached both kernels in bf16 (with float32 rois) and was never widened.
    assert ("segdet.roi_align.default", [torch.bfloat16, torch.float32]) in log.calls
    assert ("segdet._roi_align_backward.default", [torch.bfloat16, torch.float32]) in log.calls
    assert not [c for c in log.calls if "_to_copy" in c[0] and c[1] == [torch.bfloat16]], log.calls
    # The contract of the float32 path it replaces: output and grad in the map's dtype, same values.
    assert out.dtype == torch.bfloat16 and leaf.grad.dtype == torch.bfloat16
    assert out.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    assert torch.equal(out, roi_align(x.float(), rois, 4, 0.5, 2, True).bfloat16())
    assert torch.equal(leaf.grad, backward(g.float(), rois, x.shape, dict(
        output_size=(4, 4), spatial_scale=0.5, sampling_ratio=2, aligned=True)).bfloat16())


def test_cpu_autocast_float32_and_float16_maps_keep_the_float32_path():
    x, rois = make_case(27, 0.5, c=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out32 = roi_align(x, rois, 3, 0.5, 2, True)
        out16 = roi_align(x.half(), rois, 3, 0.5, 2, True)
    assert out32.dtype == torch.float32 and torch.equal(out32, roi_align(x, rois, 3, 0.5, 2, True))
    assert out16.dtype == torch.float16
    assert torch.equal(out16, roi_align(x.half().float(), rois, 3, 0.5, 2, True).half())
