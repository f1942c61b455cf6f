#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""End-to-end tests of what zerotrain refuses and what it never destroys: outputs that are
links, devices or inputs; inputs that are FIFOs or directories; sizes beyond the machine; ranks
that disagree; data that changes underneath; a second run in the same output directory; and
the messages that say so.

Run by ctest: test_hardening.py --zerotrain PATH --mpiexec PATH TestCase.test_name
"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402  (the shared helpers: run, write_model, zero_config...)

DATA = e2e.DATA
TINY_MODEL = os.path.join(DATA, "tiny_model.yaml")
STAGE0 = os.path.join(DATA, "ds_stage0.json")


def run(args, ranks=None, cwd=None, timeout=120, **kwargs):
    return e2e.run(args, ranks=ranks, cwd=cwd, timeout=timeout, **kwargs)


def tiny_train_args(workdir, steps=2, config=STAGE0, model=TINY_MODEL, extra=()):
    seed = [] if "--seed" in extra else ["--seed", "7"]
    return (["train", "--config", config, "--model", model, "--steps", str(steps)] + seed +
            ["--output-dir", os.path.join(workdir, "out")] + list(extra))


def run_with_file_size_limit(args, kib, cwd):
    """zerotrain (one rank) with writes limited to `kib` KiB per file: writes beyond fail as on a
    full disk (zerotrain ignores SIGXFSZ). Only the rank is limited, not mpiexec."""
    command = [e2e.MPIEXEC, "-n", "1", "bash", "-c", f'ulimit -f {kib} && exec "$@"', "limited",
               e2e.ZEROTRAIN] + args
    return subprocess.run(command, cwd=cwd, env=e2e.ENV, capture_output=True, text=True,
                          timeout=120)


def write(path, text):
    with open(path, "w") as handle:
        handle.write(text)


def read(path):
    with open(path, "rb") as handle:
        return handle.read()


def write_config(workdir, name, **changes):
    with open(STAGE0) as handle:
        config = json.load(handle)
    config.update(changes)
    path = os.path.join(workdir, name)
    write(path, json.dumps(config))
    return path


def make_tokens(workdir, name="tokens.h5", text="the quick brown fox jumps over the lazy dog. " * 400):
    source = os.path.join(workdir, name + ".txt")
    write(source, text)
    path = os.path.join(workdir, name)
    result = run(["data", "from-text", source, path])
    assert result.returncode == 0, result.stderr
    return path


BYTE_MODEL = dict(vocab_size=256, n_positions=32, n_embd=32, n_layer=1, n_head=2)


class Checks(unittest.TestCase):
    def assert_refused(self, result, *needles, code=2):
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, code, output)
        for needle in needles:
            self.assertIn(needle, result.stderr, output)
        self.assertNotIn("step 1/", result.stdout, "refused only after training had begun")

    def assert_trained(self, result):
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)


class Outputs(Checks):
    """Item 1: one safe way to write a file."""

    def test_links_and_devices_at_an_output_are_refused_and_untouched(self):
        with tempfile.TemporaryDirectory() as workdir:
            victim = os.path.join(workdir, "victim.txt")
            write(victim, "precious")
            link = os.path.join(workdir, "summary.json")
            os.symlink(victim, link)
            for flag, target in (("--summary-json", link), ("--summary-json", "/dev/full"),
                                 ("--save-weights", "/dev/null"), ("--save-weights", link)):
                result = run(tiny_train_args(workdir, extra=[flag, target]), ranks=1, cwd=workdir)
                self.assert_refused(result, f"{flag} '{target}'")
            self.assertEqual(read(victim), b"precious")
            self.assertTrue(os.path.islink(link))
            for device in ("/dev/full", "/dev/null"):
                self.assertTrue(os.path.exists(device) and not os.path.isfile(device), device)

    def test_a_link_planted_at_a_temporary_name_redirects_nothing(self):
        # The old writer used <target>.tmp.<pid>: plant links for the pids the run may get.
        with tempfile.TemporaryDirectory() as workdir:
            victim = os.path.join(workdir, "victim.txt")
            write(victim, "precious")
            summary = os.path.join(workdir, "summary.json")
            probe = subprocess.Popen(["true"])
            probe.wait()
            for pid in range(probe.pid, probe.pid + 400):
                os.symlink(victim, f"{summary}.tmp.{pid}")
            result = run(tiny_train_args(workdir, extra=["--summary-json", summary]), cwd=workdir)
            self.assert_trained(result)
            self.assertEqual(read(victim), b"precious")
            with open(summary) as handle:
                self.assertEqual(len(json.load(handle)["losses"]), 2)

    def test_a_failed_write_is_an_error(self):
        with tempfile.TemporaryDirectory() as workdir:
            config = os.path.join(workdir, "csv.yaml")
            with open(os.path.join(DATA, "ds_csv_monitor.yaml")) as handle:
                write(config, handle.read())
            result = run_with_file_size_limit(tiny_train_args(workdir, steps=200, config=config), 1,
                                              workdir)
            self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
            self.assertIn("csv_monitor '", result.stderr)
            self.assertIn("write failed", result.stderr)

            weights = os.path.join(workdir, "w.safetensors")
            write(weights, "the weights of yesterday")
            result = run_with_file_size_limit(
                tiny_train_args(workdir, extra=["--save-weights", weights]), 8, workdir)
            self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
            self.assertIn(f"--save-weights '{weights}': write failed", result.stderr)
            self.assertEqual(read(weights), b"the weights of yesterday")
            self.assertEqual(sorted(os.listdir(workdir)), ["csv.yaml", "out", "w.safetensors"])


