#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Merges the CSV files of `zerotrain aio-bench` (one per task of jobscripts/slurm/aio-sweep.sbatch)
and prints, per node and overall, the best aio setting as a block to paste into a DeepSpeed
config.

    python3 jobscripts/slurm/aio-sweep-merge.py results/aio-sweep-1234
    python3 jobscripts/slurm/aio-sweep-merge.py a.csv b.csv --top 10 --json best.json

Best = the largest read + write GB/s (GB = 1e9 bytes), the criterion of DeepSpeed's
ds_nvme_tune. A setting measured more than once on a node counts with its mean; overall, a
setting's score is its mean over the nodes that measured it (a job array splits the grid, so a
node may have measured only its share). Python 3 standard library only. Exit status: 0, 1 when
there is nothing to merge or a file is malformed, 2 for a usage error.
"""
import argparse
import csv
import json
import os
import re
import sys

COLUMNS = ["node", "backend", "o_direct", "file_bytes", "block_size", "queue_depth", "threads",
           "single_submit", "overlap_events", "read_gbps", "write_gbps"]
SETTING = ("block_size", "queue_depth", "threads", "single_submit", "overlap_events")
PART_NAME = re.compile(r"part-(\d+)-of-(\d+)\.csv$")


class MergeError(Exception):
    pass


def parse_bool(text, where):
    if text not in ("true", "false"):
        raise MergeError(f"{where}: expected true or false, got {text!r}")
    return text == "true"


def read_rows(path):
    rows = []
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None:
            return rows  # an empty file: a task that failed before its first row
        missing = [c for c in COLUMNS if c not in reader.fieldnames]
        if missing:
            raise MergeError(f"{path}: not an aio-bench CSV (no column {', '.join(missing)})")
        for number, record in enumerate(reader, 2):
            where = f"{path}:{number}"
            try:
                row = {
                    "node": record["node"],
                    "backend": record["backend"],
                    "o_direct": parse_bool(record["o_direct"], where),
                    "file_bytes": int(record["file_bytes"]),
                    "block_size": int(record["block_size"]),
                    "queue_depth": int(record["queue_depth"]),
                    "threads": int(record["threads"]),
                    "single_submit": parse_bool(record["single_submit"], where),
                    "overlap_events": parse_bool(record["overlap_events"], where),
                    "read_gbps": float(record["read_gbps"]),
                    "write_gbps": float(record["write_gbps"]),
                }
            except (TypeError, ValueError) as error:
                raise MergeError(f"{where}: {error}") from None
            rows.append(row)
    return rows


def csv_files(arguments):
    files = []
    for argument in arguments:
        if os.path.isdir(argument):
            files += sorted(os.path.join(argument, name) for name in os.listdir(argument)
                            if name.endswith(".csv"))
        elif os.path.isfile(argument):
            files.append(argument)
        else:
            raise MergeError(f"{argument}: no such file or folder")
    return files


def missing_parts(files):
    """Parts named part-I-of-N.csv that are absent (a task failed or still runs)."""
    seen, counts = set(), set()
    for path in files:
        match = PART_NAME.search(os.path.basename(path))
        if match:
            seen.add(int(match.group(1)))
            counts.add(int(match.group(2)))
    if len(counts) != 1:
        return []
    return [part for part in range(counts.pop()) if part not in seen]


def aio_block(setting):
    block_size, queue_depth, threads, single_submit, overlap_events = setting
    # intra_op_parallelism: the name DeepSpeed's runtime reads (its docs say thread_count,
    # which DeepSpeed >= 0.16.4 ignores; zerotrain accepts both).
    return {"aio": {"block_size": block_size, "queue_depth": queue_depth,
                    "intra_op_parallelism": threads, "single_submit": single_submit,
                    "overlap_events": overlap_events}}


def size_label(size):
    for unit in ("", "K", "M", "G"):
        if size % 1024 or size < 1024:
            return f"{size}{unit}"
        size //= 1024
    return f"{size}T"


def scores(rows):
    """{setting: (read, write)}, the mean of the rows of each setting."""
    sums = {}
    for row in rows:
        key = tuple(row[c] for c in SETTING)
        read, write, count = sums.get(key, (0.0, 0.0, 0))
        sums[key] = (read + row["read_gbps"], write + row["write_gbps"], count + 1)
    return {key: (read / count, write / count) for key, (read, write, count) in sums.items()}


def best_of(table):
    # The first of the largest, in the order aio-bench measured them (dicts keep it).
    return max(table.items(), key=lambda item: item[1][0] + item[1][1])


def print_table(table, top):
    print(f"  {'block_size':>10} {'queue_depth':>11} {'threads':>7} {'single_submit':>13} "
          f"{'overlap_events':>14} {'read GB/s':>9} {'write GB/s':>10}")
    ranked = sorted(table.items(), key=lambda item: -(item[1][0] + item[1][1]))
    for setting, (read, write) in ranked[:top]:
        block_size, queue_depth, threads, single_submit, overlap_events = setting
        print(f"  {size_label(block_size):>10} {queue_depth:>11} {threads:>7} "
              f"{str(single_submit).lower():>13} {str(overlap_events).lower():>14} "
              f"{read:>9.3f} {write:>10.3f}")
    if len(ranked) > top:
        print(f"  ... {len(ranked) - top} more")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="+", help="CSV files, or folders of them")
    parser.add_argument("--top", type=int, default=5, help="settings shown per node (default 5)")
    parser.add_argument("--json", help="also write the per-node and overall best here")
    args = parser.parse_args()
    try:
        files = csv_files(args.inputs)
        rows = [row for path in files for row in read_rows(path)]
    except (OSError, MergeError) as error:
        print(f"aio-sweep-merge: error: {error}", file=sys.stderr)
        return 1
    if not rows:
        print(f"aio-sweep-merge: error: no aio-bench rows in {', '.join(args.inputs)}",
              file=sys.stderr)
        return 1

    nodes = list(dict.fromkeys(row["node"] for row in rows))
    print(f"aio-sweep-merge: {len(rows)} rows from {len(files)} file"
          f"{'' if len(files) == 1 else 's'}, {len(nodes)} node{'' if len(nodes) == 1 else 's'}: "
          f"{', '.join(nodes)}")
    print("best = largest read + write GB/s (GB = 1e9 bytes)")
    absent = missing_parts(files)
    if absent:
        print(f"WARNING: parts {', '.join(map(str, absent))} are missing (failed or still "
              f"running): their settings are not in the result")
    buffered = sorted({row["node"] for row in rows if not row["o_direct"]})
    if buffered:
        print(f"WARNING: O_DIRECT was unavailable on {', '.join(buffered)}: those rows measure "
              f"the page cache, not the device")

    summary = {"criterion": "max read_gbps + write_gbps (GB = 1e9 bytes)", "nodes": {}}
    for node in nodes:
        mine = [row for row in rows if row["node"] == node]
        table = scores(mine)
        setting, (read, write) = best_of(table)
        backends = ", ".join(sorted({row["backend"] for row in mine}))
        sizes = ", ".join(size_label(size) for size in sorted({row["file_bytes"] for row in mine}))
        print(f"\nnode {node}: {len(table)} settings ({backends}, file {sizes}); best read "
              f"{read:.3f}, write {write:.3f} GB/s")
        print_table(table, args.top)
        print(json.dumps(aio_block(setting)))
        summary["nodes"][node] = dict(aio_block(setting), read_gbps=read, write_gbps=write)

    # Overall: each setting's mean over the nodes that measured it.
    per_node = [scores([row for row in rows if row["node"] == node]) for node in nodes]
    overall = {}
    for table in per_node:
        for setting, (read, write) in table.items():
            overall.setdefault(setting, []).append((read, write))
    overall = {setting: (sum(r for r, _ in values) / len(values),
                         sum(w for _, w in values) / len(values))
               for setting, values in overall.items()}
    setting, (read, write) = best_of(overall)
    measured_on = sum(1 for table in per_node if setting in table)
    print(f"\noverall: best of {len(overall)} settings (mean over the nodes that measured each; "
          f"this one on {measured_on} of {len(nodes)}): read {read:.3f}, write {write:.3f} GB/s")
    print("# paste into the DeepSpeed config; intra_op_parallelism is the runtime's name for "
          "the docs' thread_count")
    print(json.dumps(aio_block(setting)))
    summary["overall"] = dict(aio_block(setting), read_gbps=read, write_gbps=write)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(summary, handle, indent=2)
            handle.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
