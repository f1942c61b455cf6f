#!/usr/bin/env bash
# zerotrain on the nodes of a hostfile, started by Open MPI's mpirun (no Slurm):
#   jobscripts/mpirun/train.sh HOSTFILE [zerotrain train options]
#   jobscripts/mpirun/train.sh hosts.txt --config ds_config.json --model model.yaml --data tokens.h5
# HOSTFILE has one node per line ("node01 slots=4"); every node runs the same number of ranks:
#   ZT_RANKS_PER_NODE  ranks per node (default: the GPUs of this node, 2 without GPUs)
#   ZT_CPUS_PER_RANK   cores per rank and OMP_NUM_THREADS (default: this node's cores / ranks)
#   ZT_BIN             the zerotrain executable (default: build/app/zerotrain of this checkout)
# The nodes must be reachable by ssh without a password and see the same paths.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

if (($# < 1)) || [[ ! -f $1 ]]; then
  echo "usage: $0 HOSTFILE [zerotrain train options]" >&2
  exit 2
fi
hostfile=$1
shift
zerotrain=${ZT_BIN:-$repo/build/app/zerotrain}

# One rank per GPU when the node has GPUs, else two ranks sharing the node's cores.
gpus=$(nvidia-smi --list-gpus 2>/dev/null | wc -l || true)
ranks_per_node=${ZT_RANKS_PER_NODE:-$((gpus > 0 ? gpus : 2))}
cpus_per_rank=${ZT_CPUS_PER_RANK:-$(($(nproc --all) / ranks_per_node))}
((cpus_per_rank >= 1)) || cpus_per_rank=1

if [[ $(id -u) -eq 0 ]]; then
  # Open MPI refuses to run as root unless told that this is intended (containers, CI).
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
# Each rank runs its host kernels on the cores it is bound to.
export OMP_NUM_THREADS=$cpus_per_rank

# --map-by ppr:N:node:PE=C: N ranks on every node of the hostfile, each given C cores
#   (mpirun counts the ranks: N x nodes); consecutive ranks fill a node, so the local rank,
#   and with it the GPU each rank picks, follows the rank.
# --bind-to core: each rank stays on its C cores, with its OpenMP threads.
# -x: the same environment on every node (threads, paths, the root permission above).
# --report-bindings: the cores of every rank, on stderr, to check the layout.
exec mpirun --hostfile "$hostfile" \
  --map-by "ppr:${ranks_per_node}:node:PE=${cpus_per_rank}" --bind-to core \
  -x OMP_NUM_THREADS -x PATH -x LD_LIBRARY_PATH \
  ${OMPI_ALLOW_RUN_AS_ROOT:+-x OMPI_ALLOW_RUN_AS_ROOT -x OMPI_ALLOW_RUN_AS_ROOT_CONFIRM} \
  --report-bindings \
  "$zerotrain" train "$@"
