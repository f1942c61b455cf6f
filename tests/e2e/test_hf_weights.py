#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""End-to-end tests of the Hugging Face weights: `train --save-weights` writes what
GPT2LMHeadModel.save_pretrained writes (its "transformer."-prefixed names without the tied
lm_head.weight, its shapes and layout: Conv1D weights (in, out); metadata {"format": "pt"}),
and `train --init-weights` starts
from such a file, refusing one that does not fit the model with exit code 2 and a message
naming the tensor and both shapes.

The layout is checked without transformers: the seeded initialisation is a counter-based
generator (src/model/parameters.cpp) recomputed here bit for bit, so a one-step run at lr 0
exports known values whose place in each tensor shows the transpose, the square attn.c_proj
included. tests/hf/check_transformers.py checks the same files against transformers itself.

Run by ctest: test_hf_weights.py --zerotrain PATH --mpiexec PATH TestCase.test_name
(stdlib only.)
"""
import array
import json
import math
import os
import struct
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_e2e as e2e  # noqa: E402  (the shared helpers: run, write_model)

TINY_MODEL = os.path.join(e2e.DATA, "tiny_model.yaml")
# tiny_model.yaml
C, LAYERS, VOCAB, POSITIONS = 32, 2, 16, 32
# GPT2LMHeadModel.save_pretrained's names are its GPT2Model's (hf_shapes) with this prefix.
PREFIX = "transformer."

# Constant lr, so a run of k steps is the first k steps of a longer one.
TRAIN_CONFIG = {
    "train_batch_size": 16, "steps_per_print": 1, "gradient_clipping": 1.0,
    "optimizer": {"type": "AdamW", "params": {"lr": 2e-3, "weight_decay": 0.01}},
    "zero_optimization": {"stage": 0},
}
# A step at lr 0 and without weight decay leaves every weight as it was: export == import.
FROZEN_CONFIG = {
    "train_batch_size": 16, "steps_per_print": 1,
    "optimizer": {"type": "AdamW", "params": {"lr": 0.0, "weight_decay": 0.0}},
    "zero_optimization": {"stage": 0},
}


def write_config(workdir, name, config, stage=0):
    path = os.path.join(workdir, name)
    config = json.loads(json.dumps(config))
    config["zero_optimization"]["stage"] = stage
    with open(path, "w") as handle:
        json.dump(config, handle)
    return path


def hf_shapes(n_layer=LAYERS, c=C, vocab=VOCAB, positions=POSITIONS):
    """transformers' GPT-2 tensors (GPT2Model names) and shapes, in registration order."""
    shapes = [("wte.weight", [vocab, c]), ("wpe.weight", [positions, c])]
    for b in range(n_layer):
        p = f"h.{b}."
        shapes += [(p + "ln_1.weight", [c]), (p + "ln_1.bias", [c]),
                   (p + "attn.c_attn.weight", [c, 3 * c]), (p + "attn.c_attn.bias", [3 * c]),
                   (p + "attn.c_proj.weight", [c, c]), (p + "attn.c_proj.bias", [c]),
                   (p + "ln_2.weight", [c]), (p + "ln_2.bias", [c]),
                   (p + "mlp.c_fc.weight", [c, 4 * c]), (p + "mlp.c_fc.bias", [4 * c]),
                   (p + "mlp.c_proj.weight", [4 * c, c]), (p + "mlp.c_proj.bias", [c])]
    return shapes + [("ln_f.weight", [c]), ("ln_f.bias", [c])]


read_safetensors = e2e.safetensors_contents


def unprefixed(tensors):
    """A --save-weights file's tensors by their GPT2Model names (every name must be prefixed)."""
    assert all(name.startswith(PREFIX) for name in tensors), list(tensors)
    return {name[len(PREFIX):]: entry for name, entry in tensors.items()}


def floats(raw):
    values = array.array("f")
    values.frombytes(raw)
    return values


