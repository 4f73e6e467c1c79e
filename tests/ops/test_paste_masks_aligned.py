"""segdet.ops.paste_masks_aligned / paste_masks_aligned_crops: pixel-centre pasting, the inverse of aligned RoI Align.

Oracle: F.grid_sample(align_corners=False, zero padding) evaluated at every pixel centre, one detection at a time,
in float64 (the op's float64 path must give the same booleans; pixels within 1e-9 of the threshold are excluded)."""
import pytest
import torch
import torch.nn.functional as F

from segdet.modeling.meta_arch import MaskRCNN
from segdet.ops import paste_masks, paste_masks_aligned, paste_masks_aligned_crops, roi_align


def _grid_sample_paste(masks, boxes, height, width):
    ys = torch.arange(height, dtype=torch.float64) + 0.5
    xs = torch.arange(width, dtype=torch.float64) + 0.5
    out = []
    for m, b in zip(masks.double(), boxes.double()):
        gx = (xs - b[0]) / (b[2] - b[0]) * 2 - 1
        gy = (ys - b[1]) / (b[3] - b[1]) * 2 - 1
        grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)[None]
        out.append(F.grid_sample(m[None, None], grid, align_corners=False)[0, 0])
    return torch.stack(out) if out else torch.zeros(0, height, width, dtype=torch.float64)


def _random_case(seed, d=24, s=28, height=61, width=77):
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(d, s, s, generator=g, dtype=torch.float64)
    xy = torch.rand(d, 2, generator=g, dtype=torch.float64) * torch.tensor([width, height]) - 8
    wh = torch.rand(d, 2, generator=g, dtype=torch.float64) * 45 + 0.3
    return masks, torch.cat([xy, xy + wh], dim=1), height, width


def _crops_to_full(crops, regions, height, width):
    full = torch.zeros(len(regions), height, width, dtype=torch.bool)
    offset = 0
    for i, (x, y, w, h) in enumerate(regions.tolist()):
        full[i, y:y + h, x:x + w] = crops[offset:offset + w * h].reshape(h, w)
        offset += w * h
    assert offset == crops.numel()
    return full


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_matches_grid_sample_at_pixel_centres(seed, threshold):
    masks, boxes, h, w = _random_case(seed)
    ref = _grid_sample_paste(masks, boxes, h, w)
    decided = (ref - threshold).abs() > 1e-9
    out = paste_masks_aligned(masks, boxes, h, w, threshold)
    assert out.dtype == torch.bool and out.shape == (len(boxes), h, w)
    assert torch.equal(out[decided], (ref > threshold)[decided])
    # float32 inputs: the same masks up to pixels within float32 rounding of the threshold.
    out32 = paste_masks_aligned(masks.float(), boxes.float(), h, w, threshold)
    clear = (ref - threshold).abs() > 1e-4
    assert torch.equal(out32[clear], (ref > threshold)[clear])


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.0])  # below 0.5 the mask reaches past the box by < 1 cell
def test_crops_hold_exactly_the_full_image_masks(seed, threshold):
    masks, boxes, h, w = _random_case(seed)
    full = paste_masks_aligned(masks, boxes, h, w, threshold)
    crops, regions = paste_masks_aligned_crops(masks, boxes, h, w, threshold)
    assert regions.dtype == torch.int64 and regions.shape == (len(boxes), 4)
    assert torch.equal(_crops_to_full(crops, regions, h, w), full)  # also: False outside every region


def test_a_mask_of_ones_covers_exactly_the_pixels_whose_centres_are_in_the_box():
    ones = torch.ones(1, 28, 28)
    box = torch.tensor([[2.0, 3.0, 10.0, 7.0]])
    aligned = paste_masks_aligned(ones, box, 12, 14)[0]
    expected = torch.zeros(12, 14, dtype=torch.bool)
    expected[3:7, 2:10] = True
    assert torch.equal(aligned, expected)
    # torchvision's pasting (segdet.ops.paste_masks) grows the same mask by a pixel on each side.
    tv = paste_masks(ones, box, 12, 14)[0]
    assert tv.sum() > aligned.sum() and tv[expected].all()


