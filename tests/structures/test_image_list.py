import pytest
import torch

from segdet.structures import ImageList


def test_from_tensors_pads_to_divisibility():
    a = torch.rand(3, 50, 70)
    b = torch.rand(3, 65, 33)
    il = ImageList.from_tensors([a, b], size_divisibility=32, pad_value=-1.0)
    assert il.tensor.shape == (2, 3, 96, 96)
    assert il.image_sizes == [(50, 70), (65, 33)]
    assert len(il) == 2
    torch.testing.assert_close(il[0], a)
    torch.testing.assert_close(il[1], b)
    assert (il.tensor[0, :, 50:, :] == -1.0).all() and (il.tensor[0, :, :, 70:] == -1.0).all()
    assert (il.tensor[1, :, :, 33:] == -1.0).all()


def test_exact_multiple_is_not_padded_further():
    il = ImageList.from_tensors([torch.zeros(1, 64, 32)], size_divisibility=32)
    assert il.tensor.shape == (1, 1, 64, 32)


def test_no_divisibility():
    il = ImageList.from_tensors([torch.zeros(3, 5, 7), torch.zeros(3, 6, 2)], size_divisibility=0)
    assert il.tensor.shape == (2, 3, 6, 7)


def test_keeps_dtype_and_to():
    il = ImageList.from_tensors([torch.full((3, 4, 4), 7, dtype=torch.uint8)], size_divisibility=8)
    assert il.tensor.dtype == torch.uint8 and il.tensor.shape == (1, 3, 8, 8)
    assert il.tensor.sum().item() == 7 * 3 * 16
    f = il.to(torch.float32)
    assert f.tensor.dtype == torch.float32 and f.image_sizes == il.image_sizes


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"tensors\[1\]"):
        ImageList.from_tensors([torch.zeros(3, 4, 4), torch.zeros(4, 4)])
    with pytest.raises(ValueError, match="channels"):
        ImageList.from_tensors([torch.zeros(3, 4, 4), torch.zeros(1, 4, 4)])
    with pytest.raises(ValueError, match="at least one"):
        ImageList.from_tensors([])
    with pytest.raises(ValueError, match="exceeds"):
        ImageList(torch.zeros(1, 3, 4, 4), [(5, 4)])
