"""Train a Mask R-CNN: python scripts/train.py [hydra overrides]   (conf/train.yaml)

Under torchrun (torchrun --nproc_per_node=N scripts/train.py ...) every process trains its share of the global batch
with DDP; rank 0 writes logs, checkpoints and metrics into the one run directory.

Exit status: 0 when training (and the final evaluation) finished; 128 + signal number (143 for SIGTERM, 130 for
SIGINT) when stopped by a signal after saving a checkpoint; 1 on errors, e.g. a non-finite loss.
"""
from __future__ import annotations

import functools
import logging
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

logger = logging.getLogger("segdet.train")


def run(cfg: DictConfig, run_dir: str) -> int:
    import torch

    from segdet.config import check_config, resolve_num_classes
    from segdet.engine import distributed as du
    from segdet.engine.defaults import build_trainer
    from segdet.engine.evaluation import inference_on_dataset, json_safe_metrics
    from segdet.engine.hooks import OverlayHook
    from segdet.engine.launch import agree_on_run_dir, configure_rank_logging, split_train_options
    from segdet.engine.rng import seed_all
    from segdet.engine.trainer import NonFiniteLossError
    from segdet.evaluation import COCOEvaluator
    from segdet.modeling import build_model

    check_config(cfg, "train")
    cpu_threads = cfg.get("cpu_threads", 0)
    if not isinstance(cpu_threads, int) or isinstance(cpu_threads, bool) or cpu_threads < 0:
        raise ValueError(f"cpu_threads must be an integer >= 0 (0 = torch's default), got {cpu_threads!r}")
    if cpu_threads:
        torch.set_num_threads(cpu_threads)
    batch_size, options = split_train_options(OmegaConf.to_container(cfg.train, resolve=True))
    data = instantiate(cfg.data, _convert_="all")
    dist = du.init_distributed(cfg.device)
    configure_rank_logging(dist.rank)
    run_dir = agree_on_run_dir(run_dir)
    logger.info("Run directory %s, world size %d, device %s, %d CPU threads", run_dir, dist.world_size, dist.device,
                torch.get_num_threads())

    if dist.is_main:
        data.prepare()  # generate synthetic data once, before the other ranks look for it
    du.barrier()
    train_set, train_loader = data.build("train", global_batch_size=batch_size, seed=cfg.seed)
    val_set, val_loader = data.build("val")
    model_config = OmegaConf.to_container(cfg.model, resolve=True)
    model_config["num_classes"] = resolve_num_classes(model_config.get("num_classes"), train_set)

    seed_all(cfg.seed)  # same initial weights on every rank
    model = build_model(model_config)
    seed_all(cfg.seed + dist.rank)  # each rank its own stream for RoI sampling etc.
    optimizer = instantiate(cfg.optim)(model)

    evaluator = COCOEvaluator(val_set.ann_file, val_set.label_to_category_id)
    evaluate_fn = functools.partial(inference_on_dataset, data_loader=val_loader, evaluator=evaluator,
                                    device=dist.device)
    overlays = OverlayHook(val_set, class_names=val_set.class_names, num_images=cfg.eval.num_overlays,
                           score_threshold=cfg.eval.overlay_score_threshold)
    # The schedule is a partial: the trainer calls it with its own max_iter (the run length has one owner).
    trainer = build_trainer(
        model=model, optimizer=optimizer, schedule=instantiate(cfg.schedule), data_loader=train_loader,
        sampler=train_loader, run_dir=run_dir, dist=dist, evaluate_fn=lambda m: json_safe_metrics(evaluate_fn(m)),
        checkpoint_extra={"model_config": model_config, "label_to_category_id": dict(val_set.label_to_category_id),
                          "class_names": list(val_set.class_names)},
        hooks=[overlays], **options,
    )
    trainer.resume_or_start(resume=cfg.resume)
    try:
        result = trainer.train()
    except NonFiniteLossError as exc:
        logger.error("%s", exc)
        return 1
    du.barrier()
    du.destroy()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return result.exit_code


_exit_code = [0]  # hydra.main drops the task's return value


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    _exit_code[0] = run(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    from segdet.engine.launch import nonmain_rank_overrides

    sys.argv += nonmain_rank_overrides(sys.argv[1:])
    main()
    sys.exit(_exit_code[0])
