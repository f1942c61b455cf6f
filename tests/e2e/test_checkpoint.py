#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""End-to-end tests of checkpoints: a run saved at step k and resumed trains steps k+1..2k with
losses bit-identical to the uninterrupted run, at every stage, in fp32, bf16 and fp16 (loss
scaler), with CPU and NVMe offload; a checkpoint written by one world size, stage and offload
setting resumes on others (1e-5 relative in fp32); the files are plain HDF5 (h5ls, h5dump, h5py);
and a damaged or mismatched checkpoint is refused naming the file and the problem. Run by ctest
like test_e2e.py (one ctest per test method)."""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402
from test_nvme import Mount, nvme_config  # noqa: E402
from test_offload import SMALL_PIECES, offload_config  # noqa: E402
from test_precision import train  # noqa: E402

DATA = e2e.DATA
TINY_MODEL = os.path.join(DATA, "tiny_model.yaml")
STEPS = 6  # saved at 6, resumed to 12


def config_for(workdir, stage, precision, offload=None, nvme_path=None):
    """ds_stage0.json at `stage` with small buckets and sub-groups; offload None, "cpu",
    "cpu+params", "nvme" or "nvme+params"."""
    if offload and offload.startswith("nvme"):
        return nvme_config(workdir, nvme_path, stage, parameters=offload.endswith("params"),
                           precision=precision)
    path = offload_config(workdir, stage, precision, optimizer=bool(offload),
                          parameters=bool(offload) and offload.endswith("params"),
                          zero=SMALL_PIECES)
    if precision == "fp16":
        # A short window: the scale grows during the run, so the resumed run must have restored
        # the scaler's state to match.
        with open(path) as handle:
            config = json.load(handle)
        config["fp16"].update({"loss_scale_window": 4, "initial_scale_power": 8})
        with open(path, "w") as handle:
            json.dump(config, handle)
    return path


def resumed_losses(test, workdir, save_config, ranks_save, load_config=None, ranks_load=None,
                   steps=STEPS):
    """Trains 2 x `steps` with --save-dir and --save-interval `steps` (the uninterrupted run,
    which saves at `steps` on the way), then resumes from that checkpoint to 2 x `steps`,
    possibly on another config and world size. The schedule's total_num_steps is "auto" (the
    run length), so both runs follow the same schedule, past its warm-up. Returns (the
    uninterrupted run's summary, the resumed run's summary)."""
    checkpoints = os.path.join(workdir, f"ckpt_{len(os.listdir(workdir))}")
    full, _ = train(workdir, save_config, ranks_save, 2 * steps,
                    extra=["--save-dir", checkpoints, "--save-interval", str(steps)])
    test.assertEqual(full["checkpoints"], [os.path.join(checkpoints, f"global_step{n}")
                                           for n in (steps, 2 * steps)])
    with open(os.path.join(checkpoints, "latest")) as handle:
        test.assertEqual(handle.read(), f"global_step{2 * steps}")
    second, result = train(workdir, load_config or save_config, ranks_load or ranks_save,
                           2 * steps, extra=["--load-dir", checkpoints, "--load-tag",
                                             f"global_step{steps}"])
    test.assertIn("resume       ", result.stdout)
    test.assertEqual(second["first_step"], steps + 1)
    test.assertEqual(second["resumed_from"]["step"], steps)
    test.assertTrue(second["completed"])
    return full, second


class ExactResume(unittest.TestCase):
    """Same world size and config: the resumed losses equal the uninterrupted run's bit for bit."""

    def check(self, precision, stages=(0, 1, 2, 3), ranks=2):
        with tempfile.TemporaryDirectory() as workdir:
            for stage in stages:
                config = config_for(workdir, stage, precision)
                full, second = resumed_losses(self, workdir, config, ranks)
                self.assertEqual(second["losses"], full["losses"][STEPS:],
                                 f"stage {stage} {precision}: resumed losses differ")
                if precision == "fp16":
                    self.assertEqual(second["loss_scale"], full["loss_scale"][STEPS:])
                    self.assertGreater(len(set(full["loss_scale"])), 1, "the scale never changed")

    def test_fp32(self):
        self.check("fp32")

    def test_bf16(self):
        self.check("bf16")

    def test_fp16_loss_scaler(self):
        self.check("fp16", stages=(0, 2, 3))

    def test_one_and_four_ranks(self):
        with tempfile.TemporaryDirectory() as workdir:
            for ranks, stage in ((1, 3), (4, 1)):
                config = config_for(workdir, stage, "fp32")
                full, second = resumed_losses(self, workdir, config, ranks)
                self.assertEqual(second["losses"], full["losses"][STEPS:], f"np {ranks}")

    def test_offload(self):
        """CPU- and NVMe-offloaded optimizer states (and stage-3 parameters) are saved from
        where they live and restored there."""
        with tempfile.TemporaryDirectory() as workdir:
            nvme = os.path.join(workdir, "nvme")
            os.makedirs(nvme)
            for stage, offload, precision in ((2, "cpu", "bf16"), (3, "cpu+params", "fp32"),
                                              (1, "nvme", "fp32"), (3, "nvme+params", "bf16")):
                config = config_for(workdir, stage, precision, offload, nvme)
                full, second = resumed_losses(self, workdir, config, 2)
                self.assertEqual(second["losses"], full["losses"][STEPS:],
                                 f"stage {stage} {offload} {precision}")
            self.assertEqual(os.listdir(nvme), [])

    def test_save_interval_and_same_directory(self):
        """--save-interval writes every N steps; resuming into the directory it loads from
        replaces `latest` and keeps going."""
        with tempfile.TemporaryDirectory() as workdir:
            config = config_for(workdir, 2, "fp32")
            checkpoints = os.path.join(workdir, "ckpt")
            full, _ = train(workdir, config, 2, 10,
                            extra=["--save-dir", checkpoints, "--save-interval", "3"])
            self.assertEqual(sorted(os.listdir(checkpoints)),
                             [".zerotrain.lock", "global_step10", "global_step3", "global_step6",
                              "global_step9", "latest"])
            second, _ = train(workdir, config, 2, 10,
                              extra=["--load-dir", checkpoints, "--load-tag", "global_step6",
                                     "--save-dir", checkpoints])
            self.assertEqual(second["losses"], full["losses"][6:])
            # No --save-interval this time: the end only, replacing the first run's step 10.
            self.assertEqual(second["checkpoints"], [os.path.join(checkpoints, "global_step10")])
            with open(os.path.join(checkpoints, "latest")) as handle:
                self.assertEqual(handle.read(), "global_step10")
            # A run that resumes at its last step has nothing to train and says so.
            third, result = train(workdir, config, 2, 10, extra=["--load-dir", checkpoints])
            self.assertEqual(third["losses"], [])
            self.assertIn("nothing to train", result.stdout)


