import math

import pytest
import torch
from torchvision.models.detection._utils import BoxCoder

from segdet.modeling.box_regression import Box2BoxTransform


def _boxes(n, g):
    xy = torch.rand(n, 2, generator=g) * 100
    wh = torch.rand(n, 2, generator=g) * 50 + 1
    return torch.cat([xy, xy + wh], 1)


def test_encode_matches_torchvision_and_roundtrips():
    g = torch.Generator().manual_seed(0)
    src, tgt = _boxes(50, g), _boxes(50, g)
    t = Box2BoxTransform((10.0, 10.0, 5.0, 5.0))
    deltas = t.get_deltas(src, tgt)
    want = BoxCoder((10.0, 10.0, 5.0, 5.0)).encode_single(tgt, src)
    torch.testing.assert_close(deltas, want)
    torch.testing.assert_close(t.apply_deltas(deltas, src), tgt, rtol=1e-5, atol=1e-4)


def test_decode_clamps_scale_and_clips():
    t = Box2BoxTransform()
    box = torch.tensor([[10.0, 10.0, 20.0, 20.0]])
    out = t.apply_deltas(torch.tensor([[0.0, 0.0, 100.0, 0.0]]), box)
    assert math.isclose(float(out[0, 2] - out[0, 0]), 10 * 1000 / 16, rel_tol=1e-5)
    clipped = t.apply_deltas(torch.tensor([[0.0, 0.0, 2.0, 2.0]]), box, image_size=(30, 25))
    assert clipped[0].tolist() == pytest.approx([0.0, 0.0, 25.0, 30.0])


def test_bad_shapes():
    with pytest.raises(ValueError, match="Tensor\\[N, 4\\]"):
        Box2BoxTransform().get_deltas(torch.zeros(3, 4), torch.zeros(2, 4))
