#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""End-to-end tests of checkpoints on a signal (preemption) under mpiexec -n 2: SIGUSR1 to
mpirun (which forwards it) or SIGTERM to the ranks themselves (as srun and slurmstepd deliver
it) stops every rank at the next step boundary with a checkpoint and exit 0, and a run resumed
from it ends with the losses of an uninterrupted run, bit for bit, also under a storm of
signals through the step and the save; a signal to one rank stops them all; a rank killed in
the middle of a save leaves `latest` on the previous checkpoint, which still loads, and no
directory of the killed save; --save-interval saves every N steps and the last. Run by ctest
like test_e2e.py (one ctest per test method)."""
import glob
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402  (the shared helpers: run, ENV, write_model...)

DATA = e2e.DATA
TINY_MODEL = os.path.join(DATA, "tiny_model.yaml")
# About 0.15 s a step on one core per rank: long enough to signal a run in the middle and tell
# the step it stops at from the progress line the signal followed.
MID_MODEL = dict(vocab_size=64, n_positions=64, n_embd=256, n_layer=4, n_head=4)
# 25M parameters, nearly all of them position embeddings of which a 32-token sequence uses 32
# rows: steps stay cheap while a checkpoint (300 MB over the 2 ranks) takes a second or more
# to write, long enough to kill a rank in the middle of it.
BIG_MODEL = dict(vocab_size=16, n_positions=32768, n_embd=768, n_layer=1, n_head=4)
PROGRESS = re.compile(r"^step +(\d+)/(\d+) \|")
STOPPING = re.compile(r"^  stopping     (SIG[A-Z0-9]+) received: checkpointing at step (\d+) and exiting$",
                      re.M)
TIMEOUT = 180  # seconds for one run; a hang fails the test with the run's output


def write_config(workdir, stage=0):
    """ds_stage0.json at `stage` with a progress line every step."""
    with open(os.path.join(DATA, "ds_stage0.json")) as handle:
        config = json.load(handle)
    config["steps_per_print"] = 1
    config.pop("wall_clock_breakdown", None)
    config["zero_optimization"] = {"stage": stage}
    path = os.path.join(workdir, f"stage{stage}.json")
    with open(path, "w") as handle:
        json.dump(config, handle)
    return path


def train_args(config, model, steps, summary, workdir, extra=()):
    return (["train", "--config", config, "--model", model, "--steps", str(steps), "--seed", "7",
             "--summary-json", summary, "--output-dir", os.path.join(workdir, "out")] + list(extra))


def read_json(path):
    with open(path) as handle:
        return json.load(handle)


def read_latest(save_dir):
    with open(os.path.join(save_dir, "latest")) as handle:
        return handle.read().strip()


def children(pid):
    """The processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def world_rank(pid):
    """OMPI_COMM_WORLD_RANK of a process, None when it has none (not a rank)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            variables = handle.read().split(b"\0")
    except OSError:
        return None
    for variable in variables:
        if variable.startswith(b"OMPI_COMM_WORLD_RANK="):
            return int(variable.split(b"=", 1)[1])
    return None


class Run:
    """zerotrain under mpiexec in the background; its output is read line by line as it comes,
    and `on_line` acts on the first line that matches from the reading thread itself, with no
    delay beyond the pipe's."""

    def __init__(self, args, cwd, ranks=2):
        self.process = subprocess.Popen(
            [e2e.MPIEXEC, "-n", str(ranks), "--oversubscribe", e2e.ZEROTRAIN] + args, cwd=cwd,
            env=e2e.ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.ranks_expected = ranks
        self.lines = []
        self.condition = threading.Condition()
        self.actions = []  # [pattern, action, done]
        self.errors = []  # what the actions raised
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stdout:
            with self.condition:
                self.lines.append(line)
                for entry in self.actions:
                    match = None if entry[2] else entry[0].match(line)
                    if match:
                        entry[2] = True
                        try:
                            entry[1](match)
                        except Exception as error:  # noqa: BLE001  (reported by finish())
                            self.errors.append(error)
                self.condition.notify_all()

    def on_line(self, pattern, action):
        """Calls action(match) on the first line (from now on) matching pattern."""
        with self.condition:
            self.actions.append([re.compile(pattern), action, False])

    def output(self):
        with self.condition:
            return "".join(self.lines)

    def ranks(self):
        """{world rank: pid} of the ranks (mpiexec's children, or theirs)."""
        found = {}
        deadline = time.monotonic() + 30
        while len(found) < self.ranks_expected and time.monotonic() < deadline:
            for pid in children(self.process.pid):
                for candidate in [pid] + children(pid):
                    rank = world_rank(candidate)
                    if rank is not None:
                        found[rank] = candidate
            if len(found) < self.ranks_expected:
                time.sleep(0.05)
        return found

    def kill(self):
        for pid in self.ranks().values() if self.process.poll() is None else []:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process.poll() is None:
            self.process.kill()

    def finish(self, timeout=TIMEOUT):
        """The exit status and the whole output; a run still going after `timeout` is killed
        and fails the test."""
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.process.wait()
            self.reader.join(10)
            self.process.stdout.close()
            raise AssertionError(f"the run did not end within {timeout} s (killed):\n"
                                 + self.output()[-6000:])
        self.reader.join(30)
        self.process.stdout.close()
        if self.errors:
            raise AssertionError(f"acting on the output failed: {self.errors[0]!r}\n"
                                 + self.output()[-4000:])
        return self.process.returncode, self.output()


def train(workdir, args, check=True):
    """zerotrain train under mpiexec -n 2 in the foreground: (exit status, output)."""
    result = e2e.run(args, ranks=2, cwd=workdir, timeout=TIMEOUT)
    output = result.stdout + result.stderr
    if check and result.returncode != 0:
        raise AssertionError(f"zerotrain failed ({result.returncode}):\n{output[-6000:]}")
    return result.returncode, output


class PreemptionSignal(unittest.TestCase):
    """A run signalled after its first step stops within a step with a checkpoint and exit 0,
    and the run resumed from that checkpoint continues it bit-identically."""

    STEPS = 30

    def stop_and_resume(self, deliver, signal_name):
        """deliver(run) signals the run; returns the step it stopped at."""
        with tempfile.TemporaryDirectory() as workdir:
            config = write_config(workdir)
            model = e2e.write_model(workdir, "mid.yaml", **MID_MODEL)
            save_dir = os.path.join(workdir, "ckpt")
            whole = os.path.join(workdir, "whole.json")
            train(workdir, train_args(config, model, self.STEPS, whole, workdir))

            first = os.path.join(workdir, "first.json")
            run = Run(train_args(config, model, self.STEPS, first, workdir,
                                 ["--save-dir", save_dir]), workdir)
            seen = {}

            def signal_now(match):
                seen["step"] = int(match.group(1))
                deliver(run)

            try:
                run.on_line(r"^step +(1)/", signal_now)
                code, output = run.finish()
            finally:
                run.kill()
            self.assertIn("step", seen, output[-4000:])
            self.assertEqual(code, 0, output[-4000:])
            stops = STOPPING.findall(output)
            self.assertEqual(len(stops), 1, output[-4000:])
            name, stop = stops[0][0], int(stops[0][1])
            self.assertEqual(name, signal_name)
            # The signal went out while step seen+1 ran (or just before step seen's boundary):
            # the ranks stop at that boundary or the next.
            self.assertTrue(seen["step"] <= stop <= seen["step"] + 1,
                            f"signalled after step {seen['step']}, stopped at step {stop}")
            self.assertLess(stop, self.STEPS)
            summary = read_json(first)
            self.assertEqual(summary["stopped_by_signal"], signal_name)
            self.assertIs(summary["completed"], False)
            self.assertEqual(summary["first_step"], 1)
            self.assertIsNone(summary["resumed_from"])
            self.assertEqual(len(summary["losses"]), stop)
            tag = f"global_step{stop}"
            self.assertEqual(summary["checkpoints"], [os.path.join(save_dir, tag)])
            self.assertEqual(read_latest(save_dir), tag)
            self.assertEqual(glob.glob(os.path.join(save_dir, ".global_step*")), [])

            resumed = os.path.join(workdir, "resumed.json")
            train(workdir, train_args(config, model, self.STEPS, resumed, workdir,
                                      ["--load-dir", save_dir, "--save-dir", save_dir]))
            after = read_json(resumed)
            self.assertEqual(after["first_step"], stop + 1)
            self.assertEqual((after["resumed_from"]["tag"], after["resumed_from"]["step"]),
                             (tag, stop))
            self.assertIs(after["completed"], True)
            self.assertIsNone(after["stopped_by_signal"])
            self.assertEqual(read_latest(save_dir), f"global_step{self.STEPS}")
            # Bit-identical: the same doubles, not close ones.
            self.assertEqual(summary["losses"] + after["losses"], read_json(whole)["losses"])
            return stop

    def test_sigusr1_to_mpirun(self):
        # Open MPI's mpirun forwards SIGUSR1 to every rank.
        self.stop_and_resume(lambda run: run.process.send_signal(signal.SIGUSR1), "SIGUSR1")

    def test_sigterm_to_the_ranks(self):
        # As srun and slurmstepd deliver signals: to every task, not through mpirun.
        def to_the_ranks(run):
            for pid in run.ranks().values():
                os.kill(pid, signal.SIGTERM)
        self.stop_and_resume(to_the_ranks, "SIGTERM")

    def test_repeated_signals_during_the_step_and_the_save(self):
        # A signal every few milliseconds to every rank from the first progress line to the end
        # (the warning, then scancel, then impatience): one stop, one checkpoint, exit 0, and
        # the resumed run still continues bit-identically. Whatever thread a signal lands on
        # must not disturb what that thread computes (oneDNN 2.6's JIT sgemm, for one, keeps
        # its stack pointer in the heap, where a signal frame overwrites the heap).
        def keep_signalling(run):
            ranks = list(run.ranks().values())

            def shoot():
                while run.process.poll() is None:
                    for pid in ranks:
                        try:
                            os.kill(pid, signal.SIGUSR1)
                        except ProcessLookupError:
                            pass
                    time.sleep(0.003)
            threading.Thread(target=shoot, daemon=True).start()
        self.stop_and_resume(keep_signalling, "SIGUSR1")

    def test_a_signal_to_one_rank_stops_every_rank(self):
        with tempfile.TemporaryDirectory() as workdir:
            config = write_config(workdir)
            model = e2e.write_model(workdir, "mid.yaml", **MID_MODEL)
            save_dir = os.path.join(workdir, "ckpt")
            summary = os.path.join(workdir, "summary.json")
            run = Run(train_args(config, model, self.STEPS, summary, workdir,
                                 ["--save-dir", save_dir]), workdir)
            try:
                run.on_line(r"^step +1/", lambda _: os.kill(run.ranks()[1], signal.SIGUSR1))
                code, output = run.finish()
            finally:
                run.kill()
            self.assertEqual(code, 0, output[-4000:])
            stops = STOPPING.findall(output)
            self.assertEqual(len(stops), 1, output[-4000:])
            stop = int(stops[0][1])
            self.assertLess(stop, self.STEPS)
            self.assertEqual(read_json(summary)["stopped_by_signal"], "SIGUSR1")
            self.assertEqual(read_latest(save_dir), f"global_step{stop}")
            # Both ranks wrote their partition of the checkpoint.
            files = sorted(os.listdir(os.path.join(save_dir, f"global_step{stop}")))
            self.assertIn("zero_rank_00000_states.h5", files)
            self.assertIn("zero_rank_00001_states.h5", files)


class PreemptionKilledSave(unittest.TestCase):
    def test_sigkill_of_a_rank_during_a_save_keeps_the_previous_checkpoint(self):
        with tempfile.TemporaryDirectory() as workdir:
            config = write_config(workdir)
            model = e2e.write_model(workdir, "big.yaml", **BIG_MODEL)
            save_dir = os.path.join(workdir, "ckpt")
            summary = os.path.join(workdir, "killed.json")
            extra = ["--seq-len", "32", "--save-dir", save_dir, "--save-interval", "1"]
            run = Run(train_args(config, model, 2, summary, workdir, extra), workdir)
            killed = False
            try:
                # global_step1 complete (latest names it), then the save of step 2 under way.
                deadline = time.monotonic() + TIMEOUT
                partial = os.path.join(save_dir, ".global_step2.partial-*")
                while time.monotonic() < deadline and run.process.poll() is None:
                    if os.path.exists(os.path.join(save_dir, "latest")) and glob.glob(partial):
                        os.kill(run.ranks()[1], signal.SIGKILL)
                        killed = True
                        break
                    time.sleep(0.01)
                code, output = run.finish()
            finally:
                run.kill()
            self.assertTrue(killed, "the save of step 2 was never seen under way:\n" + output[-4000:])
            self.assertNotEqual(code, 0, output[-4000:])
            self.assertEqual(read_latest(save_dir), "global_step1", output[-4000:])
            self.assertFalse(os.path.exists(os.path.join(save_dir, "global_step2")),
                             f"{sorted(os.listdir(save_dir))}")
            printed = re.findall(r"^step 2/2 \| loss ([0-9.]+) ", output, re.M)

            # The previous checkpoint still loads, and the resumed run saves over the killed
            # save's leftovers.
            resumed = os.path.join(workdir, "resumed.json")
            train(workdir, train_args(config, model, 2, resumed, workdir,
                                      extra + ["--load-dir", save_dir]))
            after = read_json(resumed)
            self.assertEqual(after["first_step"], 2)
            self.assertEqual(after["resumed_from"]["tag"], "global_step1")
            self.assertIs(after["completed"], True)
            self.assertEqual(read_latest(save_dir), "global_step2")
            self.assertTrue(os.path.isdir(os.path.join(save_dir, "global_step2")))
            self.assertEqual(glob.glob(os.path.join(save_dir, ".global_step*")), [],
                             "the killed save's partial directory is still there")
            if printed:  # step 2 is printed before its save starts: the same loss again
                self.assertEqual(f"{after['losses'][0]:.4f}", printed[0])


class PreemptionSaveInterval(unittest.TestCase):
    def test_every_third_step_and_the_last(self):
        with tempfile.TemporaryDirectory() as workdir:
            config = write_config(workdir)
            save_dir = os.path.join(workdir, "ckpt")
            summary = os.path.join(workdir, "summary.json")
            train(workdir, train_args(config, TINY_MODEL, 7, summary, workdir,
                                      ["--save-dir", save_dir, "--save-interval", "3"]))
            tags = ["global_step3", "global_step6", "global_step7"]
            self.assertEqual(sorted(entry for entry in os.listdir(save_dir)
                                    if entry.startswith("global_step")), tags)
            self.assertEqual(read_latest(save_dir), "global_step7")
            self.assertEqual(glob.glob(os.path.join(save_dir, ".global_step*")), [])
            data = read_json(summary)
            self.assertEqual(data["checkpoints"], [os.path.join(save_dir, tag) for tag in tags])
            self.assertIs(data["completed"], True)
            self.assertIsNone(data["stopped_by_signal"])
            self.assertEqual(len(data["losses"]), 7)


if __name__ == "__main__":
    e2e.main()  # parses --zerotrain/--mpiexec into e2e and runs this script's tests