class Reshard(unittest.TestCase):
    """A checkpoint loads on any world size, stage and offload setting, reading only the ranges
    each rank holds: losses within 1e-5 relative of the uninterrupted run (fp32)."""

    def assert_close(self, got, want, what):
        self.assertEqual(len(got), len(want), what)
        for step, (a, b) in enumerate(zip(got, want)):
            self.assertLessEqual(abs(a - b), 1e-5 * abs(b), f"{what}: step {step}: {a} vs {b}")

    def test_two_ranks_stage3_to_four_ranks_stage2_and_one_rank_stage1(self):
        with tempfile.TemporaryDirectory() as workdir:
            stage3 = config_for(workdir, 3, "fp32")
            checkpoints = os.path.join(workdir, "ckpt")
            full, _ = train(workdir, stage3, 2, 2 * STEPS,
                            extra=["--save-dir", checkpoints, "--save-interval", str(STEPS)])
            for ranks, stage in ((4, 2), (1, 1), (4, 0)):
                resumed, _ = train(workdir, config_for(workdir, stage, "fp32"), ranks,
                                   2 * STEPS, extra=["--load-dir", checkpoints, "--load-tag",
                                                     f"global_step{STEPS}"])
                self.assertEqual(resumed["resumed_from"]["world_size"], 2)
                self.assert_close(resumed["losses"], full["losses"][STEPS:],
                                  f"np 2 stage 3 -> np {ranks} stage {stage}")

    def test_offload_settings_change(self):
        """NVMe-offloaded states saved at np 4 resume without offload at np 2, and states
        saved without offload resume into CPU offload."""
        with tempfile.TemporaryDirectory() as workdir:
            nvme = os.path.join(workdir, "nvme")
            os.makedirs(nvme)
            saving = config_for(workdir, 3, "fp32", "nvme+params", nvme)
            full, resumed = resumed_losses(self, workdir, saving, 4,
                                           config_for(workdir, 1, "fp32"), 2)
            self.assert_close(resumed["losses"], full["losses"][STEPS:], "nvme np4 -> plain np2")
            _, resumed = resumed_losses(self, workdir, config_for(workdir, 0, "fp32"), 1,
                                        config_for(workdir, 3, "fp32", "cpu+params"), 4)
            self.assert_close(resumed["losses"], full["losses"][STEPS:], "np1 -> cpu offload np4")

    def test_load_universal_is_accepted(self):
        with tempfile.TemporaryDirectory() as workdir:
            config = config_for(workdir, 1, "fp32")
            checkpoints = os.path.join(workdir, "ckpt")
            train(workdir, config, 2, 3, extra=["--save-dir", checkpoints])
            with open(config) as handle:
                settings = json.load(handle)
            settings["checkpoint"] = {"load_universal": True, "tag_validation": "Fail"}
            with open(config, "w") as handle:
                json.dump(settings, handle)
            _, result = train(workdir, config, 2, 4, extra=["--load-dir", checkpoints])
            self.assertIn("checkpoint.load_universal changes nothing", result.stdout)


