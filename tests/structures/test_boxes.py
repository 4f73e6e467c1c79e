import pytest
import torch

from segdet.structures import box_area, box_iou, boxes_to_rois, clip_boxes, min_side_mask, rescale_boxes


def _random_boxes(n, seed, size=100.0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g, dtype=torch.float64) * size
    wh = torch.rand(n, 2, generator=g, dtype=torch.float64) * size / 2
    return torch.cat([xy, xy + wh], dim=1)


def _iou_loop(a, b):
    out = torch.zeros(len(a), len(b), dtype=a.dtype)
    for i, (ax1, ay1, ax2, ay2) in enumerate(a.tolist()):
        for j, (bx1, by1, bx2, by2) in enumerate(b.tolist()):
            iw = max(0.0, min(ax2, bx2) - max(ax1, bx1))
            ih = max(0.0, min(ay2, by2) - max(ay1, by1))
            inter = iw * ih
            union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
            out[i, j] = inter / union if union > 0 else 0.0
    return out


def test_box_area():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 5.0], [2.0, 3.0, 2.0, 7.0], [1.5, 1.0, 4.0, 2.0]])
    torch.testing.assert_close(box_area(boxes), torch.tensor([50.0, 0.0, 2.5]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_box_iou_matches_loop_reference(seed):
    a = _random_boxes(7, seed)
    b = _random_boxes(5, seed + 100)
    torch.testing.assert_close(box_iou(a, b), _iou_loop(a, b))


def test_box_iou_known_values_and_degenerate():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 0.0, 0.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 2.0, 2.0], [5.0, 5.0, 5.0, 5.0]])
    expected = torch.tensor([[1.0 / 7.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    iou = box_iou(a, b)
    assert not torch.isnan(iou).any()
    torch.testing.assert_close(iou, expected)


def test_box_iou_matches_torchvision():
    from torchvision.ops import box_iou as tv_box_iou

    a, b = _random_boxes(20, 5).float(), _random_boxes(13, 6).float()
    torch.testing.assert_close(box_iou(a, b), tv_box_iou(a, b))


def test_box_iou_empty():
    assert box_iou(torch.zeros(0, 4), torch.zeros(3, 4)).shape == (0, 3)
    assert box_iou(torch.zeros(2, 4), torch.zeros(0, 4)).shape == (2, 0)


def test_clip_boxes():
    boxes = torch.tensor([[-5.0, -1.0, 50.0, 20.0], [3.0, 4.0, 5.0, 6.0]])
    clipped = clip_boxes(boxes, (10, 30))
    torch.testing.assert_close(clipped, torch.tensor([[0.0, 0.0, 30.0, 10.0], [3.0, 4.0, 5.0, 6.0]]))
    assert boxes[0, 0] == -5.0  # input untouched


def test_min_side_mask_follows_torchvision_remove_small_boxes():
    from torchvision.ops import remove_small_boxes

    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 3.0, 0.5], [2.0, 2.0, 1.0, 5.0],
                          [0.0, 0.0, 0.5, 0.5]])
    for min_size in (0.0, 0.5, 1.0):
        want = torch.zeros(len(boxes), dtype=torch.bool)
        want[remove_small_boxes(boxes, min_size)] = True
        assert torch.equal(min_side_mask(boxes, min_size), want), min_size
    # a side exactly min_size long is kept, a zero-width box too when min_size is 0; an inverted one never
    assert min_side_mask(boxes, 0.0).tolist() == [True, True, True, False, True]
    assert min_side_mask(boxes, 0.5).tolist() == [True, False, True, False, True]


def test_rescale_boxes():
    out = rescale_boxes(torch.tensor([[10.0, 20.0, 30.0, 40.0]]), (100, 200), (50, 400))
    assert out.tolist() == [[20.0, 10.0, 60.0, 20.0]]
    # the ratio is a float32 division (torchvision's), not a float64 one rounded to float32
    ratio = torch.tensor(800.0) / torch.tensor(333.0)
    assert rescale_boxes(torch.tensor([[1.0, 1.0, 1.0, 1.0]]), (333, 333), (800, 800))[0, 0] == ratio


def test_boxes_to_rois():
    a, b = torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([[5.0, 6.0, 7.0, 8.0], [0.0, 0.0, 1.0, 1.0]])
    assert boxes_to_rois([a, b]).tolist() == [[0, 1, 2, 3, 4], [1, 5, 6, 7, 8], [1, 0, 0, 1, 1]]
    assert boxes_to_rois([a[:0], b[:1]]).tolist() == [[1, 5, 6, 7, 8]]
    like = torch.zeros(1, dtype=torch.float64)
    assert boxes_to_rois([], like=like).shape == (0, 5) and boxes_to_rois([], like=like).dtype == torch.float64
    with pytest.raises(ValueError, match=r"boxes\[1\] must be a Tensor\[L, 4\]"):
        boxes_to_rois([a, torch.zeros(2, 5)])
    with pytest.raises(TypeError, match="boxes must be a list"):
        boxes_to_rois(a)


@pytest.mark.parametrize(
    "bad, err",
    [(torch.zeros(3, 5), ValueError), (torch.zeros(4), ValueError), (torch.zeros(2, 4, dtype=torch.int64), TypeError),
     ([[0, 0, 1, 1]], TypeError)],
)
def test_bad_boxes_raise_naming_argument(bad, err):
    with pytest.raises(err, match="boxes"):
        box_area(bad)
    with pytest.raises(err, match="boxes2"):
        box_iou(torch.zeros(1, 4), bad)
