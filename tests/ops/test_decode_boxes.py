"""segdet.ops.decode_boxes against the pure-PyTorch reference and torchvision's BoxCoder."""
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import segdet
from segdet._extension import cuda_built
from segdet.ops import decode_boxes
from segdet.ops._reference import decode_boxes_reference

try:
    from torchvision.models.detection._utils import BoxCoder
    from torchvision.ops import clip_boxes_to_image
except ImportError:  # torchvision is a test oracle only
    BoxCoder = None

CLIP = math.log(1000.0 / 16)
HAS_CUDA = torch.cuda.is_available() and cuda_built()
DEVICES = ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda,
                                          pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")])]
DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
RPN_WEIGHTS = (1.0, 1.0, 1.0, 1.0)
BOX_HEAD_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
needs_torchvision = pytest.mark.skipif(BoxCoder is None, reason="torchvision not installed")

# Coordinates go up to ~1500 px: tolerances are a few units in the last place at that magnitude.
TOLERANCES = {
    torch.float64: dict(rtol=1e-12, atol=1e-9),
    torch.float32: dict(rtol=1e-6, atol=1e-3),
    torch.float16: dict(rtol=1e-3, atol=1.0),
    torch.bfloat16: dict(rtol=8e-3, atol=8.0),
}


def make_inputs(n, num_classes, *, dtype=torch.float32, device="cpu", delta_scale=1.0, seed=0, height=600, width=800):
    """Proposal-like boxes [N, 4] inside a height x width image and normal deltas [N, 4K]."""
    g = torch.Generator().manual_seed(seed)
    ctr = torch.rand(n, 2, generator=g, dtype=torch.float64) * torch.tensor([width, height])
    size = 2.0 ** (torch.rand(n, 2, generator=g, dtype=torch.float64) * 8)  # 1 .. 256 px
    boxes = torch.cat([ctr - size / 2, ctr + size / 2], dim=1)
    deltas = torch.randn(n, 4 * num_classes, generator=g, dtype=torch.float64) * delta_scale
    return deltas.to(device, dtype), boxes.to(device, dtype)


def torchvision_decode(rel_codes, boxes, weights, image_size=None):
    out = BoxCoder(weights, bbox_xform_clip=CLIP).decode_single(rel_codes, boxes)
    if image_size is not None:
        out = clip_boxes_to_image(out.reshape(out.shape[0], -1, 4), image_size).reshape(out.shape)
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("num_classes", [1, 3, 91])
@pytest.mark.parametrize("weights", [RPN_WEIGHTS, BOX_HEAD_WEIGHTS])
@pytest.mark.parametrize("image_size", [None, (600, 800)])
def test_matches_reference(device, dtype, num_classes, weights, image_size):
    rel_codes, boxes = make_inputs(257, num_classes, dtype=dtype, device=device, delta_scale=2.0)
    out = decode_boxes(rel_codes, boxes, weights, CLIP, image_size)
    expected = decode_boxes_reference(rel_codes.cpu(), boxes.cpu(), weights, CLIP, image_size)
    assert out.shape == rel_codes.shape and out.dtype == dtype and out.device == rel_codes.device
    torch.testing.assert_close(out.cpu(), expected, **TOLERANCES[dtype])


@needs_torchvision
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("weights", [RPN_WEIGHTS, BOX_HEAD_WEIGHTS, (2.0, 0.5, 3.0, 0.25)])
@pytest.mark.parametrize("image_size", [None, (480, 640)])
def test_matches_torchvision(device, dtype, weights, image_size):
    rel_codes, boxes = make_inputs(1000, 5, dtype=dtype, device=device, delta_scale=3.0, seed=1)
    out = decode_boxes(rel_codes, boxes, weights, CLIP, image_size)
    expected = torchvision_decode(rel_codes, boxes, weights, image_size)
    torch.testing.assert_close(out, expected, **TOLERANCES[dtype])


@needs_torchvision
def test_float32_cpu_is_bitwise_torchvision():
    # Same operation order, no contraction, and the CPU kernel uses ATen's exp: equal bits, not just close.
    rel_codes, boxes = make_inputs(4096, 2, delta_scale=2.0, seed=2)
    for weights in (RPN_WEIGHTS, BOX_HEAD_WEIGHTS):
        assert torch.equal(decode_boxes(rel_codes, boxes, weights), torchvision_decode(rel_codes, boxes, weights))