class Preflight(Checks):
    """Item 2: every output checked before the first step; no output may be an input."""

    def test_a_bad_weights_path_is_found_before_training(self):
        with tempfile.TemporaryDirectory() as workdir:
            blocker = os.path.join(workdir, "file")
            write(blocker, "x")
            for weights in (os.path.join(blocker, "w.safetensors"), workdir + "/"):
                result = run(tiny_train_args(workdir, steps=30, extra=["--save-weights", weights]),
                             ranks=2, cwd=workdir)
                self.assert_refused(result, "--save-weights")
                self.assertEqual(result.stderr.count("zerotrain: error"), 1, result.stderr)

    def test_an_output_that_is_an_input_is_refused(self):
        with tempfile.TemporaryDirectory() as workdir:
            tokens = make_tokens(workdir)
            before = read(tokens)
            model = e2e.write_model(workdir, "bytes.yaml", **BYTE_MODEL)
            for flag, path in (("--save-weights", tokens), ("--summary-json", tokens),
                               ("--save-weights", model), ("--summary-json", STAGE0)):
                result = run(tiny_train_args(workdir, model=model,
                                             extra=["--data", tokens, flag, path]),
                             ranks=2, cwd=workdir)
                self.assert_refused(result, "is also an input")
            self.assertEqual(read(tokens), before)
            same = os.path.join(workdir, "same.json")
            result = run(tiny_train_args(workdir, extra=["--summary-json", same,
                                                         "--save-weights", same]),
                         ranks=1, cwd=workdir)
            self.assert_refused(result, "give each output its own file")


class Inputs(Checks):
    """Item 3: inputs that are not regular files are refused at once."""

    def test_fifos_directories_and_devices_are_refused_at_once(self):
        with tempfile.TemporaryDirectory() as workdir:
            fifo = os.path.join(workdir, "pipe")
            os.mkfifo(fifo)
            cases = [
                (["train", "--config", fifo, "--model", TINY_MODEL, "--steps", "1"], "FIFO"),
                (["train", "--config", STAGE0, "--model", fifo, "--steps", "1"], "FIFO"),
                (["train", "--config", STAGE0, "--model", TINY_MODEL, "--steps", "1", "--data",
                  fifo], "FIFO"),
                (["train", "--config", workdir, "--model", TINY_MODEL, "--steps", "1"],
                 "is a directory"),
                (["train", "--config", STAGE0, "--model", TINY_MODEL, "--steps", "1", "--data",
                  "/dev/zero"], "character device"),
                (["check-config", fifo], "FIFO"),
                (["estimate", "--model", fifo], "FIFO"),
                (["plan", "--model", fifo, "--gpu-mem", "8GiB", "--cpu-mem", "8GiB"], "FIFO"),
                (["data", "from-text", fifo, os.path.join(workdir, "x.h5")], "FIFO"),
            ]
            for args, needle in cases:
                start = time.monotonic()
                result = run(args, ranks=2 if args[0] == "train" else None, cwd=workdir, timeout=60)
                self.assert_refused(result, needle)
                self.assertLess(time.monotonic() - start, 30, args)
            self.assertFalse(os.path.exists(os.path.join(workdir, "x.h5")))


