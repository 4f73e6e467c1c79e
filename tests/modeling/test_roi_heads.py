import torch
import torch.nn.functional as F

from segdet.modeling.box_regression import Box2BoxTransform
from segdet.modeling.matcher import Matcher
from segdet.modeling.poolers import ROIPooler
from segdet.modeling.roi_heads import FastRCNNFCHead, FastRCNNPredictor, MaskRCNNHead, StandardROIHeads
from segdet.modeling.roi_heads.fast_rcnn import fast_rcnn_inference
from segdet.modeling.roi_heads.mask_head import mask_rcnn_loss, mask_rcnn_targets
from segdet.modeling.roi_heads.roi_heads import label_and_sample_proposals
from segdet.modeling.sampling import BalancedPositiveNegativeSampler
from segdet.structures import Instances

SCALES = [1 / 4, 1 / 8, 1 / 16, 1 / 32]


def _heads(num_classes=3, channels=8):
    return StandardROIHeads(
        box_pooler=ROIPooler(output_size=7, scales=SCALES, sampling_ratio=2),
        box_head=FastRCNNFCHead(input_shape=(channels, 7, 7), fc_dims=(32, 32)),
        box_predictor=FastRCNNPredictor(in_features=32, num_classes=num_classes),
        mask_pooler=ROIPooler(output_size=14, scales=SCALES, sampling_ratio=2),
        mask_head=MaskRCNNHead(in_channels=channels, conv_dims=(8, 8), num_classes=num_classes),
        matcher=Matcher(0.5, 0.5),
        sampler=BalancedPositiveNegativeSampler(16, 0.25),
    )


def test_label_and_sample_adds_gt_and_labels_background():
    torch.manual_seed(0)
    props = [Instances((64, 64), proposal_boxes=torch.tensor([[0.0, 0, 10, 10], [40, 40, 60, 60], [1, 1, 11, 10]]))]
    gt = [Instances((64, 64), gt_boxes=torch.tensor([[0.0, 0, 10, 10]]), gt_classes=torch.tensor([2]))]
    out = label_and_sample_proposals(props, gt, matcher=Matcher(0.5, 0.5), sampler=BalancedPositiveNegativeSampler(16, 0.5))[0]
    assert len(out) == 4  # 3 proposals + the GT box
    assert out.gt_classes.tolist() == [2, 0, 2, 2]
    assert out.gt_boxes[1].tolist() == [0.0, 0.0, 10.0, 10.0]  # background rows keep a (clamped) box
    empty = [Instances((64, 64), gt_boxes=torch.zeros(0, 4), gt_classes=torch.zeros(0, dtype=torch.int64))]
    out = label_and_sample_proposals(props, empty, matcher=Matcher(0.5, 0.5), sampler=BalancedPositiveNegativeSampler(16, 0.5))[0]
    assert out.gt_classes.tolist() == [0, 0, 0] and (out.gt_boxes == 0).all()


def test_mask_targets_are_roi_aligned_gt_masks_at_input_resolution():
    # Image resized 2x: proposals live in a 64 x 64 image, GT masks at their 32 x 32 input size.
    mask = torch.zeros(1, 32, 32, dtype=torch.uint8)
    mask[0, 4:12, 4:8] = 1  # left half of the box (4, 4, 12, 12) in input pixels
    p = Instances((64, 64), proposal_boxes=torch.tensor([[8.0, 8.0, 24.0, 24.0]]), gt_index=torch.tensor([0]))
    t = mask_rcnn_targets([p], [mask], 8, aligned=True)
    assert t.shape == (1, 8, 8)
    assert torch.allclose(t[0, :, :4], torch.ones(8, 4)) and torch.allclose(t[0, :, 4:], torch.zeros(8, 4))


def test_mask_loss_uses_only_the_gt_class_channel():
    mask = torch.ones(1, 16, 16, dtype=torch.uint8)
    p = Instances(
        (16, 16), proposal_boxes=torch.tensor([[2.0, 2.0, 12.0, 12.0]]), gt_index=torch.tensor([0]), gt_classes=torch.tensor([2])
    )
    logits = torch.randn(1, 3, 6, 6, requires_grad=True)
    loss = mask_rcnn_loss(logits, [p], [mask], aligned=True)
    torch.testing.assert_close(loss, F.binary_cross_entropy_with_logits(logits[0, 1], torch.ones(6, 6)))
    loss.backward()
    assert logits.grad[0, 1].abs().sum() > 0
    assert (logits.grad[0, 0] == 0).all() and (logits.grad[0, 2] == 0).all()
    empty = torch.zeros(0, 3, 6, 6, requires_grad=True)
    zero = mask_rcnn_loss(empty, [p[:0]], [mask], aligned=True)
    zero.backward()
    assert zero.item() == 0.0


def test_heads_train_and_inference_shapes():
    torch.manual_seed(0)
    heads = _heads()
    feats = {f"p{i + 2}": torch.randn(1, 8, 64 // s, 64 // s) for i, s in enumerate((4, 8, 16, 32, 64))}
    props = [Instances((64, 64), proposal_boxes=torch.tensor([[0.0, 0, 20, 20], [30, 30, 60, 50], [5, 5, 25, 25]]))]
    masks = torch.zeros(1, 64, 64, dtype=torch.uint8)
    masks[0, :20, :20] = 1
    gt = [Instances((64, 64), gt_boxes=torch.tensor([[0.0, 0, 20, 20]]), gt_classes=torch.tensor([3]), gt_masks=masks)]
    heads.train()
    sampled, losses = heads(feats, props, gt)
    assert set(losses) == {"loss_cls", "loss_box", "loss_mask"}
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    heads.eval()
    for p in heads.box_predictor.parameters():
        torch.nn.init.normal_(p, std=0.5)
    with torch.no_grad():
        inst, losses = heads(feats, props)
    inst = inst[0]
    assert losses == {}
    d = len(inst)
    assert inst.pred_boxes.shape == (d, 4) and inst.scores.shape == (d,) and inst.pred_masks.shape == (d, 28, 28)
    assert d > 0 and (inst.scores > 0.05).all() and inst.pred_classes.min() >= 1 and inst.pred_classes.max() <= 3
    assert inst.pred_masks.min() >= 0 and inst.pred_masks.max() <= 1


def test_inference_thresholds_and_topk():
    g = torch.Generator().manual_seed(0)
    props = [Instances((50, 50), proposal_boxes=torch.tensor([[0.0, 0, 20, 20]] * 4 + [[25.0, 25, 45, 45]] * 4))]
    logits = torch.randn(8, 4, generator=g) * 3
    out = fast_rcnn_inference(
        logits, torch.zeros(8, 16), props, box2box=Box2BoxTransform((10.0, 10.0, 5.0, 5.0)),
        score_thresh=0.05, nms_thresh=0.5, topk_per_image=3,
    )[0]
    # identical boxes per class: NMS leaves at most one per (location, class), then top 3 by score
    probs = logits.softmax(-1)[:, 1:]
    best = sorted([float(probs[:4, c].max()) for c in range(3)] + [float(probs[4:, c].max()) for c in range(3)], reverse=True)
    best = [b for b in best if b > 0.05][:3]
    torch.testing.assert_close(out.scores, torch.tensor(best))
