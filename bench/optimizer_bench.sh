#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Runs optimizer_bench on 1 thread and on every core and prints, per kernel, bytes/s and the ratio
# to the STREAM triad each run measured on its own threads. Low ratios are reported, not failed:
# the exit status is non-zero only when a run fails.
#
#   bench/optimizer_bench.sh [path/to/optimizer_bench] [optimizer_bench flags, e.g. --elements=N]
#
# The binary defaults to build/bench/optimizer_bench under the repository root. Threads are
# pinned one per core (OMP_PROC_BIND=spread), as the STREAM figures in the design notes were.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
binary="$root/build/bench/optimizer_bench"
if [[ $# -gt 0 && $1 != -* ]]; then
  binary=$1
  shift
fi
if [[ ! -x $binary ]]; then
  echo "optimizer_bench.sh: no executable $binary (build the optimizer_bench target)" >&2
  exit 2
fi
command -v python3 > /dev/null || { echo "optimizer_bench.sh: needs python3" >&2; exit 2; }

cores=$(nproc)
thread_counts=(1)
[[ $cores -gt 1 ]] && thread_counts+=("$cores")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for threads in "${thread_counts[@]}"; do
  echo "== $threads thread(s)" >&2
  OMP_PROC_BIND=spread OMP_PLACES=cores "$binary" --threads="$threads" \
    --benchmark_out="$work/$threads.json" --benchmark_out_format=json "$@" >&2
done

python3 - "$work" "${thread_counts[@]}" <<'EOF'
import json
import sys

work, counts = sys.argv[1], sys.argv[2:]
runs = {}
for threads in counts:
    with open(f"{work}/{threads}.json") as f:
        data = json.load(f)
    triad = float(data["context"]["triad_GBps"])
    rows = {}
    for b in data["benchmarks"]:
        if b.get("run_type", "iteration") != "iteration":
            continue
        name = b["name"].removesuffix("/real_time")
        rows[name] = (b["bytes_per_second"] / 1e9, b["ratio_to_triad"])
    runs[threads] = (triad, rows)

names = list(runs[counts[0]][1])
header = f"{'kernel':34}" + "".join(f" | {t + ' thr GB/s':>12} {'/ triad':>8}" for t in counts)
print(header)
print("-" * len(header))
print(f"{'triad (best, in main)':34}" +
      "".join(f" | {runs[t][0]:12.2f} {1.0:8.2f}" for t in counts))
for name in names:
    cells = ""
    for t in counts:
        rate, ratio = runs[t][1].get(name, (float("nan"), float("nan")))
        cells += f" | {rate:12.2f} {ratio:8.2f}"
    print(f"{name:34}{cells}")
EOF
