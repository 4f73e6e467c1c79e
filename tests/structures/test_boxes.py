import pytest
import torch

from segdet.structures import box_area, box_iou, clip_boxes, nonempty_boxes, scale_boxes


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


def test_nonempty_boxes():
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 3.0, 0.5], [2.0, 2.0, 1.0, 5.0]])
    assert nonempty_boxes(boxes).tolist() == [True, False, True, False]
    assert nonempty_boxes(boxes, min_size=0.5).tolist() == [True, False, False, False]


def test_scale_boxes():
    boxes = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    torch.testing.assert_close(scale_boxes(boxes, 2.0), torch.tensor([[2.0, 4.0, 6.0, 8.0]]))
    torch.testing.assert_close(scale_boxes(boxes, 2.0, 0.5), torch.tensor([[2.0, 1.0, 6.0, 2.0]]))


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
