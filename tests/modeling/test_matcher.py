import torch
from torchvision.models.detection._utils import Matcher as TVMatcher

from segdet.modeling.matcher import Matcher


def test_thresholds_and_low_quality_matches():
    iou = torch.tensor(
        [
            [0.9, 0.5, 0.1, 0.0],
            [0.2, 0.6, 0.25, 0.0],
        ]
    )
    assert Matcher(0.7, 0.3)(iou).tolist() == [0, -2, -1, -1]
    # GT 1's best IoU (0.6) is below 0.7: its best prediction becomes a positive anyway.
    assert Matcher(0.7, 0.3, allow_low_quality_matches=True)(iou).tolist() == [0, 1, -1, -1]


def test_no_ground_truth_is_all_negative():
    out = Matcher(0.5, 0.5)(torch.zeros(0, 7))
    assert out.tolist() == [-1] * 7 and out.dtype == torch.int64


def test_matches_torchvision_on_random_iou():
    g = torch.Generator().manual_seed(0)
    for low_quality in (False, True):
        for _ in range(20):
            iou = torch.rand(5, 50, generator=g)
            iou[iou < 0.3] = 0.0
            ours = Matcher(0.7, 0.3, low_quality)(iou.clone())
            theirs = TVMatcher(0.7, 0.3, low_quality)(iou.clone())
            assert torch.equal(ours, theirs)
