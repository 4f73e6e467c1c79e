import pytest
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList as TVImageList

from segdet.modeling.anchor_generator import AnchorGenerator

SIZES = ((32,), (64,), (128,), (256,), (512,))


@pytest.mark.parametrize("image_hw", [(320, 480), (352, 224)])
def test_matches_torchvision_including_inferred_p6_stride(image_hw):
    # 480 / 32 = 15 is odd, so p6 is 8 wide and torchvision's inferred stride is 480 // 8 = 60, not 64.
    h, w = image_hw
    shapes = [(-(-h // s), -(-w // s)) for s in (4, 8, 16, 32)]
    shapes.append((-(-shapes[-1][0] // 2), -(-shapes[-1][1] // 2)))
    ours = AnchorGenerator(sizes=SIZES, aspect_ratios=(0.5, 1.0, 2.0), strides=None, round_base=True)
    got = ours(image_hw, shapes)
    tv = TVAnchorGenerator(SIZES, ((0.5, 1.0, 2.0),) * 5)
    feats = [torch.zeros(1, 1, *s) for s in shapes]
    want = tv(TVImageList(torch.zeros(1, 3, h, w), [image_hw]), feats)[0]
    assert torch.equal(torch.cat(got), want)


def test_layout_counts_and_fixed_strides():
    gen = AnchorGenerator(sizes=((16,), (32,)), aspect_ratios=(0.5, 1.0, 2.0), strides=(4, 8), round_base=False)
    assert gen.num_anchors_per_location == [3, 3]
    anchors = gen((32, 64), [(8, 16), (4, 8)])
    assert [a.shape for a in anchors] == [(8 * 16 * 3, 4), (4 * 8 * 3, 4)]
    a = anchors[0].view(8, 16, 3, 4)
    # (H, W, A) order: moving one column shifts x by the stride, one row shifts y.
    assert torch.allclose(a[0, 1] - a[0, 0], torch.tensor([4.0, 0, 4, 0]))
    assert torch.allclose(a[1, 0] - a[0, 0], torch.tensor([0.0, 4, 0, 4]))
    # area is size^2 for every ratio, and height / width is the ratio
    wh = a[0, 0, :, 2:] - a[0, 0, :, :2]
    assert torch.allclose(wh.prod(1), torch.full((3,), 256.0))
    assert torch.allclose(wh[:, 1] / wh[:, 0], torch.tensor([0.5, 1.0, 2.0]))


def test_cached_per_shape():
    gen = AnchorGenerator(sizes=((32,),), aspect_ratios=(1.0,), strides=(8,))
    a = gen((64, 64), [(8, 8)])
    assert gen((64, 64), [(8, 8)]) is a
    assert gen((64, 128), [(8, 16)]) is not a


def test_bad_arguments():
    with pytest.raises(ValueError, match="aspect_ratios"):
        AnchorGenerator(sizes=((32,), (64,)), aspect_ratios=[(1.0,)] * 3)
    gen = AnchorGenerator(sizes=((32,), (64,)))
    with pytest.raises(ValueError, match="feature_shapes"):
        gen((64, 64), [(16, 16)])
