"""OverlayHook: prediction pictures after a finished run, none after a stopped one."""
import pytest
from PIL import Image

from segdet.engine.hooks import HookBase, OverlayHook

from .dummy import DummyDataset, make_trainer


def test_draws_the_first_images_after_training(tmp_path):
    dataset = DummyDataset(n=4)
    hook = OverlayHook(dataset, class_names=["a", "b", "c"], num_images=2, score_threshold=0.5)
    trainer = make_trainer(tmp_path, max_iter=2, checkpoint_period=0, hooks=[hook])
    trainer.train()
    paths = sorted((tmp_path / "overlays").glob("*.png"))
    assert [p.name for p in paths] == ["0.png", "1.png"]
    assert Image.open(paths[0]).size == (512, 512)  # the 16 px images drawn upscaled (visualize.MIN_SIDE)
    assert trainer.model.training  # drawing left the model as it found it


def test_no_overlays_when_stopped_or_not_wanted(tmp_path):
    class Stop(HookBase):
        def after_step(self, trainer):
            trainer.request_stop(15)

    dataset = DummyDataset(n=4)
    hook = OverlayHook(dataset, class_names=["a", "b", "c"], num_images=2)
    make_trainer(tmp_path / "stopped", max_iter=3, checkpoint_period=0, hooks=[Stop(), hook]).train()
    assert not (tmp_path / "stopped" / "overlays").exists()
    none = OverlayHook(dataset, class_names=["a", "b", "c"], num_images=0)
    make_trainer(tmp_path / "none", max_iter=1, checkpoint_period=0, hooks=[none]).train()
    assert not (tmp_path / "none" / "overlays").exists()
    with pytest.raises(ValueError, match="eval.num_overlays must be >= 0"):
        OverlayHook(dataset, class_names=[], num_images=-1)
