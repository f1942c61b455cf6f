// SPDX-License-Identifier: Apache-2.0
// DeepSpeed's model-states memory estimators (estimate_zero2/zero3_model_states_mem_needs and
// the table their *_all_cold variants print), ported so that `zerotrain estimate` prints the
// same text digit for digit. The formulas assume fp16/bf16 mixed precision with Adam; see
// reference/deepspeed.md section 7. Pure functions: no I/O.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace zt::memory {

/// One line of DeepSpeed's table: bytes per CPU (per node) and per GPU for one option set.
struct DeepSpeedEstimateRow {
  std::int64_t cpu_bytes = 0;  // int() of DeepSpeed's float result, as it returns it
  std::int64_t gpu_bytes = 0;
  std::string options;  // "offload_param=cpu , offload_optimizer=cpu , zero_init=1"
  // The same options, structured (offload_param and zero_init are always false at stage 2).
  bool offload_optimizer = false;
  bool offload_param = false;
  bool zero_init = false;
};

/// Stage 2: two rows, optimizer offloaded to CPU first, then no offload. Counts are doubles
/// because DeepSpeed's all_cold variants take them as Python floats (e.g. 2783e6).
/// Throws std::invalid_argument if a result does not fit in 64 bits.
std::vector<DeepSpeedEstimateRow> deepspeed_zero2_estimate(double total_params, int gpus_per_node,
                                                           int nodes,
                                                           double additional_buffer_factor = 1.5);

/// Stage 3: six rows in DeepSpeed's order, (offload_param, offload_optimizer, zero_init) =
/// (cpu,cpu,1) (cpu,cpu,0) (none,cpu,1) (none,cpu,0) (none,none,1) (none,none,0).
std::vector<DeepSpeedEstimateRow> deepspeed_zero3_estimate(double total_params,
                                                           double largest_layer_params,
                                                           int gpus_per_node, int nodes,
                                                           double additional_buffer_factor = 1.5);

/// The text DeepSpeed prints for `rows` (stage 2 or 3), newline-terminated lines: the header
/// ("Estimated memory needed ...", "HW: ...", "SW: ..."), the column titles, one line per row.
/// largest_layer_params is only printed at stage 3.
std::string format_deepspeed_estimate_table(int stage, double total_params,
                                            double largest_layer_params, int gpus_per_node,
                                            int nodes,
                                            const std::vector<DeepSpeedEstimateRow>& rows);

}  // namespace zt::memory
