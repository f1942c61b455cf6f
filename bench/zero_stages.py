#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Step time of ZeRO stages 0-3 at 1, 2 and 4 ranks, and the share of communication left
exposed (waited for) with and without overlap_comm.

Each configuration runs `zerotrain train` under mpiexec on the same model, global batch and
seed, and reads its --summary-json. Times are reported as ratios against stage 0 at the same
rank count measured in the same invocation (these machines are noisy): a ratio above 1 is
slower than plain data parallelism. Exposed share = time ranks waited for collectives /
time collectives were in flight (1.0: nothing hidden behind compute). Stage "3r0" is stage 3
with stage3_max_reuse_distance 0: every layer gathered again for backward (the paper's 3 Psi).

  bench/zero_stages.py --zerotrain build/app/zerotrain [--ranks 1 2 4] [--steps 12]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

MODEL = """# bench model: 6 layers of 256, vocab 1024 (5.8M parameters)
vocab_size: 1024
n_positions: 64
n_embd: 256
n_layer: 6
n_head: 4
"""


def config(stage, overlap, train_batch, reuse_distance):
    return {
        "train_batch_size": train_batch,
        "gradient_accumulation_steps": 1,
        "steps_per_print": 1000,
        "gradient_clipping": 1.0,
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "weight_decay": 0.01}},
        "zero_optimization": {
            "stage": stage,
            "overlap_comm": overlap,
            # Buckets of about a layer, so reductions can start while backward goes on.
            "reduce_bucket_size": 1_000_000,
            "allgather_bucket_size": 1_000_000,
            "stage3_prefetch_bucket_size": 1_000_000,
            "stage3_param_persistence_threshold": 10_000,
            "stage3_max_reuse_distance": reuse_distance,
        },
    }


def run(zerotrain, mpiexec, workdir, ranks, stage, overlap, steps, train_batch, threads,
        reuse_distance):
    name = f"s{stage}_r{reuse_distance}_np{ranks}_{'overlap' if overlap else 'plain'}"
    config_path = os.path.join(workdir, name + ".json")
    with open(config_path, "w") as handle:
        json.dump(config(stage, overlap, train_batch, reuse_distance), handle)
    summary_path = os.path.join(workdir, name + "_summary.json")
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMP_NUM_THREADS=str(threads))
    command = [mpiexec, "-n", str(ranks), "--oversubscribe", zerotrain, "train", "--config",
               config_path, "--model", os.path.join(workdir, "model.yaml"), "--steps",
               str(steps), "--summary-json", summary_path, "--output-dir",
               os.path.join(workdir, "out")]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    with open(summary_path) as handle:
        summary = json.load(handle)
    zero = summary["zero"]
    seconds = zero["seconds"]
    return {
        # The first step pays page faults; the summary's rate leaves it out.
        "step_seconds": train_batch * summary["seq_len"] / summary["tokens_per_second"],
        "exposed_share": zero["exposed_share_of_communication"],
        "exposed_of_step": zero["exposed_share_of_step"],
        "bytes_per_step": statistics.mean(r["mean_bytes_received_per_step"] for r in zero["traffic_per_rank"]),
        "paper_bytes": 4 * zero["paper_volume_elements_per_step"],
        "comm_ms": 1000 * seconds["communication"] / summary["steps"],
        "exposed_ms": 1000 * seconds["exposed_communication"] / summary["steps"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zerotrain", default="build/app/zerotrain")
    parser.add_argument("--mpiexec", default="mpiexec")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()

    results = []
    with tempfile.TemporaryDirectory() as workdir:
        with open(os.path.join(workdir, "model.yaml"), "w") as handle:
            handle.write(MODEL)
        for ranks in args.ranks:
            threads = max(1, args.cores // ranks)
            # Stage 3 twice: DeepSpeed's default reuse distance (1e9) keeps forward's gathers
            # for backward in a model this small (2 Psi); "3r0" releases them (the paper's 3 Psi).
            for stage, label, reuse in ((0, "0", 10**9), (1, "1", 10**9), (2, "2", 10**9),
                                        (3, "3", 10**9), (3, "3r0", 0)):
                for overlap in (False, True):
                    if ranks == 1 and overlap:
                        continue  # nothing to overlap with one rank
                    row = run(args.zerotrain, args.mpiexec, workdir, ranks, stage, overlap,
                              args.steps, args.train_batch, threads, reuse)
                    row.update(ranks=ranks, stage=stage, label=label, overlap=overlap)
                    results.append(row)
                    print(f"  np {ranks} stage {label} overlap {'on ' if overlap else 'off'}: "
                          f"{row['step_seconds'] * 1000:8.1f} ms/step", flush=True)

    print()
    print(f"{'ranks':>5} {'stage':>5} {'overlap':>7} {'ms/step':>9} {'vs stage 0':>10} "
          f"{'traffic/paper':>13} {'comm ms':>8} {'exposed ms':>10} {'exposed share':>13}")
    for row in results:
        baseline = next(r for r in results if r["ranks"] == row["ranks"] and r["stage"] == 0
                        and r["overlap"] == row["overlap"])
        ratio = row["step_seconds"] / baseline["step_seconds"]
        traffic = row["bytes_per_step"] / row["paper_bytes"] if row["paper_bytes"] else float("nan")
        share = f"{row['exposed_share']:.2f}" if row["comm_ms"] >= 0.5 else "-"
        traffic_text = f"{traffic:.3f}" if row["paper_bytes"] else "-"
        print(f"{row['ranks']:>5} {row['label']:>5} {'on' if row['overlap'] else 'off':>7} "
              f"{row['step_seconds'] * 1000:>9.1f} {ratio:>10.2f} {traffic_text:>13} "
              f"{row['comm_ms']:>8.1f} {row['exposed_ms']:>10.1f} {share:>13}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
