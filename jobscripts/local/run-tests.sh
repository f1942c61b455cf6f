#!/usr/bin/env bash
# The whole test suite: builds zerotrain if needed (installing what is missing when run as
# root), runs every unit, MPI and end-to-end test under ctest, fuzzes the file readers for a
# bounded time (jobscripts/local/fuzz.sh) and lints the job scripts.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
build_dir=${ZT_BUILD_DIR:-$repo/build}
"$repo/jobscripts/local/build.sh"

echo "== shell scripts: bash -n and shellcheck"
mapfile -t scripts < <(find "$repo/jobscripts" "$repo/.ci" -type f \( -name '*.sh' -o -name '*.sbatch' -o -name run \))
for script in "${scripts[@]}"; do bash -n "$script"; done
shellcheck "${scripts[@]}"

echo "== ctest"
cd "$build_dir"
ctest --output-on-failure -j "$(nproc)" --timeout 900

# A Clang build tree of its own (build-fuzz/); ZT_FUZZ_SECONDS=0 only replays the inputs.
fuzz_seconds=${ZT_FUZZ_SECONDS:-30}
echo "== fuzz: the file readers' libFuzzer targets, $fuzz_seconds s each (tests/fuzz/README.md)"
if ((fuzz_seconds > 0)); then
  "$repo/jobscripts/local/fuzz.sh" "$fuzz_seconds"
else
  "$repo/jobscripts/local/fuzz.sh" --replay
fi

echo "== Slurm: train-cpu.sbatch and the aio-sweep.sbatch job array on a one-node Slurm (skips unless root)"
ZT_BUILD_DIR=$build_dir "$repo/jobscripts/local/slurm-test.sh"
