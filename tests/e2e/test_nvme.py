#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""End-to-end tests of NVMe offload (ZeRO-Infinity): runs with the optimizer's states (and the
stage-3 parameters) in swap files give losses bit-identical to the CPU-offload runs in fp32 at
np 1, 2 and 4; the Hugging Face guide's ZeRO-Infinity config trains unchanged; swap folders are
gone after every run; and each fault (missing or unwritable nvme_path, no O_DIRECT, a disk too
small, a file size limit, a swap file truncated or deleted underneath the run) is a clear
error naming the path and the rank, with a non-zero exit and no hang. Run by ctest like
test_e2e.py (one ctest per test method)."""
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402  (the shared helpers: run, ENV...)
from test_offload import SMALL_PIECES, offload_config  # noqa: E402
from test_precision import train  # noqa: E402  (zerotrain train, its summary and output)

DATA = e2e.DATA
HF_GUIDE_INFINITY = os.path.join(DATA, "hf_guide_zero3_infinity_nvme.json")
# Small aio requests, several workers: every code path of the engine runs on a tiny model.
SMALL_AIO = {"block_size": 8192, "queue_depth": 4, "thread_count": 2}


def nvme_config(workdir, nvme_path, stage, parameters=False, precision="fp32", zero=None,
                extra=None, optimizer_keys=None, parameter_keys=None, aio=None):
    """offload_config's run with device "nvme" under `nvme_path`."""
    path = offload_config(workdir, stage, precision, optimizer=True, parameters=parameters,
                          zero=dict(SMALL_PIECES, **(zero or {})), extra=extra)
    with open(path) as handle:
        config = json.load(handle)
    section = config["zero_optimization"]
    section["offload_optimizer"] = dict(section["offload_optimizer"], device="nvme",
                                        nvme_path=nvme_path, **(optimizer_keys or {}))
    if parameters:
        section["offload_param"] = dict(section["offload_param"], device="nvme",
                                        nvme_path=nvme_path, max_in_cpu=0,
                                        **(parameter_keys or {}))
    config["aio"] = dict(SMALL_AIO, **(aio or {}))
    with open(path, "w") as handle:
        json.dump(config, handle)
    return path


def mpi_command(ranks):
    return [e2e.MPIEXEC, "-n", str(ranks), "--oversubscribe", e2e.ZEROTRAIN]


def leftovers(nvme_path):
    return glob.glob(os.path.join(nvme_path, "zerotrain-*"))


class Mount:
    """A file system mounted on a fresh folder for one test (root only); None when the
    machine does not allow it."""

    def __init__(self, workdir, kind, options):
        self.path = os.path.join(workdir, f"mnt_{kind}")
        os.makedirs(self.path)
        self.mounted = False
        if os.geteuid() != 0:
            return
        result = subprocess.run(["mount", "-t", kind, "-o", options, kind, self.path],
                                capture_output=True, text=True)
        self.mounted = result.returncode == 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.mounted:
            subprocess.run(["umount", "-l", self.path], capture_output=True)


class NvmeMatchesCpuOffload(unittest.TestCase):
    """Same arithmetic, states read back from files: the losses equal the CPU-offload run's
    exactly (fp32), for the optimizer offloaded at stages 1-3 and optimizer and parameters at
    stage 3, with and without the read/write pipeline."""

    def check(self, ranks, stages=(1, 2, 3)):
        with tempfile.TemporaryDirectory() as workdir:
            nvme = os.path.join(workdir, "nvme")
            os.makedirs(nvme)
            for stage in stages:
                variants = [(False, {}), (False, {"buffer_count": 9, "pipeline_read": True,
                                                  "pipeline_write": True})]
                if stage == 3:
                    variants.append((True, {"buffer_count": 6, "pipeline_read": True}))
                for parameters, keys in variants:
                    cpu = offload_config(workdir, stage, optimizer=True, parameters=parameters,
                                         zero=SMALL_PIECES)
                    want, _ = train(workdir, cpu, ranks, 12)
                    config = nvme_config(workdir, nvme, stage, parameters, optimizer_keys=keys)
                    got, result = train(workdir, config, ranks, 12)
                    what = f"stage {stage} np {ranks} parameters {parameters} {keys}"
                    self.assertEqual(got["losses"], want["losses"], what)
                    self.assertEqual(got["offload"]["optimizer"], "nvme", what)
                    if parameters:
                        self.assertEqual(got["offload"]["parameters"], "nvme", what)
                    read = got["offload"]["nvme_bytes_read_per_step"]
                    written = got["offload"]["nvme_bytes_written_per_step"]
                    self.assertTrue(all(b > 0 for b in read) and all(b > 0 for b in written),
                                    f"{what}: {read} {written}")
                    self.assertIn("nvme", result.stdout)
                    self.assertEqual(leftovers(nvme), [], what)

    def test_np1(self):
        self.check(1)

    def test_np2(self):
        self.check(2)

    def test_np4(self):
        self.check(4)

    def test_lamb_and_bf16(self):
        # LAMB's two passes over the swapped states, and a 16-bit model over swapped masters.
        with tempfile.TemporaryDirectory() as workdir:
            nvme = os.path.join(workdir, "nvme")
            os.makedirs(nvme)
            lamb = {"optimizer": {"type": "Lamb", "params": {"lr": 2e-3, "weight_decay": 0.01}},
                    "zero_allow_untested_optimizer": True}
            for precision, extra in (("fp32", lamb), ("bf16", None)):
                cpu = offload_config(workdir, 3, precision, optimizer=True, parameters=True,
                                     zero=SMALL_PIECES, extra=extra)
                want, _ = train(workdir, cpu, 2, 10)
                got, _ = train(workdir, nvme_config(workdir, nvme, 3, True, precision,
                                                    extra=extra), 2, 10)
                self.assertEqual(got["losses"], want["losses"], precision)


