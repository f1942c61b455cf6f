#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""End-to-end tests of 16-bit training: fp16 with DeepSpeed's loss scaler, bf16,
communication_data_type, what the tracker counts, and the overflow paths (skips, the minimum
scale). Run by ctest like test_e2e.py (one ctest per test method)."""
import json
import os
import struct
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402  (the shared helpers: run, zero_config...)

DATA = e2e.DATA
TINY_MODEL = os.path.join(DATA, "tiny_model.yaml")
OVERFLOW = "[deepspeed] OVERFLOW! Rank 0 Skipping step."
AT_MINIMUM = "Current loss scale already at minimum - cannot decrease scale anymore. Exiting run."


def precision_config(workdir, stage=0, precision="fp32", communication=None, fp16=None, extra=None,
                     name=None):
    """ds_stage0.json at `stage` in `precision` (fp32, fp16, bf16), with fp16 keys and
    communication_data_type when given."""
    with open(os.path.join(DATA, "ds_stage0.json")) as handle:
        config = json.load(handle)
    config["zero_optimization"] = {"stage": stage}
    config.pop("wall_clock_breakdown", None)
    if precision == "fp16":
        config["fp16"] = dict({"enabled": True}, **(fp16 or {}))
    elif precision == "bf16":
        config["bf16"] = {"enabled": True}
    if communication:
        config["communication_data_type"] = communication
    config.update(extra or {})
    path = os.path.join(workdir, name or f"{precision}_z{stage}_{communication}_{len(os.listdir(workdir))}.json")
    with open(path, "w") as handle:
        json.dump(config, handle)
    return path


def train(workdir, config, ranks, steps, extra=(), env=None, check=True, model=TINY_MODEL):
    summary = os.path.join(workdir, f"summary_{len(os.listdir(workdir))}.json")
    args = ["train", "--config", config, "--model", model, "--steps", str(steps), "--seed", "7",
            "--summary-json", summary, "--output-dir", os.path.join(workdir, "out")] + list(extra)
    saved = dict(e2e.ENV)
    try:
        if env:
            e2e.ENV.update(env)
        result = e2e.run(args, ranks=ranks, cwd=workdir, timeout=300)
    finally:
        e2e.ENV.clear()
        e2e.ENV.update(saved)
    if not check:
        return None, result
    if result.returncode != 0:
        raise AssertionError(f"zerotrain failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    with open(summary) as handle:
        return json.load(handle), result


def safetensors_tensors(path):
    """name -> raw bytes of each tensor of a safetensors file (the header's order)."""
    with open(path, "rb") as handle:
        blob = handle.read()
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + length])
    data = blob[8 + length:]
    return {name: data[entry["data_offsets"][0]:entry["data_offsets"][1]]
            for name, entry in header.items() if name != "__metadata__"}


class StagesMatch(unittest.TestCase):
    """Every stage at np 1, 2 and 4 trains the model the stage-0 one-rank run of the same
    precision trains (gradients reduced in fp32): losses within 1e-3 relative over 50 steps.
    fp16 starts at a loss scale of 2^12, below where these gradients overflow: whether an
    element crosses fp16's 65504 near the threshold depends on how the batch is split over the
    ranks, and a step skipped by one run and not by the other would part the curves."""

    def check(self, precision, ranks):
        fp16 = {"initial_scale_power": 12} if precision == "fp16" else None
        with tempfile.TemporaryDirectory() as workdir:
            reference, _ = train(workdir, precision_config(workdir, 0, precision, "fp32", fp16), 1, 50)
            self.assertEqual(reference["precision"], precision)
            self.assertEqual(reference["skipped_steps"], 0)
            for stage in range(4):
                summary, _ = train(workdir, precision_config(workdir, stage, precision, "fp32", fp16),
                                   ranks, 50)
                self.assertEqual(summary["skipped_step_numbers"], reference["skipped_step_numbers"])
                for step, (got, want) in enumerate(zip(summary["losses"], reference["losses"]), 1):
                    self.assertLess(abs(got - want), 1e-3 * abs(want),
                                    f"{precision} stage {stage} np {ranks} step {step}: {got} vs {want}")

    def test_bf16_np1(self):
        self.check("bf16", 1)

    def test_bf16_np2(self):
        self.check("bf16", 2)

    def test_bf16_np4(self):
        self.check("bf16", 4)

    def test_fp16_np1(self):
        self.check("fp16", 1)

    def test_fp16_np2(self):
        self.check("fp16", 2)

    def test_fp16_np4(self):
        self.check("fp16", 4)


