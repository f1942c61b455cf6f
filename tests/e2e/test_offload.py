#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""End-to-end tests of ZeRO-Offload to CPU memory: offloaded runs train the same model as the
runs without offload, what the tracker shows moved, a device-memory cap that only offload fits
under, the Hugging Face guide's ZeRO-3 CPU-offload config, and the keys refused by name; and
what check-config says of NVMe offload configs (the guide's ZeRO-Infinity config, the NVMe
keys and their refusals; training runs on NVMe are test_nvme.py's). Run by ctest like
test_e2e.py (one ctest per test method)."""
import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402  (the shared helpers: run, write_model...)
from test_precision import train  # noqa: E402  (zerotrain train, its summary and output)

DATA = e2e.DATA
TINY_MODEL = os.path.join(DATA, "tiny_model.yaml")
HF_GUIDE = os.path.join(DATA, "hf_guide_zero3_cpu_offload.json")
HF_GUIDE_NVME = os.path.join(DATA, "hf_guide_zero3_infinity_nvme.json")
CPU = {"device": "cpu"}


def offload_config(workdir, stage, precision="fp32", optimizer=False, parameters=False,
                   zero=None, extra=None):
    """ds_stage0.json at `stage` in `precision`, with the optimizer (and parameters) offloaded
    to CPU memory."""
    with open(os.path.join(DATA, "ds_stage0.json")) as handle:
        config = json.load(handle)
    config.pop("wall_clock_breakdown", None)
    config["zero_optimization"] = dict({"stage": stage}, **(zero or {}))
    if optimizer:
        config["zero_optimization"]["offload_optimizer"] = dict(CPU, pin_memory=True)
    if parameters:
        config["zero_optimization"]["offload_param"] = dict(CPU, pin_memory=True)
    if precision == "bf16":
        config["bf16"] = {"enabled": True}
    elif precision == "fp16":
        config["fp16"] = {"enabled": True, "initial_scale_power": 12}
    config.update(extra or {})
    path = os.path.join(workdir, f"offload_{len(os.listdir(workdir))}.json")
    with open(path, "w") as handle:
        json.dump(config, handle)
    return path


# Several buckets, gathers and sub-groups, so every pipeline runs more than once.
SMALL_PIECES = {"reduce_bucket_size": 3000, "stage3_param_persistence_threshold": 0,
                "stage3_prefetch_bucket_size": 4000, "sub_group_size": 5000}


class OffloadMatches(unittest.TestCase):
    """With offload on, each stage's loss curve equals the same run without offload: within
    1e-6 relative in fp32 (the CPU optimizer is the same arithmetic), 1e-3 in bf16, 50 steps."""

    def check(self, precision, ranks):
        tolerance = 1e-6 if precision == "fp32" else 1e-3
        with tempfile.TemporaryDirectory() as workdir:
            for stage in (1, 2, 3):
                plain, _ = train(workdir, offload_config(workdir, stage, precision, zero=SMALL_PIECES),
                                 ranks, 50)
                variants = [("optimizer", True, False)]
                if stage == 3:
                    variants.append(("optimizer and parameters", True, True))
                for name, optimizer, parameters in variants:
                    config = offload_config(workdir, stage, precision, optimizer, parameters,
                                            zero=SMALL_PIECES)
                    summary, result = train(workdir, config, ranks, 50)
                    self.assertIn("  offload      ", result.stdout)
                    self.assertEqual(summary["offload"]["optimizer"], "cpu")
                    for step, (got, want) in enumerate(zip(summary["losses"], plain["losses"]), 1):
                        self.assertLessEqual(abs(got - want), tolerance * abs(want),
                                             f"{precision} stage {stage} np {ranks} {name} offloaded, "
                                             f"step {step}: {got} vs {want}")
                    self.assertEqual(len(summary["losses"]), 50)

    def test_fp32_np1(self):
        self.check("fp32", 1)

    def test_fp32_np2(self):
        self.check("fp32", 2)

    def test_fp32_np4(self):
        self.check("fp32", 4)

    def test_bf16_np1(self):
        self.check("bf16", 1)

    def test_bf16_np2(self):
        self.check("bf16", 2)

    def test_bf16_np4(self):
        self.check("bf16", 4)

    def test_fp16_and_lamb_and_accumulation(self):
        with tempfile.TemporaryDirectory() as workdir:
            cases = [
                ("fp16 stage 2", 2, "fp16", {}, {}),
                ("lamb stage 1", 1, "fp32", {}, {"optimizer": {"type": "Lamb", "params": {"lr": 2e-3}},
                                                 "zero_allow_untested_optimizer": True}),
                ("lamb stage 3 bf16", 3, "bf16", {}, {"optimizer": {"type": "Lamb", "params": {"lr": 2e-3}},
                                                      "zero_allow_untested_optimizer": True}),
                ("accumulation stage 3", 3, "fp32", {}, {"gradient_accumulation_steps": 2}),
                ("accumulation stage 1", 1, "fp32", {}, {"gradient_accumulation_steps": 2}),
            ]
            for name, stage, precision, zero, extra in cases:
                zero = dict(SMALL_PIECES, **zero)
                plain, _ = train(workdir, offload_config(workdir, stage, precision, zero=zero,
                                                         extra=extra), 2, 20)
                summary, _ = train(workdir, offload_config(workdir, stage, precision, True, stage == 3,
                                                           zero=zero, extra=extra), 2, 20)
                tolerance = 1e-6 if precision == "fp32" else 1e-3
                for step, (got, want) in enumerate(zip(summary["losses"], plain["losses"]), 1):
                    self.assertLessEqual(abs(got - want), tolerance * abs(want), f"{name} step {step}")
                self.assertEqual(summary["skipped_step_numbers"], plain["skipped_step_numbers"], name)

    def test_partial_offload_ratio(self):
        # DeepSpeed offloads the first int(ratio x sub-groups) sub-groups and steps the rest on
        # the device: the same model either way.
        with tempfile.TemporaryDirectory() as workdir:
            zero = dict(SMALL_PIECES, sub_group_size=1000)
            plain, _ = train(workdir, offload_config(workdir, 3, zero=zero), 2, 20)
            config = offload_config(workdir, 3, zero=zero)
            with open(config) as handle:
                document = json.load(handle)
            document["zero_optimization"]["offload_optimizer"] = {"device": "cpu", "ratio": 0.5}
            with open(config, "w") as handle:
                json.dump(document, handle)
            summary, result = train(workdir, config, 2, 20)
            offload = summary["offload"]
            self.assertEqual(offload["host_sub_groups"], int(0.5 * offload["sub_groups"]))
            self.assertGreater(offload["sub_groups"], offload["host_sub_groups"])
            self.assertIn(f"CPU optimizer steps {offload['host_sub_groups']} of {offload['sub_groups']}",
                          result.stdout)
            for rank in summary["peak_bytes"]:
                self.assertGreater(rank["device"]["optimizer_states"], 0)
                self.assertGreater(rank["host"]["optimizer_states"], 0)
            for step, (got, want) in enumerate(zip(summary["losses"], plain["losses"]), 1):
                self.assertLessEqual(abs(got - want), 1e-6 * abs(want), f"step {step}")


class WhatMoved(unittest.TestCase):
    def test_the_tracker_shows_states_in_host_memory(self):
        with tempfile.TemporaryDirectory() as workdir:
            for precision in ("fp32", "bf16"):
                plain, _ = train(workdir, offload_config(workdir, 3, precision), 2, 2)
                states, _ = train(workdir, offload_config(workdir, 3, precision, True), 2, 2)
                both, _ = train(workdir, offload_config(workdir, 3, precision, True, True), 2, 2)
                element = 4 if precision == "fp32" else 2
                for rank in range(2):
                    slice_elements = plain["zero"]["slice_elements"]
                    device = plain["peak_bytes"][rank]["device"]
                    self.assertGreater(device["optimizer_states"], 0)
                    for kind in ("parameters", "gradients", "optimizer_states"):
                        self.assertEqual(plain["peak_bytes"][rank]["host"][kind], 0, kind)
                    for summary in (states, both):
                        device = summary["peak_bytes"][rank]["device"]
                        host = summary["peak_bytes"][rank]["host"]
                        self.assertEqual(device["optimizer_states"], 0, precision)
                        # fp32 master weights and Adam's two moments of the slice
                        self.assertEqual(host["optimizer_states"], 12 * slice_elements, precision)
                        self.assertEqual(host["gradients"], element * slice_elements, precision)
                    # With offload_param the slice of parameters is in host memory too: the
                    # device holds only gathered layers.
                    self.assertLess(both["peak_bytes"][rank]["device"]["parameters"],
                                    states["peak_bytes"][rank]["device"]["parameters"])
                    self.assertGreaterEqual(both["peak_bytes"][rank]["host"]["parameters"],
                                            element * slice_elements)
                for summary in (states, both):
                    self.assertGreater(summary["offload"]["bytes_to_host_per_step"][-1], 0)
                    self.assertGreater(summary["offload"]["bytes_to_device_per_step"][-1], 0)
                self.assertEqual(plain["offload"]["bytes_to_host_per_step"][-1], 0)

    def test_offload_trains_under_a_cap_where_stage3_fails(self):
        with tempfile.TemporaryDirectory() as workdir:
            model = e2e.write_model(workdir, "mid.yaml", vocab_size=256, n_positions=32, n_embd=128,
                                    n_layer=4, n_head=4)
            zero = {"stage3_param_persistence_threshold": 0, "stage3_max_reuse_distance": 0,
                    "reduce_bucket_size": 20000, "stage3_prefetch_bucket_size": 20000}
            extra = {"train_batch_size": 8}
            # Stage 3 keeps about 14 MiB per rank here (5 MiB of it activations); with the
            # optimizer and the parameters in host memory about 9.5 MiB.
            cap = ["--device-memory-limit", "12MiB"]
            plain = offload_config(workdir, 3, zero=zero, extra=extra)
            _, failed = train(workdir, plain, 2, 3, cap, model=model, check=False)
            self.assertNotEqual(failed.returncode, 0)
            self.assertIn("out of device memory", failed.stderr)
            self.assertIn("12.00 MiB limit", failed.stderr)
            offloaded = offload_config(workdir, 3, optimizer=True, parameters=True, zero=zero, extra=extra)
            capped, _ = train(workdir, offloaded, 2, 3, cap, model=model)
            for rank in capped["peak_bytes"]:
                self.assertLessEqual(rank["device"]["total"], 12 << 20)
            free, _ = train(workdir, plain, 2, 3, model=model)
            for step, (got, want) in enumerate(zip(capped["losses"], free["losses"]), 1):
                self.assertLessEqual(abs(got - want), 1e-6 * abs(want), f"step {step}")


class HuggingFaceGuide(unittest.TestCase):
    def test_the_guides_zero3_cpu_offload_config_trains_unchanged(self):
        with open(HF_GUIDE) as handle:  # a verbatim copy of the guide's file
            self.assertEqual(json.load(handle)["zero_optimization"]["offload_param"]["device"], "cpu")
        flags = ["--fp16", "--learning_rate", "1e-3", "--adam_beta1", "0.9", "--adam_beta2", "0.99",
                 "--adam_epsilon", "1e-8", "--weight_decay", "0.01", "--warmup_steps", "5",
                 "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1",
                 "--max_grad_norm", "1.0"]
        with tempfile.TemporaryDirectory() as workdir:
            summary, result = train(workdir, HF_GUIDE, 2, 30, flags)
            self.assertEqual(summary["zero_stage"], 3)
            self.assertEqual(summary["precision"], "fp16")
            self.assertEqual(summary["offload"]["optimizer"], "cpu")
            self.assertEqual(summary["offload"]["parameters"], "cpu")
            self.assertLess(summary["losses"][-1], summary["losses"][0])
            self.assertIn("  offload      ", result.stdout)


class Refusals(unittest.TestCase):
    def refused(self, workdir, config, *needles, ranks=2):
        _, result = train(workdir, config, ranks, 1, check=False)
        self.assertNotEqual(result.returncode, 0, result.stdout)
        for needle in needles:
            self.assertIn(needle, result.stderr)

    def test_offload_where_deepspeed_ignores_it_is_refused(self):
        with tempfile.TemporaryDirectory() as workdir:
            self.refused(workdir, offload_config(workdir, 0, optimizer=True),
                         "zero_optimization.offload_optimizer")
            self.refused(workdir, offload_config(workdir, 2, optimizer=True, parameters=True),
                         "zero_optimization.offload_param")
            config = offload_config(workdir, 3, zero={"offload_optimizer": {
                "device": "cpu", "pipeline_read": True}})
            self.refused(workdir, config, "zero_optimization.offload_optimizer.pipeline_read")

    def test_a_client_optimizer_under_offload_needs_zero_force_ds_cpu_optimizer_false(self):
        with tempfile.TemporaryDirectory() as workdir:
            config = offload_config(workdir, 2, optimizer=True)
            with open(config) as handle:
                document = json.load(handle)
            del document["optimizer"]  # the HF Trainer's optimizer, as DeepSpeed sees it
            with open(config, "w") as handle:
                json.dump(document, handle)
            self.refused(workdir, config, "zero_force_ds_cpu_optimizer")
            document["zero_force_ds_cpu_optimizer"] = False
            with open(config, "w") as handle:
                json.dump(document, handle)
            summary, _ = train(workdir, config, 2, 2, ["--learning_rate", "2e-3"])
            self.assertEqual(summary["offload"]["optimizer"], "cpu")


def check_config(config, *flags, ranks=None):
    """zerotrain check-config CONFIG --world-size 2 --max_steps 100 [flags]."""
    return e2e.run(["check-config", config, "--world-size", "2", "--max_steps", "100"] + list(flags),
                   ranks=ranks)


def write_config(workdir, document):
    path = os.path.join(workdir, f"config_{len(os.listdir(workdir))}.json")
    with open(path, "w") as handle:
        json.dump(document, handle)
    return path


def nvme_config(workdir, stage, optimizer=None, parameters=None, aio=None):
    """ds_stage0.json at `stage` with offload sections (dicts, or None for none)."""
    with open(os.path.join(DATA, "ds_stage0.json")) as handle:
        document = json.load(handle)
    document["zero_optimization"] = {"stage": stage}
    if optimizer is not None:
        document["zero_optimization"]["offload_optimizer"] = optimizer
    if parameters is not None:
        document["zero_optimization"]["offload_param"] = parameters
    if aio is not None:
        document["aio"] = aio
    return write_config(workdir, document)


class NvmeConfigs(unittest.TestCase):
    """check-config on NVMe offload (ZeRO-Infinity) configs: accepted as DeepSpeed's docs and the
    Hugging Face guide write them, refused by name where zerotrain cannot do what they say."""

    HF_FLAGS = ["--fp16", "--learning_rate", "1e-3", "--warmup_steps", "5",
                "--per_device_train_batch_size", "4", "--model", TINY_MODEL]

    def accepted(self, result):
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn(": ok for 2 ranks", result.stdout)

    def refused(self, result, *needles):
        self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
        for needle in needles:
            self.assertIn(needle, result.stderr)

    def test_the_hf_guides_infinity_config_passes_with_its_nvme_path_replaced(self):
        with open(HF_GUIDE_NVME) as handle:  # a verbatim copy of the guide's file
            text = handle.read()
        guide = json.loads(text)["zero_optimization"]
        self.assertEqual(guide["offload_optimizer"]["device"], "nvme")
        self.assertEqual(guide["offload_param"]["device"], "nvme")
        self.assertIn("aio", guide)  # the guide nests aio in zero_optimization
        with tempfile.TemporaryDirectory() as workdir:
            scratch = os.path.join(workdir, "nvme")
            os.mkdir(scratch)
            config = os.path.join(workdir, "zero3_infinity_nvme.json")
            with open(config, "w") as handle:  # nvme_path is the one edit a user makes
                handle.write(text.replace("/local_nvme", scratch))
            result = check_config(config, *self.HF_FLAGS)
            self.accepted(result)
            self.assertIn(f'"{scratch}"', result.stdout)
            self.assertIn('"nvme"', result.stdout)
            self.assertIn("checked when training starts", result.stdout)
            self.assertIn("written as zero_optimization.aio.thread_count", result.stdout)
            self.assertNotIn("unused: no offload", result.stdout)
        # Unchanged too: the folder is checked when training starts, on the nodes, not by a
        # check-config that may run on a login node.
        self.accepted(check_config(HF_GUIDE_NVME, *self.HF_FLAGS))

    def test_nvme_optimizer_offload_is_accepted_at_stages_1_to_3(self):
        # DeepSpeed runs it as CPU offload at stages 1 and 2; zerotrain swaps to NVMe there too.
        with tempfile.TemporaryDirectory() as workdir:
            for stage in (1, 2, 3):
                config = nvme_config(workdir, stage, optimizer={
                    "device": "nvme", "nvme_path": workdir, "buffer_count": 9,
                    "pipeline_read": True, "pipeline_write": True, "fast_init": True},
                    aio={"block_size": 262144, "queue_depth": 16, "intra_op_parallelism": 2,
                         "use_gds": False})
                result = check_config(config)
                self.accepted(result)
                self.assertIn("accepted, changes nothing", result.stdout)  # fast_init
            config = nvme_config(workdir, 3, optimizer={"device": "cpu"},
                                 parameters={"device": "nvme", "nvme_path": workdir,
                                             "max_in_cpu": 1000})
            self.accepted(check_config(config))

    def test_an_aio_block_without_nvme_is_accepted_and_marked_unused(self):
        with tempfile.TemporaryDirectory() as workdir:
            result = check_config(nvme_config(workdir, 2, optimizer={"device": "cpu"},
                                              aio={"block_size": 262144, "thread_count": 2}))
            self.accepted(result)
            self.assertIn("unused: no offload device is \"nvme\"", result.stdout)

    def test_what_nvme_offload_cannot_do_is_refused_by_name(self):
        with tempfile.TemporaryDirectory() as workdir:
            nvme = {"device": "nvme", "nvme_path": workdir}
            cases = [
                (nvme_config(workdir, 3, optimizer={"device": "nvme"}),
                 ["zero_optimization.offload_optimizer.nvme_path: required with "
                  "offload_optimizer.device \"nvme\""]),
                (nvme_config(workdir, 3, parameters={"device": "nvme", "nvme_path": None}),
                 ["zero_optimization.offload_param.nvme_path: required with"]),
                (nvme_config(workdir, 0, optimizer=nvme),
                 ["zero_optimization.offload_optimizer.device", "needs ZeRO"]),
                (nvme_config(workdir, 2, optimizer=nvme, parameters=nvme),
                 ["zero_optimization.offload_param.device", "needs ZeRO stage 3"]),
                (nvme_config(workdir, 3, optimizer=dict(nvme, buffer_count=2)),
                 ["zero_optimization.offload_optimizer.buffer_count", "at least 3"]),
                (nvme_config(workdir, 3, optimizer=dict(nvme, pipeline_read=True)),
                 ["zero_optimization.offload_optimizer.buffer_count", "pipeline_read",
                  "at least 6"]),
                (nvme_config(workdir, 1, optimizer=dict(nvme, buffer_count=6, pipeline_read=True,
                                                        pipeline_write=True)),
                 ["zero_optimization.offload_optimizer.buffer_count", "at least 9"]),
                (nvme_config(workdir, 3, parameters=dict(nvme, buffer_count=0)),
                 ["zero_optimization.offload_param.buffer_count"]),
                (nvme_config(workdir, 3, optimizer=nvme, aio={"use_gds": True}),
                 ["not supported yet: aio.use_gds", "GPUDirect Storage"]),
                (nvme_config(workdir, 3, optimizer=nvme, aio={"block_size": 1000}),
                 ["aio.block_size", "multiple of 4096", "O_DIRECT"]),
                (nvme_config(workdir, 3, optimizer=nvme, aio={"queue_depth": 0}),
                 ["aio.queue_depth"]),
                (nvme_config(workdir, 3, optimizer=nvme,
                             aio={"thread_count": 4, "intra_op_parallelism": 2}),
                 ["aio.thread_count", "aio.intra_op_parallelism", "two spellings"]),
                (nvme_config(workdir, 3, optimizer={"device": "cpu", "nvme_path": workdir}),
                 ["zero_optimization.offload_optimizer.nvme_path", "has no effect"]),
            ]
            for config, needles in cases:
                with self.subTest(needles=needles[0]):
                    self.refused(check_config(config), *needles)

    def test_train_takes_an_aio_backend_flag(self):
        result = e2e.run(["train", "--aio-backend", "spdk", "--steps", "1"])
        self.refused(result, "--aio-backend", "spdk")
        help_text = e2e.run(["train", "--help"]).stdout
        self.assertIn("--aio-backend", help_text)
        self.assertIn("io_uring", help_text)


if __name__ == "__main__":
    e2e.main()
