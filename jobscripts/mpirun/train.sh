#!/usr/bin/env bash
# zerotrain on the nodes of a hostfile, started by Open MPI's mpirun (no Slurm):
#   jobscripts/mpirun/train.sh HOSTFILE [zerotrain train options]
#   jobscripts/mpirun/train.sh hosts.txt --config ds_config.json --model model.yaml --data tokens.h5
# HOSTFILE has one node per line ("node01 slots=4"); every node runs the same number of ranks:
#   ZT_RANKS_PER_NODE  ranks per node (default: the GPUs of this node, 2 without GPUs)
#   ZT_CPUS_PER_RANK   cores per rank and OMP_NUM_THREADS (default: this node's cores / ranks)
#   ZT_BIN             the zerotrain executable (default: build/app/zerotrain of this checkout)
#   ZT_SAVE_DIR        --save-dir, checkpoints (default: none, unless --save-dir is among the options)
# The nodes must be reachable by ssh without a password and see the same paths (the save
# directory too: every rank writes its part of each checkpoint).
# Checkpoints and stopping: with a save directory that already has a `latest`, the run resumes
# from it (--load-dir, which replaces a --load-dir/--load-tag among the options), so running the
# same command again continues an interrupted run up to --steps, bit-identically to an
# uninterrupted one (same config and rank count). To checkpoint and stop a run:
#   kill -USR1 <pid of this script>    # it becomes mpirun, which forwards SIGUSR1 to every rank;
#                                      # they checkpoint at the next step boundary and exit 0
# SIGTERM or Ctrl-C to mpirun does not checkpoint: mpirun sends the ranks SIGTERM and SIGKILL
# right after it. SIGTERM sent to the ranks themselves (as Slurm does) checkpoints like SIGUSR1.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

if (($# < 1)) || [[ ! -f $1 ]]; then
  echo "usage: $0 HOSTFILE [zerotrain train options]" >&2
  exit 2
fi
hostfile=$1
shift
zerotrain=${ZT_BIN:-$repo/build/app/zerotrain}

# The save directory: --save-dir among the options (--save-dir DIR or --save-dir=DIR), else
# ZT_SAVE_DIR (then passed as --save-dir).
save_dir=${ZT_SAVE_DIR:-}
save_dir_given=0
for ((i = 1; i <= $#; i++)); do
  case ${!i} in
    --save-dir=*) save_dir=${!i#*=} save_dir_given=1 ;;
    --save-dir)
      next=$((i + 1))
      save_dir=${!next:-} save_dir_given=1
      ;;
  esac
done
args=()
if [[ -n $save_dir ]] && ((!save_dir_given)); then args+=(--save-dir "$save_dir"); fi
if [[ -n $save_dir && -f $save_dir/latest ]]; then
  echo "train.sh: resuming from $save_dir/$(cat "$save_dir/latest")"
  args+=(--load-dir "$save_dir")
  for ((i = 1; i <= $#; i++)); do
    case ${!i} in
      --load-dir=* | --load-tag=*) ;;
      --load-dir | --load-tag) i=$((i + 1)) ;;
      *) args+=("${!i}") ;;
    esac
  done
else
  args+=("$@")
fi

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
  "$zerotrain" train "${args[@]}"
