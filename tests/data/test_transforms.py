import numpy as np
import pytest
import torch

from segdet.data.shapes import ShapesParams, render_image
from segdet.data.transforms import Compose, RandomHorizontalFlip, ResizeShortestEdge, build_transforms


def _sample(height=48, width=64, index=0):
    """An image with exact instance masks (shapes generator) and boxes equal to the boxes of the masks."""
    size = max(height, width)
    image, labels, masks, _ = render_image(ShapesParams(image_size=size, min_shapes=3, max_shapes=3), "train", index)
    image = torch.from_numpy(image[:height, :width]).permute(2, 0, 1).contiguous()
    masks = torch.from_numpy(masks[:, :height, :width].astype(np.uint8))
    keep = masks.flatten(1).sum(1) > 0
    masks = masks[keep]
    target = {"boxes": _mask_boxes(masks), "labels": torch.tensor(labels)[keep], "masks": masks, "image_id": 3}
    return image, target


def _mask_boxes(masks):
    boxes = []
    for m in masks:
        ys, xs = torch.nonzero(m, as_tuple=True)
        boxes.append([xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1])
    return torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)


def test_flip_keeps_boxes_and_masks_consistent_exactly():
    image, target = _sample()
    assert len(target["boxes"]) >= 2
    out_image, out = RandomHorizontalFlip(1.0)(image, target)
    assert torch.equal(out_image, image.flip(-1))
    assert torch.equal(out["boxes"], _mask_boxes(out["masks"]))
    assert torch.equal(out["masks"], target["masks"].flip(-1))
    assert out["labels"] is target["labels"] and out["image_id"] == 3
    same_image, same = RandomHorizontalFlip(0.0)(image, target)
    assert same_image is image and same is target


@pytest.mark.parametrize("short, max_size, expected_hw", [(96, None, (96, 128)), (24, None, (24, 32)),
                                                          (96, 100, (75, 100))])
def test_resize_keeps_boxes_and_masks_consistent(short, max_size, expected_hw):
    image, target = _sample()
    out_image, out = ResizeShortestEdge(short, max_size)(image, target)
    assert out_image.dtype == torch.uint8 and out_image.shape == (3, *expected_hw)
    assert out["masks"].dtype == torch.uint8 and out["masks"].shape[-2:] == expected_hw
    assert set(out["masks"].unique().tolist()) <= {0, 1}
    scale = torch.tensor([expected_hw[1] / 64, expected_hw[0] / 48] * 2)
    assert torch.allclose(out["boxes"], target["boxes"] * scale)
    # nearest-neighbour sampling moves a mask edge by less than one output pixel (plus half an input pixel)
    tolerance = 1.0 + 0.5 * scale.max().item()
    assert (out["boxes"] - _mask_boxes(out["masks"])).abs().max().item() <= tolerance
    # the resized image is the same picture: mean colour is preserved
    assert torch.allclose(out_image.float().mean((1, 2)), image.float().mean((1, 2)), atol=2.0)


def test_resize_draws_sizes_from_the_generator_and_handles_no_instances():
    image = torch.zeros(3, 40, 80, dtype=torch.uint8)
    target = {"boxes": torch.zeros(0, 4), "masks": torch.zeros(0, 40, 80, dtype=torch.uint8)}
    resize = ResizeShortestEdge([20, 30, 60], max_size=1000)
    heights = set()
    for seed in range(30):
        a, ta = resize(image, target, generator=torch.Generator().manual_seed(seed))
        b, _ = resize(image, target, generator=torch.Generator().manual_seed(seed))
        assert a.shape == b.shape and ta["masks"].shape == (0, *a.shape[-2:]) and ta["boxes"].shape == (0, 4)
        heights.add(a.shape[-2])
    assert heights == {20, 30, 60}


def test_compose_is_deterministic_given_the_generator():
    image, target = _sample()
    transform = build_transforms(is_train=True, min_size=[32, 40, 56], max_size=200, flip_prob=0.5)
    assert isinstance(transform, Compose) and len(transform.transforms) == 2
    results = [transform(image, target, generator=torch.Generator().manual_seed(s)) for s in (7, 7, 8, 9, 10, 11)]
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1]["boxes"], results[1][1]["boxes"])
    assert len({tuple(r[0].shape) for r in results}) > 1
    for out_image, out in results:
        assert (out["boxes"] - _mask_boxes(out["masks"])).abs().max().item() <= 2.0


def test_build_transforms_variants_and_bad_arguments():
    assert build_transforms(is_train=True, flip_prob=0.0) is None
    assert build_transforms(is_train=False, min_size=[10, 20], flip_prob=0.5) is None
    test = build_transforms(is_train=False, test_min_size=32, max_size=64)
    assert isinstance(test.transforms[0], ResizeShortestEdge) and test.transforms[0].min_sizes == [32]
    with pytest.raises(ValueError, match="min_size"):
        ResizeShortestEdge([])
    with pytest.raises(ValueError, match="max_size"):
        ResizeShortestEdge(10, max_size=0)
    with pytest.raises(ValueError, match="prob"):
        RandomHorizontalFlip(1.5)
