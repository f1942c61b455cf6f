#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Trains a model whose model states exceed this machine's RAM, with the optimizer's states and
the parameters on NVMe (ZeRO-Infinity, stage 3), and reports what it cost.

The default model is a GPT-2-shaped one of about 2 billion parameters: 16 bytes per parameter of
fp32 model states (parameters, gradients, Adam's two moments) make about 32 GB, on a machine of
24 GiB. The run needs the swap files (fp32 master, exp_avg, exp_avg_sq and the parameters: 16
bytes per parameter) on disk: the driver checks the free space under --nvme-path first and
refuses clearly when there is not enough. Not part of the test suite (it runs for minutes).

Reported: parameters, model-state bytes against RAM, peak RSS of the training process (it must
stay under half the model-state bytes), seconds per step, bytes read and written on NVMe per
step and their rate, against the aio engine's sequential rates measured in the same run by
`zerotrain aio-bench` on the same folder with the same aio settings.

  bench/nvme_bigger_than_ram.py --zerotrain build/app/zerotrain --nvme-path /local_nvme \\
      [--n-embd 2560 --n-layer 24] [--steps 2] [--seq-len 64]
"""
import argparse
import csv
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

VOCAB = 50257
POSITIONS = 1024


def parameters_of(n_embd, n_layer):
    # GPT-2: per block 12 d^2 + 13 d (attention 4 d^2 + 4 d, MLP 8 d^2 + 5 d, two LayerNorms 4 d),
    # embeddings (tied), positions, the final LayerNorm.
    return n_layer * (12 * n_embd * n_embd + 13 * n_embd) + (VOCAB + POSITIONS) * n_embd + 2 * n_embd


def memory_total_bytes():
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return 0


def aio_rates(args, workdir):
    """The engine's sequential read and write rates (GB/s) on the swap folder, same settings."""
    csv_path = os.path.join(workdir, "aio.csv")
    command = [args.zerotrain, "aio-bench", "--path", args.nvme_path, "--size", args.aio_size,
               "--block-sizes", str(args.block_size), "--queue-depths", str(args.queue_depth),
               "--threads", str(args.threads), "--single-submit", "false",
               "--overlap-events", "true", "--csv", csv_path]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"aio-bench failed:\n{result.stdout}\n{result.stderr}")
    with open(csv_path) as handle:
        row = next(csv.DictReader(handle))
    read = next(float(v) for k, v in row.items() if k.startswith("read"))
    write = next(float(v) for k, v in row.items() if k.startswith("write"))
    return read, write, result.stdout


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--zerotrain", required=True)
    parser.add_argument("--nvme-path", required=True, help="folder on the disk to swap to")
    parser.add_argument("--n-embd", type=int, default=2560)
    parser.add_argument("--n-layer", type=int, default=24)
    parser.add_argument("--n-head", type=int, default=20)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--sub-group-size", type=int, default=25_000_000)
    parser.add_argument("--block-size", type=int, default=1 << 20)
    parser.add_argument("--queue-depth", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--aio-size", default="2GiB")
    parser.add_argument("--allow-smaller-than-ram", action="store_true",
                        help="run even when the model states fit in RAM (for trying it out)")
    args = parser.parse_args()

    params = parameters_of(args.n_embd, args.n_layer)
    model_state_bytes = 16 * params
    swap_bytes = 16 * params  # fp32 master + 2 moments + fp32 parameters
    ram = memory_total_bytes()
    if not os.path.isdir(args.nvme_path):
        sys.exit(f"--nvme-path {args.nvme_path!r} is not a folder")
    free = shutil.disk_usage(args.nvme_path).free
    needed = int(swap_bytes * 1.05) + (int(args.aio_size.rstrip("GiB")) << 30 if args.aio_size.endswith("GiB") else 0)
    print(f"model        {params / 1e9:.3f} B parameters (n_embd {args.n_embd}, n_layer {args.n_layer}), "
          f"{model_state_bytes / 1e9:.1f} GB of fp32 model states; RAM {ram / 1e9:.1f} GB")
    print(f"disk         {args.nvme_path}: {free / 1e9:.1f} GB free, {needed / 1e9:.1f} GB needed")
    if free < needed:
        sys.exit(f"not enough disk under {args.nvme_path}: {needed / 1e9:.1f} GB needed for the swap "
                 f"files, {free / 1e9:.1f} GB free; free some space or choose a smaller --n-layer")
    if model_state_bytes <= ram and not args.allow_smaller_than_ram:
        sys.exit(f"the model states ({model_state_bytes / 1e9:.1f} GB) fit in RAM ({ram / 1e9:.1f} GB): "
                 "choose a bigger model, or pass --allow-smaller-than-ram")

    with tempfile.TemporaryDirectory() as workdir:
        read_rate, write_rate, aio_output = aio_rates(args, workdir)
        print(f"aio          sequential read {read_rate:.2f} GB/s, write {write_rate:.2f} GB/s "
              f"(block {args.block_size}, queue depth {args.queue_depth}, threads {args.threads})")
        model = os.path.join(workdir, "model.yaml")
        with open(model, "w") as handle:
            handle.write(f"vocab_size: {VOCAB}\nn_positions: {POSITIONS}\nn_embd: {args.n_embd}\n"
                         f"n_layer: {args.n_layer}\nn_head: {args.n_head}\n")
        nvme = {"device": "nvme", "nvme_path": args.nvme_path, "pin_memory": True}
        config = {
            "train_micro_batch_size_per_gpu": 1,
            "gradient_accumulation_steps": 1,
            "steps_per_print": 1,
            "wall_clock_breakdown": True,
            "optimizer": {"type": "AdamW", "params": {"lr": 1e-4, "weight_decay": 0.01}},
            "zero_optimization": {
                "stage": 3,
                "sub_group_size": args.sub_group_size,
                "offload_optimizer": dict(nvme, buffer_count=9, pipeline_read=True,
                                          pipeline_write=True),
                "offload_param": dict(nvme, buffer_count=4, buffer_size=2 * args.n_embd * VOCAB,
                                      max_in_cpu=0),
                "stage3_param_persistence_threshold": 10 * args.n_embd,
                # Buckets of a sub-group's size: the 5e8-element defaults would be 2 GB each.
                "reduce_bucket_size": args.sub_group_size,
                "stage3_prefetch_bucket_size": args.sub_group_size,
                # Host memory is what this run is short of: few gathered layers at once.
                "stage3_max_live_parameters": 8 * args.sub_group_size,
                "stage3_max_reuse_distance": 0,
            },
            "aio": {"block_size": args.block_size, "queue_depth": args.queue_depth,
                    "intra_op_parallelism": args.threads, "single_submit": False,
                    "overlap_events": True},
        }
        config_path = os.path.join(workdir, "ds_config.json")
        with open(config_path, "w") as handle:
            json.dump(config, handle, indent=1)
        summary_path = os.path.join(workdir, "summary.json")
        command = [args.zerotrain, "train", "--config", config_path, "--model", model,
                   "--steps", str(args.steps), "--seq-len", str(args.seq_len),
                   "--summary-json", summary_path, "--output-dir", os.path.join(workdir, "out")]
        print("run          " + " ".join(command), flush=True)
        started = time.time()
        process = subprocess.run(command, text=True, capture_output=True)
        wall = time.time() - started
        # RUSAGE_CHILDREN's ru_maxrss: the largest resident set of any finished child, in KiB.
        peak_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        if process.returncode != 0:
            sys.exit(f"training failed ({process.returncode}):\n{process.stdout}\n{process.stderr}")
        with open(summary_path) as handle:
            summary = json.load(handle)
        print(process.stdout)

    offload = summary.get("offload", {})
    reads = offload.get("nvme_bytes_read_per_step", [])
    writes = offload.get("nvme_bytes_written_per_step", [])
    per_step = summary["train_seconds"] / args.steps
    print("== bigger than memory: ZeRO-Infinity, optimizer and parameters on NVMe")
    print(f"parameters          {params:,} ({params / 1e9:.2f} B)")
    print(f"model states        {model_state_bytes / 1e9:.1f} GB (16 B/param), RAM {ram / 1e9:.1f} GB "
          f"({model_state_bytes / ram:.2f}x RAM)")
    print(f"peak RSS            {peak_rss / 1e9:.2f} GB = {peak_rss / model_state_bytes:.3f} of the "
          f"model states (must stay under 0.5)")
    print(f"wall                {wall:.0f} s for {args.steps} steps, start-up and initialisation included")
    print(f"seconds per step    {per_step:.1f} (train_seconds / steps)")
    for step, (r, w) in enumerate(zip(reads, writes), 1):
        print(f"step {step} nvme         read {r / 1e9:.1f} GB, wrote {w / 1e9:.1f} GB")
    if reads and writes:
        r, w = sum(reads) / len(reads), sum(writes) / len(writes)
        print(f"nvme rate           {(r + w) / 1e9 / per_step:.2f} GB/s read+write over a whole step, "
              f"against aio-bench's {read_rate:.2f} GB/s read and {write_rate:.2f} GB/s write "
              f"(I/O alone would take {r / 1e9 / read_rate + w / 1e9 / write_rate:.1f} s per step)")
    if peak_rss >= model_state_bytes / 2:
        sys.exit("peak RSS is not under half the model-state bytes")


if __name__ == "__main__":
    main()
