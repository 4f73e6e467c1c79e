"""segdet.ops.paste_masks against the per-detection F.interpolate pasting it replaces.

The reference below is the algorithm of torchvision's ``paste_masks_in_image`` (pad, grow the
box, truncate, resize one mask at a time), thresholded with ``>``; torchvision itself is a
second oracle where installed. Equality is exact: the op promises the same bool masks.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from segdet._extension import cuda_built
from segdet.ops import paste_masks
from segdet.ops._reference import paste_masks_reference

try:
    from torchvision.models.detection.roi_heads import paste_masks_in_image as tv_paste_masks_in_image
except ImportError:  # torchvision is a test oracle only
    tv_paste_masks_in_image = None

HAS_CUDA = torch.cuda.is_available() and cuda_built()
needs_torchvision = pytest.mark.skipif(tv_paste_masks_in_image is None, reason="torchvision not installed")


def make_inputs(num, *, height=480, width=640, mask_size=28, max_side=2.0**9, dtype=torch.float32, seed=0):
    """Detection-like inputs: boxes [num, 4] with sides 1 .. max_side px centred in (and around)
    the image, mask probabilities [num, S, S] with smooth blobs and noise."""
    g = torch.Generator().manual_seed(seed)
    ctr = (torch.rand(num, 2, generator=g, dtype=torch.float64) * 1.2 - 0.1) * torch.tensor([width, height])
    side = max_side ** torch.rand(num, 2, generator=g, dtype=torch.float64)
    boxes = torch.cat([ctr - side / 2, ctr + side / 2], dim=1).to(dtype)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, mask_size), torch.linspace(-1, 1, mask_size), indexing="ij")
    radius = 0.3 + 0.7 * torch.rand(num, 1, 1, generator=g)
    blob = torch.sigmoid((radius - (xx**2 + yy**2).sqrt()) * 8)
    masks = (0.8 * blob + 0.2 * torch.rand(num, mask_size, mask_size, generator=g)).to(dtype)
    return masks, boxes


def assert_same_masks(out, expected):
    assert out.dtype == torch.bool and out.shape == expected.shape
    diff = (out.cpu() != expected).nonzero()
    assert diff.numel() == 0, f"{diff.shape[0]} pixels differ, first at (detection, y, x) = {diff[:5].tolist()}"


# ---- exactness ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("max_side", [2.0**6, 2.0**9])  # all four-tap (h + w <= 128) / mostly separable
@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_matches_reference(dtype, max_side, threshold):
    masks, boxes = make_inputs(80, max_side=max_side, dtype=dtype, seed=int(max_side))
    out = paste_masks(masks, boxes, 480, 640, threshold)
    assert_same_masks(out, paste_masks_reference(masks, boxes, 480, 640, threshold))
    assert out.any(), "no foreground pixel: the inputs do not exercise the interpolation"


@needs_torchvision
@pytest.mark.parametrize("mask_size", [28, 14, 7])
def test_matches_torchvision(mask_size):
    masks, boxes = make_inputs(100, height=800, width=1216, mask_size=mask_size, seed=mask_size)
    # Detections are clipped to the image (torchvision's own pasting mis-slices boxes lying
    # entirely left of or above the image, through Python's negative indices).
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, 1216)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, 800)
    out = paste_masks(masks, boxes, 800, 1216)
    expected = tv_paste_masks_in_image(masks[:, None], boxes, (800, 1216))[:, 0] > 0.5
    assert_same_masks(out, expected)


def test_rounding_borderline_pixels():
    # Masks of exactly the threshold and boxes whose size ratios are not representable make the
    # interpolated values land within an ulp of 0.5: a different order of the float operations
    # (or no fused multiply-add where ATen fuses it) flips some of these pixels.
    g = torch.Generator().manual_seed(3)
    masks = (0.5 + (torch.randint(-2, 3, (300, 28, 28), generator=g) * 2.0**-24)).float()
    x1 = torch.rand(300, generator=g) * 300
    y1 = torch.rand(300, generator=g) * 300
    wh = torch.rand(300, 2, generator=g) * 170 + 3
    boxes = torch.stack([x1, y1, x1 + wh[:, 0], y1 + wh[:, 1]], dim=1)
    assert_same_masks(paste_masks(masks, boxes, 400, 400), paste_masks_reference(masks, boxes, 400, 400))


def test_threshold_zero_and_one():
    masks, boxes = make_inputs(30, seed=5)
    for threshold in (0.0, 1.0, -1.0):
        out = paste_masks(masks, boxes, 480, 640, threshold)
        assert_same_masks(out, paste_masks_reference(masks, boxes, 480, 640, threshold))
    # Everything strictly inside a box is > -1, nothing is > 1.
    assert not paste_masks(masks, boxes, 480, 640, 1.0).any()


def test_non_contiguous_inputs():
    masks, boxes = make_inputs(40, seed=6)
    masks_t = masks.transpose(1, 2).contiguous().transpose(1, 2)  # same values, strided
    boxes_t = boxes.t().contiguous().t()
    assert not masks_t.is_contiguous() and not boxes_t.is_contiguous()
    assert_same_masks(paste_masks(masks_t, boxes_t, 480, 640), paste_masks_reference(masks, boxes, 480, 640))


def test_mixed_box_and_mask_dtypes():
    masks, boxes = make_inputs(20, seed=7)
    out = paste_masks(masks, boxes.double(), 480, 640)
    assert_same_masks(out, paste_masks_reference(masks, boxes.double(), 480, 640))


@pytest.mark.parametrize("max_side", [2.0**6, 2.0**9])
@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_bfloat16_masks_paste_as_their_float32_values(max_side, threshold):
    # CPU only: bf16 probabilities are widened exactly and pasted in float32, threshold included. The
    # masks are rounded to bf16 first, so each side sees the same values; the reference (F.interpolate)
    # on float32 then pins every pixel.
    masks, boxes = make_inputs(80, max_side=max_side, seed=11)
    masks = masks.bfloat16()
    out = paste_masks(masks, boxes, 480, 640, threshold)
    assert_same_masks(out, paste_masks_reference(masks.float(), boxes, 480, 640, threshold))
    strided = masks.transpose(1, 2).contiguous().transpose(1, 2)
    assert_same_masks(paste_masks(strided, boxes.double(), 480, 640, threshold), out)
    assert out.any()


def test_bfloat16_masks_only_on_the_cpu():
    masks, boxes = make_inputs(3)
    with pytest.raises(TypeError, match=r"masks must be float32 or float64 \(or bfloat16 on the CPU\), got Half"):
        paste_masks(masks.half(), boxes, 10, 10)
    # Off the CPU (meta tensors here, as for the CUDA kernels) bf16 masks are rejected.
    from segdet import _C

    with pytest.raises(TypeError, match="got BFloat16 on meta"):
        _C.check_paste_masks_args(masks.bfloat16().to("meta"), boxes.to("meta"), 10, 10)


# ---- edge cases --------------------------------------------------------------------------------


def test_empty_inputs():
    masks = torch.rand(0, 28, 28)
    boxes = torch.zeros(0, 4)
    assert paste_masks(masks, boxes, 100, 200).shape == (0, 100, 200)
    masks, boxes = make_inputs(3)
    for h, w in ((0, 640), (480, 0), (0, 0)):
        out = paste_masks(masks, boxes, h, w)
        assert out.shape == (3, h, w) and out.dtype == torch.bool


def test_boxes_outside_and_across_the_image():
    masks = torch.ones(6, 28, 28)
    boxes = torch.tensor(
        [
            [-500.0, -500.0, -100.0, -100.0],  # entirely above-left
            [700.0, 10.0, 900.0, 50.0],  # entirely right of a 640-wide image
            [-50.0, -40.0, 60.0, 70.0],  # across the top-left corner
            [600.0, 450.0, 700.0, 520.0],  # across the bottom-right corner
            [-100.0, 100.0, 800.0, 200.0],  # wider than the image
            [0.0, 0.0, 639.0, 479.0],  # exactly the image
        ]
    )
    out = paste_masks(masks, boxes, 480, 640)
    assert_same_masks(out, paste_masks_reference(masks, boxes, 480, 640))
    assert not out[:2].any()
    # Clipped, not shifted: the part inside the image is kept up to the image's edge pixels.
    assert out[2, 0, 0] and out[3, -1, -1] and out[4, 150].all() and not out[4, 250].any()


def test_degenerate_boxes():
    masks = torch.ones(5, 28, 28)
    boxes = torch.tensor(
        [
            [10.0, 10.0, 10.0, 10.0],  # a point
            [10.0, 10.0, 10.0, 60.0],  # zero width
            [50.0, 50.0, 20.0, 80.0],  # x2 < x1
            [5.3, 7.9, 5.6, 8.1],  # sub-pixel
            [3.0, 3.0, 3.0 - 1e-6, 3.0],
        ]
    )
    out = paste_masks(masks, boxes, 100, 100)
    assert_same_masks(out, paste_masks_reference(masks, boxes, 100, 100))


def test_nan_and_inf_boxes_give_empty_masks():
    masks = torch.ones(5, 28, 28)
    boxes = torch.tensor(
        [
            [float("nan"), 10.0, 50.0, 60.0],
            [10.0, 10.0, 50.0, float("nan")],
            [float("-inf"), 10.0, float("inf"), 60.0],
            [10.0, 10.0, 50.0, 60.0],  # a valid box among them is unaffected
            [1e30, 1e30, 2e30, 2e30],
        ]
    )
    out = paste_masks(masks, boxes, 100, 100)
    assert not out[[0, 1, 2, 4]].any()
    assert_same_masks(out[3:4], paste_masks_reference(masks[3:4], boxes[3:4], 100, 100))


def test_nan_masks_are_background():
    masks, boxes = make_inputs(10, seed=8)
    masks[:, 10:14] = float("nan")
    out = paste_masks(masks, boxes, 480, 640)
    assert_same_masks(out, paste_masks_reference(masks, boxes, 480, 640))


@settings(max_examples=60)
@given(
    coords=st.lists(st.floats(-60.0, 160.0, allow_nan=False, width=32), min_size=4, max_size=4),
    mask_size=st.integers(1, 16),
    hw=st.tuples(st.integers(1, 120), st.integers(1, 120)),
    seed=st.integers(0, 2**16),
)
def test_property_single_box_matches_reference(coords, mask_size, hw, seed):
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(1, mask_size, mask_size, generator=g)
    boxes = torch.tensor([coords])
    out = paste_masks(masks, boxes, *hw)
    assert_same_masks(out, paste_masks_reference(masks, boxes, *hw))


# ---- argument checking -------------------------------------------------------------------------

# ---- dispatcher integration --------------------------------------------------------------------


def sample_inputs(device):
    """Argument tuples of segdet::paste_masks for opcheck: float32/float64 (and on the CPU bfloat16)
    masks, mixed box dtype, two thresholds, an empty image and no detections."""
    masks, boxes = make_inputs(12, height=60, width=80, max_side=50.0, seed=9)
    masks, boxes = masks.to(device), boxes.to(device)
    return [
        (masks, boxes, 60, 80, 0.5),
        (masks.double(), boxes, 60, 80, 0.25),
        (masks, boxes.double(), 0, 80, 0.5),
        (masks[:0], boxes[:0], 60, 80, 0.5),
    ] + ([(masks.bfloat16(), boxes, 60, 80, 0.5)] if device == "cpu" else [])


@pytest.mark.parametrize(
    "device", ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda,
                                          pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")])]
)
def test_opcheck(device):
    for args in sample_inputs(device):
        torch.library.opcheck(torch.ops.segdet.paste_masks.default, args)


def test_fake_kernel_shape():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        out = torch.ops.segdet.paste_masks.default(torch.empty(7, 28, 28), torch.empty(7, 4), 33, 44, 0.5)
    assert out.shape == (7, 33, 44) and out.dtype == torch.bool


@pytest.mark.cuda  # selected by scripts/gpu_check.sh (pytest -m cuda)
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_cuda_matches_cpu_closely():
    # The CUDA kernel follows ATen's CUDA bilinear arithmetic, which rounds differently from
    # the CPU one: borderline pixels may differ, nothing else.
    masks, boxes = make_inputs(60, height=800, width=1216, seed=10)
    out = paste_masks(masks.cuda(), boxes.cuda(), 800, 1216).cpu()
    cpu = paste_masks(masks, boxes, 800, 1216)
    assert (out != cpu).float().mean() < 1e-4
    expected = tv_paste_masks_in_image(masks[:, None].cuda(), boxes.cuda(), (800, 1216))[:, 0] > 0.5
    assert (out != expected.cpu()).float().mean() < 1e-6