def test_round_trip_with_aligned_roi_align_keeps_the_shape():
    # A GT mask sampled into 28 x 28 by aligned RoI Align (how targets are made) and pasted back into the same box
    # gives back the GT mask, up to the boundary pixels the 28 x 28 sampling cannot resolve.
    yy, xx = torch.meshgrid(torch.arange(64) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    gt = (((xx - 30.3) / 14.2) ** 2 + ((yy - 25.8) / 9.1) ** 2 <= 1).float()
    box = torch.tensor([[30.3 - 14.2, 25.8 - 9.1, 30.3 + 14.2, 25.8 + 9.1]])
    target = roi_align(gt[None, None], torch.cat([torch.zeros(1, 1), box], 1), (28, 28), 1.0, 0, True)[:, 0]
    for paste, max_wrong in ((paste_masks_aligned, 6), (paste_masks, None)):
        back = paste(target, box, 64, 64, 0.5)[0]
        wrong = int((back != gt.bool()).sum())
        if max_wrong is not None:
            assert wrong <= max_wrong, wrong
        else:
            torchvision_wrong = wrong
    assert torchvision_wrong > 6  # the one-pixel growth shows on a 28 x 18 px ellipse


def test_degenerate_inputs_give_empty_masks():
    masks = torch.rand(4, 28, 28)
    boxes = torch.tensor([[5.0, 5.0, 5.0, 9.0], [float("nan"), 0, 4, 4], [50.0, 50.0, 60.0, 60.0], [2, 2, 1, 1.0]])
    out = paste_masks_aligned(masks, boxes, 20, 20)
    assert not out.any()
    crops, regions = paste_masks_aligned_crops(masks, boxes, 20, 20)
    assert crops.numel() == 0 and torch.equal(regions, torch.zeros(4, 4, dtype=torch.int64))
    empty = paste_masks_aligned(torch.zeros(0, 28, 28), torch.zeros(0, 4), 7, 9)
    assert empty.shape == (0, 7, 9)
    crops, regions = paste_masks_aligned_crops(torch.zeros(0, 28, 28), torch.zeros(0, 4), 7, 9)
    assert crops.numel() == 0 and regions.shape == (0, 4)


@pytest.mark.parametrize("args,exc,match", [
    ((torch.rand(2, 28, 27), torch.rand(2, 4), 8, 8, 0.5), ValueError, "masks must be"),
    ((torch.rand(2, 28, 28), torch.rand(3, 4), 8, 8, 0.5), ValueError, "rows"),
    ((torch.rand(2, 28, 28), torch.rand(2, 5), 8, 8, 0.5), ValueError, "boxes must be"),
    ((torch.rand(2, 28, 28), torch.rand(2, 4), 8, 8, 1.5), ValueError, "threshold"),
    ((torch.rand(2, 28, 28), torch.rand(2, 4), 8.0, 8, 0.5), TypeError, "height"),
    ((torch.rand(2, 28, 28).int(), torch.rand(2, 4), 8, 8, 0.5), TypeError, "floating point"),
])
def test_bad_arguments_name_the_argument(args, exc, match):
    with pytest.raises(exc, match=match):
        paste_masks_aligned(*args)
    with pytest.raises(exc, match=match):
        paste_masks_aligned_crops(*args)


def test_model_mask_paste_is_checked_and_used(monkeypatch):
    with pytest.raises(ValueError, match="mask_paste"):
        MaskRCNN(backbone=torch.nn.Identity(), rpn=torch.nn.Identity(), roi_heads=torch.nn.Identity(), num_classes=2,
                 mask_paste="nearest")
    model = MaskRCNN(backbone=torch.nn.Identity(), rpn=torch.nn.Identity(), roi_heads=torch.nn.Identity(),
                     num_classes=2, mask_paste="aligned")
    from segdet.structures import Instances

    inst = Instances((40, 50))
    inst.pred_boxes = torch.tensor([[3.0, 4.0, 20.0, 30.0], [10.0, 2.0, 45.0, 12.0]])
    inst.scores = torch.tensor([0.9, 0.8])
    inst.pred_classes = torch.tensor([1, 2])
    inst.pred_masks = torch.rand(2, 28, 28)
    out = model.postprocess([inst], [(40, 50)])[0]
    assert torch.equal(out["masks"], paste_masks_aligned(inst.pred_masks, inst.pred_boxes, 40, 50, 0.5))
    model.mask_output = "deferred"
    deferred = model.postprocess([inst], [(40, 50)])[0]
    assert deferred["mask_paste"] == "aligned"
    from segdet.evaluation.coco_results import encode_mask_results, output_rles

    assert output_rles(deferred) == encode_mask_results(out["masks"])


# ---- the C++ op: dtypes, layouts, tracing ------------------------------------------------------------------------
HAS_CUDA = torch.cuda.is_available()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_masks_paste_as_their_float32_values(dtype):
    masks, boxes, h, w = _random_case(4)
    low = masks.to(dtype)
    assert torch.equal(paste_masks_aligned(low, boxes.float(), h, w),
                       paste_masks_aligned(low.float(), boxes.float(), h, w))
    crops, regions = paste_masks_aligned_crops(low, boxes.to(dtype), h, w)
    ref_crops, ref_regions = paste_masks_aligned_crops(low.float(), boxes.to(dtype).float(), h, w)
    assert torch.equal(crops, ref_crops) and torch.equal(regions, ref_regions)


def test_float64_boxes_with_float32_masks_use_the_boxes_in_float32():
    # Sampling runs in the masks' compute type, so the boxes are rounded to float32 first; the regions come from
    # the boxes as given (the same here: the region has half a mask cell of margin on each side).
    masks, boxes, h, w = _random_case(5)
    masks = masks.float()
    assert torch.equal(paste_masks_aligned(masks, boxes, h, w), paste_masks_aligned(masks, boxes.float(), h, w))


def test_non_contiguous_inputs():
    masks, boxes, h, w = _random_case(6)
    masks_t = masks.transpose(1, 2).contiguous().transpose(1, 2)
    boxes_t = boxes.t().contiguous().t()
    assert not masks_t.is_contiguous() and not boxes_t.is_contiguous()
    assert torch.equal(paste_masks_aligned(masks_t, boxes_t, h, w), paste_masks_aligned(masks, boxes, h, w))
    crops, regions = paste_masks_aligned_crops(masks_t, boxes_t, h, w)
    assert torch.equal(_crops_to_full(crops, regions, h, w), paste_masks_aligned(masks, boxes, h, w))


def test_nan_masks_are_background_and_infinite_boxes_empty():
    masks = torch.full((2, 28, 28), float("nan"))
    boxes = torch.tensor([[2.0, 2.0, 20.0, 20.0], [0.0, 0.0, float("inf"), 9.0]])
    assert not paste_masks_aligned(masks, boxes, 30, 30).any()
    ones = torch.ones(1, 28, 28)
    assert not paste_masks_aligned(ones, boxes[1:], 30, 30).any()
    assert torch.equal(paste_masks_aligned_crops(ones, boxes[1:], 30, 30)[1], torch.zeros(1, 4, dtype=torch.int64))


def test_results_do_not_depend_on_the_thread_count():
    masks, boxes, h, w = _random_case(7, d=40, height=300, width=200)
    boxes = boxes * 4
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = paste_masks_aligned(masks, boxes, h, w), paste_masks_aligned_crops(masks, boxes, h, w)
        torch.set_num_threads(2)
        two = paste_masks_aligned(masks, boxes, h, w), paste_masks_aligned_crops(masks, boxes, h, w)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], two[0]) and all(torch.equal(a, b) for a, b in zip(one[1], two[1]))


