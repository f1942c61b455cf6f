#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""zerotrain's Hugging Face GPT-2 weights checked against transformers itself (not run in CI: it
needs torch and transformers; see tests/hf/README.md).

1. export: zerotrain trains a tiny GPT-2 with --save-weights; the file holds the tensor names
   (in the same order) and metadata GPT2LMHeadModel.save_pretrained writes for the same config;
   GPT2LMHeadModel.from_pretrained loads the file (no missing, unexpected or mismatched keys)
   and its loss over every window of
   the token file equals the loss zerotrain computes with the same weights (--init-weights of
   the file, one step at lr 0: the step-1 loss in the summary JSON).
2. import: a GPT2LMHeadModel initialised by torch and written by save_pretrained loads into
   zerotrain (--init-weights, with transformers' own config.json as --model), and zerotrain's
   step-1 loss equals transformers' loss on the same batch.

The token file holds exactly train_batch_size windows, so step 1 reads each window once and
its mean loss does not depend on the order the sampler draws them. Each check also reports the
loss of the same weights with every attn.c_proj transposed, to show the comparison would see
the one layout mistake that loads without an error (attn.c_proj is square).

    python3 tests/hf/check_transformers.py --zerotrain build/app/zerotrain
    python3 tests/hf/check_transformers.py --consolidated OUT_DIR --tokens T.h5 \\
        --zerotrain-loss 3.1234 [--seq-len 64]

--consolidated checks a directory `zerotrain consolidate` wrote (config.json, model.safetensors)
the same way: it loads with from_pretrained, and its loss over the token file's first windows
equals the given zerotrain loss (e.g. a frozen run's step-1 loss with train_batch_size equal to
the file's window count).
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

REQUIREMENTS = ["torch", "transformers", "safetensors", "h5py", "numpy"]


def import_or_explain():
    try:
        import h5py  # noqa: F401
        import numpy  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as error:
        sys.exit(f"check_transformers.py needs {', '.join(REQUIREMENTS)} ({error}); install them "
                 f"with\n  python3 -m pip install {' '.join(REQUIREMENTS)}\n(or rerun with "
                 f"--install, which does that)")


# The tiny model: GPT2Config fields, also zerotrain's --model (it reads a config.json).
TINY = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 256,
        "n_positions": 64, "n_embd": 64, "n_layer": 2, "n_head": 4, "n_inner": None,
        "activation_function": "gelu_new", "resid_pdrop": 0.0, "embd_pdrop": 0.0,
        "attn_pdrop": 0.0, "layer_norm_epsilon": 1e-5, "initializer_range": 0.02,
        "tie_word_embeddings": True, "bos_token_id": None, "eos_token_id": None}
SEQ_LEN = 64
BATCH = 8  # windows per step = windows in the token file


def ds_config(lr, stage=0):
    return {"train_batch_size": BATCH, "steps_per_print": 1, "gradient_clipping": 1.0,
            "optimizer": {"type": "AdamW", "params": {"lr": lr, "weight_decay": 0.0}},
            "zero_optimization": {"stage": stage}}


class Zerotrain:
    def __init__(self, executable, mpiexec, ranks, workdir):
        self.executable, self.mpiexec, self.ranks, self.workdir = executable, mpiexec, ranks, workdir
        self.env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                        OMPI_MCA_rmaps_base_oversubscribe="1", OMP_NUM_THREADS="1")
        self.runs = 0

    def command(self, args, ranks=1):
        prefix = [self.mpiexec, "-n", str(ranks), "--oversubscribe"] if ranks > 1 else []
        return prefix + [self.executable] + args

    def run(self, args, ranks=1):
        result = subprocess.run(self.command(args, ranks), env=self.env, capture_output=True,
                                text=True, cwd=self.workdir)
        if result.returncode != 0:
            sys.exit(f"zerotrain {' '.join(args)} failed ({result.returncode}):\n"
                     f"{result.stdout[-3000:]}\n{result.stderr}")
        return result

    def train(self, model, tokens, steps, lr, extra=(), stage=0):
        """Returns the summary JSON."""
        self.runs += 1
        config = os.path.join(self.workdir, f"ds_{self.runs}.json")
        with open(config, "w") as handle:
            json.dump(ds_config(lr, stage), handle)
        summary = os.path.join(self.workdir, f"summary_{self.runs}.json")
        self.run(["train", "--config", config, "--model", model, "--data", tokens,
                  "--steps", str(steps), "--seed", "3", "--summary-json", summary,
                  "--output-dir", os.path.join(self.workdir, f"out_{self.runs}")] + list(extra),
                 ranks=self.ranks if stage == 3 else 1)
        with open(summary) as handle:
            return json.load(handle)


