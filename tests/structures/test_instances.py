import pytest
import torch

from segdet.structures import Instances


def _make(n=4):
    return Instances(
        (20, 30),
        gt_boxes=torch.arange(4 * n, dtype=torch.float32).reshape(n, 4),
        gt_labels=torch.arange(1, n + 1),
        names=[f"obj{i}" for i in range(n)],
    )


def test_fields_get_set_len():
    inst = _make()
    assert len(inst) == 4 and inst.image_size == (20, 30)
    assert inst.has("gt_boxes") and "gt_labels" in inst and not inst.has("pred_boxes")
    assert inst.get("pred_boxes") is None
    inst.pred_boxes = torch.zeros(4, 4)
    assert inst.get("pred_boxes").shape == (4, 4)
    inst.set("scores", torch.ones(4))
    assert torch.equal(inst.scores, torch.ones(4))
    assert set(inst.get_fields()) == {"gt_boxes", "gt_labels", "names", "pred_boxes", "scores"}
    del inst.scores
    assert not inst.has("scores")
    with pytest.raises(AttributeError, match="scores"):
        inst.scores


def test_length_mismatch_rejected():
    inst = _make()
    with pytest.raises(ValueError, match="pred_boxes"):
        inst.pred_boxes = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="image_size"):
        Instances((1, 2, 3))
    with pytest.raises(ValueError, match="image_size"):
        inst.image_size = [1, 2, 3, 4]
    with pytest.raises(ValueError, match="'to'"):
        Instances((2, 2), to=torch.zeros(2))


def test_empty():
    inst = Instances((5, 5))
    assert len(inst) == 0
    inst.gt_boxes = torch.zeros(0, 4)
    assert len(inst) == 0


def test_indexing_keeps_fields_aligned():
    inst = _make()
    mask = torch.tensor([True, False, True, False])
    sub = inst[mask]
    assert len(sub) == 2 and sub.image_size == (20, 30)
    assert sub.gt_labels.tolist() == [1, 3]
    assert sub.names == ["obj0", "obj2"]
    torch.testing.assert_close(sub.gt_boxes, inst.gt_boxes[[0, 2]])

    order = inst[torch.tensor([3, 1])]
    assert order.gt_labels.tolist() == [4, 2] and order.names == ["obj3", "obj1"]

    one = inst[1]
    assert len(one) == 1 and one.gt_boxes.shape == (1, 4) and one.names == ["obj1"]
    last = inst[-1]
    assert last.gt_labels.tolist() == [4] and last.names == ["obj3"]
    assert inst[1:3].gt_labels.tolist() == [2, 3]
    with pytest.raises(IndexError):
        inst[4]
    with pytest.raises(IndexError, match="shape"):
        inst[torch.tensor([True, False])]


def test_to_casts_tensors_only():
    inst = _make()
    half = inst.to(torch.float64)
    assert half.gt_boxes.dtype == torch.float64
    assert half.names == inst.names
    assert inst.gt_boxes.dtype == torch.float32


def test_cat():
    a, b = _make(2), _make(3)
    c = Instances.cat([a, b])
    assert len(c) == 5
    assert c.gt_labels.tolist() == [1, 2, 1, 2, 3]
    assert c.names == ["obj0", "obj1", "obj0", "obj1", "obj2"]
    with pytest.raises(ValueError, match="image_size"):
        Instances.cat([a, Instances((1, 1), gt_boxes=torch.zeros(1, 4), gt_labels=torch.ones(1), names=["x"])])
    with pytest.raises(ValueError, match="fields"):
        Instances.cat([a, Instances((20, 30), gt_boxes=torch.zeros(1, 4))])
    with pytest.raises(ValueError):
        Instances.cat([])


def test_not_iterable_and_repr():
    inst = _make()
    with pytest.raises(TypeError):
        list(inst)
    assert "num_instances=4" in repr(inst) and "gt_boxes" in repr(inst)
