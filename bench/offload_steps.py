#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The default job's step time with and without ZeRO-Offload to CPU memory.

Runs the default job (embedded model and synthetic data, inputs/default/ds_config.json, 2
ranks) at ZeRO stages 1-3, each without offload, with offload_optimizer (cpu) and, at stage 3,
with offload_param too; stage 0 (the default job as shipped) is the baseline every ratio is
against, measured in the same invocation (these machines are noisy). Each configuration runs
`--repeats` times, interleaved, and the fastest counts. Also prints the bytes each rank copied
between the device and host memory per step (on a CPU-only run both are host memory: the copies
are what a GPU would move over PCIe).

  bench/offload_steps.py --zerotrain build/app/zerotrain [--steps 60] [--repeats 2]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU = {"device": "cpu", "pin_memory": True}
CASES = [("stage 0 (default job)", 0, False, False), ("stage 1", 1, False, False),
         ("stage 1 + optimizer on cpu", 1, True, False), ("stage 2", 2, False, False),
         ("stage 2 + optimizer on cpu", 2, True, False), ("stage 3", 3, False, False),
         ("stage 3 + optimizer on cpu", 3, True, False),
         ("stage 3 + optimizer and parameters on cpu", 3, True, True)]


def run(args, workdir, name, stage, optimizer, parameters):
    with open(os.path.join(ROOT, "inputs", "default", "ds_config.json")) as handle:
        config = json.load(handle)
    zero = {"stage": stage}
    if optimizer:
        zero["offload_optimizer"] = CPU
    if parameters:
        zero["offload_param"] = CPU
    config["zero_optimization"] = zero
    tag = name.replace(" ", "_").replace("(", "").replace(")", "")
    config_path = os.path.join(workdir, tag + ".json")
    with open(config_path, "w") as handle:
        json.dump(config, handle)
    summary_path = os.path.join(workdir, tag + "_summary.json")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    command = [args.mpiexec, "-n", str(args.ranks), "--oversubscribe", args.zerotrain, "train",
               "--config", config_path, "--model", os.path.join(ROOT, "inputs", "default", "model.yaml"), "--steps", str(args.steps), "--summary-json",
               summary_path, "--output-dir", os.path.join(workdir, "out")]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    with open(summary_path) as handle:
        summary = json.load(handle)
    tokens_per_step = summary["train_batch_size"] * summary["seq_len"]
    offload = summary["offload"]
    steps = len(offload["bytes_to_host_per_step"])
    return {
        # The first step pays page faults; the summary's rate leaves it out.
        "step_seconds": tokens_per_step / summary["tokens_per_second"],
        "optimizer_ms": 1000 * summary["zero"]["seconds"].get("optimizer", 0) / summary["steps"],
        "to_host": sum(offload["bytes_to_host_per_step"]) / steps,
        "to_device": sum(offload["bytes_to_device_per_step"]) / steps,
        "final_loss": summary["final_loss"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zerotrain", default="build/app/zerotrain")
    parser.add_argument("--mpiexec", default="mpiexec")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    best = {}
    with tempfile.TemporaryDirectory() as workdir:
        for repeat in range(args.repeats):
            for name, stage, optimizer, parameters in CASES:
                row = run(args, workdir, name, stage, optimizer, parameters)
                if name not in best or row["step_seconds"] < best[name]["step_seconds"]:
                    best[name] = row
                print(f"  [{repeat + 1}/{args.repeats}] {name}: {row['step_seconds'] * 1000:.1f} ms/step",
                      flush=True)
    baseline = best[CASES[0][0]]["step_seconds"]
    print()
    print(f"{'configuration':<44} {'ms/step':>8} {'vs stage 0':>10} {'vs no offload':>13} "
          f"{'to host/step':>13} {'to device/step':>14} {'final loss':>10}")
    for name, stage, optimizer, parameters in CASES:
        row = best[name]
        plain = best["stage 0 (default job)" if stage == 0 else f"stage {stage}"]
        versus = row["step_seconds"] / plain["step_seconds"]
        print(f"{name:<44} {row['step_seconds'] * 1000:>8.1f} {row['step_seconds'] / baseline:>10.2f} "
              f"{versus:>13.2f} {row['to_host'] / 2**20:>10.2f} MiB {row['to_device'] / 2**20:>11.2f} MiB "
              f"{row['final_loss']:>10.4f}")


if __name__ == "__main__":
    main()
