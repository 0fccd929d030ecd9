#!/usr/bin/env bash
# Train TinyLlama-1.1B on a mixture, as RegMix's final run:
#   model_training/pretrain_1b.sh optimal_mixture            # a name below mixture_config/, or a path
#   model_training/pretrain_1b.sh optimal_mixture --corpus data/mycorpus --max-step 30000  # flags override the file
#   model_training/pretrain_1b.sh --smoke                    # tiny model, 4 steps, CPU: checks the path
#                                                            # (in runs/pretrain/<name>_smoke, apart from the real run)
# One node: all its GPUs, one process each, FSDP. GPUS=4 limits the GPUs used.
# Several nodes: run this script on every node with
#   NUM_NODES=2 NODE_RANK=<0|1> MASTER_ADDR=<node 0's address> MASTER_PORT=29500 GPUS=8
# (it starts torchrun with those values); any other flag goes to `python -m regmix.train.pretrain --help`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
MIXTURE=optimal_mixture
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then MIXTURE=$1; shift; fi
case "${NUM_NODES:-1}" in
  ''|*[!0-9]*|0) echo "error: NUM_NODES=${NUM_NODES} must be a whole number >= 1" >&2; exit 2 ;;
esac
if [ "${NUM_NODES:-1}" -gt 1 ]; then
  exec "$PYTHON" -m torch.distributed.run --nnodes "$NUM_NODES" --node-rank "${NODE_RANK:?set NODE_RANK}" \
    --nproc-per-node "${GPUS:?set GPUS (GPUs per node)}" --master-addr "${MASTER_ADDR:?set MASTER_ADDR}" \
    --master-port "${MASTER_PORT:-29500}" -m regmix.train.pretrain "$MIXTURE" --devices "$GPUS" \
    --num-nodes "$NUM_NODES" "$@"
fi
exec "$PYTHON" -m regmix.train.pretrain "$MIXTURE" --devices "${GPUS:-auto}" "$@"
