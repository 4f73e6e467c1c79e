import torch
from torchvision.models.detection.roi_heads import paste_masks_in_image as tv_paste

from segdet.modeling.postprocessing import paste_masks_in_image, rescale_boxes


def test_paste_matches_torchvision_thresholded():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(20, 28, 28, generator=g)
    xy = torch.rand(20, 2, generator=g) * 70  # some boxes hang over the bottom/right border
    wh = torch.rand(20, 2, generator=g) * 60 + 0.5
    boxes = torch.cat([xy, xy + wh], 1)
    ours = paste_masks_in_image(masks, boxes, (80, 100))
    want = tv_paste(masks[:, None], boxes, (80, 100))[:, 0] > 0.5
    assert ours.dtype == torch.bool and ours.shape == (20, 80, 100)
    assert torch.equal(ours, want)


def test_compiled_paste_op_matches_the_python_pasting():
    from segdet.ops import paste_masks

    g = torch.Generator().manual_seed(1)
    masks = torch.rand(30, 28, 28, generator=g)
    xy = torch.rand(30, 2, generator=g) * 120 - 20
    boxes = torch.cat([xy, xy + torch.rand(30, 2, generator=g) * 80 + 0.1], 1)
    assert torch.equal(paste_masks(masks, boxes, 90, 110), paste_masks_in_image(masks, boxes, (90, 110)))


def test_paste_full_mask_fills_its_box_only():
    out = paste_masks_in_image(torch.ones(1, 28, 28), torch.tensor([[10.0, 20.0, 50.0, 40.0]]), (64, 64))
    ys, xs = torch.nonzero(out[0], as_tuple=True)
    assert 9 <= xs.min() <= 11 and 49 <= xs.max() <= 51 and 19 <= ys.min() <= 21 and 39 <= ys.max() <= 41
    assert paste_masks_in_image(torch.zeros(0, 28, 28), torch.zeros(0, 4), (5, 6)).shape == (0, 5, 6)


def test_rescale_boxes():
    out = rescale_boxes(torch.tensor([[10.0, 20.0, 30.0, 40.0]]), (100, 200), (50, 400))
    assert out.tolist() == [[20.0, 10.0, 60.0, 20.0]]