class Sizes(Checks):
    """Item 4: sizes checked before anything is allocated."""

    def test_oversized_models_batches_and_runs_are_refused_with_bytes(self):
        with tempfile.TemporaryDirectory() as workdir:
            wide = e2e.write_model(workdir, "wide.yaml", vocab_size=16, n_positions=32,
                                   n_embd=65536, n_layer=2, n_head=2)
            deep = e2e.write_model(workdir, "deep.yaml", vocab_size=16, n_positions=32,
                                   n_embd=32, n_layer=1000000, n_head=2)
            huge_batch = write_config(workdir, "batch.json", train_batch_size=4000000000)
            big_batch = write_config(workdir, "big_batch.json", train_batch_size=20000000)
            needs_bytes = r"this run needs [0-9.]+ [KMGTPE]iB per rank .*; [0-9.]+ [KMGTPE]iB is available"
            cases = [
                (tiny_train_args(workdir, model=wide), r"n_embd 65536: .* 17.18e9 elements"),
                (tiny_train_args(workdir, model=deep), needs_bytes),
                (tiny_train_args(workdir, config=huge_batch), r"2000000000"),
                (tiny_train_args(workdir, config=big_batch), needs_bytes + r"|activations [0-9.]+ TiB"),
                (tiny_train_args(workdir, steps=1000000000000), needs_bytes),
                (tiny_train_args(workdir, extra=["--synthetic-tokens", "1000000000000"]),
                 needs_bytes + r"|data [0-9.]+ TiB"),
            ]
            for args, needles in cases:
                result = run(args, ranks=2, cwd=workdir, timeout=60)
                self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
                self.assertNotIn("bad_alloc", result.stderr)
                for needle in needles.split("|"):
                    self.assertRegex(result.stderr, needle, args)
                self.assertEqual(result.stderr.count("zerotrain: error"), 1, result.stderr)
                self.assertNotIn("step 1/", result.stdout)
                self.assertFalse(os.path.exists(os.path.join(workdir, "out")), "left outputs")

    def test_the_banner_states_what_the_run_needs(self):
        with tempfile.TemporaryDirectory() as workdir:
            result = run(tiny_train_args(workdir), ranks=2, cwd=workdir)
            self.assert_trained(result)
            self.assertRegex(result.stdout, r"memory +.*per rank")

    def test_a_deep_stage3_model_of_small_tensors_trains_in_time(self):
        # 120k tensors: per-layer rescans of the trace made a step take minutes, and prefetching
        # them all at once put 120k collectives in flight.
        with tempfile.TemporaryDirectory() as workdir:
            model = e2e.write_model(workdir, "deep.yaml", vocab_size=16, n_positions=16, n_embd=8,
                                    n_layer=10000, n_head=2)
            config = e2e.zero_config(workdir, 3, train_batch=2,
                                     stage3_param_persistence_threshold=0)
            result = run(tiny_train_args(workdir, model=model, config=config), ranks=2,
                         cwd=workdir, timeout=90)
            self.assert_trained(result)
            self.assertIn("step 2/2", result.stdout)

    def test_plan_never_overflows(self):
        for params in ("1e18", "1e24", "1e30"):
            result = run(["plan", "--params", params, "--largest-layer-params", "1e9",
                          "--gpus-per-node", "8", "--nodes", "1", "--gpu-mem", "80GiB",
                          "--cpu-mem", "1TiB"])
            output = result.stdout + result.stderr
            self.assertNotEqual(result.returncode, 0, output)
            self.assertNotIn("recommended:", result.stdout, output)
            self.assertNotRegex(output, r"-[0-9.]+ [KMGTPE]?i?B", output)
        for bad in ("nan", "inf", "-5", "0"):
            result = run(["plan", "--params", bad, "--largest-layer-params", "1e6",
                          "--gpu-mem", "80GiB", "--cpu-mem", "1TiB"])
            self.assertEqual(result.returncode, 2, result.stdout + result.stderr)


