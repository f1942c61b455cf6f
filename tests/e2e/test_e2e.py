#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""End-to-end tests of the zerotrain executable under mpiexec.

Run by ctest: test_e2e.py --zerotrain PATH --mpiexec PATH TestCase.test_name
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
ZEROTRAIN = None
MPIEXEC = None
ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", OMP_NUM_THREADS="1")


def run(args, ranks=None, cwd=None, timeout=600):
    command = ([MPIEXEC, "-n", str(ranks), "--oversubscribe"] if ranks else []) + [ZEROTRAIN] + args
    result = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True,
                            timeout=timeout)
    return result


def train_tiny(workdir, ranks, extra=(), config="ds_stage0.json", steps=12):
    summary = os.path.join(workdir, f"summary_np{ranks}.json")
    result = run(["train", "--config", os.path.join(DATA, config), "--model",
                  os.path.join(DATA, "tiny_model.yaml"), "--steps", str(steps), "--seed", "7",
                  "--summary-json", summary, "--output-dir", os.path.join(workdir, "out")]
                 + list(extra), ranks=ranks, cwd=workdir)
    if result.returncode != 0:
        raise AssertionError(f"zerotrain failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    with open(summary) as handle:
        return json.load(handle), result.stdout


class Training(unittest.TestCase):
    def test_default_job_writes_summary(self):
        with tempfile.TemporaryDirectory() as workdir:
            result = run(["train", "--steps", "3"], ranks=2, cwd=workdir)
            self.assertEqual(result.returncode, 0, result.stderr)
            with open(os.path.join(workdir, "runs", "default", "summary.json")) as handle:
                summary = json.load(handle)
            for key in ("final_loss", "entropy_floor", "losses", "tokens_per_second",
                        "world_size", "zero_stage", "peak_bytes"):
                self.assertIn(key, summary)
            self.assertEqual(summary["world_size"], 2)
            self.assertEqual(summary["zero_stage"], 0)
            self.assertEqual(len(summary["losses"]), 3)
            self.assertEqual(summary["final_loss"], summary["losses"][-1])
            self.assertEqual(len(summary["peak_bytes"]), 2)
            for rank in summary["peak_bytes"]:
                self.assertGreater(rank["device"]["parameters"], 0)
                self.assertGreater(rank["device"]["optimizer_states"], 0)
            self.assertIn("entropy", result.stdout)
            self.assertIn("step 3/3", result.stdout)

    def test_default_job_reaches_the_entropy_floor(self):
        # The whole default job, as the README's first command runs it (about 1.5 minutes).
        with tempfile.TemporaryDirectory() as workdir:
            result = run(["train"], ranks=2, cwd=workdir, timeout=900)
            self.assertEqual(result.returncode, 0, result.stderr)
            with open(os.path.join(workdir, "runs", "default", "summary.json")) as handle:
                summary = json.load(handle)
            self.assertLess(abs(summary["final_loss"] - summary["entropy_floor"]), 0.05,
                            result.stdout[-2000:])
            self.assertGreater(summary["entropy_floor"], 0.5)

    def test_loss_curves_agree_across_world_sizes(self):
        with tempfile.TemporaryDirectory() as workdir:
            curves = {n: train_tiny(workdir, n)[0]["losses"] for n in (1, 2, 4)}
            for n in (2, 4):
                for step, (a, b) in enumerate(zip(curves[1], curves[n])):
                    self.assertLessEqual(abs(a - b), 1e-5 * abs(a),
                                         f"np={n} step {step + 1}: {b} vs np=1 {a}")
            self.assertLess(curves[1][-1], curves[1][0])  # it learns

    def test_accumulation_matches_larger_micro_batch(self):
        with tempfile.TemporaryDirectory() as workdir:
            plain = train_tiny(workdir, 1)[0]["losses"]
            accumulated = train_tiny(workdir, 1, ["--gradient_accumulation_steps", "4"],
                                     config="ds_stage0_auto_gas.json")[0]["losses"]
            for step, (a, b) in enumerate(zip(plain, accumulated)):
                self.assertLessEqual(abs(a - b), 1e-5 * abs(a), f"step {step + 1}")

    def test_wall_clock_breakdown_and_progress_lines(self):
        with tempfile.TemporaryDirectory() as workdir:
            _, stdout = train_tiny(workdir, 2, steps=10)
            self.assertIn("forward", stdout)
            self.assertIn("ETA", stdout)
            self.assertIn("tok/s", stdout)

    def test_trains_on_hdf5_from_text(self):
        with tempfile.TemporaryDirectory() as workdir:
            text = os.path.join(workdir, "corpus.txt")
            with open(text, "w") as handle:
                handle.write("the quick brown fox jumps over the lazy dog. " * 400)
            h5 = os.path.join(workdir, "corpus.h5")
            result = run(["data", "from-text", text, h5])
            self.assertEqual(result.returncode, 0, result.stderr)
            model = os.path.join(workdir, "bytes.yaml")
            with open(model, "w") as handle:
                handle.write("vocab_size: 256\nn_positions: 32\nn_embd: 32\nn_layer: 1\nn_head: 2\n")
            summary = os.path.join(workdir, "s.json")
            result = run(["train", "--config", os.path.join(DATA, "ds_stage0.json"), "--model", model,
                          "--data", h5, "--steps", "5", "--summary-json", summary], ranks=2, cwd=workdir)
            self.assertEqual(result.returncode, 0, result.stderr)
            with open(summary) as handle:
                data = json.load(handle)
            self.assertIsNone(data["entropy_floor"])
            self.assertEqual(len(data["losses"]), 5)


    def test_csv_monitor_writes_deepspeed_layout(self):
        with tempfile.TemporaryDirectory() as workdir:
            train_tiny(workdir, 2, config="ds_csv_monitor.yaml", steps=4)
            directory = os.path.join(workdir, "out", "csv_monitor", "tiny_csv")
            with open(os.path.join(directory, "Train_Samples_train_loss.csv")) as handle:
                rows = handle.read().split()
            self.assertEqual(rows[0], "step,train_loss")
            self.assertEqual([row.split(",")[0] for row in rows[1:]], ["8", "16", "24", "32"])
            self.assertTrue(os.path.exists(os.path.join(directory, "Train_Samples_lr.csv")))


    def test_steps_may_stop_before_the_schedule_ends(self):
        with tempfile.TemporaryDirectory() as workdir:
            summary, _ = train_tiny(workdir, 1, config="ds_stage0_total1000.json", steps=3)
            self.assertEqual(len(summary["losses"]), 3)


class Errors(unittest.TestCase):
    def assert_fails(self, result, *needles, code=2):
        self.assertEqual(result.returncode, code, result.stdout + result.stderr)
        for needle in needles:
            self.assertIn(needle, result.stderr)

    def test_check_config_suggests_the_closest_key(self):
        result = run(["check-config", os.path.join(DATA, "ds_typo.json")])
        self.assert_fails(result, "zero_optimization.reduce_bucket_sise", "reduce_bucket_size")

    def test_check_config_accepts_a_good_config(self):
        result = run(["check-config", os.path.join(DATA, "ds_stage0.json"), "--world-size", "4",
                      "--max_steps", "100"])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("train_micro_batch_size_per_gpu", result.stdout)

    def test_check_config_refuses_what_train_cannot_run(self):
        config = os.path.join(HERE, "..", "..", "inputs", "configs", "zero2.json")
        result = run(["check-config", config, "--world-size", "2"])
        self.assert_fails(result, "not supported yet: zero_optimization.stage")

    def test_max_steps_must_agree_with_a_concrete_total(self):
        result = run(["train", "--config", os.path.join(DATA, "ds_stage0_total1000.json"), "--model",
                      os.path.join(DATA, "tiny_model.yaml"), "--max_steps", "3"], ranks=1)
        self.assert_fails(result, "total_num_steps", "--max_steps")

    def test_inconsistent_batch_triple(self):
        result = run(["check-config", os.path.join(DATA, "ds_bad_batch.json"), "--world-size", "2"])
        self.assert_fails(result, "train_batch_size")

    def test_unsupported_key_is_refused_by_train_on_every_rank(self):
        with tempfile.TemporaryDirectory() as workdir:
            result = run(["train", "--config", os.path.join(DATA, "ds_not_supported.json"),
                          "--model", os.path.join(DATA, "tiny_model.yaml"), "--steps", "2"],
                         ranks=2, cwd=workdir)
            self.assertNotEqual(result.returncode, 0)
            self.assertIn("not supported yet: zero_optimization.offload_optimizer", result.stderr)
            self.assertEqual(result.stderr.count("not supported yet: zero_optimization.offload_optimizer.device"), 1)

    def test_missing_data_file_names_it(self):
        with tempfile.TemporaryDirectory() as workdir:
            result = run(["train", "--config", os.path.join(DATA, "ds_stage0.json"), "--model",
                          os.path.join(DATA, "tiny_model.yaml"), "--steps", "2", "--data",
                          os.path.join(workdir, "nope.h5")], ranks=2, cwd=workdir)
            self.assertNotEqual(result.returncode, 0)
            self.assertIn("nope.h5", result.stderr)

    def test_config_without_model_is_a_usage_error(self):
        result = run(["train", "--config", os.path.join(DATA, "ds_stage0.json")], ranks=1)
        self.assert_fails(result, "--model")


def main():
    global ZEROTRAIN, MPIEXEC
    parser = argparse.ArgumentParser()
    parser.add_argument("--zerotrain", required=True)
    parser.add_argument("--mpiexec", required=True)
    args, rest = parser.parse_known_args()
    ZEROTRAIN, MPIEXEC = os.path.abspath(args.zerotrain), args.mpiexec
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
