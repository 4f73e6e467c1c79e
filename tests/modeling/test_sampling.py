import torch

from segdet.modeling.sampling import BalancedPositiveNegativeSampler


def test_respects_budget_and_fraction():
    torch.manual_seed(0)
    labels = torch.tensor([1] * 100 + [0] * 1000 + [-1] * 50)
    pos, neg = BalancedPositiveNegativeSampler(256, 0.25)(labels)
    assert len(pos) == 64 and len(neg) == 192
    assert (labels[pos] == 1).all() and (labels[neg] == 0).all()
    assert len(set(pos.tolist())) == 64 and len(set(neg.tolist())) == 192


def test_negatives_fill_missing_positives_and_ignored_never_sampled():
    labels = torch.tensor([3] * 5 + [0] * 10 + [-1] * 100)
    pos, neg = BalancedPositiveNegativeSampler(64, 0.5)(labels)
    assert sorted(pos.tolist()) == list(range(5))
    assert sorted(neg.tolist()) == list(range(5, 15))


def test_few_negatives():
    labels = torch.tensor([1] * 300 + [0] * 2)
    pos, neg = BalancedPositiveNegativeSampler(256, 0.5)(labels)
    assert len(pos) == 128 and len(neg) == 2