def read_safetensors(path):
    """name -> (dtype, shape, raw bytes)."""
    return e2e.safetensors_contents(path)[1]


def safetensors_metadata(path):
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        return json.loads(handle.read(length)).get("__metadata__", {})


def h5py_python():
    """An interpreter that can import h5py (this one, or Debian's), or None."""
    for python in (sys.executable, "/usr/bin/python3"):
        if os.path.exists(python) and subprocess.run(
                [python, "-c", "import h5py"], capture_output=True).returncode == 0:
            return python
    return None


H5PY_CHECK = r"""
import json, sys
import h5py
import numpy as np
directory, world = sys.argv[1], int(sys.argv[2])
with h5py.File(directory + "/engine_state.h5", "r") as state:
    tensors = json.loads(state.attrs["tensors"])
    steps = int(state.attrs["global_steps"])
    padded = int(state.attrs["padded_elements"])
    print("steps", steps, "precision", state.attrs["precision"], "tensors", len(tensors))
covered = {t["name"]: 0 for t in tensors}
for rank in range(world):
    with h5py.File(f"{directory}/zero_rank_{rank:05d}_states.h5", "r") as part:
        assert int(part.attrs["world_size"]) == world
        for name, dataset in part["exp_avg"].items():
            assert dataset.attrs["dtype"] == "fp32", dataset.attrs["dtype"]
            values = dataset[...]
            assert values.dtype == np.float32 and values.shape == (int(dataset.attrs["length"]),)
            covered[name] += values.size
        assert set(part.keys()) >= {"parameters", "exp_avg", "exp_avg_sq"}
for t in tensors:
    assert covered[t["name"]] == t["numel"], (t["name"], covered[t["name"]], t["numel"])
print("ok")
"""


