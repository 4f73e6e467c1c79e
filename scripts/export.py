"""Export a trained model to an AOTInductor package: python scripts/export.py model=NAME checkpoint=PATH
output=FILE.pt2 [device=cpu|cuda] [min_side=32] [max_side=2048] [amp=none|bf16]   (conf/export.yaml, segdet/export/)

Exit status 1 with a one-line message on bad input (missing checkpoint, a model config that does not fit it).
"""
from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig, OmegaConf

logger = logging.getLogger("segdet.export")


@hydra.main(config_path="../conf", config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> int:
    from segdet.engine.checkpoint import CheckpointError
    from segdet.export import export_checkpoint

    missing = sorted(k for k in ("checkpoint", "output") if OmegaConf.is_missing(cfg, k))
    if missing:
        logger.error("missing required setting(s) %s: python scripts/export.py model=NAME checkpoint=PATH "
                     "output=FILE.pt2", ", ".join(missing))
        sys.exit(1)
    class_names = OmegaConf.to_container(cfg.class_names) if cfg.class_names is not None else None
    try:
        result = export_checkpoint(cfg_model=cfg.model, checkpoint=cfg.checkpoint, output=cfg.output,
                                   device=cfg.device, min_side=int(cfg.min_side), max_side=int(cfg.max_side),
                                   class_names=class_names, amp=str(cfg.amp))
    except (FileNotFoundError, ValueError, CheckpointError) as exc:
        logger.error("%s", exc)
        sys.exit(1)
    logger.info("Wrote %s (export %.1f s, compile %.1f s)", result["output"], result["export_s"], result["compile_s"])
    return 0


if __name__ == "__main__":
    main()
