import numpy as np
import pytest
import torch
from PIL import Image

from segdet.utils.visualize import contact_sheet, draw_instances, instance_colors, label_name, upscale_factor


def _scene():
    image = torch.full((3, 60, 80), 100, dtype=torch.uint8)
    boxes = torch.tensor([[10.0, 20.0, 40.0, 50.0], [50.0, 5.0, 75.0, 30.0]])
    masks = torch.zeros(2, 60, 80, dtype=torch.bool)
    masks[0, 30:45, 15:35] = True
    masks[1, 10:25, 55:70] = True
    return image, boxes, torch.tensor([1, 2]), torch.tensor([0.93, 0.5]), masks


def test_masks_are_blended_with_instance_colour():
    image, boxes, labels, scores, masks = _scene()
    pic = draw_instances(image, boxes, labels, scores, masks, ["cat", "dog"], mask_alpha=0.5, min_side=None)
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
    arr = np.asarray(draw_instances(image, boxes, labels, scores, None, ["cat", "dog"], min_side=None))
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
                         torch.zeros(0, 20, 30, dtype=torch.bool), min_side=None)
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


def test_upscale_factor():
    assert upscale_factor(128, 128) == 4 and upscale_factor(60, 80) == 9 and upscale_factor(600, 800) == 1
    assert upscale_factor(128, 128, None) == 1 and upscale_factor(100, 500, 300) == 3


def test_small_images_drawn_upscaled_so_captions_leave_objects_visible():
    image, boxes, labels, scores, masks = _scene()
    colors = instance_colors(2)
    small = np.asarray(draw_instances(image, boxes, labels, scores, masks, ["cat", "dog"], min_side=None))
    big = np.asarray(draw_instances(image, boxes, labels, scores, masks, ["cat", "dog"]))
    assert big.shape == (540, 720, 3)  # factor 9: shorter side >= 512
    # Box 0's left edge at x = 10 px is at 90 px in the picture, its bottom edge (y = 50) at 450 px.
    assert tuple(big[300, 90]) == colors[0] and tuple(big[450, 200]) == colors[0]

    def covered(arr, scale):
        # Fraction of mask 0's inner pixels (rows 31..43, cols 16..33) not showing the blended mask colour:
        # hidden under a caption.
        blend = np.round(100 * (1 - 0.45) + np.asarray(colors[0]) * 0.45)
        inner = arr[(30 + 1) * scale:(45 - 1) * scale, (15 + 1) * scale:(35 - 1) * scale].astype(int)
        return float((np.abs(inner - blend).max(axis=-1) > 1).mean())

    # Drawn 1:1, instance 0's caption (the ~11 px font) covers a quarter of its 15 x 20 px mask; upscaled, the
    # same font covers none of it.
    assert covered(small, 1) > 0.1
    assert covered(big, 9) < 0.02


def test_masks_outlined_in_full_colour():
    image, boxes, labels, scores, masks = _scene()
    arr = np.asarray(draw_instances(image, None, None, None, masks, min_side=None, outline_width=2))
    color = instance_colors(2)[0]
    # Mask 0 spans rows 30..44, cols 15..34: its border rows/cols are opaque, the inside blended.
    for y, x in [(30, 20), (31, 20), (44, 25), (37, 15), (37, 34)]:
        assert tuple(arr[y, x]) == color, (y, x)
    assert tuple(arr[37, 25]) != color and tuple(arr[32, 25]) != color
    assert tuple(arr[29, 20]) == (100, 100, 100)  # just outside: untouched
    fill_only = np.asarray(draw_instances(image, None, None, None, masks, min_side=None, outline_width=0))
    assert tuple(fill_only[30, 20]) != color


def test_mask_crops_draw_like_full_masks():
    image, boxes, labels, scores, masks = _scene()
    crops = [(masks[0, 30:45, 15:35].numpy(), 15, 30), (masks[1, 5:30, 50:75].numpy(), 50, 5)]
    full = np.asarray(draw_instances(image, boxes, labels, scores, masks, ["cat", "dog"]))
    from_crops = np.asarray(draw_instances(image, boxes, labels, scores, crops, ["cat", "dog"]))
    assert np.array_equal(full, from_crops)
    with pytest.raises(ValueError, match="does not fit"):
        draw_instances(image, masks=[(np.ones((5, 5), bool), 78, 0)])


def test_contact_sheet():
    pics = [Image.new("RGB", (128, 64), (255, 0, 0)), Image.new("RGB", (40, 40), (0, 255, 0)),
            Image.new("RGB", (300, 600), (0, 0, 255))]
    sheet = contact_sheet(pics, ["a.png", "b.png", "a_very_long_file_name_that_does_not_fit_the_cell.png"], tile=100)
    cols, rows = 2, 2
    assert sheet.size == (cols * 104 + 4, rows * (100 + 18 + 4) + 4)
    arr = np.asarray(sheet)
    assert tuple(arr[4 + 50, 4 + 50]) == (255, 0, 0)            # first cell: red, fitted to 100 x 50
    assert tuple(arr[4 + 50, 4 + 104 + 50]) == (0, 255, 0)      # second: green, enlarged to 100 x 100
    assert tuple(arr[4 + 122 + 50, 4 + 50]) == (0, 0, 255)      # third row: blue
    assert tuple(arr[4 + 122 + 50, 4 + 104 + 50]) == (40, 40, 40)  # empty cell
    with pytest.raises(ValueError, match="captions"):
        contact_sheet(pics, ["x"])
