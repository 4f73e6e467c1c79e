from collections import OrderedDict

import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops.poolers import LevelMapper

from segdet.modeling.poolers import ROIPooler, assign_boxes_to_levels

SCALES = [1 / 4, 1 / 8, 1 / 16, 1 / 32]


def test_level_mapping_matches_torchvision_including_boundaries():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(300, 2, generator=g) * 200
    side = torch.cat([torch.rand(290, generator=g) * 600 + 1, torch.tensor([56.0, 112, 224, 448, 896, 1, 2, 3, 4, 5])])
    boxes = torch.cat([xy, xy + side[:, None]], 1)
    mapper = LevelMapper(2, 5, canonical_scale=224, canonical_level=4, eps=1e-6)
    assert torch.equal(assign_boxes_to_levels(boxes, 2, 5), mapper([boxes]))
    assert assign_boxes_to_levels(torch.tensor([[0.0, 0, 224, 224]]), 2, 5).item() == 2  # p4


@pytest.mark.parametrize("output_size,sampling_ratio", [(7, 2), (14, 2)])
def test_matches_torchvision_multiscale_roi_align(output_size, sampling_ratio):
    g = torch.Generator().manual_seed(0)
    h, w = 128, 192
    feats = [torch.randn(2, 8, h // s, w // s, generator=g) for s in (4, 8, 16, 32)]
    boxes = []
    for _ in range(2):
        xy = torch.rand(40, 2, generator=g) * 100
        wh = torch.rand(40, 2, generator=g) * 120 + 2
        boxes.append(torch.cat([xy, xy + wh], 1))
    ours = ROIPooler(output_size=output_size, scales=SCALES, sampling_ratio=sampling_ratio, aligned=False)(feats, boxes)
    tv = MultiScaleRoIAlign(["0", "1", "2", "3"], output_size, sampling_ratio)
    want = tv(OrderedDict((str(i), f) for i, f in enumerate(feats)), boxes, [(h, w), (h, w)])
    torch.testing.assert_close(ours, want, rtol=1e-5, atol=1e-5)


def test_empty_boxes_and_bad_arguments():
    pooler = ROIPooler(output_size=7, scales=SCALES)
    feats = [torch.randn(1, 4, 32 // s, 32 // s) for s in (4, 8, 16, 32)]
    assert pooler(feats, [torch.zeros(0, 4)]).shape == (0, 4, 7, 7)
    with pytest.raises(ValueError, match="powers of 2"):
        ROIPooler(output_size=7, scales=[0.3])
    with pytest.raises(ValueError, match="one per image"):
        pooler(feats, [torch.zeros(0, 4), torch.zeros(0, 4)])
