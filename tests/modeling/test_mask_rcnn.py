import pytest
import torch
from hydra import compose, initialize_config_dir

from segdet.modeling import MaskRCNN, build_model
from tests.modeling._paths import MODEL_CONF_DIR

LOSS_KEYS = {"loss_rpn_cls", "loss_rpn_box", "loss_cls", "loss_box", "loss_mask"}


@pytest.fixture(autouse=True)
def one_thread():
    # Two intra-op threads on a shared 2-core machine oversubscribe and run ~10x slower.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _small(**overrides):
    with initialize_config_dir(config_dir=MODEL_CONF_DIR, version_base=None):
        cfg = compose(config_name="maskrcnn_small", overrides=[f"{k}={v}" for k, v in overrides.items()])
    torch.manual_seed(0)
    return build_model(cfg)


def _data():
    g = torch.Generator().manual_seed(0)
    images, targets = [], []
    for i, (h, w) in enumerate([(64, 64), (56, 72)]):
        img = (torch.rand(3, h, w, generator=g) * 60).to(torch.uint8)
        masks = torch.zeros(2, h, w, dtype=torch.uint8)
        masks[0, 8:30, 6:28] = 1
        masks[1, 34 - i * 4 : 52 - i * 4, 30:60] = 1
        for m, c in zip(masks, ([200, 40, 40], [40, 200, 90])):
            img[:, m.bool()] = torch.tensor(c, dtype=torch.uint8)[:, None]
        boxes = torch.tensor([[6.0, 8, 28, 30], [30, 34 - i * 4, 60, 52 - i * 4]])
        images.append(img)
        targets.append({"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks})
    return images, targets


def test_train_and_eval_outputs_and_dtypes():
    model = _small(min_size=64, max_size=96)
    assert isinstance(model, MaskRCNN) and model.num_classes == 4
    images, targets = _data()
    model.train()
    losses = model(images, targets)
    assert set(losses) == LOSS_KEYS
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    float_images = [images[0].float() / 255, images[1]]
    with torch.no_grad():
        out = model(float_images)
    assert len(out) == 2
    for o, img in zip(out, images):
        d = o["boxes"].shape[0]
        assert o["boxes"].shape == (d, 4) and o["boxes"].dtype == torch.float32
        assert o["scores"].shape == (d,) and o["labels"].dtype == torch.int64
        assert o["masks"].shape == (d, *img.shape[-2:]) and o["masks"].dtype == torch.bool
        assert (o["boxes"][:, 2] <= img.shape[-1] + 1e-3).all() and (o["boxes"][:, 3] <= img.shape[-2] + 1e-3).all()
        if d:
            assert o["labels"].min() >= 1 and o["labels"].max() <= 4


def test_training_step_without_annotations():
    model = _small(min_size=64, max_size=64).train()
    images = [torch.randint(0, 255, (3, 60, 64), dtype=torch.uint8)]
    targets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64),
                "masks": torch.zeros(0, 60, 64, dtype=torch.uint8)}]
    losses = model(images, targets)
    assert set(losses) == LOSS_KEYS and all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_rpn_box"] == 0 and losses["loss_box"] == 0 and losses["loss_mask"] == 0
    sum(losses.values()).backward()


def test_small_model_overfits_two_images():
    # A frozen trunk keeps this fast (its backward dominates on CPU); FPN, RPN and heads still learn.
    model = _small(min_size=64, max_size=96, **{"backbone.freeze_at": 5}).train()
    images, targets = _data()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.005, momentum=0.9)
    history = []
    for _ in range(30):
        losses = model(images, targets)
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in losses.items()} | {"total": float(loss.detach())})
    first = sum(h["total"] for h in history[:3]) / 3
    last = sum(h["total"] for h in history[-3:]) / 3
    assert last < 0.6 * first, (first, last)
    assert history[-1]["loss_mask"] < history[0]["loss_mask"]


def test_bad_inputs_raise_clear_errors():
    model = _small(min_size=64, max_size=64)
    with pytest.raises(TypeError, match="list of Tensor"):
        model(torch.zeros(1, 3, 32, 32))
    model.eval()
    with pytest.raises(ValueError, match=r"images\[0\].*Tensor\[3, H, W\]"):
        model([torch.zeros(1, 32, 32)])
    model.train()
    images, targets = _data()
    bad = [dict(targets[0], labels=torch.tensor([0, 1])), targets[1]]
    with pytest.raises(ValueError, match="labels.*1..4"):
        model(images, bad)
    bad = [dict(targets[0], masks=targets[0]["masks"][:, :10]), targets[1]]
    with pytest.raises(ValueError, match="masks"):
        model(images, bad)
    with pytest.raises(ValueError, match="targets"):
        model(images)
