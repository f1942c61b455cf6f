#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""End-to-end tests of `zerotrain consolidate CKPT_DIR OUT_DIR`: a checkpoint written by
`train --save-dir` becomes the file `train --save-weights` writes in the same run (byte for byte:
GPT2LMHeadModel.save_pretrained's names, layout and metadata), in fp32, or the same weights in
bf16 or fp16; model.h5 holds the same;
damaged checkpoints and outputs that would overwrite a checkpoint are refused; GPT-2 small
consolidates within twice its largest tensor. Run by ctest like test_e2e.py (one ctest per
test method). Pure Python (no numpy): the tiny model keeps element loops cheap."""
import array
import filecmp
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402  (the shared helpers: run, ENV, main)
import test_precision as precision  # noqa: E402  (precision_config, train)

PREFIX = "transformer."
MIB = 1 << 20

try:
    import h5py  # model.h5 is read with it when installed, else with h5dump
except ImportError:
    h5py = None


def find_hf_python():
    """A Python that imports transformers and torch: this one, or $ZT_HF_PYTHON (a venv)."""
    for candidate in (sys.executable, os.environ.get("ZT_HF_PYTHON")):
        if candidate and subprocess.run([candidate, "-c", "import transformers, torch"],
                                        capture_output=True).returncode == 0:
            return candidate
    return None


def hf_names(n_layer):
    """What GPT2LMHeadModel.save_pretrained writes to model.safetensors for GPT-2 (without the
    tied lm_head.weight and the non-persistent attention-mask buffers), in zerotrain's order."""
    names = ["wte.weight", "wpe.weight"]
    for b in range(n_layer):
        names += [f"h.{b}.{suffix}" for suffix in (
            "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias",
            "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight", "ln_2.bias",
            "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias")]
    return [PREFIX + name for name in names + ["ln_f.weight", "ln_f.bias"]]


read_safetensors = e2e.safetensors_contents


def bf16_bits(u):
    """fp32 bits rounded to bf16 (nearest even; NaN stays quiet NaN), as kernels/ops/dtype.hpp."""
    if (u & 0x7FFFFFFF) > 0x7F800000:
        return ((u >> 16) | 0x40) & 0xFFFF
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) & 0xFFFF


def rounded(data, dtype):
    """fp32 bytes rounded to bf16 or fp16 bytes."""
    words = memoryview(data).cast("I")
    if dtype == "bf16":
        return array.array("H", (bf16_bits(u) for u in words)).tobytes()
    floats = memoryview(data).cast("f")
    return b"".join(struct.pack("<e", value) for value in floats)


def consolidate(checkpoint, out, *extra, check=True):
    result = e2e.run(["consolidate", checkpoint, out] + list(extra), timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"consolidate failed ({result.returncode}):\n{result.stdout}\n"
                             f"{result.stderr}")
    return result


def train_with_checkpoint(workdir, stage, ranks, precision_name="fp32", steps=3, extra=(),
                          name="run", zero=None, top=None):
    """Trains the tiny model (`zero`: more zero_optimization keys, `top`: more top-level keys);
    returns (save dir, --save-weights file)."""
    save_dir = os.path.join(workdir, f"{name}_ckpt")
    weights = os.path.join(workdir, f"{name}_weights.safetensors")
    config = precision.precision_config(workdir, stage, precision_name, extra=top)
    if zero:
        with open(config) as handle:
            document = json.load(handle)
        document["zero_optimization"].update(zero)
        with open(config, "w") as handle:
            json.dump(document, handle)
    precision.train(workdir, config, ranks, steps,
                    extra=["--save-dir", save_dir, "--save-weights", weights] + list(extra))
    return save_dir, weights


