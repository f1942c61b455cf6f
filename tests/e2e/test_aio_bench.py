#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""End-to-end tests of `zerotrain aio-bench` and its batch tooling: the table, the CSV, the
printed aio block (real JSON booleans and integers, accepted by check-config in an NVMe offload
config), usage errors, no test file left behind (also after SIGTERM), the buffered fallback on a
file system without O_DIRECT, the job script's plain loop without Slurm and the merge. Small
files (8-16 MiB) and grids, so each test takes seconds. Run by ctest like test_e2e.py (one ctest
per test method)."""
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402  (the shared helpers: run, DATA...)

REPO = os.path.dirname(os.path.dirname(e2e.HERE))
SWEEP = os.path.join(REPO, "jobscripts", "slurm", "aio-sweep.sbatch")
MERGE = os.path.join(REPO, "jobscripts", "slurm", "aio-sweep-merge.py")
HEADER = ["block_size", "queue_depth", "threads", "single_submit", "overlap_events", "read GB/s",
          "write GB/s"]
CSV_COLUMNS = ["node", "backend", "o_direct", "file_bytes", "block_size", "queue_depth", "threads",
               "single_submit", "overlap_events", "read_gbps", "write_gbps"]
AIO_KEYS = {"block_size": int, "queue_depth": int, "intra_op_parallelism": int,
            "single_submit": bool, "overlap_events": bool}
# 2 x 2 x 2 x 2 = 16 settings of an 8 MiB file.
SMALL_GRID = ["--size", "8MiB", "--block-sizes", "128K,1M", "--queue-depths", "8,32",
              "--threads", "1,2", "--single-submit", "false,true"]


def bench(folder, *extra):
    return e2e.run(["aio-bench", "--path", folder] + list(extra), timeout=120)


def aio_lines(stdout):
    """The printed aio blocks: lines that are a JSON object with one key, aio."""
    blocks = []
    for line in stdout.splitlines():
        if line.startswith('{"aio"'):
            blocks.append(json.loads(line))
    return blocks


def table_rows(stdout):
    """The table's rows (after its header line), as lists of fields."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split() == sum(
        (name.split() for name in HEADER), []))
    rows = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


def read_csv(path):
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return reader.fieldnames, list(reader)


