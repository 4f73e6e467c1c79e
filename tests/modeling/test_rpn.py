from collections import OrderedDict

import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator as TVAnchorGenerator
from torchvision.models.detection.image_list import ImageList as TVImageList
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead as TVRPNHead

from segdet.modeling.anchor_generator import AnchorGenerator
from segdet.modeling.matcher import Matcher
from segdet.modeling.proposal_generator import RPN, RPNHead
from segdet.modeling.proposal_generator.rpn import label_and_sample_anchors
from segdet.modeling.sampling import BalancedPositiveNegativeSampler
from segdet.structures import Instances

SIZES = ((16,), (32,), (64,))


def _rpn(channels=8, pre=(50, 40), post=(30, 20)):
    return RPN(
        head=RPNHead(in_channels=channels, num_anchors=3),
        anchor_generator=AnchorGenerator(sizes=SIZES, aspect_ratios=(0.5, 1.0, 2.0)),
        matcher=Matcher(0.7, 0.3, True),
        sampler=BalancedPositiveNegativeSampler(256, 0.5),
        pre_nms_topk=pre,
        post_nms_topk=post,
        nms_thresh=0.7,
    )


def _features(g, channels=8, hw=(64, 96)):
    return [torch.randn(2, channels, hw[0] // s, hw[1] // s, generator=g) for s in (4, 8, 16)]


def test_proposals_match_torchvision_rpn():
    g = torch.Generator().manual_seed(0)
    ours = _rpn().eval()
    for p in ours.head.parameters():
        p.data.normal_(0, 0.3, generator=g)
    tv_head = TVRPNHead(8, 3)
    tv_head.conv[0][0].load_state_dict(ours.head.conv.state_dict())
    tv_head.cls_logits.load_state_dict(ours.head.objectness_logits.state_dict())
    tv_head.bbox_pred.load_state_dict(ours.head.anchor_deltas.state_dict())
    tv = RegionProposalNetwork(
        TVAnchorGenerator(SIZES, ((0.5, 1.0, 2.0),) * 3), tv_head, 0.7, 0.3, 256, 0.5,
        dict(training=50, testing=40), dict(training=30, testing=20), 0.7,
    ).eval()
    feats = _features(g)
    sizes = [(64, 96), (50, 70)]
    with torch.no_grad():
        props, losses = ours((64, 96), sizes, feats)
        want, _ = tv(TVImageList(torch.zeros(2, 3, 64, 96), sizes), OrderedDict((str(i), f) for i, f in enumerate(feats)))
    assert losses == {}
    for p, w, size in zip(props, want, sizes):
        assert len(p) == len(w) <= 20
        torch.testing.assert_close(p.proposal_boxes, w)
        assert p.image_size == size
        assert (p.proposal_boxes[:, 2] <= size[1]).all() and (p.proposal_boxes[:, 3] <= size[0]).all()
        assert (p.objectness_logits[:-1] >= p.objectness_logits[1:]).all()


def test_training_losses_and_empty_ground_truth():
    g = torch.Generator().manual_seed(1)
    rpn = _rpn().train()
    feats = [f.requires_grad_() for f in _features(g)]
    gt = [
        Instances((64, 96), gt_boxes=torch.tensor([[10.0, 10.0, 40.0, 30.0]])),
        Instances((64, 96), gt_boxes=torch.zeros(0, 4)),
    ]
    props, losses = rpn((64, 96), [(64, 96)] * 2, feats, gt)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_box"}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    assert losses["loss_rpn_box"] > 0
    assert [len(p) for p in props] == [30, 30]  # training post-NMS count
    sum(losses.values()).backward()
    assert rpn.head.anchor_deltas.weight.grad.abs().sum() > 0

    _, only_empty = rpn((64, 96), [(64, 96)], [f[1:].detach() for f in feats], gt[1:])
    assert only_empty["loss_rpn_box"] == 0 and only_empty["loss_rpn_cls"] > 0


def test_anchor_labels():
    torch.manual_seed(0)
    anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 9], [20, 20, 30, 30], [0, 0, 10, 20], [50, 50, 60, 60]])
    gt = [Instances((64, 64), gt_boxes=torch.tensor([[0.0, 0, 10, 10], [21, 21, 31, 29]]))]
    labels, matched = label_and_sample_anchors(
        anchors, gt, matcher=Matcher(0.7, 0.3, True), sampler=BalancedPositiveNegativeSampler(256, 0.5)
    )
    # IoUs: anchor 1 = 0.9 (positive), anchor 2 = 0.64 with GT 1 but it is GT 1's best (low-quality
    # match), anchor 3 = 0.5 (ignored), anchor 4 = 0 (negative).
    assert labels[0].tolist() == [1.0, 1.0, 1.0, -1.0, 0.0]
    assert matched[0, 2].tolist() == [21, 21, 31, 29]
