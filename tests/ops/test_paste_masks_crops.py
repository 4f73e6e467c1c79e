"""segdet.ops.paste_masks_crops against the full-image segdet.ops.paste_masks it stands in for.

Each crop must be exactly the full-image mask inside the crop's region, and the full-image mask must be
all False outside it, for every detection, on boxes inside, across and outside the image, empty, inverted
and non-finite ones.
"""
import pytest
import torch

from segdet._extension import cuda_built
from segdet.ops import paste_masks
from segdet.ops.paste_masks import paste_masks_crops

HAS_CUDA = torch.cuda.is_available() and cuda_built()


def random_inputs(num, height, width, *, mask_size=28, dtype=torch.float32, seed=0):
    """Boxes with centres from -30 % to 130 % of the image and sides 0.5 .. 2 x the image (so many cross an
    edge or miss it), plus a few degenerate rows; mask probabilities uniform in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    size = torch.tensor([width, height], dtype=torch.float64)
    ctr = (torch.rand(num, 2, generator=g, dtype=torch.float64) * 1.6 - 0.3) * size
    side = torch.rand(num, 2, generator=g, dtype=torch.float64) ** 3 * 2 * size
    boxes = torch.cat([ctr - side / 2, ctr + side / 2], dim=1)
    special = torch.tensor([
        [5.0, 5.0, 5.0, 5.0],                   # zero-size box: the grown box is still one pixel
        [10.0, 10.0, 3.0, 4.0],                 # inverted
        [-50.0, -50.0, -20.0, -10.0],           # entirely above-left of the image
        [width + 5.0, 2.0, width + 40.0, 9.0],  # entirely right of it
        [float("nan"), 0.0, 3.0, 3.0],          # invalid: no pixels
        [0.0, 0.0, float("inf"), 4.0],
        [-1e12, -1e12, 1e12, 1e12],             # beyond +-2^31 px: invalid
        [0.0, 0.0, width, height],              # the whole image
    ], dtype=torch.float64)
    boxes = torch.cat([boxes, special])[torch.randperm(num + len(special), generator=g)].to(dtype)
    masks = torch.rand(len(boxes), mask_size, mask_size, generator=g, dtype=torch.float64).to(dtype)
    return masks, boxes


def assert_crops_match(masks, boxes, height, width, threshold):
    full = paste_masks(masks, boxes, height, width, threshold).cpu()
    crops, regions = paste_masks_crops(masks, boxes, height, width, threshold)
    crops, regions = crops.cpu(), regions.cpu()
    assert crops.dtype == torch.bool and crops.dim() == 1
    assert regions.dtype == torch.int64 and regions.shape == (len(boxes), 4)
    offset = 0
    for i, (x, y, w, h) in enumerate(regions.tolist()):
        assert w >= 0 and h >= 0 and 0 <= x and x + w <= width and 0 <= y and y + h <= height, (i, x, y, w, h)
        if w == 0 or h == 0:
            assert (x, y, w, h) == (0, 0, 0, 0), f"detection {i}: empty region must be (0, 0, 0, 0)"
        crop = crops[offset:offset + w * h].reshape(h, w)
        offset += w * h
        inside = full[i, y:y + h, x:x + w]
        assert torch.equal(crop, inside), f"detection {i} box {boxes[i].tolist()}: crop differs from the paste"
        outside = full[i].clone()
        outside[y:y + h, x:x + w] = False
        assert not outside.any(), f"detection {i}: the paste has pixels outside region {(x, y, w, h)}"
    assert offset == crops.numel(), "crops holds more pixels than the regions cover"
    return full


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mask_size", [28, 7])
@pytest.mark.parametrize("size", [(96, 128), (37, 300), (300, 41)])
def test_crops_equal_full_paste(dtype, mask_size, size):
    height, width = size
    for seed in range(3):
        masks, boxes = random_inputs(60, height, width, mask_size=mask_size, dtype=dtype, seed=seed)
        full = assert_crops_match(masks, boxes, height, width, 0.5)
        assert full.any(), "no foreground: the inputs do not exercise the interpolation"


def test_bfloat16_masks_crop_as_their_float32_values():
    # CPU only: bf16 masks are widened exactly, so the crops are those of the float32 masks.
    masks, boxes = random_inputs(60, 96, 128, seed=5)
    masks = masks.bfloat16()
    full = assert_crops_match(masks, boxes, 96, 128, 0.5)
    crops, regions = paste_masks_crops(masks, boxes, 96, 128, 0.5)
    crops32, regions32 = paste_masks_crops(masks.float(), boxes, 96, 128, 0.5)
    assert torch.equal(crops, crops32) and torch.equal(regions, regions32)
    assert torch.equal(full, paste_masks(masks.float(), boxes, 96, 128, 0.5)) and full.any()


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.9])
def test_thresholds(threshold):
    masks, boxes = random_inputs(40, 64, 80, seed=7)
    assert_crops_match(masks, boxes, 64, 80, threshold)


def test_mixed_dtypes_and_noncontiguous():
    masks, boxes = random_inputs(30, 50, 70, seed=3)
    assert_crops_match(masks.double(), boxes.float(), 50, 70, 0.5)
    wide = torch.zeros(len(boxes), 8)
    wide[:, ::2] = boxes
    assert_crops_match(masks.transpose(1, 2), wide[:, ::2], 50, 70, 0.5)


def test_empty_inputs():
    crops, regions = paste_masks_crops(torch.zeros(0, 28, 28), torch.zeros(0, 4), 10, 10)
    assert crops.shape == (0,) and regions.shape == (0, 4)
    masks, boxes = random_inputs(5, 20, 20)
    crops, regions = paste_masks_crops(masks, boxes, 0, 0)
    assert crops.numel() == 0 and regions.eq(0).all()


def test_same_errors_as_paste_masks():
    masks, boxes = random_inputs(3, 20, 20)
    bad = [
        ((masks[:, :5], boxes, 20, 20), ValueError, "masks must be a 3-D tensor"),
        ((masks, boxes[:2], 20, 20), ValueError, "one box per mask"),
        ((masks.half(), boxes, 20, 20), TypeError, "float32 or float64"),
        ((masks, boxes, -1, 20), ValueError, r"height.* must be >= 0"),
        ((masks, boxes, 20.0, 20), TypeError, "height must be an int"),
    ]
    for args, exc, msg in bad:
        with pytest.raises(exc, match=msg):
            paste_masks(*args)
        with pytest.raises(exc, match=msg):
            paste_masks_crops(*args)


def test_opcheck():
    masks, boxes = random_inputs(10, 30, 40, seed=1)
    for args in [(masks, boxes, 30, 40, 0.5), (masks.double(), boxes, 30, 40, 0.25), (masks[:0], boxes[:0], 30, 40, 0.5)]:
        torch.library.opcheck(torch.ops.segdet.paste_masks_crops.default, args,
                              test_utils=("test_schema", "test_faketensor"))


@pytest.mark.cuda  # selected by scripts/gpu_check.sh (pytest -m cuda)
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA build and a GPU")
def test_cuda_matches_cpu():
    masks, boxes = random_inputs(200, 480, 640, seed=11)
    cpu = paste_masks_crops(masks, boxes, 480, 640, 0.5)
    gpu = paste_masks_crops(masks.cuda(), boxes.cuda(), 480, 640, 0.5)
    assert torch.equal(gpu[1].cpu(), cpu[1])
    assert torch.equal(gpu[0].cpu(), cpu[0])
    assert_crops_match(masks.cuda(), boxes.cuda(), 480, 640, 0.5)