class Precision(unittest.TestCase):
    def test_16_bit_runs_end_near_the_fp32_run(self):
        with tempfile.TemporaryDirectory() as workdir:
            finals = {}
            for precision in ("fp32", "bf16", "fp16"):
                summary, result = train(workdir, precision_config(workdir, 2, precision), 2, 150)
                finals[precision] = summary["final_loss_mean_last_10"]
                self.assertIn(f"precision    {precision}", result.stdout)
            for precision in ("bf16", "fp16"):
                self.assertLess(abs(finals[precision] - finals["fp32"]), 0.05, finals)

    def test_parameter_and_gradient_bytes_halve(self):
        # Gradients accumulate in the training dtype here; bf16 without ZeRO accumulates in fp32
        # by default, as DeepSpeed's BF16_Optimizer does (test below), so it is set explicitly.
        in_bf16 = {"data_types": {"grad_accum_dtype": "bf16"}}
        with tempfile.TemporaryDirectory() as workdir:
            for stage in range(4):
                peaks = {}
                for precision in ("fp32", "bf16", "fp16"):
                    config = precision_config(workdir, stage, precision,
                                              extra=in_bf16 if precision == "bf16" else None)
                    summary, _ = train(workdir, config, 2, 2)
                    peaks[precision] = summary["peak_bytes"]
                for precision in ("bf16", "fp16"):
                    for rank in range(2):
                        for kind in ("parameters", "gradients"):
                            full = peaks["fp32"][rank]["device"][kind]
                            half = peaks[precision][rank]["device"][kind]
                            self.assertEqual(2 * half, full, f"stage {stage} {precision} rank {rank} {kind}")
                        # Adam's moments, and in 16 bits the fp32 master copy and sub-group gradients.
                        self.assertGreater(peaks[precision][rank]["device"]["optimizer_states"],
                                           peaks["fp32"][rank]["device"]["optimizer_states"])

    def test_bf16_without_zero_accumulates_in_fp32_like_deepspeed(self):
        with tempfile.TemporaryDirectory() as workdir:
            fp32, _ = train(workdir, precision_config(workdir, 0, "fp32"), 1, 2)
            bf16, result = train(workdir, precision_config(workdir, 0, "bf16"), 1, 2)
            self.assertIn("gradients accumulated in fp32", result.stdout)
            # fp32 accumulation (4 bytes) plus one micro-step of bf16 gradients (2 bytes)
            full = fp32["peak_bytes"][0]["device"]["gradients"]
            self.assertEqual(bf16["peak_bytes"][0]["device"]["gradients"] * 2, full * 3)
            # At stage 1 and up ZeRO accumulates in the model's dtype.
            _, result = train(workdir, precision_config(workdir, 1, "bf16"), 1, 2)
            self.assertIn("gradients accumulated in bf16", result.stdout)

    def test_communication_data_type_halves_the_gradient_traffic(self):
        with tempfile.TemporaryDirectory() as workdir:
            sent = {}
            for communication in ("fp32", "bf16"):
                summary, _ = train(workdir, precision_config(workdir, 2, "bf16", communication), 2, 2)
                self.assertEqual(summary["communication_data_type"], communication)
                sent[communication] = summary["zero"]["bytes_sent_per_step"][-1]
            # Stage 2 moves the gradients (reduce-scatter) in the communication dtype and the
            # parameters (all-gather) in bf16: halving the former takes a quarter off the whole.
            self.assertLess(sent["bf16"], 0.8 * sent["fp32"], sent)
            self.assertGreater(sent["bf16"], 0.6 * sent["fp32"], sent)
            summary, _ = train(workdir, precision_config(workdir, 2, "bf16"), 2, 2)
            self.assertEqual(summary["communication_data_type"], "bf16")  # default: training dtype