def test_negative_threshold_is_refused_by_the_op_itself():
    with pytest.raises(ValueError, match="paste_masks_aligned: threshold must be in"):
        torch.ops.segdet.paste_masks_aligned(torch.rand(1, 28, 28), torch.rand(1, 4), 8, 8, -0.1)
    with pytest.raises(ValueError, match="paste_masks_aligned_crops: height and width"):
        torch.ops.segdet.paste_masks_aligned_crops(torch.rand(1, 28, 28), torch.rand(1, 4), -1, 8, 0.5)


def _sample_inputs(device):
    masks, boxes, h, w = _random_case(8, d=6)
    masks, boxes = masks.float().to(device), boxes.float().to(device)
    return [(masks, boxes, h, w, 0.5), (masks.double(), boxes, h, w, 0.25),
            (masks.bfloat16(), boxes.double(), 0, w, 0.5), (masks[:0], boxes[:0], h, w, 0.5)]


@pytest.mark.parametrize(
    "device", ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda,
                                          pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")])]
)
def test_opcheck(device):
    for args in _sample_inputs(device):
        torch.library.opcheck(torch.ops.segdet.paste_masks_aligned.default, args)
        torch.library.opcheck(torch.ops.segdet.paste_masks_aligned_crops.default, args)


def test_export_keeps_a_symbolic_image_size():
    class Paste(torch.nn.Module):
        def forward(self, image, masks, boxes):
            return paste_masks_aligned(masks, boxes, image.shape[-2], image.shape[-1], 0.5)

    masks, boxes, _, _ = _random_case(9, d=5)
    masks, boxes = masks.float(), boxes.float()
    dims = {"image": {0: torch.export.Dim("h", min=8, max=256), 1: torch.export.Dim("w", min=8, max=256)},
            "masks": None, "boxes": None}
    ep = torch.export.export(Paste(), (torch.zeros(50, 60), masks, boxes), dynamic_shapes=dims, strict=True)
    out = ep.module()(torch.zeros(70, 45), masks, boxes)
    assert torch.equal(out, paste_masks_aligned(masks, boxes, 70, 45))


@pytest.mark.cuda  # selected by scripts/gpu_check.sh (pytest -m cuda)
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")
def test_cuda_equals_cpu():
    # The kernels share paste_masks_aligned_math.h and round every step alike: the same masks, bit for bit.
    for seed in (10, 11):
        masks, boxes, h, w = _random_case(seed, d=60, height=400, width=500)
        boxes = boxes * 6
        for m, b in ((masks.float(), boxes.float()), (masks, boxes), (masks.bfloat16(), boxes.float())):
            assert torch.equal(paste_masks_aligned(m.cuda(), b.cuda(), h, w).cpu(), paste_masks_aligned(m, b, h, w))
            crops, regions = paste_masks_aligned_crops(m.cuda(), b.cuda(), h, w)
            ref_crops, ref_regions = paste_masks_aligned_crops(m, b, h, w)
            assert torch.equal(crops.cpu(), ref_crops) and torch.equal(regions.cpu(), ref_regions)
