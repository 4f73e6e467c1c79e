"""Predict instances on images: python scripts/predict.py [model=NAME] checkpoint=PATH input=IMAGE_OR_DIR
output=DIR [device=cpu|cuda] [score_threshold=0.5]   (conf/predict.yaml)

Writes DIR/predictions.json (COCO results: image_id, category_id, bbox [x, y, w, h], score, RLE segmentation)
and one overlay PNG per image. Exit status 1 with a one-line message on bad input.
"""
from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

logger = logging.getLogger("segdet.predict")


@hydra.main(config_path="../conf", config_name="predict", version_base="1.3")
def main(cfg: DictConfig) -> int:
    from segdet.engine.checkpoint import CheckpointError
    from segdet.engine.predictor import predict

    missing = sorted(k for k in ("checkpoint", "input") if OmegaConf.is_missing(cfg, k))
    if missing:
        logger.error("missing required setting(s) %s: python scripts/predict.py checkpoint=PATH input=IMAGE_OR_DIR "
                     "output=DIR", ", ".join(missing))
        sys.exit(1)
    class_names = OmegaConf.to_container(cfg.class_names) if cfg.class_names is not None else None
    try:
        predict(cfg_model=cfg.model, checkpoint=cfg.checkpoint, input=cfg.input, output=cfg.output,
                device=cfg.device, score_threshold=cfg.score_threshold, class_names=class_names)
    except (FileNotFoundError, ValueError, CheckpointError) as exc:
        logger.error("%s", exc)
        sys.exit(1)
    return 0


if __name__ == "__main__":
    main()
