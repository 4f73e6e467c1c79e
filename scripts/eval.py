"""COCO bbox/segm evaluation of a checkpoint: python scripts/eval.py checkpoint=PATH [overrides]   (conf/eval.yaml)

Prints pycocotools' tables and writes metrics.json (iteration, bbox/*, segm/* in COCO AP x 100). Also runs under
torchrun, every process evaluating its share of the images.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

logger = logging.getLogger("segdet.eval")


def run(cfg: DictConfig) -> dict:
    from hydra.utils import instantiate

    from segdet.config import check_config, resolve_num_classes
    from segdet.engine import distributed as du
    from segdet.engine.checkpoint import (atomic_write, load_checkpoint, model_config_to_build, read_checkpoint,
                                         resolve_checkpoint)
    from segdet.engine.evaluation import inference_on_dataset, json_safe_metrics, write_overlays
    from segdet.utils.amp import check_amp, resolve_amp
    from segdet.engine.launch import configure_rank_logging
    from segdet.evaluation import COCOEvaluator
    from segdet.modeling import build_model

    check_config(cfg, "eval")
    check_amp(cfg.amp, key="amp")
    data = instantiate(cfg.data, _convert_="all")
    path = resolve_checkpoint(cfg.checkpoint)
    ckpt = read_checkpoint(path)
    model_config, explicit_model = model_config_to_build(ckpt, cfg.model, path)
    dist = du.init_distributed(cfg.device)
    configure_rank_logging(dist.rank)
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    out_dir = Path(cfg.output_dir) if cfg.output_dir else run_dir / f"eval_{path.stem}"

    if dist.is_main:
        data.prepare()
    du.barrier()
    val_set, val_loader = data.build("val")
    if explicit_model:
        model_config["num_classes"] = resolve_num_classes(model_config.get("num_classes"), val_set)
    saved_map = ckpt.get("label_to_category_id")
    if saved_map and {int(k): int(v) for k, v in saved_map.items()} != dict(val_set.label_to_category_id):
        logger.warning("checkpoint %s was trained with label->category map %s, the val data has %s", path,
                       saved_map, val_set.label_to_category_id)

    model = build_model(model_config)
    load_checkpoint(path, model, model_config=model_config if explicit_model else None)
    model.to(dist.device)
    logger.info("Evaluating %s (iteration %s) on %d images of %s", path, ckpt.get("iteration"), len(val_set),
                val_set.ann_file)
    evaluator = COCOEvaluator(val_set.ann_file, val_set.label_to_category_id)
    amp_dtype = resolve_amp(cfg.amp, dist.device, key="amp")
    if amp_dtype is not None:
        logger.info("Evaluating under torch.autocast(%s, %s)", dist.device.type, amp_dtype)
    metrics = json_safe_metrics(inference_on_dataset(model, val_loader, evaluator, device=dist.device,
                                                     amp_dtype=amp_dtype))
    result = {"iteration": ckpt.get("iteration"), "checkpoint": str(path), **metrics}
    if dist.is_main:
        payload = json.dumps(result, indent=2, sort_keys=True) + "\n"
        atomic_write(out_dir / "metrics.json", lambda f: f.write(payload.encode()))
        logger.info("Wrote %s", out_dir / "metrics.json")
        if cfg.num_overlays > 0:
            write_overlays(model, val_set, out_dir=out_dir / "overlays", device=dist.device,
                           class_names=val_set.class_names, num_images=cfg.num_overlays,
                           score_threshold=cfg.overlay_score_threshold)
    du.destroy()
    return result


@hydra.main(config_path="../conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