def read_tokens(path, dataset="tokens"):
    import h5py
    with h5py.File(path, "r") as handle:
        return [int(t) for t in handle[dataset][()]]


def windows_of(tokens, seq_len, count=None):
    """zerotrain's windows: window w is tokens [w*T, w*T + T] (inputs the first T, targets the
    last T); the first `count` of them (default: all)."""
    available = (len(tokens) - 1) // seq_len
    count = available if count is None else count
    if count > available:
        sys.exit(f"the token file has {available} windows of {seq_len} tokens, fewer than {count}")
    return [tokens[w * seq_len:w * seq_len + seq_len + 1] for w in range(count)]


def transformers_loss(model, windows):
    """Mean next-token cross entropy over every target of the windows, in float64."""
    import torch
    batch = torch.tensor(windows, dtype=torch.long)
    with torch.no_grad():
        logits = model(batch[:, :-1]).logits.double()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 batch[:, 1:].reshape(-1))
    return float(loss)


def with_c_proj_transposed(model):
    """A copy with every attn.c_proj weight transposed: the mistake that still loads."""
    import copy
    import torch
    broken = copy.deepcopy(model)
    with torch.no_grad():
        for block in broken.transformer.h:
            block.attn.c_proj.weight.copy_(block.attn.c_proj.weight.t().clone())
    return broken


def check_hf_model_dir(directory, windows, zerotrain_loss=None, tolerance=1e-5, label=None):
    """Loads DIRECTORY (config.json + model.safetensors) with GPT2LMHeadModel.from_pretrained,
    requires that every key matched, and returns transformers' loss over `windows`; with
    `zerotrain_loss`, also requires the two to agree within `tolerance` (relative). Reusable for
    `zerotrain consolidate` output."""
    from transformers import GPT2LMHeadModel
    label = label or directory
    model, info = GPT2LMHeadModel.from_pretrained(directory, output_loading_info=True,
                                                  attn_implementation="eager")
    problems = {key: info.get(key) for key in ("missing_keys", "unexpected_keys",
                                               "mismatched_keys", "error_msgs") if info.get(key)}
    print(f"[{label}] from_pretrained: loading info {json.dumps({k: list(v) for k, v in info.items()})}")
    if problems:
        raise SystemExit(f"[{label}] from_pretrained did not match every key: {problems}")
    model = model.double().eval()
    if model.lm_head.weight.data_ptr() != model.transformer.wte.weight.data_ptr():
        raise SystemExit(f"[{label}] lm_head is not tied to wte")
    loss = transformers_loss(model, windows)
    broken = transformers_loss(with_c_proj_transposed(model), windows)
    print(f"[{label}] transformers loss {loss:.10f} over {len(windows)} windows "
          f"(with attn.c_proj transposed it would be {broken:.10f})")
    if zerotrain_loss is not None:
        rel = abs(loss - zerotrain_loss) / abs(loss)
        print(f"[{label}] zerotrain loss    {zerotrain_loss:.10f}: relative difference {rel:.3e} "
              f"(tolerance {tolerance:g})")
        if not rel < tolerance:
            raise SystemExit(f"[{label}] FAILED: transformers {loss} vs zerotrain {zerotrain_loss}")
        if abs(broken - zerotrain_loss) / abs(loss) < tolerance:
            raise SystemExit(f"[{label}] the check cannot tell the layouts apart at this tolerance")
        print(f"[{label}] OK")
    return loss


