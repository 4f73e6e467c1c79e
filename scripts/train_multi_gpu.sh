#!/usr/bin/env bash
# Multi-GPU / multi-node training with torchrun; extra arguments are Hydra overrides for scripts/train.py.
#
#   one node, all its GPUs:     scripts/train_multi_gpu.sh experiment=coco_r50_fpn_1x
#   two nodes, 8 GPUs each:     NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 MASTER_PORT=29500 scripts/train_multi_gpu.sh ...
#                               NNODES=2 NODE_RANK=1 MASTER_ADDR=node0 MASTER_PORT=29500 scripts/train_multi_gpu.sh ...
#   elastic rendezvous instead: RDZV_ENDPOINT=host:port RDZV_ID=myjob NNODES=2 scripts/train_multi_gpu.sh ...
#
# Environment: NNODES (1), NPROC_PER_NODE (number of visible GPUs, else 1), NODE_RANK (0), MASTER_ADDR (127.0.0.1),
# MASTER_PORT (29500), RDZV_ENDPOINT / RDZV_ID (c10d rendezvous; NODE_RANK is then assigned by torchrun),
# MAX_RESTARTS (0): restarted workers resume from the last checkpoint, which needs a fixed run directory - the
# default runs/<name> is one; do not put ${now:...} into hydra.run.dir when restarts are enabled.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MAX_RESTARTS=${MAX_RESTARTS:-0}
if [ -z "${NPROC_PER_NODE:-}" ]; then
  NPROC_PER_NODE=$("$PY" -c 'import torch; print(max(torch.cuda.device_count(), 1))')
fi
args=(--nnodes="$NNODES" --nproc-per-node="$NPROC_PER_NODE" --max-restarts="$MAX_RESTARTS")
if [ -n "${RDZV_ENDPOINT:-}" ]; then
  args+=(--rdzv-backend=c10d --rdzv-endpoint="$RDZV_ENDPOINT" --rdzv-id="${RDZV_ID:-segdet}")
else
  args+=(--node-rank="$NODE_RANK" --master-addr="${MASTER_ADDR:-127.0.0.1}" --master-port="${MASTER_PORT:-29500}")
fi
echo "[train_multi_gpu] torchrun ${args[*]} scripts/train.py $*"
exec "$PY" -m torch.distributed.run "${args[@]}" scripts/train.py "$@"