def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, dtype, shape, raw bytes), written in that order."""
    header = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(text)) + text)
        for _, _, _, raw in tensors:
            handle.write(raw)


# The seeded initialisation (src/model/parameters.cpp), recomputed.
MASK = (1 << 64) - 1


def mix64(x):
    x = (x + 0x9E3779B97F4A7C15) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def counter_normal(seed, param, element):
    key = mix64(mix64(seed) ^ mix64((param + 0x632BE59BD9B4E019) & MASK))
    a = mix64(key ^ (2 * element))
    b = mix64(key ^ (2 * element + 1))
    u1 = (float(a >> 11) + 1.0) * 2.0 ** -53
    u2 = float(b >> 11) * 2.0 ** -53
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(6.283185307179586476925 * u2)


def f32(value):
    return struct.unpack("<f", struct.pack("<f", value))[0]


def initial_value(seed, param, element, std):
    return f32(std * counter_normal(seed, param, element))


def train(workdir, config, steps, extra=(), ranks=1, model=TINY_MODEL, check=True):
    summary = os.path.join(workdir, f"summary_{len(os.listdir(workdir))}.json")
    result = e2e.run(["train", "--config", config, "--model", model, "--steps", str(steps),
                      "--seed", "7", "--summary-json", summary,
                      "--output-dir", os.path.join(workdir, "out")] + list(extra),
                     ranks=ranks, cwd=workdir)
    if not check:
        return None, result
    if result.returncode != 0:
        raise AssertionError(f"zerotrain failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    with open(summary) as handle:
        return json.load(handle), result


def trained_weights(workdir, name="trained.safetensors", steps=3):
    path = os.path.join(workdir, name)
    train(workdir, write_config(workdir, "train.json", TRAIN_CONFIG), steps,
          ["--save-weights", path])
    return path


class HfExport(unittest.TestCase):
    def test_save_weights_writes_transformers_names_shapes_and_layout(self):
        with tempfile.TemporaryDirectory() as workdir:
            weights = os.path.join(workdir, "init.safetensors")
            # One step at lr 0: the file holds the seeded initialisation.
            train(workdir, write_config(workdir, "frozen.json", FROZEN_CONFIG), 1,
                  ["--save-weights", weights])
            metadata, saved = read_safetensors(weights)
            # save_pretrained's metadata, and nothing that differs from run to run.
            self.assertEqual(metadata, {"format": "pt"})
            # save_pretrained's names and order: prefixed, no lm_head.weight.
            self.assertEqual([(name, shape) for name, (_, shape, _) in saved.items()],
                             [(PREFIX + name, shape) for name, shape in hf_shapes()])
            self.assertEqual({dtype for dtype, _, _ in saved.values()}, {"F32"})
            tensors = unprefixed(saved)

            index = {name: p for p, (name, _) in enumerate(hf_shapes())}
            seed, std = 7, f32(0.02)
            residual_std = f32(f32(0.02) / f32(math.sqrt(f32(2.0 * LAYERS))))
            # zerotrain keeps a Conv1D weight (out, in): element (r, k) is r * in + k; the file
            # must hold it at [k][r] of its (in, out) tensor.
            for name, std_of in (("h.0.attn.c_attn.weight", std), ("h.0.attn.c_proj.weight", residual_std),
                                 ("h.1.mlp.c_fc.weight", std), ("h.1.mlp.c_proj.weight", residual_std)):
                rows_in, out = tensors[name][1]
                values = floats(tensors[name][2])
                for k in range(0, rows_in, 3):
                    for r in range(0, out, 5):
                        expected = initial_value(seed, index[name], r * rows_in + k, std_of)
                        self.assertEqual(values[k * out + r], expected, f"{name}[{k}][{r}]")
            # Embeddings keep zerotrain's layout.
            wte = floats(tensors["wte.weight"][2])
            for i in range(0, VOCAB * C, 7):
                self.assertEqual(wte[i], initial_value(seed, 0, i, std), f"wte.weight flat {i}")
            self.assertEqual(floats(tensors["h.1.ln_1.weight"][2]).tolist(), [1.0] * C)


class HfImport(unittest.TestCase):
    def assert_same_tensors(self, expected_path, got_path):
        """The same tensors; and, an export holding nothing but its tensors and
        save_pretrained's metadata, the same bytes."""
        _, expected = read_safetensors(expected_path)
        _, got = read_safetensors(got_path)
        self.assertEqual(list(got), list(expected))
        for name in expected:
            self.assertEqual(got[name][1], expected[name][1], name)
            self.assertTrue(got[name][2] == expected[name][2], f"{name} differs")
        with open(expected_path, "rb") as a, open(got_path, "rb") as b:
            self.assertTrue(a.read() == b.read(), f"{got_path} differs from {expected_path}")

    def test_import_then_export_changes_nothing(self):
        with tempfile.TemporaryDirectory() as workdir:
            weights = trained_weights(workdir)
            # Stage 3 on two ranks: each rank fills only its slice, across tensor boundaries.
            for stage, ranks in ((0, 1), (1, 2), (3, 2)):
                again = os.path.join(workdir, f"again_{stage}_{ranks}.safetensors")
                _, result = train(workdir, write_config(workdir, f"frozen{stage}.json", FROZEN_CONFIG, stage),
                                  1, ["--init-weights", weights, "--save-weights", again], ranks=ranks)
                self.assertIn(f"  init         weights from {weights} (28 tensors, F32)", result.stdout)
                self.assert_same_tensors(weights, again)

    def test_imported_weights_continue_the_run_that_saved_them(self):
        # 16 windows of 32 tokens and a batch of 16: every step reads each window once, so a
        # step's loss depends on the weights only (not on the order the sampler draws).
        with tempfile.TemporaryDirectory() as workdir:
            text = os.path.join(workdir, "corpus.txt")
            with open(text, "wb") as handle:
                handle.write(bytes((i * 7 + i // 5) % 256 for i in range(16 * 32 + 1)))
            tokens = os.path.join(workdir, "corpus.h5")
            result = e2e.run(["data", "from-text", text, tokens])
            self.assertEqual(result.returncode, 0, result.stderr)
            model = e2e.write_model(workdir, "bytes.yaml", vocab_size=256, n_positions=32,
                                    n_embd=32, n_layer=2, n_head=2)
            config = write_config(workdir, "train.json", TRAIN_CONFIG)
            data = ["--data", tokens]
            longer, _ = train(workdir, config, 4, data, model=model)
            weights = os.path.join(workdir, "after3.safetensors")
            shorter, _ = train(workdir, config, 3, data + ["--save-weights", weights], model=model)
            self.assertEqual(shorter["losses"], longer["losses"][:3])
            resumed, _ = train(workdir, write_config(workdir, "frozen.json", FROZEN_CONFIG), 1,
                               data + ["--init-weights", weights], model=model)
            self.assertNotEqual(resumed["losses"][0], longer["losses"][0])
            self.assertLessEqual(abs(resumed["losses"][0] - longer["losses"][3]),
                                 1e-5 * longer["losses"][3], (resumed["losses"], longer["losses"]))

    def test_names_with_and_without_the_transformer_prefix(self):
        with tempfile.TemporaryDirectory() as workdir:
            weights = trained_weights(workdir)
            _, saved = read_safetensors(weights)
            tensors = unprefixed(saved)
            frozen = write_config(workdir, "frozen.json", FROZEN_CONFIG)
            # GPT2LMHeadModel's state dict: prefixed names, the tied head, attention-mask
            # buffers (older transformers saved them).
            mask = array.array("f", [1.0] * (POSITIONS * POSITIONS)).tobytes()
            prefixed = [(PREFIX + name, *tensors[name]) for name, _ in hf_shapes()]
            prefixed += [("lm_head.weight", *tensors["wte.weight"]),
                         ("transformer.h.0.attn.bias", "F32", [1, 1, POSITIONS, POSITIONS], mask),
                         ("transformer.h.1.attn.masked_bias", "F32", [], array.array("f", [-1e4]).tobytes())]
            lm_head_file = os.path.join(workdir, "lm_head.safetensors")
            write_safetensors(lm_head_file, prefixed, {"format": "pt"})
            again = os.path.join(workdir, "again.safetensors")
            train(workdir, frozen, 1, ["--init-weights", lm_head_file, "--save-weights", again])
            self.assert_same_tensors(weights, again)
            # Reordered, unprefixed, no metadata.
            plain = [(name, *tensors[name]) for name, _ in reversed(hf_shapes())]
            plain_file = os.path.join(workdir, "plain.safetensors")
            write_safetensors(plain_file, plain)
            train(workdir, frozen, 1, ["--init-weights", plain_file, "--save-weights", again])
            self.assert_same_tensors(weights, again)

    def test_sixteen_bit_files_import(self):
        with tempfile.TemporaryDirectory() as workdir:
            weights = trained_weights(workdir)
            _, tensors = read_safetensors(weights)
            tensors = unprefixed(tensors)
            # bf16 is the upper half of each fp32 (truncated: the test needs no rounding).
            halves = []
            for name, _ in hf_shapes():
                dtype, shape, raw = tensors[name]
                halves.append((name, "BF16", shape, b"".join(raw[i + 2:i + 4] for i in range(0, len(raw), 4))))
            bf16_file = os.path.join(workdir, "bf16.safetensors")
            write_safetensors(bf16_file, halves)
            again = os.path.join(workdir, "again.safetensors")
            _, result = train(workdir, write_config(workdir, "frozen.json", FROZEN_CONFIG), 1,
                              ["--init-weights", bf16_file, "--save-weights", again])
            self.assertIn("(28 tensors, BF16)", result.stdout)
            _, got = read_safetensors(again)
            got = unprefixed(got)
            for name, dtype, shape, raw in halves:
                expected = b"".join(b"\0\0" + raw[i:i + 2] for i in range(0, len(raw), 2))
                self.assertTrue(got[name][2] == expected, name)


class HfRefusals(unittest.TestCase):
    def refuse(self, workdir, tensors, expected_texts, ranks=1):
        path = os.path.join(workdir, "bad.safetensors")
        write_safetensors(path, tensors)
        _, result = train(workdir, write_config(workdir, "frozen.json", FROZEN_CONFIG), 1,
                          ["--init-weights", path], ranks=ranks, check=False)
        self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
        self.assertIn(f"--init-weights '{path}'", result.stderr)
        for text in expected_texts:
            self.assertIn(text, result.stderr)
        self.assertNotIn("step 1/1", result.stdout)  # refused before training

    def test_wrong_shape_missing_and_extra_tensors_are_refused(self):
        with tempfile.TemporaryDirectory() as workdir:
            _, tensors = read_safetensors(trained_weights(workdir))
            tensors = unprefixed(tensors)
            good = [(name, *tensors[name]) for name, _ in hf_shapes()]

            # zerotrain's own layout under the transformers name (what --save-weights wrote
            # before it transposed).
            zerotrain_layout = [(n, d, [3 * C, C] if n == "h.0.attn.c_attn.weight" else s, r)
                                for n, d, s, r in good]
            self.refuse(workdir, zerotrain_layout,
                        ["tensor 'h.0.attn.c_attn.weight' has shape [96, 32], expected [32, 96]"])
            # Two ranks: both stop with the message.
            self.refuse(workdir, [t for t in good if t[0] != "ln_f.bias"],
                        ["missing tensor 'ln_f.bias' (expected shape [32])"], ranks=2)
            extra = good + [("h.2.ln_1.weight", "F32", [C], array.array("f", [1.0] * C).tobytes())]
            self.refuse(workdir, extra,
                        ["unexpected tensor 'h.2.ln_1.weight' (shape [32])", "n_layer 2"])
            # All at once: every problem listed.
            self.refuse(workdir, [t for t in zerotrain_layout if t[0] != "ln_f.bias"] + extra[-1:],
                        ["does not fit the model: 3 problems", "expected [32, 96]",
                         "missing tensor 'ln_f.bias'", "unexpected tensor 'h.2.ln_1.weight'"])

    def test_untied_head_integer_tensor_and_damaged_file_are_refused(self):
        with tempfile.TemporaryDirectory() as workdir:
            weights = trained_weights(workdir)
            _, tensors = read_safetensors(weights)
            tensors = unprefixed(tensors)
            good = [(name, *tensors[name]) for name, _ in hf_shapes()]
            head = floats(tensors["wte.weight"][2])
            head[5 * C + 3] += 1.0
            self.refuse(workdir, good + [("lm_head.weight", "F32", [VOCAB, C], head.tobytes())],
                        ["tensor 'lm_head.weight' differs from 'wte.weight' at [5, 3]",
                         "tie_word_embeddings"])
            integers = [(n, "I32" if n == "ln_f.weight" else d, s, r) for n, d, s, r in good]
            self.refuse(workdir, integers, ["tensor 'ln_f.weight' holds I32 values"])

            truncated = os.path.join(workdir, "truncated.safetensors")
            with open(weights, "rb") as handle:
                blob = handle.read()
            with open(truncated, "wb") as handle:
                handle.write(blob[:-10])
            _, result = train(workdir, write_config(workdir, "frozen.json", FROZEN_CONFIG), 1,
                              ["--init-weights", truncated], check=False)
            self.assertEqual(result.returncode, 2, result.stderr)
            self.assertIn(f"tensor '{PREFIX}ln_f.bias': data_offsets", result.stderr)
            self.assertIn("run past the end of the data area", result.stderr)


if __name__ == "__main__":
    e2e.main()  # parses --zerotrain/--mpiexec into e2e and runs this script's tests
