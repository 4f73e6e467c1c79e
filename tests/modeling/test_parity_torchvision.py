"""segdet's maskrcnn_r50_fpn_torchvision with converted weights reproduces torchvision's maskrcnn_resnet50_fpn.

The torchvision model gets random weights with non-trivial FrozenBN statistics and head biases that
make it detect things; both models run at min_size 320 to stay fast. Intermediate comparisons
(preprocessing, FPN, proposals, class scores) say where a final-output difference comes from.
"""

import pytest
import torch
from torchvision.models.detection import maskrcnn_resnet50_fpn
from torchvision.ops import box_iou

from segdet.modeling import build_model
from segdet.modeling.convert import convert_checkpoint, torchvision_model_config

MIN_SIZE, MAX_SIZE = 320, 512


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Two intra-op threads on a shared 2-core machine oversubscribe and run several times slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def torchvision_model():
    """torchvision's Mask R-CNN with random weights that still give confident, varied detections."""
    torch.manual_seed(0)
    tv = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=MIN_SIZE, max_size=MAX_SIZE)
    g = torch.Generator().manual_seed(1)
    sd = tv.state_dict()
    for key, value in sd.items():
        if key.endswith("running_mean"):
            value.copy_(torch.randn(value.shape, generator=g) * 0.1)
        elif key.endswith("running_var"):
            value.copy_(torch.rand(value.shape, generator=g) * 0.5 + 0.75)
        elif key.startswith("backbone.body") and (".bn" in key or "downsample.1" in key) and key.endswith("weight"):
            value.copy_(torch.rand(value.shape, generator=g) * 0.5 + 0.5)
        elif key.startswith("backbone.body") and (".bn" in key or "downsample.1" in key) and key.endswith("bias"):
            value.copy_(torch.randn(value.shape, generator=g) * 0.1)
    # Confident, varied RPN and classifier outputs, so that there are detections of several classes.
    sd["rpn.head.cls_logits.weight"].normal_(0, 0.5, generator=g)
    sd["rpn.head.cls_logits.bias"].fill_(-2.0)
    sd["roi_heads.box_head.fc7.weight"].normal_(0, 0.02, generator=g)  # RoI-dependent features: varied classes
    sd["roi_heads.box_predictor.cls_score.weight"].normal_(0, 0.3, generator=g)
    sd["roi_heads.box_predictor.cls_score.bias"].zero_()
    sd["roi_heads.box_predictor.cls_score.bias"][0] = -1.0
    sd["roi_heads.box_predictor.bbox_pred.weight"].normal_(0, 0.002, generator=g)
    sd["roi_heads.mask_predictor.mask_fcn_logits.bias"].normal_(0, 1.0, generator=g)
    tv.load_state_dict(sd)
    return tv.eval()


def make_image():
    g = torch.Generator().manual_seed(2)
    img = torch.rand(3, 300, 450, generator=g) * 0.3
    img[:, 40:140, 50:190] += 0.5
    img[0, 180:280, 230:400] = 0.95
    img[1, 20:110, 290:370] = 0.05
    img[2, 150:290, 20:120] = 0.8
    return img.clamp(0, 1)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tv = torchvision_model()

    src, dst = tmp_path_factory.mktemp("w") / "tv.pth", tmp_path_factory.mktemp("w") / "segdet.pth"
    torch.save(tv.state_dict(), src)
    convert_checkpoint("torchvision", str(src), str(dst))
    ckpt = torch.load(dst, weights_only=True)
    assert ckpt["model_config"] == torchvision_model_config()
    cfg = dict(ckpt["model_config"], min_size=MIN_SIZE, max_size=MAX_SIZE)
    ours = build_model(cfg)
    ours.load_state_dict(ckpt["model"], strict=True)
    ours.eval()
    return tv, ours


@pytest.fixture(scope="module")
def image():
    return make_image()


@pytest.fixture(scope="module")
def outputs(models, image):
    tv, ours = models
    with torch.no_grad():
        return tv([image])[0], ours([image])[0]


def test_intermediate_stages_match(models, image):
    tv, ours = models
    with torch.no_grad():
        tv_images, _ = tv.transform([image])
        batch = ours.preprocess([image])
        assert batch.image_sizes == [tuple(s) for s in tv_images.image_sizes]
        torch.testing.assert_close(batch.tensor, tv_images.tensors)

        tv_feats = tv.backbone(tv_images.tensors)
        feats = list(ours.backbone(batch.tensor).values())
        for a, b in zip(tv_feats.values(), feats):
            torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)

        tv_props, _ = tv.rpn(tv_images, tv_feats)
        props, _ = ours.rpn(batch.tensor.shape[-2:], batch.image_sizes, feats)
        p, q = props[0].proposal_boxes, tv_props[0]
        assert abs(len(p) - len(q)) <= 2
        n = min(len(p), len(q), 300)
        assert (box_iou(p[:n], q[:n]).diag() > 0.99).float().mean() > 0.97

        # Class scores on the same (torchvision's) proposals isolate the box branch.
        tv_pooled = tv.roi_heads.box_roi_pool(tv_feats, tv_props, tv_images.image_sizes)
        tv_logits, _ = tv.roi_heads.box_predictor(tv.roi_heads.box_head(tv_pooled))
        pooled = ours.roi_heads.box_pooler(feats[:4], tv_props)
        logits, _ = ours.roi_heads.box_predictor(ours.roi_heads.box_head(pooled))
        torch.testing.assert_close(pooled, tv_pooled, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(logits.softmax(-1), tv_logits.softmax(-1), rtol=1e-3, atol=1e-4)


def test_final_detections_match(outputs):
    want, got = outputs
    assert len(want["boxes"]) >= 20, "the random torchvision model should produce detections"
    assert len(set(want["labels"].tolist())) >= 3
    assert len(got["boxes"]) == len(want["boxes"])
    iou = box_iou(got["boxes"], want["boxes"]).diag()
    assert (iou > 0.98).all(), iou.min()
    assert torch.equal(got["labels"], want["labels"])
    assert (got["scores"] - want["scores"]).abs().max() < 2e-3
    want_masks = want["masks"][:, 0] > 0.5
    inter = (got["masks"] & want_masks).flatten(1).sum(1).float()
    union = (got["masks"] | want_masks).flatten(1).sum(1).float()
    mask_iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    print(
        f"parity: {len(iou)} detections, {len(set(want['labels'].tolist()))} classes, min box IoU {iou.min():.5f}, "
        f"max score diff {(got['scores'] - want['scores']).abs().max():.2e}, "
        f"mask IoU min {mask_iou.min():.4f} mean {mask_iou.mean():.4f}, top score {want['scores'].max():.3f}"
    )
    assert (mask_iou > 0.95).float().mean() >= 0.97, mask_iou
    assert got["masks"].dtype == torch.bool and got["masks"].shape[-2:] == (300, 450)
