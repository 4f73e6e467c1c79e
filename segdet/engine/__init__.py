"""Training engine: the train loop (trainer.py), checkpoints (checkpoint.py), optimizers and lr schedules
(optim.py, lr_scheduler.py), metrics logging (logger.py), torchrun process groups (distributed.py), evaluation runs
(evaluation.py) and launch helpers for the Hydra scripts (launch.py).

Submodules are imported on use (``from segdet.engine.checkpoint import load_checkpoint``) so that importing one
does not pull in TensorBoard or the data pipeline.
"""
