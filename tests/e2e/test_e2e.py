#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""End-to-end tests of the zerotrain executable under mpiexec.

Run by ctest: test_e2e.py --zerotrain PATH --mpiexec PATH TestCase.test_name
"""
import argparse
import array
import json
import os
import shutil
import struct
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


def run(args, ranks=None, cwd=None, timeout=600, **kwargs):
    command = ([MPIEXEC, "-n", str(ranks), "--oversubscribe"] if ranks else []) + [ZEROTRAIN] + args
    result = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True,
                            timeout=timeout, **kwargs)
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
            # Ranks and local ranks come from MPI (one node here).
            self.assertEqual([(p["rank"], p["local_rank"], p["local_size"]) for p in summary["placement"]],
                             [(0, 0, 2), (1, 1, 2)])
            self.assertIn("placement", result.stdout)
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
            model = write_model(workdir, "bytes.yaml", vocab_size=256, n_positions=32, n_embd=32,
                                n_layer=1, n_head=2)
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
        result = run(["check-config", os.path.join(DATA, "ds_not_supported.json"), "--world-size", "2"])
        self.assert_fails(result, "not supported yet: zero_optimization.offload_optimizer")

    def test_check_config_accepts_every_zero_stage(self):
        for stage in (1, 2, 3):
            config = os.path.join(HERE, "..", "..", "inputs", "configs", f"zero{stage}.json")
            result = run(["check-config", config, "--world-size", "2"])
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)

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
            self.assertEqual(result.stderr.count(
                "not supported yet: zero_optimization.offload_optimizer.super_offload"), 1)

    def test_missing_data_file_names_it(self):
        with tempfile.TemporaryDirectory() as workdir:
            result = run(["train", "--config", os.path.join(DATA, "ds_stage0.json"), "--model",
                          os.path.join(DATA, "tiny_model.yaml"), "--steps", "2", "--data",
                          os.path.join(workdir, "nope.h5")], ranks=2, cwd=workdir)
            self.assertNotEqual(result.returncode, 0)
            self.assertIn("nope.h5", result.stderr)

    def test_srun_without_mpi_plugin_is_refused(self):
        # What `srun -n 2` without --mpi=pmix looks like from inside: two singletons.
        env = dict(ENV, SLURM_STEP_NUM_TASKS="2")
        result = subprocess.run([ZEROTRAIN, "train", "--steps", "1"], env=env, capture_output=True,
                                text=True, timeout=120)
        self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
        self.assertIn("Slurm started 2 tasks but MPI sees 1 rank", result.stderr)
        self.assertIn("--mpi=pmix", result.stderr)

    def test_version_reports_the_build(self):
        result = run(["--version"])
        self.assertEqual(result.returncode, 0, result.stderr)
        for needle in ("zerotrain ", "(git ", "options:   ZT_ENABLE_CUDA=", "ZT_ENABLE_NCCL=",
                       "MPI:       ", "Kokkos:    ", "backends ", "HDF5:      ", "GEMM:      ",
                       "yaml-cpp:  ", "CUDA:      ", "NCCL:      "):
            self.assertIn(needle, result.stdout)
        # The revision is read at build time: it names the commit the tests run from. A release
        # tarball has no .git, and a machine may have no git: then there is nothing to compare.
        if not shutil.which("git"):
            self.skipTest("git is not installed: cannot read the revision to compare")
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=HERE,
                              capture_output=True, text=True)
        if head.returncode != 0:
            self.skipTest("not a git checkout: " + head.stderr.strip())
        self.assertIn(f"(git {head.stdout.strip()}", result.stdout)

    def test_config_without_model_is_a_usage_error(self):
        result = run(["train", "--config", os.path.join(DATA, "ds_stage0.json")], ranks=1)
        self.assert_fails(result, "--model")


ESTIMATOR_GOLDEN = os.path.join(HERE, "..", "memory", "deepspeed_estimator_golden.txt")


def estimator_golden(stage, params, largest, gpus_per_node, nodes, abf=1.5):
    """The table deepspeed_estimator_reference.py (an independent Python port) printed."""
    header = (f"=== stage={stage} params={params!r} largest={largest!r} "
              f"gpus_per_node={gpus_per_node} nodes={nodes} abf={abf!r}")
    with open(ESTIMATOR_GOLDEN) as handle:
        text = handle.read()
    start = text.index(header + "\n") + len(header) + 1
    end = text.find("\n===", start)
    return text[start:] if end < 0 else text[start:end + 1]


class Estimate(unittest.TestCase):
    def test_stage3_table_matches_deepspeed(self):
        result = run(["estimate", "--params", "2783e6", "--largest-layer-params", "65e6"])
        self.assertEqual(result.returncode, 0, result.stderr)
        table = estimator_golden(3, 2783e6, 65e6, 1, 1)
        self.assertEqual(result.stdout, table)  # exactly DeepSpeed's output; remarks on stderr
        self.assertTrue(result.stderr.startswith("note: "), result.stderr)
        self.assertIn("zerotrain plan", result.stderr)

    def test_stage2_table_matches_deepspeed(self):
        result = run(["estimate", "--stage", "2", "--params", "1e9", "--gpus-per-node", "4",
                      "--nodes", "2"])
        self.assertEqual(result.returncode, 0, result.stderr)
        table = estimator_golden(2, 1e9, 5e7, 4, 2)
        self.assertEqual(result.stdout[:len(table)], table)
        self.assertIn("HW: Setup with 2 nodes, 4 GPUs per node.", table)

    def test_counts_come_from_the_model(self):
        # tiny_model.yaml: GPT-2 with wte tied to the output layer (counted once).
        vocab, n_positions, c, layers = 16, 32, 32, 2
        total = vocab * c + n_positions * c + layers * (12 * c * c + 13 * c) + 2 * c
        largest = max(vocab * c, n_positions * c, 4 * c * c + 4 * c)  # wte, wpe or mlp.c_fc
        model = os.path.join(DATA, "tiny_model.yaml")
        result = run(["estimate", "--model", model])
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"counts: {total} total params ({model}), "
                      f"{largest} largest layer params ({model})\n", result.stderr)
        table = estimator_golden(3, float(total), float(largest), 1, 1)
        self.assertEqual(result.stdout[:len(table)], table)
        # The same counts given by hand print the same table.
        by_hand = run(["estimate", "--params", str(total), "--largest-layer-params", str(largest)])
        self.assertEqual(by_hand.returncode, 0, by_hand.stderr)
        self.assertEqual(by_hand.stdout[:len(table)], table)

    def test_usage_errors_name_the_flag(self):
        result = run(["estimate", "--params", "1e9"])  # stage 3 needs the largest layer
        self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
        self.assertIn("zerotrain: error:", result.stderr)
        self.assertIn("--largest-layer-params", result.stderr)
        result = run(["estimate", "--stage", "2"])
        self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
        self.assertIn("--params", result.stderr)
        result = run(["estimate", "--stage", "2", "--params", "0"])
        self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
        self.assertIn("--params", result.stderr)


PLAN_MODEL = dict(vocab_size=64, n_positions=64, n_embd=192, n_layer=4, n_head=4)


class Plan(unittest.TestCase):
    def plan(self, workdir, args):
        config_out = os.path.join(workdir, "recommended.json")
        plan_json = os.path.join(workdir, "plan.json")
        result = run(["plan"] + args + ["--config-out", config_out, "--json", plan_json])
        return result, config_out, plan_json

    def test_recommends_the_fastest_fitting_combination(self):
        counts = ["--params", "20e9", "--largest-layer-params", "2e8", "--gpus-per-node", "8"]
        cases = [
            (["--params", "1e9", "--largest-layer-params", "1e7", "--gpus-per-node", "8",
              "--gpu-mem", "12GiB", "--cpu-mem", "256GiB"], "stage 1", 1, None, None),
            (counts + ["--nodes", "8", "--gpu-mem", "80GiB", "--cpu-mem", "1TiB"], "stage 3", 3, None, None),
            (counts + ["--gpu-mem", "40GiB", "--cpu-mem", "512GiB"], "stage 3 + optimizer on cpu", 3,
             "cpu", None),
            # ZeRO-Infinity: host memory too small for the optimizer's states (the gradient
            # slices, 80 GB, still live there).
            (counts + ["--gpu-mem", "40GiB", "--cpu-mem", "160GiB", "--nvme-bandwidth", "3GB"],
             "stage 3 + optimizer on nvme + parameters on nvme", 3, "nvme", "nvme"),
        ]
        for args, name, stage, optimizer, parameters in cases:
            with tempfile.TemporaryDirectory() as workdir:
                result, config_out, plan_json = self.plan(workdir, args)
                self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
                self.assertIn(f"recommended: {name}", result.stdout)
                self.assertIn("<- fastest that fits", result.stdout)
                with open(config_out) as handle:
                    config = json.load(handle)
                zero = config["zero_optimization"]
                self.assertEqual(zero["stage"], stage, name)
                self.assertEqual(zero.get("offload_optimizer", {}).get("device"), optimizer, name)
                self.assertEqual(zero.get("offload_param", {}).get("device"), parameters, name)
                with open(plan_json) as handle:
                    rows = json.load(handle)["rows"]
                best = next(i for i, row in enumerate(rows) if row["fits"])
                self.assertEqual(rows[best]["name"], name)
                # Every faster combination was ruled out, with a reason.
                for row in rows[:best]:
                    self.assertTrue(row["limit"], row["name"])
                # What plan recommends, check-config (and so train) accepts.
                checked = run(["check-config", config_out, "--world-size", "8"])
                self.assertEqual(checked.returncode, 0, checked.stdout + checked.stderr)

    def test_nothing_fits_is_refused(self):
        with tempfile.TemporaryDirectory() as workdir:
            result, _, _ = self.plan(workdir, ["--params", "20e9", "--largest-layer-params", "2e8",
                                               "--gpus-per-node", "8", "--gpu-mem", "40GiB",
                                               "--cpu-mem", "64GiB"])
            self.assertEqual(result.returncode, 1)
            self.assertIn("nothing fits", result.stderr)
            self.assertIn("--nvme-bandwidth", result.stderr)

    def test_predictions_match_measured_peaks(self):
        # The plan's fp32 model states per rank against the memory tracker of real runs at
        # 4 ranks, for stages 0-3 (within 10%), and its activation estimate; for the rows that
        # offload to CPU memory also what each rank keeps in host memory (the row's CPU bytes
        # per node over the node's 4 GPUs) and the copies between device and host per step.
        # NVMe offload is not built: its rows are not run.
        gpus_per_node = 4
        with tempfile.TemporaryDirectory() as workdir:
            model = write_model(workdir, "plan_model.yaml", **PLAN_MODEL)
            result, _, plan_json = self.plan(workdir, ["--model", model, "--gpus-per-node",
                                                       str(gpus_per_node), "--gpu-mem", "1GiB",
                                                       "--cpu-mem", "1GiB", "--micro-batch", "2",
                                                       "--seq", "32"])
            self.assertEqual(result.returncode, 0, result.stderr)
            with open(plan_json) as handle:
                plan = json.load(handle)
            cpu_rows = []
            for row in plan["rows"]:
                if "nvme" in (row["offload_optimizer"], row["offload_param"]):
                    continue
                offloaded = row["offload_optimizer"] == "cpu" or row["offload_param"] == "cpu"
                if offloaded:
                    cpu_rows.append(row["name"])
                name = row["name"].replace(" ", "_").replace("+", "")
                config = os.path.join(workdir, f"{name}.json")
                with open(config, "w") as handle:
                    json.dump(row["config"], handle)
                summary, _, _ = train_config(workdir, config, gpus_per_node, 2, ["--seq-len", "32"],
                                             model=model)
                for rank in summary["peak_bytes"]:
                    device = rank["device"]
                    measured = device["parameters"] + device["gradients"] + device["optimizer_states"]
                    predicted = row["gpu_model_states"]
                    self.assertLessEqual(abs(measured - predicted), 0.1 * measured,
                                         f"{row['name']} rank {rank['rank']}: plan {predicted}, "
                                         f"measured {measured}")
                    self.assertLessEqual(abs(device["activations"] - plan["activation_bytes"]),
                                         0.1 * device["activations"], row["name"])
                    # Host memory of the model states: the offloaded optimizer states, gradient
                    # slice and parameters (or their staging), and the landing buffer of the
                    # reduced gradients, which the plan counts in the CPU bytes too.
                    host = rank["host"]
                    measured_host = (host["parameters"] + host["gradients"] +
                                     host["optimizer_states"] + host["comm_buffers"])
                    predicted_host = row["cpu_per_node"] / gpus_per_node
                    self.assertLessEqual(abs(measured_host - predicted_host), 0.1 * measured_host,
                                         f"{row['name']} rank {rank['rank']}: plan {predicted_host} "
                                         f"bytes of CPU memory, measured {measured_host} ({host})")
                    for kind in ("parameters", "gradients", "optimizer_states", "comm_buffers"):
                        planned = row["cpu_per_gpu"][kind]
                        self.assertLessEqual(abs(host[kind] - planned), max(0.1 * host[kind], 4096),
                                             f"{row['name']} rank {rank['rank']}: host {kind}: "
                                             f"plan {planned}, measured {host[kind]}")
                # Rank 0's copies between device and host memory in each step; the step's
                # token ids (inputs and targets, int32) go to the device as well.
                copies = summary["offload"]
                tokens = 2 * 4 * 2 * 32 * row["config"]["gradient_accumulation_steps"]
                for key in ("bytes_to_host_per_step", "bytes_to_device_per_step"):
                    planned = row[key]
                    self.assertEqual(len(copies[key]), 2, key)
                    for step, copied in enumerate(copies[key]):
                        slack = 0.1 * planned + (tokens if key == "bytes_to_device_per_step" else 0)
                        self.assertLessEqual(abs(copied - planned), slack,
                                             f"{row['name']} step {step + 1}: {key}: plan "
                                             f"{planned}, measured {copied}")
                self.assertEqual(row["offload_bytes_per_step"],
                                 row["bytes_to_host_per_step"] + row["bytes_to_device_per_step"])
            self.assertEqual(cpu_rows, ["stage 2 + optimizer on cpu", "stage 3 + optimizer on cpu",
                                        "stage 3 + optimizer on cpu + parameters on cpu"])


def safetensors_contents(path):
    """(metadata, {name: (dtype, shape, raw bytes)}) of a safetensors file, in the header's
    order (any dtype; the checkpoint, consolidate and Hugging Face tests share it)."""
    with open(path, "rb") as handle:
        blob = handle.read()
    (length,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + length])
    data = blob[8 + length:]
    metadata = header.pop("__metadata__", {})
    tensors = {}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        tensors[name] = (entry["dtype"], entry["shape"], data[begin:end])
    return metadata, tensors


def read_safetensors(path):
    """{name: (shape, list of floats)} from a safetensors file of F32 tensors (no numpy)."""
    with open(path, "rb") as handle:
        length = struct.unpack("<Q", handle.read(8))[0]
        header = json.loads(handle.read(length))
        data = handle.read()
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        assert entry["dtype"] == "F32", entry
        begin, end = entry["data_offsets"]
        values = array.array("f")
        values.frombytes(data[begin:end])
        tensors[name] = (entry["shape"], values)
    return tensors


def write_model(workdir, name, **fields):
    """A GPT model description (YAML) in workdir; returns its path."""
    path = os.path.join(workdir, name)
    with open(path, "w") as handle:
        handle.write("".join(f"{key}: {value}\n" for key, value in fields.items()))
    return path


def zero_config(workdir, stage, accumulation=1, train_batch=None, **zero):
    """ds_stage0.json with another ZeRO stage, accumulation (and global batch) and
    zero_optimization keys."""
    with open(os.path.join(DATA, "ds_stage0.json")) as handle:
        config = json.load(handle)
    config["gradient_accumulation_steps"] = accumulation
    if train_batch is not None:
        config["train_batch_size"] = train_batch
    config["zero_optimization"] = dict({"stage": stage}, **zero)
    path = os.path.join(workdir, f"zero{stage}_gas{accumulation}_{len(os.listdir(workdir))}.json")
    with open(path, "w") as handle:
        json.dump(config, handle)
    return path


def train_config(workdir, config, ranks, steps, extra=(), model=None):
    tag = f"{os.path.basename(config)}_np{ranks}"
    summary = os.path.join(workdir, f"summary_{tag}.json")
    weights = os.path.join(workdir, f"weights_{tag}.safetensors")
    result = run(["train", "--config", config, "--model", model or os.path.join(DATA, "tiny_model.yaml"),
                  "--steps", str(steps), "--seed", "7", "--summary-json", summary,
                  "--save-weights", weights, "--output-dir", os.path.join(workdir, "out")]
                 + list(extra), ranks=ranks, cwd=workdir)
    if result.returncode != 0:
        raise AssertionError(f"zerotrain failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    with open(summary) as handle:
        return json.load(handle), read_safetensors(weights), result.stdout


# Settings that make every stage cut tensors into several buckets and gathers.
SMALL_BUCKETS = {"reduce_bucket_size": 3000, "allgather_bucket_size": 2000,
                 "stage3_param_persistence_threshold": 0, "stage3_prefetch_bucket_size": 4000,
                 "sub_group_size": 5000}


class ZeroStages(unittest.TestCase):
    STEPS = 50

    def assert_same_run(self, reference, other, label):
        ref_summary, ref_weights, _ = reference
        summary, weights, _ = other
        for step, (a, b) in enumerate(zip(ref_summary["losses"], summary["losses"])):
            self.assertLessEqual(abs(a - b), 1e-5 * abs(a), f"{label}: step {step + 1}: {b} vs {a}")
        self.assertEqual(len(summary["losses"]), len(ref_summary["losses"]))
        self.assertEqual(sorted(weights), sorted(ref_weights))
        largest = max(abs(v) for _, values in ref_weights.values() for v in values)
        for name, (shape, values) in ref_weights.items():
            other_shape, other_values = weights[name]
            self.assertEqual(shape, other_shape, name)
            error = max(abs(a - b) for a, b in zip(values, other_values))
            self.assertLessEqual(error, 1e-5 * largest, f"{label}: {name} differs by {error}")

    def check_stage(self, stage):
        # The check: stage S at 1, 2 and 4 ranks, accumulation 1 and 2, same global batch
        # and seed, 50 steps, against stage 0 on one rank.
        with tempfile.TemporaryDirectory() as workdir:
            reference = train_config(workdir, zero_config(workdir, 0), 1, self.STEPS)
            self.assertLess(reference[0]["losses"][-1], reference[0]["losses"][0])
            for ranks in (1, 2, 4):
                for accumulation in (1, 2):
                    config = zero_config(workdir, stage, accumulation, **SMALL_BUCKETS)
                    run_result = train_config(workdir, config, ranks, self.STEPS)
                    self.assertEqual(run_result[0]["zero_stage"], stage)
                    self.assert_same_run(reference, run_result,
                                         f"stage {stage}, np {ranks}, accumulation {accumulation}")

    def test_stage0_matches_one_rank(self):
        self.check_stage(0)

    def test_stage1_matches_one_rank(self):
        self.check_stage(1)

    def test_stage2_matches_one_rank(self):
        self.check_stage(2)

    def test_stage3_matches_one_rank(self):
        self.check_stage(3)

    def test_traffic_matches_the_paper_volumes(self):
        # Per rank per step: 2 Psi (N-1)/N elements for stages 0-2, 3 Psi (N-1)/N for stage 3
        # without persistent parameters (and without keeping forward's gathers for backward).
        with tempfile.TemporaryDirectory() as workdir:
            for ranks in (2, 4):
                for stage in (0, 1, 2, 3):
                    config = zero_config(workdir, stage, 1, stage3_param_persistence_threshold=0,
                                         stage3_max_reuse_distance=0)
                    summary = train_config(workdir, config, ranks, 3)[0]
                    zero = summary["zero"]
                    psi = zero["parameters"]
                    expected = (3 if stage == 3 else 2) * psi * (ranks - 1) / ranks * 4
                    self.assertAlmostEqual(zero["paper_volume_elements_per_step"] * 4, expected, delta=1)
                    for rank in zero["traffic_per_rank"]:
                        for key in ("mean_bytes_received_per_step", "mean_bytes_sent_per_step"):
                            self.assertLessEqual(abs(rank[key] - expected), 0.05 * expected,
                                                 f"stage {stage} np {ranks} rank {rank['rank']} {key}: "
                                                 f"{rank[key]} vs {expected}")

    def test_memory_per_rank_follows_zero(self):
        with tempfile.TemporaryDirectory() as workdir:
            # Eight layers: a layer's landing window is a small part of the model.
            model = write_model(workdir, "deep.yaml", vocab_size=16, n_positions=32, n_embd=32,
                                n_layer=8, n_head=2)
            peaks = {}
            for stage in (0, 1, 2, 3):
                config = zero_config(workdir, stage, 1, reduce_bucket_size=3000,
                                     stage3_param_persistence_threshold=0, stage3_max_reuse_distance=0,
                                     stage3_prefetch_bucket_size=15000)
                summary = train_config(workdir, config, 4, 2, model=model)[0]
                peaks[stage] = (summary["zero"], summary["peak_bytes"])
            padded = peaks[0][0]["padded_elements"]
            for stage, (zero, ranks) in peaks.items():
                slice_elements = zero["slice_elements"]
                self.assertEqual(slice_elements * 4, padded)
                for rank in ranks:
                    device = rank["device"]
                    states = 2 * 4 * (padded if stage == 0 else slice_elements)
                    self.assertEqual(device["optimizer_states"], states, f"stage {stage}")
                    if stage >= 2:
                        self.assertEqual(device["gradients"], 4 * (slice_elements + zero["landing_elements"]))
                        self.assertLess(device["gradients"], 4 * padded)
                    if stage == 3:
                        self.assertLessEqual(device["parameters"],
                                             4 * (slice_elements + zero["peak_live_elements"]))
                        self.assertLess(device["parameters"], 4 * padded)
                    else:
                        self.assertEqual(device["parameters"], 4 * padded)

    def test_stage3_trains_under_a_device_cap_where_stage0_fails(self):
        with tempfile.TemporaryDirectory() as workdir:
            model = write_model(workdir, "mid.yaml", vocab_size=256, n_positions=32, n_embd=128,
                                n_layer=4, n_head=4)
            configs = {stage: zero_config(workdir, stage, train_batch=8) for stage in (0, 3)}
            cap = ["--device-memory-limit", "8MiB"]
            failed = run(["train", "--config", configs[0], "--model", model, "--steps", "3"] + cap,
                         ranks=4, cwd=workdir)
            self.assertNotEqual(failed.returncode, 0)
            self.assertIn("out of device memory", failed.stderr)
            self.assertIn("8.00 MiB limit", failed.stderr)
            self.assertIn("ZeRO stage 0 on 4 ranks keeps 12.67 MiB of fp32 model states", failed.stderr)
            self.assertEqual(failed.stderr.count("out of device memory"), 1)  # said once, by rank 0
            capped = train_config(workdir, configs[3], 4, 3, cap, model=model)
            free = train_config(workdir, configs[0], 1, 3, model=model)
            self.assert_same_run(free, capped, "stage 3 under the cap")
            for rank in capped[0]["peak_bytes"]:
                self.assertLessEqual(rank["device"]["total"], 8 << 20)

    def test_stage3_trains_a_model_whose_parameters_exceed_the_cap(self):
        # 3.2M parameters = 12.24 MiB of fp32 weights against a 12 MiB cap per rank: stage 0
        # cannot even hold the parameters; stage 3 on 8 ranks keeps 16 bytes / 8 per parameter
        # plus a few layers and trains, with DeepSpeed's default stage-3 settings.
        with tempfile.TemporaryDirectory() as workdir:
            model = write_model(workdir, "deep.yaml", vocab_size=256, n_positions=16, n_embd=128,
                                n_layer=16, n_head=4)
            configs = {stage: zero_config(workdir, stage, train_batch=8) for stage in (0, 3)}
            cap = ["--device-memory-limit", "12MiB"]
            failed = run(["train", "--config", configs[0], "--model", model, "--steps", "3"] + cap,
                         ranks=8, cwd=workdir)
            self.assertNotEqual(failed.returncode, 0)
            self.assertIn("asked for 12.24 MiB of parameters", failed.stderr)
            capped = train_config(workdir, configs[3], 8, 3, cap, model=model)
            self.assertGreater(4 * capped[0]["parameters"], 12 << 20)  # the weights exceed the cap
            for rank in capped[0]["peak_bytes"]:
                self.assertLessEqual(rank["device"]["total"], 12 << 20)
            free = train_config(workdir, configs[0], 1, 3, model=model)
            self.assert_same_run(free, capped, "stage 3 on 8 ranks under the cap")

    def test_breakdown_reports_exposed_communication(self):
        with tempfile.TemporaryDirectory() as workdir:
            config = zero_config(workdir, 2, 1, overlap_comm=True, reduce_bucket_size=2000)
            summary, _, stdout = train_config(workdir, config, 2, 10)
            self.assertIn("communication per step", stdout)
            self.assertIn("exposed", stdout)
            seconds = summary["zero"]["seconds"]
            self.assertGreater(seconds["communication"], 0)
            self.assertGreater(seconds["exposed_communication"], 0)
            self.assertTrue(summary["zero"]["progress_thread"])


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