class Agreement(Checks):
    """Item 5: ranks must agree."""

    def mpmd(self, workdir, first, second):
        command = [e2e.MPIEXEC, "--oversubscribe", "-n", "1", e2e.ZEROTRAIN] + first + \
                  [":", "-n", "1", e2e.ZEROTRAIN] + second
        return subprocess.run(command, cwd=workdir, env=e2e.ENV, capture_output=True, text=True,
                              timeout=120)

    def test_ranks_started_differently_are_refused(self):
        with tempfile.TemporaryDirectory() as workdir:
            stage3 = e2e.zero_config(workdir, 3)
            result = self.mpmd(workdir, tiny_train_args(workdir),
                               tiny_train_args(workdir, config=stage3))
            self.assert_refused(result, "the ranks disagree on the command line", "rank 1")
            self.assertEqual(result.stderr.count("zerotrain: error"), 1, result.stderr)
            result = self.mpmd(workdir, tiny_train_args(workdir, extra=["--learning_rate", "0.1"]),
                               tiny_train_args(workdir, extra=["--learning_rate", "0.2"]))
            self.assert_refused(result, "'--learning_rate 0.1'", "'--learning_rate 0.2'")

    def test_every_rank_trains_rank_zeros_config(self):
        # The same path on every rank, read once by rank 0: ranks cannot end up with different
        # files, and the run trains as the file says.
        with tempfile.TemporaryDirectory() as workdir:
            summary = os.path.join(workdir, "s.json")
            result = run(tiny_train_args(workdir, extra=["--summary-json", summary]), ranks=4,
                         cwd=workdir)
            self.assert_trained(result)
            with open(summary) as handle:
                self.assertEqual(json.load(handle)["world_size"], 4)


class ChangingData(Checks):
    """Item 6: a token file truncated or replaced during training stops the run."""

    def start_long_run(self, workdir, tokens, model):
        command = [e2e.MPIEXEC, "-n", "2", "--oversubscribe", e2e.ZEROTRAIN] + tiny_train_args(
            workdir, steps=100000, model=model, extra=["--data", tokens])
        process = subprocess.Popen(command, cwd=workdir, env=e2e.ENV, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        for line in process.stdout:
            if line.startswith("step "):
                return process
        process.wait(timeout=60)
        raise AssertionError("the run did not start: " + process.stderr.read())

    def check(self, change, needle):
        with tempfile.TemporaryDirectory() as workdir:
            tokens = make_tokens(workdir)
            model = e2e.write_model(workdir, "bytes.yaml", **BYTE_MODEL)
            process = self.start_long_run(workdir, tokens, model)
            change(workdir, tokens)
            try:
                _, stderr = process.communicate(timeout=60)
            finally:
                if process.poll() is None:
                    process.kill()
            self.assertNotEqual(process.returncode, 0)
            self.assertGreater(process.returncode, 0, "killed by a signal")
            self.assertIn("changed during training", stderr)
            self.assertIn(needle, stderr)

    def test_a_truncated_token_file_stops_the_run(self):
        self.check(lambda workdir, tokens: os.truncate(tokens, 4096), "size")

    def test_a_replaced_token_file_stops_the_run(self):
        def replace(workdir, tokens):
            other = make_tokens(workdir, "other.h5", "a different text entirely. " * 700)
            os.replace(other, tokens)
        self.check(replace, "replaced")


class DamagedData(Checks):
    """Item 9's findings: files that crash libhdf5 itself are refused, not a signal."""

    CRASHES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fuzz",
                           "libhdf5-crashes")

    def test_files_that_crash_libhdf5_are_refused_with_a_message(self):
        with tempfile.TemporaryDirectory() as workdir:
            model = e2e.write_model(workdir, "bytes.yaml", **BYTE_MODEL)
            names = sorted(os.listdir(self.CRASHES))
            self.assertGreaterEqual(len(names), 4)
            crashed_in_the_helper = 0
            for name in names:
                path = os.path.join(self.CRASHES, name)
                result = run(tiny_train_args(workdir, model=model, extra=["--data", path]),
                             ranks=2, cwd=workdir, timeout=120)
                # Refused with a message, or (where the damage lies outside what a token read
                # touches) trained; never a signal.
                self.assertIn(result.returncode, (0, 2), result.stdout + result.stderr)
                if result.returncode == 2:
                    self.assert_refused(result, name)
                    self.assertEqual(result.stderr.count("zerotrain: error"), 1, result.stderr)
                    crashed_in_the_helper += "the HDF5 library crashed" in result.stderr
            self.assertGreaterEqual(crashed_in_the_helper, 3)


