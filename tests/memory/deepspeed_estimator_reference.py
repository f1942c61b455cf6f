#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Independent Python port of DeepSpeed's ZeRO model-states memory estimators, for golden text.

Written from reference/deepspeed.md section 7 (estimate_zero2/zero3_model_states_mem_needs and
their *_all_cold printers), not from DeepSpeed's source. Python's own arithmetic is the point:
float products evaluated left to right, int() truncating toward zero where DeepSpeed applies it,
max() of an int and a float, true division, and format()'s correctly rounded ':7.2f'. The C++
port (src/memory/deepspeed_estimator.cpp) must print the same text digit for digit.

Writes deepspeed_estimator_golden.txt beside this script:
    python3 deepspeed_estimator_reference.py
File format: each case starts with a header line
    === stage=S params=P largest=L gpus_per_node=G nodes=N abf=A
(P, L, A as Python's repr of a float), followed by the exact printed table, up to the next
header or the end of the file. Lines starting with '#' before the first header are comments.
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "deepspeed_estimator_golden.txt")

# f'{OffloadDeviceEnum.cpu:4}' as Python <= 3.10 renders it (the str mixin's value, padded to 4).
# Python >= 3.11 renders 'OffloadDeviceEnum.cpu' instead; zerotrain follows the <= 3.10 text,
# which is also what DeepSpeed's documentation shows.
CPU = "cpu "
NONE = "none"


def zero2_mem_needs(total_params, num_gpus_per_node, num_nodes, cpu_offload, abf):
    total_gpus = num_nodes * num_gpus_per_node
    if cpu_offload:
        gpu_mem = 2 * total_params
        cpu_mem = total_params * max(4 * total_gpus, 16) * abf
    else:
        # 18 bytes per parameter: fp16 grads 2 + fp32 grads 4 + fp32 params 4 + Adam moments 8.
        gpu_mem = 2 * total_params + int(18 * total_params / total_gpus)
        cpu_mem = total_params * 4 * num_gpus_per_node * abf
    return int(cpu_mem), int(gpu_mem)


def zero3_mem_needs(total_params, largest_layer_params, num_gpus_per_node, num_nodes,
                    cpu_offload, cpu_offload_params, zero_init, abf):
    total_gpus = num_nodes * num_gpus_per_node
    gpus_factor = 1 / num_nodes
    largest_layer_memory = 4 * largest_layer_params
    if cpu_offload:
        if cpu_offload_params:
            gpu_mem = largest_layer_memory
            if zero_init:
                cpu_mem = total_params * 18 * gpus_factor * abf
            else:
                cpu_mem = total_params * max(4 * num_gpus_per_node, 18 * gpus_factor) * abf
        else:
            gpu_mem = largest_layer_memory + int(2 * total_params / total_gpus)
            if zero_init:
                cpu_mem = total_params * 16 * gpus_factor * abf
            else:
                cpu_mem = total_params * max(4 * num_gpus_per_node, 16 * gpus_factor) * abf
    else:
        gpu_mem = largest_layer_memory + int(18 * total_params / total_gpus)
        if zero_init:
            cpu_mem = largest_layer_params * 4 * num_gpus_per_node * abf
        else:
            cpu_mem = total_params * 4 * num_gpus_per_node * abf
    return int(cpu_mem), int(gpu_mem), largest_layer_memory


def header(num_nodes, num_gpus_per_node):
    nodes = "nodes" if num_nodes > 1 else "node"
    gpus = "GPUs" if num_gpus_per_node > 1 else "GPU"
    return ("Estimated memory needed for params, optim states and gradients for a:\n"
            f"HW: Setup with {num_nodes} {nodes}, {num_gpus_per_node} {gpus} per node.\n")


def row(cpu_mem, gpu_mem, options):
    return f" {cpu_mem/2**30:7.2f}GB | {gpu_mem/2**30:6.2f}GB | {options}\n"


def zero2_table(total_params, num_gpus_per_node, num_nodes, abf):
    text = header(num_nodes, num_gpus_per_node)
    text += f"SW: Model with {int(total_params/1e6)}M total params.\n"
    text += "  per CPU  |  per GPU |   Options\n"
    for cpu_offload in (True, False):
        cpu_mem, gpu_mem = zero2_mem_needs(total_params, num_gpus_per_node, num_nodes,
                                           cpu_offload, abf)
        text += row(cpu_mem, gpu_mem, f"offload_optimizer={CPU if cpu_offload else NONE}")
    return text


