#!/usr/bin/env bash
# The default job: builds zerotrain if needed, then trains the embedded default (a small GPT on
# a synthetic Markov chain, DeepSpeed config at ZeRO stage 0) on CPUs with 2 MPI ranks.
# Outputs go to runs/default/ in the current directory (summary.json among them).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build_dir=${ZT_BUILD_DIR:-$repo/build}
"$repo/jobscripts/local/build.sh" >"${TMPDIR:-/tmp}/zerotrain-build.log" 2>&1 || {
  echo "zerotrain: the build failed; its log:" >&2
  tail -n 40 "${TMPDIR:-/tmp}/zerotrain-build.log" >&2
  exit 1
}
if [[ $(id -u) -eq 0 ]]; then
  # Open MPI refuses to run as root unless told that this is intended (containers, CI).
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
exec mpirun -np 2 "$build_dir/app/zerotrain" train "$@"