def make_token_file(zerotrain, workdir):
    """Seeded random bytes, exactly BATCH windows of SEQ_LEN tokens (zerotrain data from-text)."""
    rng = random.Random(1234)
    # A few repeated phrases, so training has something to learn and losses move far from log V.
    phrases = [bytes(rng.randrange(256) for _ in range(rng.randrange(3, 9))) for _ in range(12)]
    text = b""
    while len(text) < BATCH * SEQ_LEN + 1:
        text += rng.choice(phrases)
    text = text[:BATCH * SEQ_LEN + 1]
    text_path = os.path.join(workdir, "corpus.txt")
    with open(text_path, "wb") as handle:
        handle.write(text)
    tokens = os.path.join(workdir, "corpus.h5")
    zerotrain.run(["data", "from-text", text_path, tokens])
    return tokens


def safetensors_header(path):
    """(metadata, tensor names in the header's order) of a safetensors file."""
    import struct
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    metadata = header.pop("__metadata__", {})
    return metadata, list(header)


def check_names_as_save_pretrained(weights, workdir, label):
    """The file's metadata and names are save_pretrained's for a GPT2LMHeadModel of TINY (the
    names in the order of its state dict; safetensors may order the header differently)."""
    from transformers import GPT2Config, GPT2LMHeadModel
    fields = {k: v for k, v in TINY.items() if k not in ("model_type", "architectures")}
    reference_dir = os.path.join(workdir, "save_pretrained_names")
    GPT2LMHeadModel(GPT2Config(**fields)).save_pretrained(reference_dir, safe_serialization=True)
    want_metadata, want_names = safetensors_header(os.path.join(reference_dir,
                                                                "model.safetensors"))
    got_metadata, got_names = safetensors_header(weights)
    print(f"[{label}] names {got_names[:3]} ..., metadata {got_metadata}; save_pretrained: "
          f"{want_names[:3]} ..., {want_metadata}")
    if got_metadata != want_metadata:
        raise SystemExit(f"[{label}] metadata {got_metadata}, save_pretrained writes "
                         f"{want_metadata}")
    if sorted(got_names) != sorted(want_names):
        raise SystemExit(f"[{label}] names differ from save_pretrained's: only in the file "
                         f"{sorted(set(got_names) - set(want_names))}, only in save_pretrained's "
                         f"{sorted(set(want_names) - set(got_names))}")
    state_dict_order = [name for name in GPT2LMHeadModel(GPT2Config(**fields)).state_dict()
                        if name in set(want_names)]
    if got_names != state_dict_order:
        raise SystemExit(f"[{label}] names not in the state dict's order: {got_names}")


def export_check(zerotrain, workdir, tokens, windows):
    """zerotrain --save-weights -> transformers."""
    model_dir = os.path.join(workdir, "exported")
    os.makedirs(model_dir)
    config = os.path.join(model_dir, "config.json")
    with open(config, "w") as handle:
        json.dump(TINY, handle, indent=2)
    weights = os.path.join(model_dir, "model.safetensors")
    trained = zerotrain.train(config, tokens, 40, 3e-3, ["--save-weights", weights])
    print(f"[export] zerotrain trained 40 steps: loss {trained['losses'][0]:.4f} -> "
          f"{trained['losses'][-1]:.4f}")
    check_names_as_save_pretrained(weights, workdir, "export")
    # The loss zerotrain computes with those weights: step 1 of a frozen run that starts there.
    frozen = zerotrain.train(config, tokens, 1, 0.0, ["--init-weights", weights])
    check_hf_model_dir(model_dir, windows, frozen["losses"][0], label="export")
    if zerotrain.ranks > 1:
        sharded = zerotrain.train(config, tokens, 1, 0.0, ["--init-weights", weights], stage=3)
        check_hf_model_dir(model_dir, windows, sharded["losses"][0],
                           label=f"export, imported at stage 3 on {zerotrain.ranks} ranks")