class Overflow(unittest.TestCase):
    def test_injected_overflows_skip_exactly_those_steps(self):
        with tempfile.TemporaryDirectory() as workdir:
            config = precision_config(workdir, 2, "fp16", fp16={"initial_scale_power": 16})
            summary, result = train(workdir, config, 2, 8, env={"ZT_TEST_INJECT_OVERFLOW": "3,6"})
            lines = [l for l in result.stdout.splitlines() if l.startswith(OVERFLOW)]
            # hysteresis 2 (a scaler key is given, so the fp16 key defaults apply): the first
            # overflow spends the hysteresis, the second halves the scale.
            self.assertEqual(lines, [
                OVERFLOW + " Attempted loss scale: 65536, but hysteresis is 2. Reducing hysteresis to 1",
                OVERFLOW + " Attempted loss scale: 65536, reducing to 32768"], result.stdout)
            self.assertEqual(summary["skipped_steps"], 2)
            self.assertEqual(summary["skipped_step_numbers"], [3, 6])
            self.assertEqual(summary["loss_scale"], [65536] * 6 + [32768] * 2)

    def test_a_skipped_step_leaves_the_weights_untouched(self):
        with tempfile.TemporaryDirectory() as workdir:
            config = precision_config(workdir, 1, "fp16", fp16={"initial_scale_power": 16})
            skipped = os.path.join(workdir, "skipped.safetensors")
            clean = os.path.join(workdir, "clean.safetensors")
            train(workdir, config, 2, 3, extra=["--save-weights", skipped],
                  env={"ZT_TEST_INJECT_OVERFLOW": "3"})
            train(workdir, config, 2, 2, extra=["--save-weights", clean])
            self.assertEqual(safetensors_tensors(skipped), safetensors_tensors(clean))
            train(workdir, config, 2, 3, extra=["--save-weights", clean])
            self.assertNotEqual(safetensors_tensors(skipped), safetensors_tensors(clean))

    def test_initial_scale_power_32_overflows_reduces_and_trains(self):
        with tempfile.TemporaryDirectory() as workdir:
            config = precision_config(workdir, 2, "fp16", fp16={"initial_scale_power": 32, "hysteresis": 1})
            summary, result = train(workdir, config, 2, 40)
            lines = [l for l in result.stdout.splitlines() if l.startswith(OVERFLOW)]
            self.assertGreater(len(lines), 0, result.stdout)
            self.assertIn("Attempted loss scale: 4294967296, reducing to 2147483648", lines[0])
            self.assertEqual(summary["skipped_steps"], len(lines))
            self.assertLess(summary["loss_scale"][-1], 2 ** 32)
            self.assertLess(summary["final_loss"], summary["losses"][0] - 0.05)

    def test_overflow_at_the_minimum_scale_stops_every_rank(self):
        with tempfile.TemporaryDirectory() as workdir:
            config = precision_config(workdir, 1, "fp16",
                                      fp16={"initial_scale_power": 2, "hysteresis": 1, "min_loss_scale": 1})
            _, result = train(workdir, config, 2, 50, check=False,
                              env={"ZT_TEST_INJECT_OVERFLOW": ",".join(str(s) for s in range(1, 51))})
            self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
            self.assertIn(AT_MINIMUM, result.stderr)
            lines = [l for l in result.stdout.splitlines() if l.startswith(OVERFLOW)]
            self.assertEqual(lines, [OVERFLOW + " Attempted loss scale: 4, reducing to 2",
                                     OVERFLOW + " Attempted loss scale: 2, reducing to 1"])

    def test_bf16_overflow_skips_with_a_message(self):
        with tempfile.TemporaryDirectory() as workdir:
            summary, result = train(workdir, precision_config(workdir, 0, "bf16"), 1, 4,
                                    env={"ZT_TEST_INJECT_OVERFLOW": "2"})
            self.assertEqual(summary["skipped_step_numbers"], [2])
            self.assertIn("skipping step 2", result.stdout)


if __name__ == "__main__":
    e2e.main()  # parses --zerotrain/--mpiexec into e2e and runs this script's tests
