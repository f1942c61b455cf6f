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
  std::uint64_t seed = 42;
  std::optional<int> seq_len;  // default: the model's n_positions
  std::string device_memory_limit;
  // NVMe offload's I/O interface: auto, io_uring, libaio.
  std::string aio_backend = "auto";
  std::string save_weights;  // safetensors file of the final fp32 weights (empty: none)
  // A transformers GPT-2 model.safetensors to start from instead of the seeded initialisation.
  std::string init_weights;
  // Checkpoints (src/checkpoint): where to save, how often (0: only at the end and on a stop
  // signal), and where to resume from (tag empty: the one `latest` names).
  std::string save_dir;
  std::int64_t save_interval = 0;
  std::string load_dir;
  std::string load_tag;
  // The synthetic source's shape; given only without --data (they mean nothing with it).
  std::optional<int> synthetic_order;  // default 2
  std::optional<int> synthetic_branching;
  std::optional<std::int64_t> synthetic_tokens;
  TrainerFlags trainer;
};

struct CheckConfigOptions {
  std::string config_path;
  std::string model_path;
  std::optional<int> world_size;  // default: MPI's
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
  int seq_len = 0;          // 0: the model's n_positions
  std::string config_out;   // write the recommended config here as well
  std::string json_out;     // the whole plan as JSON (for scripts and tests)
  std::string config_path;  // plan in this DeepSpeed config's precision (fp16, bf16, ...)
  std::string precision;    // fp32, fp16 or bf16 (default: the config's, else fp32)
};

/// zerotrain data check: a token file as training would open and validate it. train runs it
/// as a helper process per rank (its part of the scan), so that a damaged file crashing
/// libhdf5 stops the job with a message instead of a signal.
struct DataCheckOptions {
  std::string path;
  std::string dataset_name = "tokens";
  int vocab_size = 0;  // 0: the file's vocab_size attribute, if any
  int part = 0;
  int parts = 1;
  std::string memory_limit;  // address space cap (RLIMIT_AS), e.g. "4GiB"; empty: none
};
int run_data_check(const DataCheckOptions& options);

/// zerotrain aio-bench: the aio settings of NVMe offload swept on one folder (serial, no MPI).
/// The lists are comma-separated, as on the command line.
struct AioBenchOptions {
  std::string path;  // folder of the test file (the NVMe's file system)
  std::string size = "1GiB";
  std::string block_sizes = "128K,1M,8M";
  std::string queue_depths = "8,32,128";
  std::string threads = "1,2,4";  // aio.intra_op_parallelism
  std::string single_submit = "false";
  std::string overlap_events = "true";
  std::string backend = "auto";  // auto, io_uring, libaio
  std::string csv_path;
  std::string json_path;
  std::string label;  // the CSV's node column (default: the short host name)
  int part = 0;       // only combinations i with i % parts == part (job arrays)
  int parts = 1;
};
int run_aio_bench(const AioBenchOptions& options);

/// A --seed: decimal digits only, 0 to 2^64-1; nullopt otherwise.
std::optional<std::uint64_t> parse_seed(const std::string& text);

int run_train(int argc, char** argv, const TrainOptions& options);
int run_estimate(const EstimateOptions& options);
int run_plan(const PlanOptions& options);
int run_check_config(int argc, char** argv, const CheckConfigOptions& options);
int run_data_from_text(const std::string& input, const std::string& output);
std::string version_report();

/// zerotrain consolidate: a checkpoint's weights as one Hugging Face GPT-2 model directory
/// (model.safetensors, model.h5, config.json), one tensor at a time (serial, no MPI).
struct ConsolidateOptions {
  std::string checkpoint_dir;  // a --save-dir
  std::string output_dir;      // created if missing
  std::string tag;             // empty: the one `latest` names
  std::string dtype = "fp32";  // fp32, bf16, fp16
};
int run_consolidate(const ConsolidateOptions& options);

}  // namespace zt::app
