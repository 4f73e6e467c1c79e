import numpy as np
import pytest
import torch
from PIL import Image

from segdet.utils.visualize import draw_instances, instance_colors, label_name


def _scene():
    image = torch.full((3, 60, 80), 100, dtype=torch.uint8)
    boxes = torch.tensor([[10.0, 20.0, 40.0, 50.0], [50.0, 5.0, 75.0, 30.0]])
    masks = torch.zeros(2, 60, 80, dtype=torch.bool)
    masks[0, 30:45, 15:35] = True
    masks[1, 10:25, 55:70] = True
    return image, boxes, torch.tensor([1, 2]), torch.tensor([0.93, 0.5]), masks


def test_masks_are_blended_with_instance_colour():
    image, boxes, labels, scores, masks = _scene()
    pic = draw_instances(image, boxes, labels, scores, masks, ["cat", "dog"], mask_alpha=0.5)
    assert isinstance(pic, Image.Image) and pic.size == (80, 60) and pic.mode == "RGB"
    arr = np.asarray(pic).astype(int)
    colors = instance_colors(2)
    for i, (y, x) in enumerate([(40, 25), (20, 62)]):
        expected = [round(100 * 0.5 + c * 0.5) for c in colors[i]]
        assert np.abs(arr[y, x] - expected).max() <= 1
    # Far from every instance the image is untouched.
    assert (arr[58, 2] == 100).all()


def test_box_outline_drawn():
    image, boxes, labels, scores, _ = _scene()
    arr = np.asarray(draw_instances(image, boxes, labels, scores, None, ["cat", "dog"]))
    color = instance_colors(2)[0]
    # Middle of the left edge and bottom edge of box 0 carry its colour.
    assert tuple(arr[35, 10]) == color and tuple(arr[50, 25]) == color
    assert tuple(arr[35, 25]) == (100, 100, 100)  # inside, no mask


def test_caption_changes_pixels_and_depends_on_text():
    image, boxes, labels, _, _ = _scene()
    a = np.asarray(draw_instances(image, boxes[:1], labels[:1], torch.tensor([0.93]), None, ["cat"]))
    b = np.asarray(draw_instances(image, boxes[:1], labels[:1], torch.tensor([0.12]), None, ["cat"]))
    plain = np.asarray(draw_instances(image, boxes[:1]))
    assert not np.array_equal(a, b)  # the score is part of the caption
    assert not np.array_equal(a, plain)


def test_label_names():
    assert label_name(2, ["cat", "dog"]) == "dog"
    assert label_name(3, ["cat", "dog"]) == "class_3"
    assert label_name(7, {7: "x"}) == "x"
    assert label_name(1, None) == "class_1"


def test_accepts_hwc_numpy_float_and_empty():
    image = np.zeros((20, 30, 3), dtype=np.float32)
    pic = draw_instances(image, torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64), torch.zeros(0),
                         torch.zeros(0, 20, 30, dtype=torch.bool))
    assert pic.size == (30, 20)
    assert np.asarray(pic).max() == 0


def test_bad_inputs_named():
    image, boxes, labels, scores, masks = _scene()
    with pytest.raises(ValueError, match="image"):
        draw_instances(torch.zeros(60, 80, dtype=torch.uint8))
    with pytest.raises(ValueError, match="masks"):
        draw_instances(image, masks=torch.zeros(2, 10, 10, dtype=torch.bool))
    with pytest.raises(ValueError, match="same number"):
        draw_instances(image, boxes, labels[:1])
    with pytest.raises(ValueError, match="boxes"):
        draw_instances(image, torch.zeros(2, 5))