class Messages(Checks):
    """Item 7: every input error is printed once, by rank 0, before any rank exits."""

    def test_a_usage_error_at_four_ranks_is_always_printed_once(self):
        with tempfile.TemporaryDirectory() as workdir:
            for _ in range(5):
                result = run(["train", "--no-such-flag"], ranks=4, cwd=workdir)
                self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
                self.assertEqual(result.stderr.count("--no-such-flag"), 1, result.stderr)

    def test_data_file_errors_exit_2(self):
        with tempfile.TemporaryDirectory() as workdir:
            result = run(tiny_train_args(workdir, extra=["--data", os.path.join(workdir, "no.h5")]),
                         ranks=2, cwd=workdir)
            self.assert_refused(result, "no.h5", "does not exist")
            self.assertEqual(result.stderr.count("zerotrain: error"), 1, result.stderr)
            bad = os.path.join(workdir, "bad.h5")
            write(bad, "not hdf5")
            result = run(tiny_train_args(workdir, extra=["--data", bad]), ranks=2, cwd=workdir)
            self.assert_refused(result, "not an HDF5 file")

    def test_keys_from_files_are_escaped(self):
        with tempfile.TemporaryDirectory() as workdir:
            config = os.path.join(workdir, "evil.json")
            write(config, '{"train_batch_size": 8, "\\u001b[2Jzero": 1}')
            model = os.path.join(workdir, "evil.yaml")
            write(model, "vocab_size: 16\n\"n_\\e[31mlayer\": 2\n")
            for result in (run(["check-config", config]),
                           run(tiny_train_args(workdir, config=config), ranks=2, cwd=workdir),
                           run(tiny_train_args(workdir, model=model), ranks=2, cwd=workdir)):
                self.assertEqual(result.returncode, 2, result.stderr)
                self.assertNotIn("\x1b", result.stdout + result.stderr)
                self.assertIn("\\x1b", result.stderr)


class SmallerMismatches(Checks):
    """Item 8."""

    def test_out_of_range_flags_are_refused(self):
        with tempfile.TemporaryDirectory() as workdir:
            cases = [
                (["check-config", STAGE0, "--world-size", "0"], "--world-size"),
                (["check-config", STAGE0, "--world-size", "-3"], "--world-size"),
                (tiny_train_args(workdir, extra=["--device-memory-limit", "0"]),
                 "--device-memory-limit"),
                (tiny_train_args(workdir, extra=["--device-memory-limit", "99999999999TiB"]),
                 "--device-memory-limit"),
                (tiny_train_args(workdir, extra=["--seed", "18446744073709551616"]), "--seed"),
                (tiny_train_args(workdir, extra=["--seed", "-1"]), "--seed"),
                (tiny_train_args(workdir, extra=["--seq-len", "-4"]), "--seq-len"),
                (tiny_train_args(workdir, extra=["--synthetic-tokens", "-5"]), "--synthetic-tokens"),
                (["plan", "--model", TINY_MODEL, "--gpu-mem", "8GiB", "--cpu-mem", "8GiB",
                  "--seq", "-2"], "--seq"),
                (["trian"], "did you mean 'train'"),
            ]
            for args, needle in cases:
                result = run(args, ranks=1 if args[0] == "train" else None, cwd=workdir)
                self.assert_refused(result, needle)
            result = run(tiny_train_args(workdir, extra=["--seed", "18446744073709551615"]),
                         ranks=1, cwd=workdir)
            self.assert_trained(result)

    def test_synthetic_flags_with_data_are_refused(self):
        with tempfile.TemporaryDirectory() as workdir:
            tokens = make_tokens(workdir)
            model = e2e.write_model(workdir, "bytes.yaml", **BYTE_MODEL)
            for flag, value in (("--synthetic-order", "3"), ("--synthetic-branching", "4"),
                                ("--synthetic-tokens", "100000")):
                result = run(tiny_train_args(workdir, model=model,
                                             extra=["--data", tokens, flag, value]),
                             ranks=1, cwd=workdir)
                self.assert_refused(result, flag, "--data")
            result = run(tiny_train_args(workdir, extra=["--dataset", "tokens"]), ranks=1,
                         cwd=workdir)
            self.assert_refused(result, "--dataset", "without --data")
            one_token = e2e.write_model(workdir, "one.yaml", vocab_size=1, n_positions=8,
                                        n_embd=8, n_layer=1, n_head=1)
            result = run(tiny_train_args(workdir, model=one_token), ranks=1, cwd=workdir)
            self.assert_refused(result, "one.yaml", "at least 2 tokens")

    def test_steps_past_a_concrete_total_warn(self):
        with tempfile.TemporaryDirectory() as workdir:
            config = write_config(workdir, "short.json", scheduler={
                "type": "WarmupDecayLR",
                "params": {"warmup_num_steps": 2, "total_num_steps": 4, "warmup_max_lr": 1e-3}})
            result = run(tiny_train_args(workdir, steps=6, config=config), ranks=1, cwd=workdir)
            self.assert_trained(result)
            self.assertIn("total_num_steps is 4", result.stderr)
            self.assertIn("learning rate stays at 0", result.stderr)

    def test_second_yaml_documents_are_refused(self):
        with tempfile.TemporaryDirectory() as workdir:
            config = os.path.join(workdir, "two.yaml")
            write(config, "train_batch_size: 8\n---\nzero_optimization: {stage: 3}\n")
            result = run(["check-config", config])
            self.assert_refused(result, "2 YAML documents")
            model = os.path.join(workdir, "two_model.yaml")
            with open(TINY_MODEL) as handle:
                write(model, handle.read() + "---\nn_layer: 12\n")
            result = run(tiny_train_args(workdir, model=model), ranks=1, cwd=workdir)
            self.assert_refused(result, "2 YAML documents")

    def test_a_leading_comment_is_accepted(self):
        with tempfile.TemporaryDirectory() as workdir:
            config = os.path.join(workdir, "commented.json")
            with open(STAGE0) as handle:
                write(config, "// exported from a DeepSpeed launcher\n/* and more */\n" + handle.read())
            result = run(["check-config", config, "--max_steps", "10"])
            self.assertEqual(result.returncode, 0, result.stderr)

    def test_word_swapped_keys_get_a_suggestion(self):
        with tempfile.TemporaryDirectory() as workdir:
            config = write_config(workdir, "swapped.json",
                                  zero_optimization={"stage": 0, "comm_overlap": True})
            result = run(["check-config", config])
            self.assert_refused(result, "zero_optimization.comm_overlap", "did you mean 'overlap_comm'")


