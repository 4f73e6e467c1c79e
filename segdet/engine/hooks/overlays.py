"""Pictures of the trained model's predictions on a few images, drawn when training finished."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..checkpoint import unwrap_model
from ..evaluation import write_overlays
from .base import HookBase

if TYPE_CHECKING:
    from ..trainer import Trainer

logger = logging.getLogger("segdet.train")


class OverlayHook(HookBase):
    """After a finished (not stopped) run, the main process draws the predictions with score >=
    ``score_threshold`` on the first ``num_images`` items of ``dataset`` (image uint8 [3, H, W], target with
    "image_id") into ``run_dir/overlays/<image_id>.png``."""

    def __init__(self, dataset, *, class_names: Sequence[str], num_images: int = 8, score_threshold: float = 0.5):
        if num_images < 0:
            raise ValueError(f"eval.num_overlays must be >= 0, got {num_images}")
        self.dataset = dataset
        self.class_names = list(class_names)
        self.num_images = int(num_images)
        self.score_threshold = float(score_threshold)

    def after_train(self, trainer: Trainer) -> None:
        if trainer.stop_signal is not None or not trainer.dist.is_main or self.num_images == 0:
            return
        out_dir = trainer.run_dir / "overlays"
        paths = write_overlays(unwrap_model(trainer.model), self.dataset, out_dir=out_dir, device=trainer.device,
                               class_names=self.class_names, num_images=self.num_images,
                               score_threshold=self.score_threshold)
        logger.info("Wrote %d overlays to %s", len(paths), out_dir)
