"""Training engine: the train loop (trainer.py) and its hooks (hooks/: metrics logging, checkpoints, signals,
non-finite losses, evaluation, overlays), the standard trainer built from the train config (defaults.py),
checkpoint files (checkpoint.py) and saving/resuming a trainer (checkpointer.py), optimizers and lr schedules
(optim.py, lr_scheduler.py), metrics files (logger.py), torchrun process groups (distributed.py), evaluation runs
(evaluation.py), predictions (predictor.py) and launch helpers for the Hydra scripts (launch.py).

Submodules are imported on use (``from segdet.engine.checkpoint import load_checkpoint``) so that importing one
does not pull in TensorBoard or the data pipeline.
"""
