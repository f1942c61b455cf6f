// SPDX-License-Identifier: Apache-2.0
// zerotrain plan: sizes a job before nodes are requested. Lists every ZeRO stage and offload
// combination from fastest to slowest with what it needs per GPU, per node and per step,
// marks the fastest that fits, and prints a ready DeepSpeed config for it. Everything is sized
// in the run's precision: fp32 unless --precision or a DeepSpeed config (--config: its fp16,
// bf16 and communication_data_type) says 16 bits.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <optional>
#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "config/config.hpp"
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

// Only keys the config reader honours with the device: nvme_path is NVMe's alone (with "cpu"
// it is refused, as DeepSpeed ignores it there).
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

// The precision a plan is made in, and where it came from (for the header line).
struct PlanPrecision {
  config::DataType training = config::DataType::kFp32;
  config::DataType communication = config::DataType::kFp32;
  /// data_types.grad_accum_dtype where the config writes it (the engine honours it at stages
  /// 0-1); unset, DeepSpeed's default: the training dtype, fp32 for bf16 at stage 0.
  std::optional<config::DataType> accumulation;
  std::string origin;  // "", "--precision bf16", "ds.json"
};

const char* dtype_text(config::DataType type) {
  switch (type) {
    case config::DataType::kFp16:
      return "fp16";
    case config::DataType::kBf16:
      return "bf16";
    case config::DataType::kFp32:
      return "fp32";
  }
  return "?";
}

double dtype_bytes(config::DataType type) {
  return type == config::DataType::kFp32 ? 4 : 2;
}

memory::Precision bytes_of(const PlanPrecision& precision) {
  memory::Precision bytes;
  bytes.training_bytes = dtype_bytes(precision.training);
  bytes.communication_bytes = dtype_bytes(precision.communication);
  // As the engine: any 16-bit training dtype steps an fp32 master copy.
  bytes.master_copy = precision.training != config::DataType::kFp32;
  if (precision.accumulation)
    bytes.accumulation_bytes = dtype_bytes(*precision.accumulation);
  else if (precision.training == config::DataType::kBf16)
    bytes.stage0_accumulation_bytes = 4;
  return bytes;
}

config::DataType parse_precision_flag(const std::string& text) {
  if (text == "fp32") return config::DataType::kFp32;
  if (text == "fp16") return config::DataType::kFp16;
  if (text == "bf16") return config::DataType::kBf16;
  throw UsageError("--precision must be fp32, fp16 or bf16, not '" + text + "'");
}

// True when the config itself sets `key` (not a default, not an "auto" the Trainer resolves).
bool written(const config::ResolvedConfig& resolved, const std::string& key) {
  for (const auto& entry : resolved.entries)
    if (entry.path == key) return entry.source == config::Source::kFile;
  return false;
}

config::ResolvedConfig load_for_plan(const std::string& path,
                                     const config::CommandLineOverrides& flags,
                                     const config::ModelFacts& facts, int world_size) {
  try {
    // The schedule does not change a plan: a nominal run length resolves a total_num_steps of
    // "auto" instead of refusing the config for want of --max_steps.
    return config::load_config(path, flags, facts, world_size, 1);
  } catch (const config::ConfigError& error) {
    std::string text =
        runtime::concat(config::config_display_name(path), ": ", error.problems.size(), " problem",
                        error.problems.size() == 1 ? "" : "s", ":");
    for (const auto& problem : error.problems) text += "\n  - " + problem;
    throw UsageError(text);
  }
}