@needs_torchvision
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_types_close_to_torchvision(device, dtype):
    # torchvision rounds after every step in the half type, segdet only once: allow a few ulps.
    rel_codes, boxes = make_inputs(500, 2, dtype=dtype, device=device, seed=3)
    out = decode_boxes(rel_codes, boxes, BOX_HEAD_WEIGHTS)
    expected = torchvision_decode(rel_codes, boxes, BOX_HEAD_WEIGHTS)
    tol = dict(rtol=4e-3, atol=4.0) if dtype == torch.float16 else dict(rtol=3e-2, atol=32.0)
    torch.testing.assert_close(out, expected, **tol)


@pytest.mark.parametrize("device", DEVICES)
def test_class_specific_columns_are_independent(device):
    rel_codes, boxes = make_inputs(64, 4, device=device, seed=4)
    out = decode_boxes(rel_codes, boxes, BOX_HEAD_WEIGHTS)
    for k in range(4):
        single = decode_boxes(rel_codes[:, 4 * k:4 * k + 4].contiguous(), boxes, BOX_HEAD_WEIGHTS)
        assert torch.equal(out[:, 4 * k:4 * k + 4], single)


@pytest.mark.parametrize("device", DEVICES)
def test_extreme_deltas_hit_the_clamp(device):
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0]] * 4, device=device)  # 20 x 40 box centred at (20, 40)
    rel_codes = torch.tensor(
        [[0.0, 0.0, 1e4, 1e4], [0.0, 0.0, math.inf, math.inf], [0.0, 0.0, -1e4, -1e4], [0.0, 0.0, CLIP, CLIP]],
        device=device,
    )
    out = decode_boxes(rel_codes, boxes).cpu()
    assert torch.isfinite(out).all()
    factor = math.exp(CLIP)  # 62.5: the largest growth allowed
    clamped = torch.tensor([20 - 10 * factor, 40 - 20 * factor, 20 + 10 * factor, 40 + 20 * factor])
    torch.testing.assert_close(out[0], clamped)
    torch.testing.assert_close(out[1], clamped)
    torch.testing.assert_close(out[3], clamped)
    torch.testing.assert_close(out[2], torch.tensor([20.0, 40.0, 20.0, 40.0]))  # shrunk to a point
    # A lower clip bounds the growth at exp(clip) instead.
    out = decode_boxes(rel_codes[:1], boxes[:1], bbox_xform_clip=0.0).cpu()
    torch.testing.assert_close(out[0], torch.tensor([10.0, 20.0, 30.0, 60.0]))


@pytest.mark.parametrize("device", DEVICES)
def test_clip_to_image(device):
    rel_codes, boxes = make_inputs(2000, 3, device=device, delta_scale=3.0, seed=5, height=100, width=200)
    out = decode_boxes(rel_codes, boxes, image_size=(100, 200)).cpu()
    unclipped = decode_boxes(rel_codes, boxes).cpu()
    x, y = out[:, 0::2], out[:, 1::2]
    assert x.min() == 0 and x.max() == 200 and y.min() == 0 and y.max() == 100  # the clip was active
    assert torch.equal(x, unclipped[:, 0::2].clamp(0, 200))
    assert torch.equal(y, unclipped[:, 1::2].clamp(0, 100))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("image_size", [None, (50, 50)])
def test_nan_and_inf_propagate_like_reference(device, image_size):
    nan, inf = math.nan, math.inf
    rel_codes = torch.tensor(
        [[nan, 0, 0, 0], [0, nan, 0, nan], [inf, 0, 0, 0], [-inf, 0, 0, 0], [0, 0, -inf, 0], [0, 0, 0, inf]],
        device=device,
    )
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0]], device=device).expand(6, 4)
    boxes = torch.cat([boxes[:5], torch.tensor([[nan, 0.0, 10.0, inf]], device=device)])
    out = decode_boxes(rel_codes, boxes, image_size=image_size).cpu()
    expected = decode_boxes_reference(rel_codes.cpu(), boxes.cpu(), image_size=image_size)
    torch.testing.assert_close(out, expected, equal_nan=True)
    assert out[0, 0].isnan() and out[1, 1].isnan() and out[1, 3].isnan()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(0, 4), (0, 0), (5, 0), (0, 364)])