class GuideConfig(unittest.TestCase):
    def test_the_guides_zero_infinity_config_trains_unchanged(self):
        # Hugging Face's ZeRO-Infinity example, with only nvme_path pointed at a scratch folder.
        with tempfile.TemporaryDirectory() as workdir:
            nvme = os.path.join(workdir, "local_nvme")
            os.makedirs(nvme)
            with open(HF_GUIDE_INFINITY) as handle:
                text = handle.read()
            config = os.path.join(workdir, "ds_config.json")
            with open(config, "w") as handle:
                handle.write(text.replace('"/local_nvme"', json.dumps(nvme)))
            flags = ["--learning_rate", "2e-3", "--warmup_steps", "3",
                     "--per_device_train_batch_size", "4", "--max_grad_norm", "1.0"]
            summary, result = train(workdir, config, 2, 8, flags)
            self.assertEqual(summary["offload"]["optimizer"], "nvme")
            self.assertEqual(summary["offload"]["parameters"], "nvme")
            self.assertLess(summary["losses"][-1], summary["losses"][0])
            self.assertIn("nvme", result.stdout)
            self.assertEqual(leftovers(nvme), [])


class Faults(unittest.TestCase):
    """Each fault: exit non-zero, a message naming the path and the rank, no hang, and no swap
    folder left behind."""

    def failed(self, result, *needles):
        self.assertNotEqual(result.returncode, 0, result.stdout + result.stderr)
        text = result.stdout + result.stderr
        for needle in needles:
            self.assertIn(needle, text)

    def test_missing_nvme_path(self):
        with tempfile.TemporaryDirectory() as workdir:
            absent = os.path.join(workdir, "no_such_nvme")
            _, result = train(workdir, nvme_config(workdir, absent, 2), 2, 2, check=False)
            self.failed(result, absent, "offload_optimizer.nvme_path", "rank")
            self.assertEqual(result.returncode, 2)

    def test_nvme_path_that_is_a_file_or_read_only(self):
        with tempfile.TemporaryDirectory() as workdir:
            a_file = os.path.join(workdir, "a_file")
            with open(a_file, "w") as handle:
                handle.write("not a folder\n")
            _, result = train(workdir, nvme_config(workdir, a_file, 3, True), 2, 2, check=False)
            self.failed(result, a_file, "not a directory")
            with open(a_file) as handle:
                self.assertEqual(handle.read(), "not a folder\n")
            with Mount(workdir, "tmpfs", "ro,size=1m") as read_only:
                if not read_only.mounted:
                    self.skipTest("cannot mount a read-only tmpfs here (needs root)")
                _, result = train(workdir, nvme_config(workdir, read_only.path, 2), 2, 2,
                                  check=False)
                self.failed(result, read_only.path, "rank")

    def test_a_file_system_without_odirect_warns_and_trains_right(self):
        with tempfile.TemporaryDirectory() as workdir:
            with Mount(workdir, "ramfs", "mode=0700") as ramfs:
                if not ramfs.mounted:
                    self.skipTest("cannot mount ramfs here (needs root)")
                want, _ = train(workdir, offload_config(workdir, 2, optimizer=True,
                                                        zero=SMALL_PIECES), 2, 6)
                got, result = train(workdir, nvme_config(workdir, ramfs.path, 2), 2, 6)
                self.assertIn("O_DIRECT", result.stdout + result.stderr)
                self.assertIn("WARNING", result.stdout + result.stderr)
                self.assertTrue(got["offload"]["aio_direct"].startswith("buffered"))
                self.assertEqual(got["losses"], want["losses"])
                self.assertEqual(leftovers(ramfs.path), [])

    def test_a_disk_too_small(self):
        with tempfile.TemporaryDirectory() as workdir:
            with Mount(workdir, "tmpfs", "size=256k") as small:
                if not small.mounted:
                    self.skipTest("cannot mount a small tmpfs here (needs root)")
                big = e2e.write_model(workdir, "wide.yaml", vocab_size=16, n_positions=32,
                                      n_embd=96, n_layer=2, n_head=2)
                config = nvme_config(workdir, small.path, 2)
                _, result = train(workdir, config, 2, 2, check=False, model=big)
                self.failed(result, small.path, "rank", "space")
                self.assertEqual(leftovers(small.path), [])

    def test_a_file_size_limit(self):
        # ulimit -f: where no small file system can be mounted, the same fault by a limit.
        with tempfile.TemporaryDirectory() as workdir:
            nvme = os.path.join(workdir, "nvme")
            os.makedirs(nvme)
            config = nvme_config(workdir, nvme, 2)
            args = ["train", "--config", config, "--model",
                    os.path.join(DATA, "tiny_model.yaml"), "--steps", "2",
                    "--output-dir", os.path.join(workdir, "out")]
            # The limit on the ranks only: mpiexec's own shared-memory files would exceed it.
            command = [e2e.MPIEXEC, "-n", "2", "--oversubscribe", "bash", "-c",
                       'ulimit -f 64 && exec "$@"', "bash", e2e.ZEROTRAIN] + args
            result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                                    env=e2e.ENV, cwd=workdir)
            self.failed(result, nvme, "rank", "limit")
            self.assertEqual(leftovers(nvme), [])

    def while_running(self, damage, *needles):
        """Starts a long run, damages its first swap file once it exists and a step is done,
        and expects the run to stop with the needles in its output."""
        with tempfile.TemporaryDirectory() as workdir:
            nvme = os.path.join(workdir, "nvme")
            os.makedirs(nvme)
            config = nvme_config(workdir, nvme, 3, True, extra={"steps_per_print": 1})
            args = ["train", "--config", config, "--model",
                    os.path.join(DATA, "tiny_model.yaml"), "--steps", "100000",
                    "--output-dir", os.path.join(workdir, "out")]
            log_path = os.path.join(workdir, "log.txt")
            with open(log_path, "w") as log:
                process = subprocess.Popen(mpi_command(2) + args, stdout=log,
                                           stderr=subprocess.STDOUT, env=e2e.ENV, cwd=workdir)
                try:
                    deadline = time.time() + 60
                    target = None
                    while time.time() < deadline and target is None:
                        # A progress line, not the banner's "steps": damage done before the
                        # first step could be overwritten by the initial pass unnoticed.
                        with open(log_path) as handle:
                            started = re.search(r"^step +[0-9]+/", handle.read(), re.M) is not None
                        files = sorted(glob.glob(os.path.join(nvme, "zerotrain-*", "rank1", "*.swp")))
                        if started and files:
                            target = files[0]
                        time.sleep(0.05)
                    self.assertIsNotNone(target, "the run never started swapping")
                    damage(target)
                    returncode = process.wait(timeout=120)
                finally:
                    if process.poll() is None:
                        process.kill()
            with open(log_path) as handle:
                output = handle.read()
            self.assertNotEqual(returncode, 0, output[-3000:])
            for needle in [os.path.basename(target), "rank 1"] + list(needles):
                # A tuple: any of its texts (which check catches the damage depends on timing).
                alternatives = needle if isinstance(needle, tuple) else (needle,)
                self.assertTrue(any(text in output for text in alternatives),
                                f"{alternatives} not in: {output[-3000:]}")
            self.assertEqual(leftovers(nvme), [], output[-3000:])

    def test_a_swap_file_deleted_underneath_the_run(self):
        self.while_running(os.remove, "deleted")

    def test_a_swap_file_truncated_underneath_the_run(self):
        # Read before the file grows again: a short read; after a write extended it past a
        # hole: bytes that differ from their checksum.
        self.while_running(lambda path: os.truncate(path, 0),
                           ("short read", "read back differently"))


if __name__ == "__main__":
    e2e.main()
