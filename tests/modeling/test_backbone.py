import pytest
import torch
from torch import nn

from segdet.modeling.backbone import (
    FPN,
    FrozenBatchNorm2d,
    ResNet,
    build_resnet_fpn_backbone,
    get_norm,
)
from segdet.modeling.backbone_weights import (
    TORCHVISION_ARCHS,
    convert_torchvision_imagenet,
    infer_resnet_config,
    load_trunk_weights,
    torchvision_backbone_key_map,
)

LEVELS = ["p2", "p3", "p4", "p5", "p6"]


def _randomise_bn_stats(model: nn.Module, seed: int = 0) -> None:
    """Give every BN non-trivial statistics and affine terms so conversions that drop them would fail."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, FrozenBatchNorm2d)):
                c = m.running_mean.numel()
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)


# ---------------------------------------------------------------- shapes and strides

@pytest.mark.parametrize(
    "depth, groups, width, c2",
    [(18, 1, 64, 64), (34, 1, 64, 64), (50, 1, 64, 256), (101, 1, 64, 256), (152, 1, 64, 256),
     (50, 32, 4, 256), (101, 32, 8, 256)],
)
def test_resnet_fpn_shapes_every_depth(depth, groups, width, c2):
    # The meta device propagates shapes without allocating or computing, so the large models stay cheap;
    # the numerics of the same code are checked against torchvision below.
    with torch.device("meta"):
        backbone = build_resnet_fpn_backbone(depth=depth, groups=groups, width_per_group=width, fpn_channels=32)
        out = backbone(torch.empty(2, 3, 64, 96))
    assert backbone.body.out_channels == {"c2": c2, "c3": 2 * c2, "c4": 4 * c2, "c5": 8 * c2}
    assert backbone.out_channels == 32
    assert backbone.strides == {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
    assert list(out) == LEVELS
    for name, feat in out.items():
        s = backbone.strides[name]
        assert feat.shape == (2, 32, -(-64 // s), -(-96 // s)), name


def test_real_forward_shapes_r18():
    backbone = build_resnet_fpn_backbone(depth=18, fpn_channels=16).eval()
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, 64, 96))
    assert [tuple(t.shape) for t in out.values()] == [(2, 16, 16, 24), (2, 16, 8, 12), (2, 16, 4, 6),
                                                      (2, 16, 2, 3), (2, 16, 1, 2)]
    assert all(torch.isfinite(t).all() for t in out.values())


def test_odd_input_sizes_round_up():
    backbone = build_resnet_fpn_backbone(depth=18, fpn_channels=16).eval()
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 70, 45))
    # conv/pool with padding give ceil(size / stride) at every level.
    assert [tuple(t.shape[-2:]) for t in out.values()] == [(18, 12), (9, 6), (5, 3), (3, 2), (2, 1)]


def test_resnet_stage_blocks_and_strided_conv_position():
    body = ResNet(depth=50, freeze_at=0)
    assert [len(getattr(body, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    # v1.5: the stride of a bottleneck is on its 3x3 conv, not the first 1x1.
    block = body.layer2[0]
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)
    assert block.downsample[0].stride == (2, 2)
    rx = ResNet(depth=50, groups=32, width_per_group=4, freeze_at=0)
    assert rx.layer1[0].conv2.groups == 32 and rx.layer1[0].conv2.out_channels == 128
    assert ResNet(depth=101, freeze_at=0).layer3.__len__() == 23


def test_p6_is_stride2_subsample_of_p5():
    backbone = build_resnet_fpn_backbone(depth=18, fpn_channels=8).eval()
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, 128, 128))
    torch.testing.assert_close(out["p6"], out["p5"][:, :, ::2, ::2])


# ---------------------------------------------------------------- freezing and norms

@pytest.mark.parametrize("freeze_at", [0, 1, 2, 3, 5])
def test_freeze_at(freeze_at):
    body = ResNet(depth=18, norm="BN", freeze_at=freeze_at)
    parts = {"stem": [body.conv1, body.bn1]} | {f"layer{i}": [getattr(body, f"layer{i}")] for i in range(1, 5)}
    frozen_names = (["stem"] if freeze_at >= 1 else []) + [f"layer{i}" for i in range(1, freeze_at)]
    body.train()
    for name, modules in parts.items():
        params = [p for m in modules for p in m.parameters()]
        bns = [b for m in modules for b in m.modules() if isinstance(b, nn.BatchNorm2d)]
        frozen = name in frozen_names
        assert all(p.requires_grad != frozen for p in params), name
        assert all(b.training != frozen for b in bns), name


def test_frozen_bn_stats_do_not_move_in_train_mode():
    body = ResNet(depth=18, norm="BN", freeze_at=2)
    body.train()
    stem_mean = body.bn1.running_mean.clone()
    l1_mean = body.layer1[0].bn1.running_mean.clone()
    l2_mean = body.layer2[0].bn1.running_mean.clone()
    body(torch.randn(2, 3, 64, 64) * 3 + 1)
    assert torch.equal(body.bn1.running_mean, stem_mean)
    assert torch.equal(body.layer1[0].bn1.running_mean, l1_mean)
    assert not torch.equal(body.layer2[0].bn1.running_mean, l2_mean)


def test_gradients_reach_only_trainable_stages():
    body = ResNet(depth=18, freeze_at=2)
    out = body(torch.randn(1, 3, 64, 64))
    sum(v.sum() for v in out.values()).backward()
    assert body.conv1.weight.grad is None and body.layer1[0].conv1.weight.grad is None
    assert body.layer2[0].conv1.weight.grad is not None


@pytest.mark.parametrize("norm, cls", [("FrozenBN", FrozenBatchNorm2d), ("BN", nn.BatchNorm2d),
                                       ("SyncBN", nn.SyncBatchNorm), ("GN", nn.GroupNorm)])
def test_norms_build_and_run(norm, cls):
    backbone = build_resnet_fpn_backbone(depth=18, norm=norm, freeze_at=0, fpn_channels=32, fpn_norm=norm)
    assert isinstance(backbone.body.bn1, cls) and isinstance(backbone.body.layer4[1].bn2, cls)
    assert isinstance(backbone.fpn.inner_blocks[0][1], cls) and backbone.fpn.inner_blocks[0][0].bias is None
    backbone.train()
    out = backbone(torch.randn(2, 3, 64, 64))
    assert out["p2"].shape == (2, 32, 16, 16)
    if norm == "GN":
        assert backbone.body.bn1.num_groups == 32


def test_get_norm_errors_and_none():
    assert get_norm("", 8) is None and get_norm(None, 8) is None
    with pytest.raises(ValueError, match="norm must be one of"):
        get_norm("LN", 8)
    with pytest.raises(ValueError, match="multiple of 32"):
        get_norm("GN", 48)


def test_frozen_batchnorm_matches_eval_batchnorm_and_has_no_params():
    bn = nn.BatchNorm2d(6)
    _randomise_bn_stats(bn, seed=3)
    bn.eval()
    frozen = FrozenBatchNorm2d(6)
    assert frozen.eps == 1e-5 and list(frozen.parameters()) == []
    assert set(frozen.state_dict()) == {"weight", "bias", "running_mean", "running_var"}
    # BatchNorm checkpoints carry num_batches_tracked; loading them must still be strict-clean.
    frozen.load_state_dict(bn.state_dict())
    x = torch.randn(2, 6, 5, 5)
    torch.testing.assert_close(frozen(x), bn(x))


def test_frozen_batchnorm_matches_torchvision():
    from torchvision.ops.misc import FrozenBatchNorm2d as TVFrozen

    ours, theirs = FrozenBatchNorm2d(4), TVFrozen(4)
    _randomise_bn_stats(ours, seed=1)
    theirs.load_state_dict(ours.state_dict())
    assert ours.eps == theirs.eps
    x = torch.randn(3, 4, 7, 7)
    torch.testing.assert_close(ours(x), theirs(x))


def test_channels_last():
    torch.manual_seed(0)
    a = build_resnet_fpn_backbone(depth=18, fpn_channels=16).eval()
    b = build_resnet_fpn_backbone(depth=18, fpn_channels=16, channels_last=True).eval()
    b.load_state_dict(a.state_dict())
    assert b.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for pa, pb in zip(a(x).values(), b(x).values()):
            torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-4)


def test_bad_arguments():
    with pytest.raises(ValueError, match="depth"):
        ResNet(depth=42)
    with pytest.raises(ValueError, match="freeze_at"):
        ResNet(depth=18, freeze_at=6)
    with pytest.raises(ValueError, match="BasicBlock"):
        ResNet(depth=18, groups=32, width_per_group=4)
    backbone = build_resnet_fpn_backbone(depth=18, fpn_channels=8)
    with pytest.raises(ValueError, match=r"Tensor\[N, 3, H, W\]"):
        backbone(torch.randn(3, 32, 32))
    with pytest.raises(TypeError, match="floating"):
        backbone(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="in_channels"):
        type(backbone)(body=ResNet(depth=50), fpn=FPN(in_channels=[64, 128, 256, 512]))


# ---------------------------------------------------------------- torchvision parity

def _tv_stage_outputs(tv_model, x):
    x = tv_model.maxpool(tv_model.relu(tv_model.bn1(tv_model.conv1(x))))
    outs = []
    for i in range(1, 5):
        x = getattr(tv_model, f"layer{i}")(x)
        outs.append(x)
    return outs


@pytest.mark.parametrize(
    "arch, norm",
    [("resnet18", "FrozenBN"), ("resnet18", "BN"), ("resnet50", "FrozenBN"), ("resnext50_32x4d", "FrozenBN")],
)
def test_imagenet_conversion_reproduces_torchvision_stages(arch, norm):
    import torchvision

    torch.manual_seed(0)
    tv_model = getattr(torchvision.models, arch)(weights=None)
    _randomise_bn_stats(tv_model, seed=7)
    tv_model.eval()
    depth, groups, width = TORCHVISION_ARCHS[arch]
    assert infer_resnet_config(tv_model.state_dict()) == (depth, groups, width)

    converted = convert_torchvision_imagenet(tv_model.state_dict(), depth=depth)
    assert not any(k.startswith("body.fc") for k in converted) and all(k.startswith("body.") for k in converted)
    backbone = build_resnet_fpn_backbone(depth=depth, groups=groups, width_per_group=width, norm=norm)
    result = backbone.load_state_dict(converted, strict=False)
    assert result.unexpected_keys == [] and all(k.startswith("fpn.") for k in result.missing_keys)
    # float64 so that the folded FrozenBN arithmetic and BN's cannot differ by rounding alone.
    backbone.eval().double()
    tv_model.double()

    x = torch.randn(1, 3, 64, 48, dtype=torch.float64)
    with torch.no_grad():
        ours = list(backbone.body(x).values())
        theirs = _tv_stage_outputs(tv_model, x)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_load_trunk_weights_from_file_forms(tmp_path):
    import torchvision

    tv_model = torchvision.models.resnet18(weights=None)
    _randomise_bn_stats(tv_model, seed=2)
    raw = tmp_path / "raw.pth"
    torch.save(tv_model.state_dict(), raw)
    conv = tmp_path / "converted.pth"
    torch.save(convert_torchvision_imagenet(tv_model.state_dict()), conv)
    for path in (raw, conv):
        backbone = build_resnet_fpn_backbone(depth=18, weights=str(path), freeze_at=2)
        torch.testing.assert_close(backbone.body.layer3[1].conv2.weight, tv_model.layer3[1].conv2.weight)
        torch.testing.assert_close(backbone.body.layer4[0].bn1.running_var, tv_model.layer4[0].bn1.running_var)
        assert not backbone.body.conv1.weight.requires_grad  # freezing still applies
    # A checkpoint of a whole model with the backbone at "backbone.".
    ckpt = tmp_path / "ckpt.pth"
    full = {"backbone." + k: v for k, v in backbone.state_dict().items()} | {"roi_heads.x": torch.zeros(1)}
    torch.save({"model": full}, ckpt)
    body = ResNet(depth=18, norm="GN", freeze_at=0)  # BN statistics have no place in GN and are skipped
    load_trunk_weights(body, ckpt)
    torch.testing.assert_close(body.bn1.weight, tv_model.bn1.weight)

    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_trunk_weights(body, tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="depth=50"):
        convert_torchvision_imagenet(tv_model.state_dict(), depth=50)
    with pytest.raises(ValueError, match="do not fit"):
        load_trunk_weights(ResNet(depth=34), conv)


def test_torchvision_detection_backbone_weights_load_and_match():
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    torch.manual_seed(0)
    tv = resnet_fpn_backbone(backbone_name="resnet18", weights=None, trainable_layers=3)
    _randomise_bn_stats(tv, seed=4)
    with torch.no_grad():
        for block in list(tv.fpn.inner_blocks) + list(tv.fpn.layer_blocks):
            block[0].bias.normal_()
    tv.eval()
    tv_sd = {"backbone." + k: v for k, v in tv.state_dict().items()} | {"rpn.head.conv.weight": torch.zeros(1)}
    mapping = torchvision_backbone_key_map(tv_sd)
    assert "rpn.head.conv.weight" not in mapping
    ours = build_resnet_fpn_backbone(depth=18, fpn_channels=256, freeze_at=2).eval()
    ours.load_state_dict({v: tv_sd[k] for k, v in mapping.items()}, strict=True)
    # Same frozen parameters as torchvision's trainable_layers=3.
    tv_trainable = {n for n, p in tv.named_parameters() if p.requires_grad}
    assert tv_trainable == {n for n, p in ours.named_parameters() if p.requires_grad}

    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        a = list(ours(x).values())
        b = list(tv(x).values())
    assert len(a) == len(b) == 5
    for pa, pb in zip(a, b):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-4)


def test_key_map_handles_old_torchvision_fpn_names():
    keys = ["backbone.fpn.inner_blocks.2.weight", "backbone.fpn.layer_blocks.0.bias", "backbone.body.layer1.0.conv1.weight"]
    assert torchvision_backbone_key_map(keys) == {
        "backbone.fpn.inner_blocks.2.weight": "fpn.inner_blocks.2.0.weight",
        "backbone.fpn.layer_blocks.0.bias": "fpn.layer_blocks.0.0.bias",
        "backbone.body.layer1.0.conv1.weight": "body.layer1.0.conv1.weight",
    }