def test_empty(device, shape):
    rel_codes = torch.empty(shape, device=device)
    boxes = torch.empty(shape[0], 4, device=device)
    out = decode_boxes(rel_codes, boxes, image_size=(10, 10))
    assert out.shape == shape and out.dtype == rel_codes.dtype


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs(device):
    rel_codes, boxes = make_inputs(100, 2, device=device, seed=6)
    rel_t = rel_codes.t().contiguous().t()  # column-major [N, 8]
    boxes_strided = torch.cat([boxes, boxes], dim=1)[:, ::2]  # every other column, not contiguous
    boxes_strided = torch.stack([boxes_strided[:, 0], boxes[:, 1], boxes_strided[:, 1], boxes[:, 3]], 1)
    boxes_strided = boxes_strided.t().contiguous().t()
    assert not rel_t.is_contiguous() and not boxes_strided.is_contiguous()
    assert torch.equal(decode_boxes(rel_t, boxes_strided, BOX_HEAD_WEIGHTS), decode_boxes(rel_codes, boxes, BOX_HEAD_WEIGHTS))


@pytest.mark.cuda  # selected by scripts/gpu_check.sh (pytest -m cuda)
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_cuda_matches_cpu():
    rel_codes, boxes = make_inputs(5000, 3, delta_scale=2.0, seed=7)
    cpu = decode_boxes(rel_codes, boxes, BOX_HEAD_WEIGHTS, image_size=(600, 800))
    gpu = decode_boxes(rel_codes.cuda(), boxes.cuda(), BOX_HEAD_WEIGHTS, image_size=(600, 800))
    torch.testing.assert_close(gpu.cpu(), cpu, **TOLERANCES[torch.float32])


# ---- autograd, opcheck, torch.compile ------------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("image_size", [None, (600, 800)])
def test_gradcheck(device, image_size):
    rel_codes, boxes = make_inputs(12, 2, dtype=torch.float64, device=device, delta_scale=1.5, seed=8)
    rel_codes[0, 2] = 10.0  # clamped dw: zero gradient there
    rel_codes.requires_grad_(True)
    boxes.requires_grad_(True)

    def fn(r, b):
        return decode_boxes(r, b, BOX_HEAD_WEIGHTS, 1.5, image_size)

    assert torch.autograd.gradcheck(fn, (rel_codes, boxes))


def test_gradient_matches_reference_autograd():
    rel_codes, boxes = make_inputs(50, 3, dtype=torch.float64, delta_scale=2.0, seed=9, height=60, width=80)
    grad = torch.randn(50, 12, dtype=torch.float64)
    grads = []
    for fn in (decode_boxes, decode_boxes_reference):
        r, b = rel_codes.clone().requires_grad_(True), boxes.clone().requires_grad_(True)
        fn(r, b, BOX_HEAD_WEIGHTS, 1.0, (60, 80)).backward(grad)
        grads.append((r.grad, b.grad))
    torch.testing.assert_close(grads[0], grads[1])
    assert (grads[0][0] == 0).any()  # some clipped coordinates or clamped scales


def sample_inputs(device, *, requires_grad=False):
    """Argument tuples of segdet::decode_boxes for opcheck: both box coders' weights, clipping or
    not, float32/float64/bfloat16, and no boxes."""
    samples = []
    for seed, (dtype, weights, clip, image_size) in enumerate(
        [(torch.float32, RPN_WEIGHTS, CLIP, None), (torch.float64, BOX_HEAD_WEIGHTS, 2.0, [600, 800]),
         (torch.bfloat16, (2.0, 0.5, 3.0, 0.25), CLIP, [300, 400])]
    ):
        rel_codes, boxes = make_inputs(20, 2, dtype=dtype, device=device, seed=10 + seed)
        rel_codes.requires_grad_(requires_grad)
        boxes.requires_grad_(requires_grad)
        samples.append((rel_codes, boxes, list(weights), clip, image_size))
    rel_codes, boxes, *rest = samples[0]
    samples.append((rel_codes[:0], boxes[:0], *rest))
    return samples


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_opcheck(device, requires_grad):
    for args in sample_inputs(device, requires_grad=requires_grad):
        torch.library.opcheck(torch.ops.segdet.decode_boxes.default, args)


