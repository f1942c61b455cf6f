#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Checkpoint save and load against the disk, measured in the same invocation.

Trains a model (default GPT-2 small, 124M parameters) for one step with --save-dir, then
resumes from it (a run with nothing left to train: the load alone). The baselines move the same
bytes in the same folder: `dd conv=fsync` writes a file of the checkpoint's size (what a save
cannot beat: the data must reach the disk), and reading the checkpoint's files back (`cat`,
page cache as the load finds it). Prints seconds and GB/s of each and the ratios
zerotrain / baseline (below 1: faster than the baseline). Each is run `--repeats` times,
interleaved, and the fastest counts.

  bench/checkpoint_io.py --zerotrain build/app/zerotrain [--ranks 2] [--stage 3] [--repeats 2]
"""
import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time

GPT2_SMALL = "vocab_size: 50257\nn_positions: 1024\nn_embd: 768\nn_layer: 12\nn_head: 12\n"


def folder_bytes(path):
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(path) for name in names)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--zerotrain", required=True)
    parser.add_argument("--mpiexec", default="mpiexec")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--stage", type=int, default=3)
    parser.add_argument("--model", help="model description (default: GPT-2 small)")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workdir", help="where to write (default: a temporary folder in .)")
    args = parser.parse_args()

    workdir = tempfile.mkdtemp(prefix="zt-ckpt-bench-", dir=args.workdir or ".")
    try:
        model = args.model
        if model is None:
            model = os.path.join(workdir, "gpt2.yaml")
            with open(model, "w") as handle:
                handle.write(GPT2_SMALL)
        config = {"train_batch_size": args.ranks, "gradient_accumulation_steps": 1,
                  "optimizer": {"type": "Adam", "params": {"lr": 1e-4}},
                  "zero_optimization": {"stage": args.stage}}
        if args.precision == "bf16":
            config["bf16"] = {"enabled": True}
        config_path = os.path.join(workdir, "config.json")
        with open(config_path, "w") as handle:
            json.dump(config, handle)
        env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
                   OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))

        def train(extra, summary):
            command = [args.mpiexec, "-n", str(args.ranks), "--oversubscribe", args.zerotrain,
                       "train", "--config", config_path, "--model", model, "--seq-len", "32",
                       "--steps", "1", "--output-dir", os.path.join(workdir, "out"),
                       "--summary-json", summary] + extra
            result = subprocess.run(command, env=env, capture_output=True, text=True)
            if result.returncode != 0:
                raise SystemExit(f"zerotrain failed:\n{result.stdout}\n{result.stderr}")
            with open(summary) as handle:
                return json.load(handle)

        save, load, write, read = [], [], [], []
        size = 0
        for repeat in range(args.repeats):
            checkpoints = os.path.join(workdir, f"ckpt{repeat}")
            summary = train(["--save-dir", checkpoints], os.path.join(workdir, "save.json"))
            save.append(summary["checkpoint_save_seconds"][-1])
            tag = os.path.join(checkpoints, "global_step1")
            size = folder_bytes(tag)
            summary = train(["--load-dir", checkpoints], os.path.join(workdir, "load.json"))
            load.append(summary["checkpoint_load_seconds"])

            blob = os.path.join(workdir, "dd.bin")
            started = time.perf_counter()
            subprocess.run(["dd", "if=/dev/zero", f"of={blob}", "bs=4M",
                            f"count={max(1, size // (4 << 20))}", "conv=fsync"],
                           check=True, capture_output=True)
            write.append(time.perf_counter() - started)
            os.remove(blob)
            started = time.perf_counter()
            for name in sorted(os.listdir(tag)):
                subprocess.run(["cat", os.path.join(tag, name)], check=True,
                               stdout=subprocess.DEVNULL)
            read.append(time.perf_counter() - started)
            shutil.rmtree(checkpoints)

        gb = size / 1e9
        print(f"checkpoint of {gb:.2f} GB ({args.ranks} ranks, stage {args.stage}, "
              f"{args.precision}); fastest of {args.repeats}")
        rows = [("save (zerotrain)", min(save)), ("write + fsync (dd)", min(write)),
                ("load (zerotrain)", min(load)), ("read back (cat)", min(read))]
        for name, seconds in rows:
            print(f"  {name:22s} {seconds:7.2f} s  {gb / seconds:6.2f} GB/s")
        print(f"  save / dd   {min(save) / min(write):.2f}")
        print(f"  load / cat  {min(load) / min(read):.2f}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