// --precision and --config together: the flag may fill what the config leaves open (no fp16/bf16
// section, or "enabled": "auto", which it resolves as the HF Trainer's --fp16/--bf16 would), never
// contradict what the config says.
PlanPrecision resolve_precision(const std::string& config_path, const std::string& flag,
                                const config::ModelFacts& facts, int world_size) {
  PlanPrecision precision;
  std::optional<config::DataType> wanted;
  if (!flag.empty()) wanted = parse_precision_flag(flag);
  if (config_path.empty()) {
    precision.training = precision.communication = wanted.value_or(config::DataType::kFp32);
    if (wanted) precision.origin = "--precision " + flag;
    return precision;
  }
  const std::string name = config::config_display_name(config_path);
  auto resolved = load_for_plan(config_path, {}, facts, world_size);
  if (wanted && *wanted != resolved.precision.training_dtype) {
    const auto says = resolved.precision.training_dtype;
    if (says != config::DataType::kFp32)
      throw UsageError(runtime::concat("--precision ", flag, " contradicts ", name,
                                       ", which trains in ", dtype_text(says), " (",
                                       dtype_text(says), ".enabled true)"));
    const std::string key = std::string(dtype_text(*wanted)) + ".enabled";
    if (written(resolved, key))
      throw UsageError(
          runtime::concat("--precision ", flag, " contradicts ", name, "'s ", key, " false"));
    config::CommandLineOverrides flags;
    flags.fp16 = *wanted == config::DataType::kFp16;
    flags.bf16 = *wanted == config::DataType::kBf16;
    resolved = load_for_plan(config_path, flags, facts, world_size);
  }
  precision.training = resolved.precision.training_dtype;
  precision.communication = resolved.communication_data_type;
  if (written(resolved, "data_types.grad_accum_dtype"))
    precision.accumulation = resolved.precision.grad_accum_dtype;
  precision.origin = wanted ? name + " and --precision " + flag : name;
  return precision;
}

// The header's account of the precision: "bf16 training (from ds.json): 2 + 2 + 12 bytes per
// parameter (bf16 parameters and gradients, fp32 master weights and Adam moments), gradients
// reduced in fp32".
std::string precision_text(const PlanPrecision& precision) {
  const auto bytes = bytes_of(precision);
  const std::string training = dtype_text(precision.training);
  std::string text = training + " training";
  if (!precision.origin.empty()) text += " (from " + precision.origin + ")";
  text += ": " + memory::bytes_per_parameter_text(bytes);
  // The engine's fp32 view of one sub-group of gradients adds up to 4 bytes per parameter of
  // a rank's range to the 12: the rows' bytes per parameter include it.
  text += bytes.master_copy ? " (" + training +
                                  " parameters and gradients; fp32 master weights and Adam "
                                  "moments, and one sub-group of fp32 gradients)"
                            : std::string(" (parameters, gradients, Adam moments)");
  text += runtime::concat(", gradients reduced in ", dtype_text(precision.communication));
  if (precision.accumulation && *precision.accumulation != precision.training)
    text += runtime::concat(" and accumulated in ", dtype_text(*precision.accumulation),
                            " at stages 0-1");
  else if (!precision.accumulation && precision.training == config::DataType::kBf16)
    text += " (accumulated in fp32 at stage 0, DeepSpeed's default)";
  return text;
}

// What a GPU holds per parameter of the model in this row: "2 + 2.25 + 1.5", parameters,
// gradients and optimizer states, and "+ 4.5" for reduction buffers where there are any.
std::string per_parameter_text(const memory::PlanRow& row, double parameters) {
  auto number = [&](double bytes) {
    char text[32];
    std::snprintf(text, sizeof text, "%.3g", bytes / parameters);
    return std::string(text);
  };
  std::string text = number(row.gpu_parameters) + " + " + number(row.gpu_gradients) + " + " +
                     number(row.gpu_optimizer_states);
  if (row.gpu_comm_buffers > 0) text += " + " + number(row.gpu_comm_buffers);
  return text;
}