def import_check(zerotrain, workdir, tokens, windows):
    """transformers save_pretrained -> zerotrain --init-weights."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel
    torch.manual_seed(0)
    fields = {k: v for k, v in TINY.items() if k not in ("model_type", "architectures")}
    model = GPT2LMHeadModel(GPT2Config(**fields))
    # transformers' own initialisation (std 0.02) leaves every loss near log(256); larger
    # weights make the loss depend on each of them.
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
                parameter.copy_(1 + 0.2 * torch.randn_like(parameter))
            else:
                parameter.copy_(0.3 * torch.randn_like(parameter))
    model_dir = os.path.join(workdir, "from_transformers")
    model.save_pretrained(model_dir, safe_serialization=True)
    print(f"[import] save_pretrained wrote {sorted(os.listdir(model_dir))}")
    from safetensors import safe_open
    with safe_open(os.path.join(model_dir, "model.safetensors"), "pt") as handle:
        names = list(handle.keys())
    print(f"[import] model.safetensors: {len(names)} tensors, e.g. {names[:3]}")
    weights = os.path.join(model_dir, "model.safetensors")
    # transformers' config.json as zerotrain's --model.
    config = os.path.join(model_dir, "config.json")
    frozen = zerotrain.train(config, tokens, 1, 0.0, ["--init-weights", weights])
    check_hf_model_dir(model_dir, windows, frozen["losses"][0], label="import")
    if zerotrain.ranks > 1:
        sharded = zerotrain.train(config, tokens, 1, 0.0, ["--init-weights", weights], stage=3)
        check_hf_model_dir(model_dir, windows, sharded["losses"][0],
                           label=f"import at stage 3 on {zerotrain.ranks} ranks")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zerotrain", default="build/app/zerotrain")
    parser.add_argument("--mpiexec", default=shutil.which("mpiexec") or "mpiexec")
    parser.add_argument("--ranks", type=int, default=2,
                        help="also import at stage 3 on this many ranks (1: skip)")
    parser.add_argument("--workdir", help="keep the files here (default: a temporary folder)")
    parser.add_argument("--install", action="store_true",
                        help=f"pip install {' '.join(REQUIREMENTS)} first")
    parser.add_argument("--consolidated", metavar="DIR",
                        help="only check this `zerotrain consolidate` output directory")
    parser.add_argument("--tokens", help="with --consolidated: the token file (HDF5)")
    parser.add_argument("--dataset", default="tokens")
    parser.add_argument("--seq-len", type=int, default=None,
                        help="with --consolidated: window length (default: n_positions)")
    parser.add_argument("--windows", type=int, default=None,
                        help="with --consolidated: how many windows (default: all)")
    parser.add_argument("--zerotrain-loss", type=float, default=None,
                        help="with --consolidated: the loss zerotrain computed on those windows")
    parser.add_argument("--tolerance", type=float, default=1e-5)
    args = parser.parse_args()

    if args.install:
        subprocess.run([sys.executable, "-m", "pip", "install"] + REQUIREMENTS, check=True)
    import_or_explain()
    import torch
    import transformers
    print(f"transformers {transformers.__version__}, torch {torch.__version__}")

    if args.consolidated:
        if not args.tokens:
            parser.error("--consolidated needs --tokens")
        with open(os.path.join(args.consolidated, "config.json")) as handle:
            seq_len = args.seq_len or json.load(handle)["n_positions"]
        windows = windows_of(read_tokens(args.tokens, args.dataset), seq_len, args.windows)
        check_hf_model_dir(args.consolidated, windows, args.zerotrain_loss, args.tolerance,
                           label="consolidated")
        return

    zerotrain_path = os.path.abspath(args.zerotrain)
    if not os.access(zerotrain_path, os.X_OK):
        sys.exit(f"no zerotrain executable at {zerotrain_path} (--zerotrain)")
    workdir = args.workdir or tempfile.mkdtemp(prefix="zt_check_transformers_")
    os.makedirs(workdir, exist_ok=True)
    try:
        zerotrain = Zerotrain(zerotrain_path, args.mpiexec, args.ranks, workdir)
        tokens = make_token_file(zerotrain, workdir)
        windows = windows_of(read_tokens(tokens), SEQ_LEN)
        assert len(windows) == BATCH
        export_check(zerotrain, workdir, tokens, windows)
        import_check(zerotrain, workdir, tokens, windows)
        print("all checks passed")
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