class FreshMachine(Checks):
    """Item 11: a machine without git, or a tree without .git (a release tarball)."""

    def test_the_revision_check_skips_without_git(self):
        test = os.path.join(os.path.dirname(os.path.abspath(__file__)), "test_e2e.py")
        env = dict(e2e.ENV, PATH=os.path.dirname(e2e.ZEROTRAIN))  # no git on PATH
        result = subprocess.run([sys.executable, test, "--zerotrain", e2e.ZEROTRAIN, "--mpiexec",
                                 e2e.MPIEXEC, "Errors.test_version_reports_the_build"],
                                env=env, capture_output=True, text=True, timeout=120)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("skipped 'git is not installed", result.stderr)


class OutputLock(Checks):
    """Item 10: two jobs, one output directory."""

    def test_a_second_run_into_the_same_directory_is_refused(self):
        with tempfile.TemporaryDirectory() as workdir:
            with open(os.path.join(DATA, "ds_csv_monitor.yaml")) as handle:
                config = os.path.join(workdir, "csv.yaml")
                write(config, handle.read())
            command = [e2e.ZEROTRAIN] + tiny_train_args(workdir, steps=100000, config=config)
            first = subprocess.Popen(command, cwd=workdir, env=e2e.ENV, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
            try:
                for line in first.stdout:
                    if line.startswith("step "):
                        break
                second = run(tiny_train_args(workdir, steps=3, config=config), ranks=1, cwd=workdir)
                self.assert_refused(second, "is in use by another zerotrain run",
                                    f"pid {first.pid}")
                self.assertIsNone(first.poll(), "the first run must go on")
            finally:
                first.send_signal(signal.SIGKILL)
                first.wait()
            # The lock went with its holder.
            third = run(tiny_train_args(workdir, steps=2, config=config), ranks=1, cwd=workdir)
            self.assert_trained(third)
            rows = read(os.path.join(workdir, "out", "csv_monitor", "tiny_csv",
                                     "Train_Samples_train_loss.csv")).decode().split()
            self.assertEqual(rows, ["step,train_loss", "8,%s" % rows[1].split(",")[1],
                                    "16,%s" % rows[2].split(",")[1]])


if __name__ == "__main__":
    e2e.main()  # parses --zerotrain/--mpiexec into e2e and runs this script's tests