// The recommended config's precision keys: a fresh, standard block (as the rest of the config
// is), with communication_data_type only where it differs from the training dtype.
void add_precision(nlohmann::ordered_json& config, const PlanPrecision& precision, int stage) {
  if (precision.training == config::DataType::kFp16) {
    // DeepSpeed's documented dynamic-scaling defaults, written out: with none of them written,
    // ZeRO's scaler would start at 2^32 instead (DeepSpeed's quirk, config.hpp).
    config["fp16"] = {{"enabled", true},           {"loss_scale", 0}, {"loss_scale_window", 1000},
                      {"initial_scale_power", 16}, {"hysteresis", 2}, {"min_loss_scale", 1}};
  } else if (precision.training == config::DataType::kBf16) {
    config["bf16"] = {{"enabled", true}};
  }
  if (precision.communication != precision.training)
    config["communication_data_type"] = dtype_text(precision.communication);
  // The engine accumulates in another dtype only at stages 0-1; the plan's later stages are
  // sized (and recommended) with DeepSpeed's default.
  if (precision.accumulation && stage < 2)
    config["data_types"] = {{"grad_accum_dtype", dtype_text(*precision.accumulation)}};
}

nlohmann::ordered_json config_for(const memory::PlanRow& row, const memory::PlanSettings& settings,
                                  int micro_batch, const PlanPrecision& precision) {
  nlohmann::ordered_json config;
  config["train_micro_batch_size_per_gpu"] = micro_batch;
  config["gradient_accumulation_steps"] = 1;
  config["gradient_clipping"] = 1.0;
  add_precision(config, precision, row.stage);
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

double gpu_total(const memory::PlanRow& row) {
  return row.gpu_model_states() + row.gpu_comm_buffers + row.gpu_activations;
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

namespace {

int plan(const PlanOptions& options, const std::string& config_path,
         const std::string& precision_flag) {
  try {
    memory::Machine machine;
    machine.gpus_per_node = options.gpus_per_node;
    machine.nodes = options.nodes;
    machine.gpu_bytes = parse_size("--gpu-mem", options.gpu_memory);
    machine.cpu_bytes = parse_size("--cpu-mem", options.cpu_memory);
    if (!options.nvme_bandwidth.empty())
      machine.nvme_bandwidth = parse_size("--nvme-bandwidth", options.nvme_bandwidth);

    std::optional<model::GptConfig> model_config;
    if (!options.model_path.empty()) model_config = model::load_gpt_config(options.model_path);
    config::ModelFacts facts;
    if (model_config) facts.hidden_size = model_config->n_embd;  // for "auto" bucket sizes
    const PlanPrecision precision = resolve_precision(config_path, precision_flag, facts,
                                                      machine.gpus_per_node * machine.nodes);
    const auto bytes = bytes_of(precision);
    const backend::DType dtype = precision.training == config::DataType::kFp16 ? backend::DType::F16
                                 : precision.training == config::DataType::kBf16
                                     ? backend::DType::BF16
                                     : backend::DType::F32;

    memory::ModelShape shape;
    std::string model_text;
    const double persistence = 1e5;
    if (model_config) {
      const auto& config = *model_config;
      const int seq = options.seq_len > 0 ? options.seq_len : config.n_positions;
      if (seq > config.n_positions)
        throw UsageError(runtime::concat("--seq ", seq, " exceeds the model's n_positions ",
                                         config.n_positions));
      // A model zerotrain cannot train has no plan; this also keeps every count below in range.
      config.check_shape(options.micro_batch, seq, options.model_path);
      shape = model::Gpt::memory_shape(config, options.micro_batch, seq, persistence, dtype);
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

    auto settings = memory::plan_settings(shape);
    settings.precision = bytes;
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
    std::printf("  %s; plans fill at most %.0f%% of GPU and CPU memory\n",
                precision_text(precision).c_str(), 100 * machine.usable_share);
    if (shape.activation_bytes > 0)
      std::printf(
          "  activations per GPU: %s (%s with activation checkpointing, not supported yet)\n",
          size_text(shape.activation_bytes).c_str(),
          size_text(shape.activation_bytes_checkpointed).c_str());
    // GPU total is what must fit: model states, reduction buffers and activations.
    std::printf("\n  %-46s %-26s %12s %12s %12s %12s %14s  %s\n", "fastest to slowest",
                "GPU bytes per parameter", "GPU states", "GPU total", "CPU/node", "NVMe/node",
                "network/step", "fits");
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const auto& row = rows[i];
      std::string fits = row.fits ? "yes" : "no (" + row.limit + ")";
      if (static_cast<int>(i) == best) fits += "  <- fastest that fits";
      std::printf("  %-46s %-26s %12s %12s %12s %12s %14s  %s\n", row.name().c_str(),
                  per_parameter_text(row, shape.parameters).c_str(),
                  size_text(row.gpu_model_states()).c_str(), size_text(gpu_total(row)).c_str(),
                  size_text(row.cpu_per_node).c_str(), size_text(row.nvme_per_node).c_str(),
                  size_text(row.network_bytes).c_str(), fits.c_str());
    }

    nlohmann::ordered_json plan_json;
    plan_json["parameters"] = shape.parameters;
    plan_json["precision"] = {{"training", dtype_text(precision.training)},
                              {"communication", dtype_text(precision.communication)},
                              {"bytes_per_parameter", memory::bytes_per_parameter_text(bytes)}};
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
                      {"gpu_comm_buffers", row.gpu_comm_buffers},
                      {"gpu_bytes_per_parameter", per_parameter_text(row, shape.parameters)},
                      {"gpu_activations", row.gpu_activations},
                      {"cpu_per_node", row.cpu_per_node},
                      {"cpu_per_gpu",
                       {{"parameters", row.cpu_parameters},
                        {"gradients", row.cpu_gradients},
                        {"optimizer_states", row.cpu_optimizer_states},
                        {"comm_buffers", row.cpu_comm_buffers}}},
                      {"nvme_per_node", row.nvme_per_node},
                      {"network_bytes_per_step", row.network_bytes},
                      {"offload_bytes_per_step", row.offload_bytes},
                      {"bytes_to_host_per_step", row.bytes_to_host},
                      {"bytes_to_device_per_step", row.bytes_to_device},
                      {"nvme_seconds_per_step", row.nvme_seconds},
                      {"fits", row.fits},
                      {"limit", row.limit},
                      {"config", config_for(row, settings, options.micro_batch, precision)}});
    }
    plan_json["rows"] = list;
    if (!options.json_out.empty()) write_json_atomically(options.json_out, plan_json);

    if (best < 0) {
      const auto& smallest = rows.back();
      std::fprintf(stderr,
                   "zerotrain: error: nothing fits: even %s needs %s per GPU (model states and "
                   "activations) and %s of CPU memory per node; this machine offers %s per GPU "
                   "and %s per node%s\n",
                   smallest.name().c_str(), size_text(gpu_total(smallest)).c_str(),
                   size_text(smallest.cpu_per_node).c_str(), size_text(machine.gpu_bytes).c_str(),
                   size_text(machine.cpu_bytes).c_str(),
                   machine.nvme_bandwidth > 0 ? "" : " (and no NVMe: give --nvme-bandwidth)");
      return 1;
    }
    const auto& chosen = rows[static_cast<std::size_t>(best)];
    const auto config = config_for(chosen, settings, options.micro_batch, precision);
    std::printf("\nrecommended: %s%s\n", chosen.name().c_str(),
                chosen.optimizer == Offload::Nvme || chosen.parameters == Offload::Nvme
                    ? " (set nvme_path to a folder on each node's local NVMe disk)"
                    : "");
    std::printf("  per node: %s of model states on its %d GPU%s, %s in CPU memory, %s on NVMe\n",
                size_text(chosen.gpu_model_states() * machine.gpus_per_node).c_str(),
                machine.gpus_per_node, machine.gpus_per_node == 1 ? "" : "s",
                size_text(chosen.cpu_per_node).c_str(), size_text(chosen.nvme_per_node).c_str());
    if (chosen.offload_bytes > 0)
      std::printf("  offload copies per GPU and step: %s to CPU memory, %s back to the GPU\n",
                  size_text(chosen.bytes_to_host).c_str(),
                  size_text(chosen.bytes_to_device).c_str());
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

}  // namespace

int run_plan(const PlanOptions& options) {
  return plan(options, options.config_path, options.precision);
}

}  // namespace zt::app