def zero3_table(total_params, largest_layer_params, num_gpus_per_node, num_nodes, abf):
    text = header(num_nodes, num_gpus_per_node)
    text += (f"SW: Model with {int(total_params/1e6)}M total params, "
             f"{int(largest_layer_params/1e6)}M largest layer params.\n")
    text += "  per CPU  |  per GPU |   Options\n"
    for cpu_offload in (True, False):
        for cpu_offload_params in (True, False):
            if cpu_offload_params and not cpu_offload:
                continue  # parameters offloaded without the optimizer: not a listed option
            for zero_init in (True, False):
                cpu_mem, gpu_mem, _ = zero3_mem_needs(total_params, largest_layer_params,
                                                      num_gpus_per_node, num_nodes, cpu_offload,
                                                      cpu_offload_params, zero_init, abf)
                options = (f"offload_param={CPU if cpu_offload_params else NONE}, "
                           f"offload_optimizer={CPU if cpu_offload else NONE}, "
                           f"zero_init={1 if zero_init else 0}")
                text += row(cpu_mem, gpu_mem, options)
    return text


# (total params, largest layer params, GPUs per node, nodes, additional_buffer_factor)
CASES = [
    (2783e6, 65e6, 1, 1, 1.5),
    (2783.93e6, 65798144.0, 1, 1, 1.5),  # reproduces the known-good DeepSpeed print
    (2851e6, 32e6, 8, 1, 1.5),
    (1e9, 5e7, 4, 2, 1.5),
    (7e9, 2e8, 8, 4, 1.5),
    (125e6, 38.6e6, 1, 1, 1.5),
    (70e9, 1e9, 8, 16, 1.5),
    (2851e6, 32e6, 8, 1, 1.0),
    (124439808.0, 38597376.0, 2, 3, 1.25),  # GPT-2 small as zerotrain counts it
    (27008.0, 4224.0, 1, 1, 1.5),  # tests/e2e/data/tiny_model.yaml
    # 2**30 and 2**25: GiB values that are exact binary ties at two decimals (0.125 -> 0.12,
    # 2.125 -> 2.12, 18.125 -> 18.12): format() rounds the exact value half to even.
    (1073741824.0, 33554432.0, 1, 1, 1.5),
]


def self_check():
    """The worked example of deepspeed.md section 7 and the known-good DeepSpeed print."""
    table = zero3_table(2851e6, 32e6, 8, 1, 1.5).splitlines()[3:]
    expected = ["   71.69GB |   0.12GB | offload_param=cpu , offload_optimizer=cpu , zero_init=1",
                "  127.45GB |   0.12GB | offload_param=cpu , offload_optimizer=cpu , zero_init=0",
                "   63.72GB |   0.78GB | offload_param=none, offload_optimizer=cpu , zero_init=1",
                "  127.45GB |   0.78GB | offload_param=none, offload_optimizer=cpu , zero_init=0",
                "    1.43GB |   6.09GB | offload_param=none, offload_optimizer=none, zero_init=1",
                "  127.45GB |   6.09GB | offload_param=none, offload_optimizer=none, zero_init=0"]
    assert table[1:] == expected, table
    table = zero2_table(2851e6, 8, 1, 1.5).splitlines()[4:]
    assert table == ["  127.45GB |   5.31GB | offload_optimizer=cpu ",
                     "  127.45GB |  11.28GB | offload_optimizer=none"], table
    known_good = """\
Estimated memory needed for params, optim states and gradients for a:
HW: Setup with 1 node, 1 GPU per node.
SW: Model with 2783M total params, 65M largest layer params.
  per CPU  |  per GPU |   Options
   70.00GB |   0.25GB | offload_param=cpu , offload_optimizer=cpu , zero_init=1
   70.00GB |   0.25GB | offload_param=cpu , offload_optimizer=cpu , zero_init=0
   62.23GB |   5.43GB | offload_param=none, offload_optimizer=cpu , zero_init=1
   62.23GB |   5.43GB | offload_param=none, offload_optimizer=cpu , zero_init=0
    0.37GB |  46.91GB | offload_param=none, offload_optimizer=none, zero_init=1
   15.56GB |  46.91GB | offload_param=none, offload_optimizer=none, zero_init=0
"""
    # DeepSpeed printed this for a model of slightly more than 2783e6 parameters (exact count
    # unknown): every row matches for totals in [2783.900e6, 2783.966e6] and largest layers in
    # [65.767e6, 66e6). Exactly 2783e6 / 65e6 prints 69.98 / 0.24 / ... instead (see the golden).
    assert zero3_table(2783.93e6, 65798144.0, 1, 1, 1.5) == known_good


def main():
    self_check()
    with open(GOLDEN, "w") as out:
        out.write("# Generated by deepspeed_estimator_reference.py; do not edit.\n")
        for total, largest, gpus, nodes, abf in CASES:
            for stage in (3, 2):
                out.write(f"=== stage={stage} params={total!r} largest={largest!r} "
                          f"gpus_per_node={gpus} nodes={nodes} abf={abf!r}\n")
                if stage == 3:
                    out.write(zero3_table(total, largest, gpus, nodes, abf))
                else:
                    out.write(zero2_table(total, gpus, nodes, abf))


if __name__ == "__main__":
    main()