def h5dump(*args):
    result = subprocess.run(["h5dump"] + list(args), capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise AssertionError(f"h5dump {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def h5_dataset_values(path, name):
    """The values of one dataset, read by h5py when installed, else by h5dump."""
    if h5py:
        with h5py.File(path, "r") as handle:
            return [float(v) for v in handle[name][()].reshape(-1)]
    text = h5dump("-d", "/" + name, "-y", "-w", "0", "-m", "%.9g", path)
    body = text[text.index("DATA {") + len("DATA {"):]
    body = body[:body.index("}")]
    # %.9g tells every fp32 (and so every fp16) apart: round the text back to fp32.
    return [struct.unpack("<f", struct.pack("<f", float(v)))[0]
            for v in body.replace(",", " ").split()]


def h5_dataset_shape(path, name):
    if h5py:
        with h5py.File(path, "r") as handle:
            return list(handle[name].shape)
    text = h5dump("-H", "-d", "/" + name, path)
    match = re.search(r"DATASPACE\s+SIMPLE\s+\{\s*\(\s*([0-9, ]+)\)", text)
    return [int(v) for v in match.group(1).split(",")]


def h5_attributes(path):
    """Root attributes as text (h5dump -A), or as a dict through h5py."""
    if h5py:
        with h5py.File(path, "r") as handle:
            return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in handle.attrs.items()}
    return h5dump("-A", path)


def decode(data, dtype):
    """Raw little-endian bytes of F32, F16 or BF16 as Python floats."""
    if dtype == "F32":
        return list(memoryview(data).cast("f"))
    if dtype == "F16":
        return [v for (v,) in struct.iter_unpack("<e", data)]
    return [struct.unpack("<f", struct.pack("<I", u << 16))[0] for u in memoryview(data).cast("H")]


def assert_same_file(test, got_path, want_path, what):
    """The two files hold the same bytes; where not, says what differs (metadata, a tensor's
    name, dtype, shape or values, or else the header's layout)."""
    if filecmp.cmp(got_path, want_path, shallow=False):
        return
    got_metadata, got = read_safetensors(got_path)
    want_metadata, want = read_safetensors(want_path)
    test.assertEqual(got_metadata, want_metadata, f"{what}: metadata")
    test.assertEqual(list(got), list(want), f"{what}: names or order")
    for name in want:
        test.assertEqual(got[name][:2], want[name][:2], f"{what}: {name} dtype or shape")
        test.assertTrue(got[name][2] == want[name][2], f"{what}: {name} differs")
    test.fail(f"{what}: {got_path} and {want_path} hold the same tensors and metadata in "
              f"different bytes")


class Consolidate(unittest.TestCase):
    def assert_same_file(self, got_path, want_path, what):
        assert_same_file(self, got_path, want_path, what)

    def assert_same_tensors(self, got, want, what):
        self.assertEqual(list(got), list(want), f"{what}: names or order")
        for name in want:
            self.assertEqual(got[name][:2], want[name][:2], f"{what}: {name} dtype or shape")
            self.assertTrue(got[name][2] == want[name][2], f"{what}: {name} differs")

    def check_matches_save_weights(self, stage, ranks, precision_name="fp32", **settings):
        with tempfile.TemporaryDirectory() as workdir:
            save_dir, weights = train_with_checkpoint(workdir, stage, ranks, precision_name,
                                                      **settings)
            with open(os.path.join(save_dir, "latest")) as handle:
                tag = handle.read().strip()
            out = os.path.join(workdir, "hf")
            result = consolidate(save_dir, out)
            metadata, tensors = read_safetensors(os.path.join(out, "model.safetensors"))
            self.assertEqual(metadata, {"format": "pt"})
            self.assertEqual(list(tensors), hf_names(2))
            self.assert_same_file(os.path.join(out, "model.safetensors"), weights,
                                  f"{precision_name} stage {stage} np {ranks}")
            self.assertIn(f"'{os.path.join(save_dir, tag)}'", result.stdout)
            self.assertIn("fp32_master (fp32), written as fp32" if precision_name != "fp32"
                          else "parameters (fp32), written as fp32", result.stdout)
            self.assertRegex(result.stdout, r"peak memory [0-9.]+ MiB \(largest tensor")
            with open(os.path.join(out, "config.json")) as handle:
                config = json.load(handle)
            for key, value in (("model_type", "gpt2"), ("vocab_size", 16), ("n_positions", 32),
                               ("n_embd", 32), ("n_layer", 2), ("n_head", 2),
                               ("tie_word_embeddings", True)):
                self.assertEqual(config[key], value, key)
            self.assertEqual(config["architectures"], ["GPT2LMHeadModel"])
            self.assertEqual(config.get("dtype", config.get("torch_dtype")), "float32")
            return tensors

    def test_fp32_stage0_np2(self):
        self.check_matches_save_weights(0, 2)

    def test_fp32_stage1_np1(self):
        self.check_matches_save_weights(1, 1)

    def test_fp32_stage2_np2(self):
        self.check_matches_save_weights(2, 2)

    def test_fp32_stage3_np1_and_np2(self):
        one = self.check_matches_save_weights(3, 1)
        two = self.check_matches_save_weights(3, 2)
        # Same seed and data: the run on two ranks ends at the same weights (to about 1e-7,
        # the README's promise is 1e-5), whichever rank files hold them.
        self.assertEqual([v[:2] for v in one.values()], [v[:2] for v in two.values()])
        for name in one:
            for a, b in zip(decode(one[name][2], "F32"), decode(two[name][2], "F32")):
                self.assertLessEqual(abs(a - b), 1e-5 * max(1.0, abs(a)), name)

    def test_fp32_stage3_cpu_offload_np2(self):
        # The optimizer states and parameter slices live in host memory; the checkpoint and so
        # the consolidated model do not show it.
        self.check_matches_save_weights(
            3, 2, zero={"offload_optimizer": {"device": "cpu"}, "offload_param": {"device": "cpu"}},
            top={"zero_force_ds_cpu_optimizer": False})

    def test_bf16_stage2_np2_master_and_parameters(self):
        with tempfile.TemporaryDirectory() as workdir:
            save_dir, weights = train_with_checkpoint(workdir, 2, 2, "bf16")
            fp32_out = os.path.join(workdir, "fp32")
            consolidate(save_dir, fp32_out)
            _, fp32 = read_safetensors(os.path.join(fp32_out, "model.safetensors"))
            self.assert_same_file(os.path.join(fp32_out, "model.safetensors"), weights,
                                  "bf16 run, fp32 master")
            for dtype, st_dtype in (("bf16", "BF16"), ("fp16", "F16")):
                out = os.path.join(workdir, dtype)
                result = consolidate(save_dir, out, "--dtype", dtype)
                # bf16 output of a bf16 run: the parameters as stored; fp16: the master rounded.
                self.assertIn("parameters (bf16), written as stored" if dtype == "bf16"
                              else "fp32_master (fp32), rounded to fp16 (nearest even)", result.stdout)
                _, got = read_safetensors(os.path.join(out, "model.safetensors"))
                want = {name: (st_dtype, shape, rounded(data, dtype))
                        for name, (_, shape, data) in fp32.items()}
                # The stored bf16 parameters are the master rounded to nearest even.
                self.assert_same_tensors(got, want, f"bf16 run as {dtype}")
                with open(os.path.join(out, "config.json")) as handle:
                    config = json.load(handle)
                self.assertEqual(config.get("dtype", config.get("torch_dtype")),
                                 {"bf16": "bfloat16", "fp16": "float16"}[dtype])

    def test_bf16_output_is_the_16_bit_model_saved_with_the_checkpoint(self):
        """With stage3_gather_16bit_weights_on_model_save the checkpoint holds the gathered
        16-bit model beside the states (DeepSpeed's save_16bit_model); consolidate --dtype bf16
        writes the same bits from the rank files."""
        with tempfile.TemporaryDirectory() as workdir:
            config = precision.precision_config(workdir, 3, "bf16")
            with open(config) as handle:
                document = json.load(handle)
            document["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True
            with open(config, "w") as handle:
                json.dump(document, handle)
            save_dir = os.path.join(workdir, "ckpt")
            precision.train(workdir, config, 2, 3, extra=["--save-dir", save_dir])
            with open(os.path.join(save_dir, "latest")) as handle:
                tag = handle.read().strip()
            out = os.path.join(workdir, "bf16")
            consolidate(save_dir, out, "--dtype", "bf16")
            self.assert_same_file(os.path.join(out, "model.safetensors"),
                                  os.path.join(save_dir, tag, "model.safetensors"),
                                  "bf16 against the checkpoint's 16-bit model")

    def test_fp16_run_np2_stage3(self):
        with tempfile.TemporaryDirectory() as workdir:
            save_dir, weights = train_with_checkpoint(workdir, 3, 2, "fp16")
            out = os.path.join(workdir, "fp32")
            consolidate(save_dir, out)
            _, fp32 = read_safetensors(os.path.join(out, "model.safetensors"))
            self.assert_same_file(os.path.join(out, "model.safetensors"), weights,
                                  "fp16 run, fp32 master")
            out16 = os.path.join(workdir, "fp16")
            result = consolidate(save_dir, out16, "--dtype", "fp16")
            self.assertIn("parameters (fp16), written as stored", result.stdout)
            _, got = read_safetensors(os.path.join(out16, "model.safetensors"))
            want = {name: ("F16", shape, rounded(data, "fp16"))
                    for name, (_, shape, data) in fp32.items()}
            self.assert_same_tensors(got, want, "fp16 run as fp16")

    def test_16_bit_outputs_of_an_fp32_run_are_its_rounded_weights(self):
        with tempfile.TemporaryDirectory() as workdir:
            save_dir, _ = train_with_checkpoint(workdir, 1, 2)
            consolidate(save_dir, os.path.join(workdir, "fp32"))
            _, fp32 = read_safetensors(os.path.join(workdir, "fp32", "model.safetensors"))
            for dtype, st_dtype in (("bf16", "BF16"), ("fp16", "F16")):
                out = os.path.join(workdir, dtype)
                result = consolidate(save_dir, out, "--dtype", dtype)
                self.assertIn(f"parameters (fp32), rounded to {dtype} (nearest even)", result.stdout)
                _, got = read_safetensors(os.path.join(out, "model.safetensors"))
                want = {name: (st_dtype, shape, rounded(data, dtype))
                        for name, (_, shape, data) in fp32.items()}
                self.assert_same_tensors(got, want, f"fp32 run as {dtype}")

    def test_model_h5_holds_the_same_tensors(self):
        with tempfile.TemporaryDirectory() as workdir:
            save_dir, _ = train_with_checkpoint(workdir, 3, 2, "bf16", steps=2)
            with open(os.path.join(save_dir, "latest")) as handle:
                tag = handle.read().strip()
            for dtype in ("fp32", "bf16", "fp16"):
                out = os.path.join(workdir, dtype)
                consolidate(save_dir, out, "--dtype", dtype)
                path = os.path.join(out, "model.h5")
                _, tensors = read_safetensors(os.path.join(out, "model.safetensors"))
                for name in (PREFIX + "wte.weight", PREFIX + "h.1.mlp.c_fc.weight",
                             PREFIX + "h.0.attn.c_proj.weight", PREFIX + "ln_f.bias"):
                    st_dtype, shape, data = tensors[name]
                    self.assertEqual(h5_dataset_shape(path, name), shape, f"{dtype} {name}")
                    got = h5_dataset_values(path, name)
                    if dtype == "bf16":  # uint16 bit patterns, marked dtype=bf16
                        want = list(memoryview(data).cast("H"))
                    else:
                        want = decode(data, st_dtype)
                    self.assertEqual(got, want, f"{dtype} {name}")
                attributes = h5_attributes(path)
                if isinstance(attributes, dict):
                    self.assertEqual(int(attributes["step"]), 2)
                    self.assertEqual(attributes["tag"], tag)
                    self.assertEqual(attributes["source_checkpoint"],
                                     os.path.abspath(os.path.join(save_dir, tag)))
                else:
                    for needle in ('"step"', '"tag"', '"zerotrain_version"', '"source_checkpoint"',
                                   os.path.abspath(os.path.join(save_dir, tag)), f'"{tag}"'):
                        self.assertIn(needle, attributes, dtype)
                if dtype == "bf16":
                    dataset = h5dump("-A", "-d", "/" + PREFIX + "ln_f.bias", path)
                    self.assertIn("H5T_STD_U16LE", dataset)
                    self.assertIn('"bf16"', dataset)
                elif dtype == "fp16":
                    # A 16-bit IEEE float that h5py reads as numpy.float16.
                    header = h5dump("-H", "-d", "/" + PREFIX + "ln_f.bias", path)
                    self.assertRegex(header, r"H5T_IEEE_F16LE|16-bit little-endian floating-point")

    def test_tag_selects_an_older_checkpoint(self):
        with tempfile.TemporaryDirectory() as workdir:
            save_dir, weights = train_with_checkpoint(workdir, 2, 2, steps=4,
                                                      extra=["--save-interval", "2"])
            tags = sorted(t for t in os.listdir(save_dir) if t.startswith("global_step"))
            self.assertEqual(tags, ["global_step2", "global_step4"])
            consolidate(save_dir, os.path.join(workdir, "latest"))
            consolidate(save_dir, os.path.join(workdir, "older"), "--tag", "global_step2")
            _, latest = read_safetensors(os.path.join(workdir, "latest", "model.safetensors"))
            _, older = read_safetensors(os.path.join(workdir, "older", "model.safetensors"))
            self.assert_same_file(os.path.join(workdir, "latest", "model.safetensors"), weights,
                                  "latest")
            self.assertNotEqual(latest[PREFIX + "wte.weight"][2], older[PREFIX + "wte.weight"][2])
            result = consolidate(save_dir, os.path.join(workdir, "none"), "--tag", "global_step3",
                                 check=False)
            self.assertEqual(result.returncode, 2, result.stderr)
            self.assertIn("global_step3", result.stderr)

    def test_damaged_checkpoints_are_refused_naming_the_file(self):
        with tempfile.TemporaryDirectory() as workdir:
            save_dir, _ = train_with_checkpoint(workdir, 2, 2)
            with open(os.path.join(save_dir, "latest")) as handle:
                tag = handle.read().strip()
            rank1 = os.path.join(save_dir, tag, "zero_rank_00001_states.h5")
            backup = os.path.join(workdir, "rank1.h5")
            shutil.copy(rank1, backup)

            def flip(path):
                with open(path, "r+b") as handle:
                    handle.seek(os.path.getsize(path) // 2)
                    byte = handle.read(1)
                    handle.seek(-1, os.SEEK_CUR)
                    handle.write(bytes([byte[0] ^ 0x10]))

            def truncate(path):
                os.truncate(path, os.path.getsize(path) - 100)

            cases = (("a flipped byte", flip, "checksum"),
                     ("a truncated file", truncate, "truncated"),
                     ("a missing file", os.remove, "is missing"))
            for what, damage, needle in cases:
                with self.subTest(what):
                    shutil.copy(backup, rank1)
                    damage(rank1)
                    out = os.path.join(workdir, "out_" + what.split()[-2])
                    result = consolidate(save_dir, out, check=False)
                    self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
                    self.assertIn("zero_rank_00001_states.h5", result.stderr)
                    self.assertIn(needle, result.stderr)
                    self.assertFalse(os.path.exists(out), "nothing is written for a damaged input")
            shutil.copy(backup, rank1)
            consolidate(save_dir, os.path.join(workdir, "repaired"))

    def test_outputs_never_land_in_a_checkpoint(self):
        with tempfile.TemporaryDirectory() as workdir:
            save_dir, _ = train_with_checkpoint(workdir, 0, 1)
            with open(os.path.join(save_dir, "latest")) as handle:
                tag = handle.read().strip()
            listing = sorted(os.listdir(os.path.join(save_dir, tag)))
            a_file = os.path.join(workdir, "a_file")
            with open(a_file, "w") as handle:
                handle.write("x")
            cases = ((save_dir, "checkpoint directory itself"),
                     (save_dir + "/./", "checkpoint directory itself"),
                     (os.path.join(save_dir, tag), "lies in checkpoint"),
                     (os.path.join(save_dir, tag, "hf"), "lies in checkpoint"),
                     (a_file, "not a directory"))
            for out, needle in cases:
                with self.subTest(out):
                    result = consolidate(save_dir, out, check=False)
                    self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
                    self.assertIn("OUT_DIR", result.stderr)
                    self.assertIn(needle, result.stderr)
            self.assertEqual(sorted(os.listdir(os.path.join(save_dir, tag))), listing)
            # Beside the tags is fine, and so is a second run over the first one's output.
            beside = os.path.join(save_dir, "hf")
            consolidate(save_dir, beside)
            consolidate(save_dir, beside)
            self.assertEqual(sorted(os.listdir(beside)),
                             ["config.json", "model.h5", "model.safetensors"])

    def test_usage_errors(self):
        with tempfile.TemporaryDirectory() as workdir:
            cases = ((["consolidate", os.path.join(workdir, "nothing"), os.path.join(workdir, "o")],
                      "no such directory"),
                     (["consolidate", workdir, os.path.join(workdir, "o")], "no 'latest' file"),
                     (["consolidate", workdir, os.path.join(workdir, "o"), "--dtype", "fp8"],
                      "--dtype"),
                     (["consolidate", workdir], "output_dir"))
            for args, needle in cases:
                with self.subTest(needle):
                    result = e2e.run(args)
                    self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
                    self.assertIn(needle, result.stderr)
            self.assertIn("consolidate", e2e.run(["--help"]).stdout)

    def test_runs_without_mpi_and_refuses_several_ranks(self):
        with tempfile.TemporaryDirectory() as workdir:
            save_dir, _ = train_with_checkpoint(workdir, 1, 2)
            # Plain exec without mpiexec: no MPI_Init (it would need a launcher on some systems).
            env = {k: v for k, v in e2e.ENV.items() if not k.startswith(("OMPI_", "PMI", "PMIX"))}
            result = subprocess.run([e2e.ZEROTRAIN, "consolidate", save_dir,
                                     os.path.join(workdir, "one")], env=env, capture_output=True,
                                    text=True, timeout=120)
            self.assertEqual(result.returncode, 0, result.stderr)
            result = e2e.run(["consolidate", save_dir, os.path.join(workdir, "two")], ranks=2)
            self.assertNotEqual(result.returncode, 0)
            self.assertIn("consolidate runs as one process", result.stderr)

    def test_transformers_loads_it_and_computes_the_trained_loss(self):
        """GPT2LMHeadModel.from_pretrained reports no missing, unexpected or mismatched key, and
        the loaded model scores text as the run that trained on it did: a Conv1D weight in the
        wrong layout (attn.c_proj is square and would load) doubles the loss."""
        hf_python = find_hf_python()
        if not hf_python:
            self.skipTest("no Python with transformers and torch (set ZT_HF_PYTHON to one)")
        with tempfile.TemporaryDirectory() as workdir:
            text = os.path.join(workdir, "text.txt")
            words = "the quick brown fox jumps over the lazy dog and runs far away".split()
            with open(text, "w") as handle:
                handle.write(" ".join(words[(i * 7 + i // 5) % len(words)] for i in range(20000)))
            tokens = os.path.join(workdir, "text.h5")
            self.assertEqual(e2e.run(["data", "from-text", text, tokens]).returncode, 0)
            model = os.path.join(workdir, "bytes.yaml")
            with open(model, "w") as handle:
                handle.write("vocab_size: 256\nn_positions: 32\nn_embd: 64\nn_layer: 2\n"
                             "n_head: 4\n")
            save_dir = os.path.join(workdir, "ckpt")
            summary, _ = precision.train(workdir, precision.precision_config(workdir, 3, "bf16"),
                                         2, 150, model=model,
                                         extra=["--data", tokens, "--save-dir", save_dir])
            trained = summary["final_loss_mean_last_10"]
            script = (
                "import sys, torch, transformers\n"
                "model, info = transformers.GPT2LMHeadModel.from_pretrained(\n"
                "    sys.argv[1], output_loading_info=True, dtype='auto')\n"
                "bad = {k: v for k, v in info.items() if v}\n"
                "assert not bad, bad\n"
                "data = open(sys.argv[2], 'rb').read()\n"
                "losses = []\n"
                "with torch.no_grad():\n"
                "    for start in range(0, 40000, 997):\n"
                "        ids = torch.tensor(list(data[start:start + 32]))[None]\n"
                "        losses.append(model.eval()(ids, labels=ids).loss.float().item())\n"
                "print(str(next(model.parameters()).dtype), sum(losses) / len(losses))\n")
            for dtype, torch_dtype, tolerance in (("fp32", "torch.float32", 0.1),
                                                  ("bf16", "torch.bfloat16", 0.15)):
                out = os.path.join(workdir, dtype)
                consolidate(save_dir, out, "--dtype", dtype)
                result = subprocess.run([hf_python, "-c", script, out, text], capture_output=True,
                                        text=True, timeout=600)
                self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
                loaded_dtype, loss = result.stdout.split()[-2:]
                print(f"{dtype}: transformers' loss {float(loss):.4f}, zerotrain's last 10 steps "
                      f"{trained:.4f}")
                self.assertEqual(loaded_dtype, torch_dtype)
                self.assertLess(abs(float(loss) - trained), tolerance)


class Gpt2Small(unittest.TestCase):
    """GPT-2 small (124M) trained one step on two ranks and consolidated: the peak resident
    memory of consolidate stays under twice the largest tensor (wte, 50257 x 768 fp32) plus
    64 MiB, measured from outside (the child's rusage)."""

    def test_gpt2_small_peak_memory(self):
        with tempfile.TemporaryDirectory() as workdir:
            model = os.path.join(workdir, "gpt2_small.yaml")
            with open(model, "w") as handle:
                handle.write("vocab_size: 50257\nn_positions: 1024\nn_embd: 768\nn_layer: 12\n"
                             "n_head: 12\n")
            config = precision.precision_config(
                workdir, 2, "fp32",
                extra={"train_batch_size": 2, "train_micro_batch_size_per_gpu": 1,
                       "gradient_accumulation_steps": 1})
            save_dir = os.path.join(workdir, "ckpt")
            weights = os.path.join(workdir, "weights.safetensors")
            precision.train(workdir, config, 2, 1, model=model,
                            extra=["--seq-len", "32", "--save-dir", save_dir,
                                   "--save-weights", weights])
            out = os.path.join(workdir, "hf")
            with open(os.path.join(workdir, "consolidate.out"), "w+") as stdout, \
                    open(os.path.join(workdir, "consolidate.err"), "w+") as stderr:
                child = subprocess.Popen([e2e.ZEROTRAIN, "consolidate", save_dir, out],
                                         stdout=stdout, stderr=stderr, env=e2e.ENV)
                _, status, usage = os.wait4(child.pid, 0)
                child.returncode = os.waitstatus_to_exitcode(status)
                stdout.seek(0)
                stderr.seek(0)
                output, errors = stdout.read(), stderr.read()
            self.assertEqual(child.returncode, 0, output + errors)
            peak = usage.ru_maxrss * 1024
            largest = 50257 * 768 * 4
            bound = 2 * largest + 64 * MIB
            print(output)
            print(f"consolidate of GPT-2 small: peak RSS {peak / MIB:.1f} MiB, bound "
                  f"{bound / MIB:.1f} MiB (2 x largest tensor {largest / MIB:.1f} MiB + 64 MiB)")
            self.assertLess(peak, bound)
            self.assertIn("largest tensor 147.2 MiB", output)

            metadata, tensors = read_safetensors(os.path.join(out, "model.safetensors"))
            self.assertEqual(metadata, {"format": "pt"})
            self.assertEqual(list(tensors), hf_names(12))
            self.assertEqual(sum(len(t[2]) for t in tensors.values()), 124439808 * 4)
            self.assertEqual(tensors[PREFIX + "h.0.attn.c_attn.weight"][1], [768, 2304])
            self.assertEqual(tensors[PREFIX + "h.0.mlp.c_proj.weight"][1], [3072, 768])
            del metadata, tensors
            # --save-weights of the same run: the same file.
            assert_same_file(self, os.path.join(out, "model.safetensors"), weights, "GPT-2 small")


if __name__ == "__main__":
    e2e.main()