class AioBench(unittest.TestCase):
    def assert_aio_block(self, block):
        self.assertEqual(list(block), ["aio"])
        self.assertEqual(set(block["aio"]), set(AIO_KEYS))
        for key, kind in AIO_KEYS.items():
            # bool is an int in Python: an integer key must not be a bool, and the reverse.
            self.assertIs(type(block["aio"][key]), kind, f"aio.{key} = {block['aio'][key]!r}")

    def test_aio_bench_prints_table_csv_and_pasteable_block(self):
        with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryDirectory() as out:
            table = os.path.join(out, "aio.csv")
            report = os.path.join(out, "aio.json")
            result = bench(folder, *SMALL_GRID, "--csv", table, "--json", report)
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            self.assertIn("1e9 bytes per second", result.stdout)
            self.assertIn("best by read + write GB/s", result.stdout)
            self.assertIn("thread_count", result.stdout)  # the comment on the docs' name
            self.assertRegex(result.stdout, r"backend +auto: (io_uring|libaio)")
            rows = table_rows(result.stdout)
            self.assertEqual(len(rows), 16, result.stdout)
            self.assertEqual({row[0] for row in rows}, {"128K", "1M"})

            columns, records = read_csv(table)
            self.assertEqual(columns, CSV_COLUMNS)
            self.assertEqual(len(records), 16)
            settings = set()
            for record in records:
                self.assertGreater(float(record["read_gbps"]), 0, record)
                self.assertGreater(float(record["write_gbps"]), 0, record)
                self.assertEqual(record["file_bytes"], str(8 << 20))
                self.assertIn(record["single_submit"], ("true", "false"))
                self.assertTrue(record["node"])
                settings.add(tuple(record[c] for c in CSV_COLUMNS[4:9]))
            self.assertEqual(len(settings), 16)  # every combination once

            blocks = aio_lines(result.stdout)
            self.assertEqual(len(blocks), 1, result.stdout)
            self.assert_aio_block(blocks[0])
            # The printed best is the CSV's row with the largest read + write.
            best = max(records, key=lambda r: float(r["read_gbps"]) + float(r["write_gbps"]))
            aio = blocks[0]["aio"]
            self.assertEqual((aio["block_size"], aio["queue_depth"], aio["intra_op_parallelism"],
                              aio["single_submit"], aio["overlap_events"]),
                             (int(best["block_size"]), int(best["queue_depth"]),
                              int(best["threads"]), best["single_submit"] == "true",
                              best["overlap_events"] == "true"))
            with open(report) as handle:
                summary = json.load(handle)
            self.assertEqual(summary["best"], blocks[0])
            self.assertEqual(len(summary["rows"]), 16)
            self.assertEqual(os.listdir(folder), [], "the test file was left behind")

    def test_aio_bench_best_block_passes_check_config(self):
        with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryDirectory() as workdir:
            result = bench(folder, "--size", "8MiB", "--block-sizes", "256K,1M",
                           "--queue-depths", "16", "--threads", "1,2")
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            block = aio_lines(result.stdout)[0]
            self.assert_aio_block(block)
            with open(os.path.join(e2e.DATA, "ds_stage0.json")) as handle:
                config = json.load(handle)
            config["zero_optimization"] = {
                "stage": 3, "offload_optimizer": {"device": "nvme", "nvme_path": folder}}
            config.update(block)  # pasted as printed
            path = os.path.join(workdir, "nvme_tuned.json")
            with open(path, "w") as handle:
                json.dump(config, handle)
            checked = e2e.run(["check-config", path, "--world-size", "1", "--max_steps", "10"])
            self.assertEqual(checked.returncode, 0, checked.stdout + checked.stderr)
            aio_section = checked.stdout.split("[aio]", 1)[1]
            for key, value in block["aio"].items():
                shown = json.dumps(value)  # 1048576, true, false
                self.assertRegex(aio_section, rf"\n +{key} +{shown} +file\n")
            self.assertEqual(os.listdir(folder), [])

    def test_aio_bench_missing_or_unusable_path_exits_2(self):
        with tempfile.TemporaryDirectory() as workdir:
            missing = os.path.join(workdir, "no-such-nvme")
            result = bench(missing, "--size", "8MiB")
            self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
            self.assertIn(missing, result.stderr)
            self.assertIn("No such file or directory", result.stderr)
            a_file = os.path.join(workdir, "plain-file")
            open(a_file, "w").close()
            result = bench(a_file, "--size", "8MiB")
            self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
            self.assertIn(a_file, result.stderr)
            self.assertIn("not a directory", result.stderr)
            # --path itself is required.
            result = e2e.run(["aio-bench", "--size", "8MiB"])
            self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
            self.assertIn("--path", result.stderr)

    def test_aio_bench_bad_sizes_and_lists_exit_2(self):
        cases = [
            (["--size", "1000"], "not a multiple of 4096 x threads"),
            (["--size", "8MiB", "--threads", "3"], "4096 x threads = 12288"),
            (["--size", "4MiB", "--block-sizes", "1M,8M"], "smaller than the block size 8M"),
            (["--size", "lots"], "--size"),
            (["--size", "0"], "must be positive"),
            (["--size", "8MiB", "--block-sizes", "1000"], "not a multiple of 4096"),
            (["--size", "8MiB", "--queue-depths", "0"], "--queue-depths"),
            (["--size", "8MiB", "--single-submit", "yes"], "is not true or false"),
            (["--size", "8MiB", "--backend", "posix"], "--backend"),
            (["--size", "8MiB", "--part", "2", "2"], "--part"),
        ]
        with tempfile.TemporaryDirectory() as folder:
            for args, needle in cases:
                result = bench(folder, *args)
                self.assertEqual(result.returncode, 2, f"{args}: {result.stdout}{result.stderr}")
                self.assertIn(needle, result.stderr, args)
            self.assertEqual(os.listdir(folder), [])

    def test_aio_bench_parts_split_the_grid(self):
        grid = ["--size", "8MiB", "--block-sizes", "128K,1M,4M", "--queue-depths", "4,16",
                "--threads", "1"]
        with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryDirectory() as out:
            seen = []
            for part in range(4):
                table = os.path.join(out, f"part{part}.csv")
                result = bench(folder, *grid, "--part", str(part), "4", "--csv", table,
                               "--label", "node-a")
                self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
                self.assertIn(f"part {part} of 4 of a grid of 6", result.stdout)
                _, records = read_csv(table)
                self.assertEqual({r["node"] for r in records}, {"node-a"})
                seen += [(r["block_size"], r["queue_depth"]) for r in records]
            self.assertEqual(sorted(seen), sorted(
                (str(b), str(q)) for b in (128 << 10, 1 << 20, 4 << 20) for q in (4, 16)))

    def test_aio_bench_sigterm_removes_the_test_file(self):
        with tempfile.TemporaryDirectory() as folder:
            command = [e2e.ZEROTRAIN, "aio-bench", "--path", folder, "--size", "64MiB",
                       "--block-sizes", "128K", "--queue-depths", "1,2,4,8,16,32,64,128",
                       "--threads", "1,2,4", "--single-submit", "false,true",
                       "--overlap-events", "true,false"]
            process = subprocess.Popen(command, env=e2e.ENV, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
            try:
                deadline = time.time() + 20
                while not os.listdir(folder) and time.time() < deadline and process.poll() is None:
                    time.sleep(0.05)
                self.assertTrue(os.listdir(folder), "no test file appeared")
                time.sleep(0.3)
                process.send_signal(signal.SIGTERM)
                process.communicate(timeout=30)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.communicate()
            self.assertEqual(process.returncode, -signal.SIGTERM)
            self.assertEqual(os.listdir(folder), [], "the test file survived SIGTERM")

    def test_aio_bench_buffered_fallback_is_said_loudly(self):
        if os.geteuid() != 0:
            self.skipTest("mounting a ramfs (no O_DIRECT) needs root")
        with tempfile.TemporaryDirectory() as folder:
            mounted = subprocess.run(["mount", "-t", "ramfs", "ramfs", folder],
                                     capture_output=True, text=True)
            if mounted.returncode != 0:
                self.skipTest(f"mount -t ramfs failed here: {mounted.stderr.strip()}")
            try:
                with tempfile.TemporaryDirectory() as out:
                    table = os.path.join(out, "aio.csv")
                    result = bench(folder, "--size", "8MiB", "--block-sizes", "1M",
                                   "--queue-depths", "8", "--threads", "1", "--csv", table)
                    self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
                    self.assertIn("WARNING: O_DIRECT is unavailable", result.stdout)
                    self.assertIn("page cache", result.stdout)
                    _, records = read_csv(table)
                    self.assertEqual([r["o_direct"] for r in records], ["false"])
                self.assertEqual(os.listdir(folder), [])
            finally:
                subprocess.run(["umount", folder], check=True)


def write_csv(path, node, rows):
    with open(path, "w") as handle:
        handle.write(",".join(CSV_COLUMNS) + "\n")
        for block, depth, threads, read, write in rows:
            handle.write(f"{node},io_uring,true,16777216,{block},{depth},{threads},false,true,"
                         f"{read},{write}\n")


class AioSweep(unittest.TestCase):
    def test_aio_bench_merge_prints_best_per_node_and_overall(self):
        with tempfile.TemporaryDirectory() as results:
            # a: 1M/8/1 best (3.0); b: 8M/32/2 best (5.0); overall 8M/32/2 (mean 3.0 vs 2.75).
            write_csv(os.path.join(results, "part-0-of-2.csv"), "a",
                      [(1 << 20, 8, 1, 1.0, 2.0), (8 << 20, 32, 2, 0.5, 0.5)])
            write_csv(os.path.join(results, "part-1-of-2.csv"), "b",
                      [(1 << 20, 8, 1, 1.0, 1.5), (8 << 20, 32, 2, 2.0, 3.0),
                       (131072, 128, 4, 0.1, 0.1)])
            merged = os.path.join(results, "best.json")
            result = subprocess.run([sys.executable, MERGE, results, "--json", merged],
                                    capture_output=True, text=True, timeout=60)
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            self.assertIn("5 rows from 2 files, 2 nodes: a, b", result.stdout)
            blocks = aio_lines(result.stdout)
            self.assertEqual(len(blocks), 3, result.stdout)  # a, b, overall
            self.assertEqual(blocks[0]["aio"]["block_size"], 1 << 20)
            self.assertEqual(blocks[1]["aio"]["block_size"], 8 << 20)
            self.assertEqual(blocks[1]["aio"]["intra_op_parallelism"], 2)
            self.assertEqual(blocks[2]["aio"]["block_size"], 8 << 20)  # mean 3.0 vs 2.75
            for block in blocks:
                self.assertIs(block["aio"]["single_submit"], False)
                self.assertIs(block["aio"]["overlap_events"], True)
            with open(merged) as handle:
                summary = json.load(handle)
            self.assertEqual(summary["overall"]["aio"], blocks[2]["aio"])
            self.assertEqual(set(summary["nodes"]), {"a", "b"})
            # A part missing is said.
            os.remove(os.path.join(results, "part-1-of-2.csv"))
            result = subprocess.run([sys.executable, MERGE, results], capture_output=True,
                                    text=True, timeout=60)
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            self.assertIn("WARNING: parts 1 are missing", result.stdout)
            # Nothing to merge is an error.
            empty = os.path.join(results, "empty")
            os.mkdir(empty)
            result = subprocess.run([sys.executable, MERGE, empty], capture_output=True,
                                    text=True, timeout=60)
            self.assertEqual(result.returncode, 1)
            self.assertIn("no aio-bench rows", result.stderr)

    def test_aio_bench_job_script_loops_without_slurm(self):
        env = {k: v for k, v in e2e.ENV.items() if not k.startswith("SLURM_")}
        with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryDirectory() as out:
            results = os.path.join(out, "results")
            env.update(ZT_BIN=e2e.ZEROTRAIN, ZT_AIO_TASKS="3", ZT_AIO_RESULTS=results)
            result = subprocess.run(
                ["bash", SWEEP, "--path", folder, "--size", "8MiB", "--block-sizes", "128K,1M",
                 "--queue-depths", "8,32", "--threads", "1", "--label", "here"],
                env=env, cwd=out, capture_output=True, text=True, timeout=120)
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            self.assertEqual(sorted(os.listdir(results)),
                             ["best.json", "merged.txt", "part-0-of-3.csv", "part-1-of-3.csv",
                              "part-2-of-3.csv"])
            self.assertIn("aio-sweep-merge: 4 rows from 3 files, 1 node: here", result.stdout)
            blocks = aio_lines(result.stdout)
            self.assertEqual(len(blocks), 3 + 2, result.stdout)  # 3 parts, node "here", overall
            with open(os.path.join(results, "best.json")) as handle:
                self.assertEqual(json.load(handle)["overall"]["aio"], blocks[-1]["aio"])
            self.assertEqual(os.listdir(folder), [])
            # The script sets --csv and --part itself.
            result = subprocess.run(["bash", SWEEP, "--path", folder, "--csv", "x.csv"], env=env,
                                    cwd=out, capture_output=True, text=True, timeout=60)
            self.assertEqual(result.returncode, 2)
            self.assertIn("set by the script", result.stderr)


if __name__ == "__main__":
    e2e.main()
