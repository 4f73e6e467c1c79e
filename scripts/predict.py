"""Predict instances on images: python scripts/predict.py checkpoint=PATH_OR_RUN_DIR input=IMAGES output=DIR
[model=NAME] [recursive=true] [batch_size=N] [strict=true] [overlay_grid=true] [device=cpu|cuda] ...
(conf/predict.yaml). checkpoint=FILE.pt2 runs a package written by scripts/export.py instead of the eager model.

Writes DIR/predictions.json (COCO results: image_id, category_id, bbox [x, y, w, h], score, RLE segmentation),
DIR/predictions.jsonl (one line per finished image; rerunning the same command after a stop resumes) and one
overlay PNG per image. Exit status 1 with a one-line message on bad input (or strict=true and an unreadable
image), 130 / 143 when stopped by SIGINT / SIGTERM after saving what was done.
"""
from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

logger = logging.getLogger("segdet.predict")


@hydra.main(config_path="../conf", config_name="predict", version_base="1.3")
def main(cfg: DictConfig) -> int:
    from segdet.config import ConfigKeyError, check_config
    from segdet.engine.checkpoint import CheckpointError
    from segdet.engine.predictor import PredictionInterrupted, predict

    missing = sorted(k for k in ("checkpoint", "input") if OmegaConf.is_missing(cfg, k))
    if missing:
        logger.error("missing required setting(s) %s: python scripts/predict.py checkpoint=PATH input=IMAGE_OR_DIR "
                     "output=DIR", ", ".join(missing))
        sys.exit(1)
    try:
        check_config(cfg, "predict")
    except ConfigKeyError as exc:
        logger.error("%s", exc)
        sys.exit(1)
    class_names = OmegaConf.to_container(cfg.class_names) if cfg.class_names is not None else None
    cfg_model = cfg.model if cfg.get("model") else None
    try:
        predict(cfg_model=cfg_model, checkpoint=cfg.checkpoint, input=cfg.input, output=cfg.output,
                device=cfg.device, score_threshold=cfg.score_threshold, class_names=class_names,
                recursive=cfg.recursive, batch_size=cfg.batch_size, num_workers=cfg.num_workers, strict=cfg.strict,
                overlays=cfg.overlays, overlay_grid=cfg.overlay_grid, overlay_grid_size=cfg.overlay_grid_size,
                progress=cfg.progress, amp=cfg.amp)
    except PredictionInterrupted as exc:
        logger.warning("%s", exc)
        sys.exit(exc.exit_code)
    except (FileNotFoundError, ValueError, CheckpointError) as exc:
        logger.error("%s", exc)
        sys.exit(1)
    return 0


if __name__ == "__main__":
    main()