def test_torch_compile_fullgraph():
    def proposals(deltas, anchors):
        boxes = decode_boxes(deltas, anchors, BOX_HEAD_WEIGHTS, CLIP, (600, 800))
        return boxes.reshape(-1, 4).sum(dim=1)

    rel_codes, boxes = make_inputs(300, 2, seed=11)
    # aot_eager: dynamo and AOT autograd trace through the fake kernel without inductor's compile time.
    compiled = torch.compile(proposals, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(rel_codes, boxes), proposals(rel_codes, boxes))
    rel_codes, boxes = make_inputs(77, 2, seed=12)  # another N
    torch.testing.assert_close(compiled(rel_codes, boxes), proposals(rel_codes, boxes))


def test_torch_compile_dynamic_shapes_and_image_size():
    def fn(deltas, anchors, image):
        return decode_boxes(deltas, anchors, image_size=image.shape[-2:])

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager", dynamic=True)
    for n, (h, w) in ((40, (30, 50)), (90, (70, 20))):
        rel_codes, boxes = make_inputs(n, 1, seed=n, height=h, width=w)
        image = torch.zeros(3, h, w)
        torch.testing.assert_close(compiled(rel_codes, boxes, image), fn(rel_codes, boxes, image))


# ---- properties --------------------------------------------------------------------------------

coordinate = st.floats(-100.0, 1000.0, allow_nan=False, width=32)
delta = st.floats(-10.0, 10.0, allow_nan=False, width=32)


@st.composite
def box_and_deltas(draw, max_classes=4):
    x1, y1 = draw(coordinate), draw(coordinate)
    w, h = draw(st.floats(0.0, 500.0, width=32)), draw(st.floats(0.0, 500.0, width=32))
    k = draw(st.integers(1, max_classes))
    deltas = [draw(delta) for _ in range(4 * k)]
    return torch.tensor([[x1, y1, x1 + w, y1 + h]]), torch.tensor([deltas])


@settings(max_examples=60, deadline=None)
@given(box_and_deltas(), st.sampled_from([RPN_WEIGHTS, BOX_HEAD_WEIGHTS]))
def test_property_matches_reference_and_is_ordered(inputs, weights):
    boxes, rel_codes = inputs
    out = decode_boxes(rel_codes, boxes, weights)
    torch.testing.assert_close(out, decode_boxes_reference(rel_codes, boxes, weights), rtol=1e-6, atol=1e-3)
    assert torch.isfinite(out).all()
    assert (out[:, 0::4] <= out[:, 2::4]).all() and (out[:, 1::4] <= out[:, 3::4]).all()


@settings(max_examples=60, deadline=None)
@given(box_and_deltas(), st.integers(1, 1000), st.integers(1, 1000))
def test_property_clip_stays_in_image(inputs, height, width):
    boxes, rel_codes = inputs
    out = decode_boxes(rel_codes, boxes, image_size=(height, width))
    assert (out[:, 0::2] >= 0).all() and (out[:, 0::2] <= width).all()
    assert (out[:, 1::2] >= 0).all() and (out[:, 1::2] <= height).all()
    unclipped = decode_boxes(rel_codes, boxes)
    assert torch.equal(out[:, 0::2], unclipped[:, 0::2].clamp(0, width))


@settings(max_examples=40, deadline=None)
@given(box_and_deltas(), st.sampled_from([RPN_WEIGHTS, BOX_HEAD_WEIGHTS]))
def test_property_zero_deltas_give_back_the_box(inputs, weights):
    boxes, rel_codes = inputs
    out = decode_boxes(torch.zeros_like(rel_codes), boxes, weights)
    k = rel_codes.shape[1] // 4
    torch.testing.assert_close(out, boxes.repeat(1, k), rtol=1e-6, atol=1e-4)


def test_extension_loaded():
    assert hasattr(torch.ops.segdet, "decode_boxes") and segdet._C is not None
