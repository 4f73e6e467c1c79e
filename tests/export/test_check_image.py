"""segdet::check_image, the exported package's own input check (csrc/ops/check_image.cpp), called eagerly."""
import pytest
import torch

import segdet.ops  # noqa: F401


def test_accepts_an_rgb_uint8_image_and_copies_it():
    image = torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8)
    out = torch.ops.segdet.check_image(image, 32, 64)
    assert torch.equal(out, image) and out.data_ptr() != image.data_ptr()


@pytest.mark.parametrize("image, error, words", [
    (torch.zeros(3, 40, 50), TypeError, ["uint8", "Float"]),
    (torch.zeros(40, 50, dtype=torch.uint8), ValueError, ["Tensor[3, H, W]", "[40, 50]"]),
    (torch.zeros(1, 40, 50, dtype=torch.uint8), ValueError, ["Tensor[3, H, W]", "[1, 40, 50]"]),
    (torch.zeros(3, 20, 50, dtype=torch.uint8), ValueError, ["[32, 64]", "20 x 50"]),
    (torch.zeros(3, 40, 65, dtype=torch.uint8), ValueError, ["[32, 64]", "40 x 65"]),
])
def test_rejects_wrong_dtype_rank_or_size(image, error, words):
    with pytest.raises(error) as info:
        torch.ops.segdet.check_image(image, 32, 64)
    for word in words:
        assert word in str(info.value)


def test_fake_kernel_checks_rank_and_dtype_at_trace_time():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode() as mode:
        bad = mode.from_tensor(torch.zeros(3, 40, 50))
        with pytest.raises(TypeError, match="uint8"):
            torch.ops.segdet.check_image(bad, 32, 64)
        good = mode.from_tensor(torch.zeros(3, 40, 50, dtype=torch.uint8))
        assert torch.ops.segdet.check_image(good, 32, 64).shape == (3, 40, 50)
