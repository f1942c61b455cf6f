// SPDX-License-Identifier: Apache-2.0
// `zerotrain estimate`: DeepSpeed's model-states memory table (estimate_zero2/zero3_model_states_
// mem_needs_all_cold), printed exactly as DeepSpeed prints it so the numbers can be compared
// with DeepSpeed's documentation and users' notes. Serial, no MPI.
#include <cmath>
#include <cstdio>
#include <exception>
#include <optional>
#include <string>

#include "app/commands.hpp"
#include "memory/deepspeed_estimator.hpp"
#include "model/gpt_config.hpp"

namespace zt::app {
namespace {

int usage_error(const std::string& message) {
  std::fprintf(stderr, "zerotrain: error: %s\n", message.c_str());
  return 2;
}

bool positive(double value) {
  return std::isfinite(value) && value > 0;
}

std::string count_text(double count) {
  char text[64];
  std::snprintf(text, sizeof text, "%.0f", count);
  return text;
}

}  // namespace

int run_estimate(const EstimateOptions& options) {
  if (options.stage != 2 && options.stage != 3)
    return usage_error("--stage must be 2 or 3, got " + std::to_string(options.stage));
  if (options.gpus_per_node <= 0) return usage_error("--gpus-per-node must be positive");
  if (options.nodes <= 0) return usage_error("--nodes must be positive");
  if (!positive(options.additional_buffer_factor))
    return usage_error("--additional-buffer-factor must be a positive number");
  if (options.params && !positive(*options.params))
    return usage_error("--params must be a positive number of parameters");
  if (options.largest_layer_params && !positive(*options.largest_layer_params))
    return usage_error("--largest-layer-params must be a positive number of parameters");

  // Counts from the model, each overridable by its flag; the source of each is reported so a
  // mix of the two is visible.
  std::optional<double> total = options.params;
  std::optional<double> largest = options.largest_layer_params;
  std::string total_source = "--params", largest_source = "--largest-layer-params";
  if (!options.model_path.empty()) {
    try {
      const model::GptConfig config = model::load_gpt_config(options.model_path);
      config.validate(options.model_path);
      // int64 counts below 2^53 are exact doubles, so the arithmetic below is what Python does
      // with DeepSpeed's int counts from a live model.
      if (!total) {
        total = static_cast<double>(config.num_parameters());
        total_source = options.model_path;
      }
      if (!largest) {
        largest = static_cast<double>(config.largest_layer_parameters());
        largest_source = options.model_path;
      }
    } catch (const std::exception& error) {
      std::fprintf(stderr, "zerotrain: error: %s\n", error.what());
      return 2;
    }
  }
  if (!total) return usage_error("estimate needs --model or --params (total parameters)");
  if (options.stage == 3 && !largest)
    return usage_error("stage 3 needs --largest-layer-params (or --model to count it)");

  std::string table;
  try {
    const auto rows =
        options.stage == 3
            ? memory::deepspeed_zero3_estimate(*total, *largest, options.gpus_per_node,
                                               options.nodes, options.additional_buffer_factor)
            : memory::deepspeed_zero2_estimate(*total, options.gpus_per_node, options.nodes,
                                               options.additional_buffer_factor);
    table = memory::format_deepspeed_estimate_table(options.stage, *total, largest.value_or(0),
                                                    options.gpus_per_node, options.nodes, rows);
  } catch (const std::exception& error) {
    return usage_error(error.what());
  }
  // stdout is exactly DeepSpeed's output (scripts compare or parse it); remarks go to stderr.
  std::fputs(table.c_str(), stdout);
  std::fflush(stdout);
  // DeepSpeed's table shows millions, truncated; with a model, show the exact counts it used.
  if (!options.model_path.empty()) {
    std::string counts = "counts: " + count_text(*total) + " total params (" + total_source + ")";
    if (largest)
      counts += ", " + count_text(*largest) + " largest layer params (" + largest_source + ")";
    std::fprintf(stderr, "%s\n", counts.c_str());
  }
  std::fprintf(
      stderr,
      "note: DeepSpeed's formulas for fp16/bf16 mixed precision with Adam (18 bytes per "
      "parameter); zerotrain trains in fp32 today, so see `zerotrain plan` for what it needs.\n");
  return 0;
}

}  // namespace zt::app
