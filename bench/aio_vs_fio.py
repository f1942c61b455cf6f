#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Sequential read and write throughput of zerotrain's aio engine against fio's, same settings.

For each ioengine (io_uring, libaio) and queue depth, on one folder and file size: fio with
--direct=1 --ioengine=E --rw=write then --rw=read (--bs, --iodepth, --size, --numjobs=1), and
`zerotrain aio-bench --backend E --threads 1` at the same block size and queue depth (one worker
with the queue kept full: single_submit false, overlap_events true). Each side runs --runs times,
alternating, and the median counts (these machines are noisy). Prints GB/s (1e9 bytes per second)
and the ratio zerotrain / fio per ioengine x direction; the target is a ratio >= 0.90.

  bench/aio_vs_fio.py --path /local_nvme [--size 1GiB] [--block-size 1M] [--queue-depths 8,32]
      [--runs 3] [--ioengines io_uring,libaio] [--zerotrain build/app/zerotrain] [--min-ratio 0.9]

Low ratios are reported, not failed, unless --min-ratio is given. Exit status: 0; 1 when a run
fails or (with --min-ratio) a ratio is below it; 2 for a usage error; 3 when fio is missing.
"""
import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "m": 1 << 20, "mib": 1 << 20, "g": 1 << 30,
         "gib": 1 << 30}


def parse_size(text):
    """'1GiB', '1M', '4096' -> bytes (K/M/G are powers of 1024, as aio-bench and fio read them)."""
    number = text.rstrip("bBiIkKmMgG")
    unit = text[len(number):].lower()
    if not number.isdigit() or unit not in UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 1GiB, 1M, 4096)")
    return int(number) * UNITS[unit]


def run(command, what):
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}): {' '.join(command)}\n"
                           f"{result.stdout[-2000:]}{result.stderr[-2000:]}")
    return result.stdout


def fio(args, engine, direction, depth, filename):
    """GB/s of one fio job."""
    output = run(["fio", "--name=zt-aio-vs-fio", f"--filename={filename}", f"--rw={direction}",
                  f"--bs={args.block_size}", f"--iodepth={depth}", f"--size={args.size}",
                  "--numjobs=1", "--direct=1", f"--ioengine={engine}", "--output-format=json"],
                 f"fio {engine} {direction}")
    # fio prints warnings before the JSON on some versions.
    report = json.loads(output[output.index("{"):])
    return report["jobs"][0][direction]["bw_bytes"] / 1e9


def zerotrain(args, engine, depth, workdir):
    """(read, write) GB/s of one aio-bench run with a single setting."""
    table = os.path.join(workdir, "aio.csv")
    output = run([args.zerotrain, "aio-bench", "--path", args.path, "--size", str(args.size),
                  "--block-sizes", str(args.block_size), "--queue-depths", str(depth),
                  "--threads", "1", "--single-submit", "false", "--overlap-events", "true",
                  "--backend", engine, "--csv", table], f"zerotrain aio-bench --backend {engine}")
    if "O_DIRECT is unavailable" in output:
        raise RuntimeError(f"{args.path}: O_DIRECT is unavailable there; fio --direct=1 would "
                           "fail and buffered numbers measure the page cache")
    with open(table, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if len(rows) != 1:
        raise RuntimeError(f"aio-bench wrote {len(rows)} rows, expected 1")
    return float(rows[0]["read_gbps"]), float(rows[0]["write_gbps"])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--path", required=True, help="folder on the file system to measure")
    parser.add_argument("--size", type=parse_size, default=1 << 30, help="file size (1GiB)")
    parser.add_argument("--block-size", type=parse_size, default=1 << 20, help="bs (1M)")
    parser.add_argument("--queue-depths", default="8,32",
                        help="iodepth values (8: the aio default, 32)")
    parser.add_argument("--runs", type=int, default=3, help="runs per side (median counts)")
    parser.add_argument("--ioengines", default="io_uring,libaio")
    parser.add_argument("--zerotrain", default=os.path.join(ROOT, "build", "app", "zerotrain"))
    parser.add_argument("--min-ratio", type=float, default=None,
                        help="exit 1 when a ratio is below this (default: report only)")
    args = parser.parse_args()
    try:
        depths = [int(d) for d in args.queue_depths.split(",")]
    except ValueError:
        parser.error(f"--queue-depths: not a list of integers: {args.queue_depths!r}")
    engines = args.ioengines.split(",")
    if any(engine not in ("io_uring", "libaio") for engine in engines):
        parser.error("--ioengines: io_uring and/or libaio")
    if args.runs < 1:
        parser.error("--runs must be at least 1")

    if shutil.which("fio") is None:
        print("aio_vs_fio: fio is not installed; install it with: apt-get install fio "
              "(or jobscripts/local/setup-deps.sh as root)", file=sys.stderr)
        return 3
    if not (os.path.isfile(args.zerotrain) and os.access(args.zerotrain, os.X_OK)):
        print(f"aio_vs_fio: no executable {args.zerotrain} (build it, or pass --zerotrain)",
              file=sys.stderr)
        return 2
    if not os.path.isdir(args.path):
        print(f"aio_vs_fio: --path {args.path!r} is not a directory", file=sys.stderr)
        return 2

    fio_version = run(["fio", "--version"], "fio --version").strip()
    print(f"aio_vs_fio: {args.path}, file {args.size} bytes, bs {args.block_size}, numjobs 1, "
          f"{args.runs} runs per side alternating (median), {fio_version}, O_DIRECT")
    rows, failed = [], False
    filename = os.path.join(args.path, f"zt-aio-vs-fio-{os.getpid()}.tmp")
    with tempfile.TemporaryDirectory() as workdir:
        try:
            for engine in engines:
                for depth in depths:
                    # Untimed: fio lays the file out, so every timed write overwrites.
                    fio(args, engine, "write", depth, filename)
                    samples = {("fio", "write"): [], ("fio", "read"): [],
                               ("zerotrain", "write"): [], ("zerotrain", "read"): []}
                    for _ in range(args.runs):
                        for direction in ("write", "read"):
                            samples[("fio", direction)].append(
                                fio(args, engine, direction, depth, filename))
                        read, write = zerotrain(args, engine, depth, workdir)
                        samples[("zerotrain", "write")].append(write)
                        samples[("zerotrain", "read")].append(read)
                    for direction in ("write", "read"):
                        theirs = statistics.median(samples[("fio", direction)])
                        ours = statistics.median(samples[("zerotrain", direction)])
                        rows.append((engine, direction, depth, theirs, ours, ours / theirs,
                                     samples[("fio", direction)],
                                     samples[("zerotrain", direction)]))
        except RuntimeError as error:
            print(f"aio_vs_fio: error: {error}", file=sys.stderr)
            failed = True
        finally:
            if os.path.exists(filename):
                os.remove(filename)

    print(f"\n{'ioengine':<9} {'direction':<9} {'iodepth':>7} {'fio GB/s':>9} "
          f"{'zerotrain GB/s':>14} {'ratio':>6}   runs (fio | zerotrain)")
    below = []
    for engine, direction, depth, theirs, ours, ratio, fio_runs, zt_runs in rows:
        mark = "" if ratio >= 0.90 else "  < 0.90"
        if args.min_ratio is not None and ratio < args.min_ratio:
            below.append(f"{engine} {direction} iodepth {depth}: {ratio:.2f}")
        print(f"{engine:<9} {direction:<9} {depth:>7} {theirs:>9.3f} {ours:>14.3f} {ratio:>6.2f}"
              f"   {' '.join(f'{v:.3f}' for v in fio_runs)} | "
              f"{' '.join(f'{v:.3f}' for v in zt_runs)}{mark}")
    print("(GB/s = 1e9 bytes per second; ratio = zerotrain / fio, medians)")
    if below:
        print(f"aio_vs_fio: below --min-ratio {args.min_ratio}: {'; '.join(below)}",
              file=sys.stderr)
    return 1 if failed or below else 0


if __name__ == "__main__":
    sys.exit(main())
