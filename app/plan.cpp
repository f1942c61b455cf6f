// SPDX-License-Identifier: Apache-2.0
// zerotrain plan: sizes a job before nodes are requested. Lists every ZeRO stage and offload
// combination from fastest to slowest with what it needs per GPU, per node and per step,
// marks the fastest that fits, and prints a ready DeepSpeed config for it.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "memory/format.hpp"
#include "memory/planner.hpp"
#include "model/gpt.hpp"
#include "model/gpt_config.hpp"
#include "report.hpp"
#include "runtime/error.hpp"

namespace zt::app {
namespace {

using memory::Offload;

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

double parse_size(const std::string& flag, const std::string& text) {
  try {
    return static_cast<double>(memory::parse_bytes(text));
  } catch (const std::exception& error) {
    throw UsageError(flag + ": " + error.what());
  }
}

nlohmann::ordered_json offload_block(Offload device) {
  nlohmann::ordered_json block;
  block["device"] = memory::offload_name(device);
  if (device == Offload::Nvme) block["nvme_path"] = "/local_nvme";
  block["pin_memory"] = true;
  return block;
}

// The plan's settings are doubles; a config holds element counts as integers. Every count
// derives from a layer of at most kMaxPlanParameters elements, so it fits; a count that does
// not is a bug here, never a value to write.
std::int64_t config_count(double elements) {
  const double rounded = std::ceil(elements);
  if (!(rounded >= 0 && rounded < 9.2e18))
    throw std::logic_error("plan: element count " + std::to_string(elements) +
                           " does not fit a config");
  return static_cast<std::int64_t>(rounded);
}

nlohmann::ordered_json config_for(const memory::PlanRow& row, const memory::PlanSettings& settings,
                                  int micro_batch) {
  nlohmann::ordered_json config;
  config["train_micro_batch_size_per_gpu"] = micro_batch;
  config["gradient_accumulation_steps"] = 1;
  config["gradient_clipping"] = 1.0;
  config["optimizer"] = {
      {"type", "AdamW"},
      {"params", {{"lr", 3e-4}, {"betas", {0.9, 0.95}}, {"eps", 1e-8}, {"weight_decay", 0.1}}}};
  nlohmann::ordered_json zero;
  zero["stage"] = row.stage;
  const auto bucket = config_count(settings.reduce_bucket_size);
  if (row.stage >= 1) {
    zero["overlap_comm"] = true;
    zero["contiguous_gradients"] = true;
    zero["reduce_bucket_size"] = bucket;
  }
  if (row.stage == 1 || row.stage == 2) zero["allgather_bucket_size"] = bucket;
  if (row.stage == 3) {
    zero["stage3_prefetch_bucket_size"] = config_count(settings.prefetch_bucket_size);
    zero["stage3_param_persistence_threshold"] = config_count(settings.persistence_threshold);
    // Release every layer after use: the memory the plan counts (and the paper's 3 Psi).
    zero["stage3_max_reuse_distance"] = 0;
  }
  if (row.optimizer == Offload::Nvme)
    zero["sub_group_size"] = config_count(settings.nvme_sub_group_size);
  if (row.optimizer != Offload::None) zero["offload_optimizer"] = offload_block(row.optimizer);
  if (row.parameters != Offload::None) zero["offload_param"] = offload_block(row.parameters);
  config["zero_optimization"] = zero;
  return config;
}

std::string size_text(double bytes) {
  return memory::format_size(bytes);
}

// The largest models trained have about 1e13 parameters; 1e15 leaves a hundredfold margin.
// Past it the model states alone (16 bytes per parameter) exceed 16 PB: no machine to plan
// for, and a recommendation for one would mislead. The arithmetic is in double and would not
// overflow; the bound is about meaning, and it keeps every element count the recommended
// config writes (buckets of a layer) far inside the int64 a config holds.
constexpr double kMaxPlanParameters = 1e15;

double checked_count(const char* flag, double value) {
  if (!std::isfinite(value) || !(value > 0))
    throw UsageError(runtime::concat(flag, " must be a positive number, got ", value));
  if (value > kMaxPlanParameters)
    throw UsageError(runtime::concat(flag, " ", value, " is more than the ", kMaxPlanParameters,
                                     " parameters zerotrain plans for (the largest models have "
                                     "about 1e13)"));
  return value;
}

}  // namespace

int run_plan(const PlanOptions& options) {
  try {
    memory::Machine machine;
    machine.gpus_per_node = options.gpus_per_node;
    machine.nodes = options.nodes;
    machine.gpu_bytes = parse_size("--gpu-mem", options.gpu_memory);
    machine.cpu_bytes = parse_size("--cpu-mem", options.cpu_memory);
    if (!options.nvme_bandwidth.empty())
      machine.nvme_bandwidth = parse_size("--nvme-bandwidth", options.nvme_bandwidth);

    memory::ModelShape shape;
    std::string model_text;
    const double persistence = 1e5;
    if (!options.model_path.empty()) {
      const auto config = model::load_gpt_config(options.model_path);
      const int seq = options.seq_len > 0 ? options.seq_len : config.n_positions;
      if (seq > config.n_positions)
        throw UsageError(runtime::concat("--seq ", seq, " exceeds the model's n_positions ",
                                         config.n_positions));
      // A model zerotrain cannot train has no plan; this also keeps every count below in range.
      config.check_shape(options.micro_batch, seq, options.model_path);
      shape = model::Gpt::memory_shape(config, options.micro_batch, seq, persistence);
      model_text = runtime::concat(options.model_path, ": ", config.n_layer, " layers of ",
                                   config.n_embd, ", vocab ", config.vocab_size, "; micro-batch ",
                                   options.micro_batch, " x ", seq, " tokens");
    } else {
      if (!options.params || !options.largest_layer_params)
        throw UsageError("give --model, or both --params and --largest-layer-params");
      shape.parameters = checked_count("--params", *options.params);
      shape.largest_module = checked_count("--largest-layer-params", *options.largest_layer_params);
      if (shape.largest_module > shape.parameters)
        throw UsageError(runtime::concat("--largest-layer-params ", shape.largest_module,
                                         " exceeds --params ", shape.parameters,
                                         ": a layer is part of the model"));
      // Without a model description: a layer is taken as the largest module, nothing is tied
      // or persistent, and activations are not estimated.
      shape.layer = shape.largest_module;
      shape.gathered_layer = shape.largest_module;
      model_text = "counts only (give --model for activations and exact layers)";
    }
    if (options.params) shape.parameters = checked_count("--params", *options.params);

    const auto settings = memory::plan_settings(shape);
    const auto rows = memory::make_plan(shape, machine, settings);
    const int best = memory::fastest_fitting(rows);

    std::printf(
        "zerotrain plan: %s parameters (largest layer %s) on %d node%s x %d GPU%s; "
        "%s per GPU, %s CPU per node%s\n",
        format_count(shape.parameters).c_str(), format_count(shape.largest_module).c_str(),
        machine.nodes, machine.nodes == 1 ? "" : "s", machine.gpus_per_node,
        machine.gpus_per_node == 1 ? "" : "s", size_text(machine.gpu_bytes).c_str(),
        size_text(machine.cpu_bytes).c_str(),
        machine.nvme_bandwidth > 0
            ? (", NVMe " + size_text(machine.nvme_bandwidth) + "/s per node").c_str()
            : "");
    std::printf("  model: %s\n", model_text.c_str());
    std::printf(
        "  fp32 training (4 B parameters, 4 B gradients, 8 B Adam moments per element); "
        "plans fill at most %.0f%% of GPU and CPU memory\n",
        100 * machine.usable_share);
    if (shape.activation_bytes > 0)
      std::printf(
          "  activations per GPU: %s (%s with activation checkpointing, not supported yet)\n",
          size_text(shape.activation_bytes).c_str(),
          size_text(shape.activation_bytes_checkpointed).c_str());
    std::printf("\n  %-46s %12s %12s %12s %12s %14s  %s\n", "fastest to slowest", "GPU states",
                "GPU total", "CPU/node", "NVMe/node", "network/step", "fits");
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const auto& row = rows[i];
      std::string fits = row.fits ? "yes" : "no (" + row.limit + ")";
      if (static_cast<int>(i) == best) fits += "  <- fastest that fits";
      std::printf("  %-46s %12s %12s %12s %12s %14s  %s\n", row.name().c_str(),
                  size_text(row.gpu_model_states()).c_str(),
                  size_text(row.gpu_model_states() + row.gpu_activations).c_str(),
                  size_text(row.cpu_per_node).c_str(), size_text(row.nvme_per_node).c_str(),
                  size_text(row.network_bytes).c_str(), fits.c_str());
    }

    nlohmann::ordered_json plan_json;
    plan_json["parameters"] = shape.parameters;
    plan_json["activation_bytes"] = shape.activation_bytes;
    plan_json["activation_bytes_checkpointed"] = shape.activation_bytes_checkpointed;
    plan_json["recommended"] = best;
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (const auto& row : rows) {
      list.push_back({{"name", row.name()},
                      {"stage", row.stage},
                      {"offload_optimizer", memory::offload_name(row.optimizer)},
                      {"offload_param", memory::offload_name(row.parameters)},
                      {"gpu_parameters", row.gpu_parameters},
                      {"gpu_gradients", row.gpu_gradients},
                      {"gpu_optimizer_states", row.gpu_optimizer_states},
                      {"gpu_model_states", row.gpu_model_states()},
                      {"gpu_model_states_per_node", row.gpu_model_states() * machine.gpus_per_node},
                      {"gpu_activations", row.gpu_activations},
                      {"cpu_per_node", row.cpu_per_node},
                      {"nvme_per_node", row.nvme_per_node},
                      {"network_bytes_per_step", row.network_bytes},
                      {"offload_bytes_per_step", row.offload_bytes},
                      {"nvme_seconds_per_step", row.nvme_seconds},
                      {"fits", row.fits},
                      {"limit", row.limit},
                      {"config", config_for(row, settings, options.micro_batch)}});
    }
    plan_json["rows"] = list;
    if (!options.json_out.empty()) write_json_atomically(options.json_out, plan_json);

    if (best < 0) {
      const auto& smallest = rows.back();
      std::fprintf(stderr,
                   "zerotrain: error: nothing fits: even %s needs %s per GPU (model states and "
                   "activations) and %s of CPU memory per node; this machine offers %s per GPU "
                   "and %s per node%s\n",
                   smallest.name().c_str(),
                   size_text(smallest.gpu_model_states() + smallest.gpu_activations).c_str(),
                   size_text(smallest.cpu_per_node).c_str(), size_text(machine.gpu_bytes).c_str(),
                   size_text(machine.cpu_bytes).c_str(),
                   machine.nvme_bandwidth > 0 ? "" : " (and no NVMe: give --nvme-bandwidth)");
      return 1;
    }
    const auto& chosen = rows[static_cast<std::size_t>(best)];
    const auto config = config_for(chosen, settings, options.micro_batch);
    std::printf("\nrecommended: %s%s\n", chosen.name().c_str(),
                chosen.optimizer != Offload::None
                    ? " (offload is planned; this build does not run it yet)"
                    : "");
    std::printf("  per node: %s of model states on its %d GPU%s, %s in CPU memory, %s on NVMe\n",
                size_text(chosen.gpu_model_states() * machine.gpus_per_node).c_str(),
                machine.gpus_per_node, machine.gpus_per_node == 1 ? "" : "s",
                size_text(chosen.cpu_per_node).c_str(), size_text(chosen.nvme_per_node).c_str());
    if (chosen.nvme_seconds > 0)
      std::printf("  NVMe streaming: about %.2f s per step at the given bandwidth\n",
                  chosen.nvme_seconds);
    std::printf("%s\n", config.dump(2).c_str());
    if (!options.config_out.empty()) {
      write_text_atomically(options.config_out, config.dump(2) + "\n");
      std::printf("written to %s\n", options.config_out.c_str());
    }
    return 0;
  } catch (const UsageError& error) {
    std::fprintf(stderr, "zerotrain: error: %s\n", error.what());
    return 2;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "zerotrain: error: %s\n", error.what());
    return 2;
  }
}

}  // namespace zt::app
