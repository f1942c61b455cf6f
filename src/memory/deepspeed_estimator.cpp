// SPDX-License-Identifier: Apache-2.0
// Ported from the formulas in reference/deepspeed.md section 7. DeepSpeed computes in Python
// floats, so every expression below keeps Python's evaluation: products left to right in
// double, int() truncating toward zero exactly where DeepSpeed calls it, max() comparing an
// int and a float exactly. Reordering a product (e.g. P * (18 * abf)) can change the last bit
// and, at a rounding boundary, a printed digit. The only products that feed a sum are 2 * P
// and 4 * largest, both exact, so contracting a*b+c into an FMA cannot change a result either.
#include "memory/deepspeed_estimator.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

namespace zt::memory {
namespace {

/// Python's int(x) for a float: truncation toward zero. Python's int is unbounded; ours is
/// int64, so refuse (rather than overflow) what would not fit.
std::int64_t python_int(double x) {
  // 2^63 is exactly representable; every double below it converts without overflow.
  if (!std::isfinite(x) || std::fabs(x) >= 9223372036854775808.0) {
    char text[96];
    std::snprintf(text, sizeof text, "memory estimate out of range (%g bytes, limit 2^63)", x);
    throw std::invalid_argument(text);
  }
  return static_cast<std::int64_t>(x);
}

/// Python's max(an_int, a_float): the comparison is exact in Python, and in double as long as
/// the int is below 2^53 (4 * GPUs per node always is). Equal values multiply alike, so which
/// operand max() returns on a tie does not matter.
double python_max(std::int64_t a, double b) {
  const double as_double = static_cast<double>(a);
  return b > as_double ? b : as_double;
}

void require_counts(int gpus_per_node, int nodes) {
  if (gpus_per_node <= 0 || nodes <= 0)
    throw std::invalid_argument("GPUs per node and nodes must be positive");
}

// f'{OffloadDeviceEnum.cpu:4}' as Python <= 3.10 (and DeepSpeed's documentation) prints it.
// Python >= 3.11 formats a str-mixin enum as "OffloadDeviceEnum.cpu"; we keep the older,
// documented text.
const char* device(bool offloaded) {
  return offloaded ? "cpu " : "none";
}

}  // namespace

std::vector<DeepSpeedEstimateRow> deepspeed_zero2_estimate(double total_params, int gpus_per_node,
                                                           int nodes,
                                                           double additional_buffer_factor) {
  require_counts(gpus_per_node, nodes);
  const double P = total_params;
  const double abf = additional_buffer_factor;
  const std::int64_t total_gpus = static_cast<std::int64_t>(nodes) * gpus_per_node;
  std::vector<DeepSpeedEstimateRow> rows;
  for (const bool cpu_offload : {true, false}) {
    double gpu = 0, cpu = 0;
    if (cpu_offload) {
      gpu = 2 * P;
      // max(4 * total_gpus, 16) is int vs int in Python: an exact integer.
      cpu = P * static_cast<double>(std::max<std::int64_t>(4 * total_gpus, 16)) * abf;
    } else {
      // 18 bytes per parameter: fp16 grads 2 + fp32 grads 4 + fp32 params 4 + Adam moments 8,
      // partitioned; int() of the float quotient, then float + int is a float sum again.
      gpu = 2 * P + static_cast<double>(python_int(18 * P / static_cast<double>(total_gpus)));
      cpu = P * 4 * gpus_per_node * abf;
    }
    DeepSpeedEstimateRow row;
    row.cpu_bytes = python_int(cpu);
    row.gpu_bytes = python_int(gpu);
    row.options = std::string("offload_optimizer=") + device(cpu_offload);
    row.offload_optimizer = cpu_offload;
    rows.push_back(row);
  }
  return rows;
}

std::vector<DeepSpeedEstimateRow> deepspeed_zero3_estimate(double total_params,
                                                           double largest_layer_params,
                                                           int gpus_per_node, int nodes,
                                                           double additional_buffer_factor) {
  require_counts(gpus_per_node, nodes);
  const double P = total_params;
  const double abf = additional_buffer_factor;
  const std::int64_t total_gpus = static_cast<std::int64_t>(nodes) * gpus_per_node;
  const double gpus_factor = 1.0 / nodes;  // Python's true division 1 / num_nodes
  const double largest_layer_memory = 4 * largest_layer_params;  // fp32 gather of one layer
  const std::int64_t four_per_node = 4 * static_cast<std::int64_t>(gpus_per_node);
  std::vector<DeepSpeedEstimateRow> rows;
  for (const bool cpu_offload : {true, false}) {
    for (const bool cpu_offload_params : {true, false}) {
      // Parameters offloaded while the optimizer stays on the GPU is not one of the rows.
      if (cpu_offload_params && !cpu_offload) continue;
      for (const bool zero_init : {true, false}) {
        double gpu = 0, cpu = 0;
        if (cpu_offload && cpu_offload_params) {
          gpu = largest_layer_memory;
          cpu = zero_init ? P * 18 * gpus_factor * abf
                          : P * python_max(four_per_node, 18 * gpus_factor) * abf;
        } else if (cpu_offload) {
          gpu = largest_layer_memory +
                static_cast<double>(python_int(2 * P / static_cast<double>(total_gpus)));
          cpu = zero_init ? P * 16 * gpus_factor * abf
                          : P * python_max(four_per_node, 16 * gpus_factor) * abf;
        } else {
          gpu = largest_layer_memory +
                static_cast<double>(python_int(18 * P / static_cast<double>(total_gpus)));
          cpu = zero_init ? largest_layer_params * 4 * gpus_per_node * abf
                          : P * 4 * gpus_per_node * abf;
        }
        DeepSpeedEstimateRow row;
        row.cpu_bytes = python_int(cpu);
        row.gpu_bytes = python_int(gpu);
        row.options = std::string("offload_param=") + device(cpu_offload_params) +
                      ", offload_optimizer=" + device(cpu_offload) +
                      ", zero_init=" + (zero_init ? "1" : "0");
        row.offload_optimizer = cpu_offload;
        row.offload_param = cpu_offload_params;
        row.zero_init = zero_init;
        rows.push_back(row);
      }
    }
  }
  return rows;
}

std::string format_deepspeed_estimate_table(int stage, double total_params,
                                            double largest_layer_params, int gpus_per_node,
                                            int nodes,
                                            const std::vector<DeepSpeedEstimateRow>& rows) {
  std::string text = "Estimated memory needed for params, optim states and gradients for a:\n";
  text += "HW: Setup with " + std::to_string(nodes) + (nodes > 1 ? " nodes, " : " node, ") +
          std::to_string(gpus_per_node) + (gpus_per_node > 1 ? " GPUs" : " GPU") + " per node.\n";
  // int(P/1e6): the float quotient truncated, so 2783.9e6 prints as 2783M.
  text += "SW: Model with " + std::to_string(python_int(total_params / 1e6)) + "M total params";
  if (stage == 3)
    text +=
        ", " + std::to_string(python_int(largest_layer_params / 1e6)) + "M largest layer params";
  text += ".\n";
  text += "  per CPU  |  per GPU |   Options\n";
  // Python divides the int byte count by 2**30 (correctly rounded; dividing by a power of two
  // is exact, so double(bytes) / 2^30 is the same value) and formats with '7.2f', which rounds
  // the exact binary value half to even, as printf does.
  constexpr double kGiB = 1073741824.0;
  for (const auto& row : rows) {
    char line[96];
    std::snprintf(line, sizeof line, " %7.2fGB | %6.2fGB | ",
                  static_cast<double>(row.cpu_bytes) / kGiB,
                  static_cast<double>(row.gpu_bytes) / kGiB);
    text += line;
    text += row.options;
    text += '\n';
  }
  return text;
}

}  // namespace zt::memory