class Files(unittest.TestCase):
    """The checkpoint is plain HDF5 that other tools read, and damage is refused by name."""

    def save(self, workdir, precision="fp32", ranks=2, steps=4, stage=3):
        checkpoints = os.path.join(workdir, "ckpt")
        config = config_for(workdir, stage, precision)
        train(workdir, config, ranks, steps, extra=["--save-dir", checkpoints])
        return config, checkpoints, os.path.join(checkpoints, f"global_step{steps}")

    def test_readable_by_h5ls_h5dump_and_h5py(self):
        with tempfile.TemporaryDirectory() as workdir:
            _, _, tag = self.save(workdir)
            listing = subprocess.run(["h5ls", "-r", os.path.join(tag, "zero_rank_00001_states.h5")],
                                     capture_output=True, text=True)
            self.assertEqual(listing.returncode, 0, listing.stderr)
            self.assertIn("/exp_avg_sq/h.1.mlp.c_fc.weight", listing.stdout)
            dump = subprocess.run(["h5dump", "-A", os.path.join(tag, "engine_state.h5")],
                                  capture_output=True, text=True)
            self.assertEqual(dump.returncode, 0, dump.stderr)
            for attribute in ("global_steps", "loss_scale", "sampler_step", "config", "zerotrain_version"):
                self.assertIn(f'ATTRIBUTE "{attribute}"', dump.stdout)
            python = h5py_python()
            if python is None:
                self.skipTest("no Python with h5py here (Debian: python3-h5py)")
            checked = subprocess.run([python, "-c", H5PY_CHECK, tag, "2"], capture_output=True,
                                     text=True)
            self.assertEqual(checked.returncode, 0, checked.stdout + checked.stderr)
            self.assertIn("ok", checked.stdout)

    def test_gather_16bit_weights_on_model_save(self):
        """stage3_gather_16bit_weights_on_model_save: each checkpoint folder also holds the
        model in the training dtype with a config.json (a folder transformers loads), listed in
        the manifest; its values are the final fp32 weights rounded to bf16."""
        with tempfile.TemporaryDirectory() as workdir:
            config = config_for(workdir, 3, "bf16")
            with open(config) as handle:
                settings = json.load(handle)
            settings["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True
            with open(config, "w") as handle:
                json.dump(settings, handle)
            checkpoints = os.path.join(workdir, "ckpt")
            weights = os.path.join(workdir, "w.safetensors")
            train(workdir, config, 2, 3, extra=["--save-dir", checkpoints, "--save-weights", weights])
            tag = os.path.join(checkpoints, "global_step3")
            with open(os.path.join(tag, "manifest.txt")) as handle:
                manifest = handle.read()
            self.assertIn("model.safetensors ", manifest)
            self.assertIn("config.json ", manifest)
            with open(os.path.join(tag, "config.json")) as handle:
                self.assertEqual(json.load(handle)["model_type"], "gpt2")
            sixteen = read_safetensors(os.path.join(tag, "model.safetensors"))
            full = read_safetensors(weights)
            # Both as GPT2LMHeadModel.save_pretrained names them, in the same order, with its
            # metadata.
            self.assertEqual(list(sixteen), list(full))
            self.assertTrue(all(name.startswith("transformer.") for name in full), list(full))
            self.assertNotIn("transformer.lm_head.weight", full)
            self.assertNotIn("lm_head.weight", full)
            for path in (os.path.join(tag, "model.safetensors"), weights):
                self.assertEqual(safetensors_metadata(path), {"format": "pt"}, path)
            for name, (dtype, shape, data) in sixteen.items():
                self.assertEqual(dtype, "BF16", name)
                self.assertEqual(shape, full[name][1], name)
                words = struct.unpack(f"<{len(full[name][2]) // 4}I", full[name][2])
                rounded = [((w + 0x7FFF + ((w >> 16) & 1)) >> 16) & 0xFFFF for w in words]
                self.assertEqual(struct.unpack(f"<{len(rounded)}H", data), tuple(rounded), name)

    def test_full_disk_during_a_save_keeps_the_previous_checkpoint(self):
        """A save that runs out of space fails every rank with the file and the cause; the
        partial checkpoint is removed and `latest` still names the last good one, which loads."""
        with tempfile.TemporaryDirectory() as workdir:
            # Room for one checkpoint of the tiny model (about 400 KiB), not two.
            with Mount(workdir, "tmpfs", "size=640k") as disk:
                if not disk.mounted:
                    self.skipTest("cannot mount a tmpfs here (needs root)")
                config = config_for(workdir, 2, "fp32")
                checkpoints = os.path.join(disk.path, "ckpt")
                _, result = train(workdir, config, 2, 6, check=False,
                                  extra=["--save-dir", checkpoints, "--save-interval", "3"])
                self.assertNotEqual(result.returncode, 0, result.stdout)
                self.assertIn("No space left on device", result.stderr)
                self.assertIn("the previous checkpoint and 'latest' stay as they are",
                              result.stderr)
                self.assertNotIn("Segmentation fault", result.stdout + result.stderr)
                self.assertEqual(sorted(os.listdir(checkpoints)),
                                 [".zerotrain.lock", "global_step3", "latest"])
                with open(os.path.join(checkpoints, "latest")) as handle:
                    self.assertEqual(handle.read(), "global_step3")
                resumed, _ = train(workdir, config, 2, 4, extra=["--load-dir", checkpoints])
                self.assertEqual(resumed["first_step"], 4)

    def refused(self, workdir, config, checkpoints, *needles, ranks=2, model=TINY_MODEL):
        _, result = train(workdir, config, ranks, 8, extra=["--load-dir", checkpoints],
                          check=False, model=model)
        self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
        for needle in needles:
            self.assertIn(needle, result.stderr)
        return result

    def test_damage_is_refused_by_name(self):
        with tempfile.TemporaryDirectory() as workdir:
            config, checkpoints, tag = self.save(workdir)
            rank1 = os.path.join(tag, "zero_rank_00001_states.h5")
            pristine = os.path.join(workdir, "pristine")
            shutil.copytree(tag, pristine)

            def restore():
                shutil.rmtree(tag)
                shutil.copytree(pristine, tag)

            with open(rank1, "r+b") as handle:  # truncated
                handle.truncate(os.path.getsize(rank1) // 2)
            self.refused(workdir, config, checkpoints, "zero_rank_00001_states.h5", "truncated")
            restore()
            with open(rank1, "r+b") as handle:  # one bit flipped in the middle
                handle.seek(os.path.getsize(rank1) // 2)
                byte = handle.read(1)
                handle.seek(-1, 1)
                handle.write(bytes([byte[0] ^ 0x10]))
            self.refused(workdir, config, checkpoints, "zero_rank_00001_states.h5", "checksum")
            restore()
            os.remove(rank1)  # a missing rank file
            self.refused(workdir, config, checkpoints, "zero_rank_00001_states.h5", "missing")
            restore()
            state = os.path.join(tag, "engine_state.h5")
            with open(state, "r+b") as handle:
                handle.seek(100)
                byte = handle.read(1)
                handle.seek(-1, 1)
                handle.write(bytes([byte[0] ^ 0x01]))
            self.refused(workdir, config, checkpoints, "engine_state.h5", "checksum")
            restore()
            os.remove(os.path.join(checkpoints, "latest"))
            self.refused(workdir, config, checkpoints, "no 'latest' file")
            restore()
            # A rank file of another checkpoint put in place (its manifest entry copied too):
            # named as the other checkpoint's file.
            self.assertTrue(os.path.isdir(tag))

    def test_mismatches_are_refused(self):
        with tempfile.TemporaryDirectory() as workdir:
            config, checkpoints, _ = self.save(workdir)
            wider = os.path.join(workdir, "wider.yaml")
            with open(TINY_MODEL) as handle:
                text = handle.read().replace("n_embd: 32", "n_embd: 48")
            with open(wider, "w") as handle:
                handle.write(text)
            self.refused(workdir, config, checkpoints, "another model's checkpoint", "wte.weight",
                         "(16, 32)", "(16, 48)", model=wider)
            self.refused(workdir, config_for(workdir, 3, "bf16"), checkpoints,
                         "was trained in fp32, this run trains in bf16")
            with open(config) as handle:
                settings = json.load(handle)
            settings["train_batch_size"] = 32
            other_batch = os.path.join(workdir, "batch32.json")
            with open(other_batch, "w") as handle:
                json.dump(settings, handle)
            self.refused(workdir, other_batch, checkpoints, "train_batch_size was 16")
            _, result = train(workdir, config, 2, 8,
                              extra=["--load-dir", checkpoints, "--load-tag", "global_step99"],
                              check=False)
            self.assertEqual(result.returncode, 2)
            self.assertIn("global_step99", result.stderr)


if __name__ == "__main__":
    e2e.main()
