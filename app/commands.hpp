// SPDX-License-Identifier: Apache-2.0
// The subcommands of the `zerotrain` executable, one file each.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace zt::app {

/// Flags that resolve DeepSpeed "auto" values, with the Hugging Face Trainer's names.
struct TrainerFlags {
  std::optional<double> learning_rate, adam_beta1, adam_beta2, adam_epsilon, weight_decay,
      max_grad_norm;
  std::optional<std::int64_t> warmup_steps, max_steps, per_device_train_batch_size,
      gradient_accumulation_steps;
  bool fp16 = false;
  bool bf16 = false;
  /// --steps: the run length only. Unlike --max_steps (the HF Trainer's flag, which must agree
  /// with a concrete scheduler.params.total_num_steps), it may stop a run before the schedule
  /// ends; it still resolves a total_num_steps of "auto".
  std::optional<std::int64_t> steps;
};

struct TrainOptions {
  std::string config_path;  // empty: the built-in default job
  std::string model_path;
  std::string data_path;  // empty: synthetic Markov source
  std::string dataset_name = "tokens";
  std::string output_dir;  // default: runs/default for the built-in job, else runs/<config stem>
  std::string summary_json;
  std::int64_t seed = 42;
  int seq_len = 0;  // 0: the model's n_positions
  std::string device_memory_limit;
  std::string save_weights;  // safetensors file of the final fp32 weights (empty: none)
  int synthetic_order = 2;
  int synthetic_branching = 0;  // 0: the source's default
  std::int64_t synthetic_tokens = 0;
  TrainerFlags trainer;
};

struct CheckConfigOptions {
  std::string config_path;
  std::string model_path;
  int world_size = 0;  // 0: from MPI
  TrainerFlags trainer;
};

/// zerotrain estimate: DeepSpeed's model-states memory table (stage 2 or 3).
struct EstimateOptions {
  std::string model_path;        // model description, or:
  std::optional<double> params;  // --params (total parameters)
  std::optional<double> largest_layer_params;
  int gpus_per_node = 1;
  int nodes = 1;
  int stage = 3;
  double additional_buffer_factor = 1.5;
};

/// zerotrain plan: every (stage, offload) combination, fastest first; the fastest that fits.
struct PlanOptions {
  std::string model_path;
  std::optional<double> params;
  std::optional<double> largest_layer_params;
  int gpus_per_node = 1;
  int nodes = 1;
  std::string gpu_memory;      // "16GiB"
  std::string cpu_memory;      // per node
  std::string nvme_bandwidth;  // per node, bytes/s (optional)
  int micro_batch = 1;
  int seq_len = 0;         // 0: the model's n_positions
  std::string config_out;  // write the recommended config here as well
  std::string json_out;    // the whole plan as JSON (for scripts and tests)
};

int run_train(int argc, char** argv, const TrainOptions& options);
int run_estimate(const EstimateOptions& options);
int run_plan(const PlanOptions& options);
int run_check_config(int argc, char** argv, const CheckConfigOptions& options);
int run_data_from_text(const std::string& input, const std::string& output);
std::string version_report();

}  // namespace zt::app
