// SPDX-License-Identifier: Apache-2.0
// zerotrain: command-line entry. Parses arguments (identically on every rank) and hands over
// to one subcommand.
#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "app/commands.hpp"
#include "config/schema.hpp"
#include "files/files.hpp"
#include "runtime/environment.hpp"
#include "runtime/error.hpp"

namespace {

void add_trainer_flags(CLI::App& command, zt::app::TrainerFlags& flags) {
  const char* group = "Hugging Face Trainer flags (resolve \"auto\" in the config)";
  command.add_option("--learning_rate", flags.learning_rate, "optimizer lr")->group(group);
  command.add_option("--adam_beta1", flags.adam_beta1, "optimizer betas[0]")->group(group);
  command.add_option("--adam_beta2", flags.adam_beta2, "optimizer betas[1]")->group(group);
  command.add_option("--adam_epsilon", flags.adam_epsilon, "optimizer eps")->group(group);
  command.add_option("--weight_decay", flags.weight_decay, "optimizer weight_decay")->group(group);
  command.add_option("--warmup_steps", flags.warmup_steps, "scheduler warmup_num_steps")
      ->group(group);
  command
      .add_option("--max_steps", flags.max_steps,
                  "optimizer steps to run; must agree with a concrete total_num_steps")
      ->group(group);
  command.add_option("--steps", flags.steps,
                     "optimizer steps to run (may stop before the schedule's total_num_steps)");
  command
      .add_option("--per_device_train_batch_size", flags.per_device_train_batch_size,
                  "train_micro_batch_size_per_gpu")
      ->group(group);
  command
      .add_option("--gradient_accumulation_steps", flags.gradient_accumulation_steps,
                  "gradient_accumulation_steps")
      ->group(group);
  command.add_option("--max_grad_norm", flags.max_grad_norm, "gradient_clipping")->group(group);
  command.add_flag("--fp16", flags.fp16, "fp16.enabled")->group(group);
  command.add_flag("--bf16", flags.bf16, "bf16.enabled")->group(group);
}

// CLI11's ExistingFile lets a FIFO through (whose open would block forever) and devices.
const CLI::Validator kRegularFile(
    [](std::string& path) -> std::string {
      try {
        zt::files::check_input_file(path, "");
        return "";
      } catch (const zt::files::FileError& error) {
        return error.what();
      }
    },
    "FILE");

const CLI::Validator kFinitePositive(
    [](std::string& text) -> std::string {
      double value = 0;
      if (!CLI::detail::lexical_cast(text, value) || !std::isfinite(value) || !(value > 0))
        return "must be a positive finite number, got " + zt::files::quote(text);
      return "";
    },
    "POSITIVE");

// A seed is any 64-bit unsigned integer; CLI11 would clamp larger ones without a word.
const CLI::Validator kSeed(
    [](std::string& text) -> std::string {
      if (zt::app::parse_seed(text)) return "";
      return "must be an integer from 0 to 18446744073709551615, got " + zt::files::quote(text);
    },
    "SEED");

// "zerotrain trian" reaches CLI11 as an unexpected positional argument; name the command.
std::string unknown_command_message(CLI::App& app, int argc, char** argv) {
  if (argc < 2 || argv[1][0] == '-') return "";
  const std::string word = argv[1];
  std::vector<std::string> commands;
  for (const CLI::App* command : app.get_subcommands([](CLI::App*) { return true; }))
    commands.push_back(command->get_name());
  if (std::find(commands.begin(), commands.end(), word) != commands.end()) return "";
  std::string message = "unknown command " + zt::files::quote(word);
  std::string best;
  std::size_t best_distance = std::max<std::size_t>(2, word.size() / 3) + 1;
  for (const auto& command : commands) {
    const std::size_t distance = zt::config::edit_distance(word, command);
    if (distance < best_distance) {
      best_distance = distance;
      best = command;
    }
  }
  if (!best.empty()) message += "; did you mean '" + best + "'?";
  std::string list;
  for (const auto& command : commands) list += (list.empty() ? "" : ", ") + command;
  return message + " (commands: " + list + "; zerotrain --help)";
}

// Under a launcher with several ranks, a rank that exits non-zero gets the others killed,
// possibly before rank 0 has printed why; so usage errors go through MPI like every other
// input error: rank 0 prints once, everyone leaves together.
bool launched_with_several_ranks() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_NTASKS"})
    if (const char* value = std::getenv(name)) return std::atoi(value) > 1;
  return false;
}

int usage_error(int argc, char** argv, const std::string& message) {
  if (launched_with_several_ranks()) {
    zt::runtime::Environment environment(argc, argv);
    return environment.fail(zt::runtime::UserError(message));
  }
  std::fprintf(stderr, "zerotrain: error: %s\n",
               zt::files::escaped(message, /*keep_newlines=*/true).c_str());
  return 2;
}

bool is_rank_zero() {
  // Before MPI starts, the launchers' rank variables are the only way to keep usage errors
  // from being printed once per rank.
  for (const char* name : {"OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"})
    if (const char* value = std::getenv(name)) return std::atoi(value) == 0;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"zerotrain: ZeRO data-parallel training of GPT models, launched by mpirun or srun"};
  app.require_subcommand(0, 1);
  bool show_version = false;
  app.add_flag("--version", show_version, "Print version, git revision and library versions");

  zt::app::TrainOptions train;
  auto* train_command = app.add_subcommand(
      "train", "Train a model (without --config/--model: the built-in default job)");
  train_command->add_option("--config", train.config_path, "DeepSpeed config (JSON or YAML)")
      ->check(kRegularFile);
  train_command->add_option("--model", train.model_path, "Model: YAML or Hugging Face config.json")
      ->check(kRegularFile);
  train_command->add_option("--data", train.data_path,
                            "HDF5 token file (default: the synthetic Markov source)");
  train_command->add_option("--dataset", train.dataset_name, "Dataset name inside --data")
      ->capture_default_str();
  std::string seed_text = "42";
  train_command->add_option("--seed", seed_text, "Seed of initialisation, data and sampler")
      ->capture_default_str()
      ->check(kSeed);
  train_command->add_option("--seq-len", train.seq_len, "Sequence length (default: n_positions)")
      ->check(CLI::PositiveNumber);
  train_command->add_option("--output-dir", train.output_dir,
                            "Where outputs go (default: runs/default or runs/<config name>)");
  train_command->add_option(
      "--summary-json", train.summary_json,
      "Write the final summary as JSON here (default: <output-dir>/summary.json)");
  train_command->add_option("--save-dir", train.save_dir,
                            "Write checkpoints here (DIR/global_step<N>/, DIR/latest): at the end, "
                            "every --save-interval steps, and on SIGUSR1/SIGTERM");
  train_command
      ->add_option("--save-interval", train.save_interval,
                   "Also checkpoint every N steps (0: only at the end and on a signal)")
      ->check(CLI::NonNegativeNumber);
  train_command->add_option("--load-dir", train.load_dir,
                            "Resume from the checkpoint DIR/latest names (any world size, stage "
                            "and offload wrote it)");
  train_command->add_option("--load-tag", train.load_tag,
                            "Resume from DIR/TAG instead of the one DIR/latest names");
  train_command->add_option("--save-weights", train.save_weights,
                            "Write the final fp32 weights to this safetensors file (gathered one "
                            "tensor at a time)");
  train_command
      ->add_option("--init-weights", train.init_weights,
                   "Start from these weights: a Hugging Face GPT-2 model.safetensors whose "
                   "tensors match --model")
      ->check(kRegularFile);
  train_command->add_option(
      "--device-memory-limit", train.device_memory_limit,
      "Cap on device bytes per rank, e.g. 64MiB (CPU runs: the tracked arena)");
  train_command
      ->add_option("--aio-backend", train.aio_backend,
                   "NVMe offload's I/O interface: auto (the faster on the swap folder), "
                   "io_uring or libaio")
      ->check(CLI::IsMember({"auto", "io_uring", "libaio"}))
      ->capture_default_str();
  const char* synthetic = "Synthetic data";
  train_command
      ->add_option("--synthetic-order", train.synthetic_order,
                   "Markov order of the synthetic source (>= 2, default 2)")
      ->group(synthetic)
      ->check(CLI::Range(2, 64));
  train_command
      ->add_option("--synthetic-branching", train.synthetic_branching,
                   "Possible next tokens per context")
      ->group(synthetic)
      ->check(CLI::PositiveNumber);
  train_command
      ->add_option("--synthetic-tokens", train.synthetic_tokens,
                   "Length of the generated token stream")
      ->group(synthetic)
      ->check(CLI::PositiveNumber);
  add_trainer_flags(*train_command, train.trainer);

  zt::app::CheckConfigOptions check;
  auto* check_command = app.add_subcommand("check-config", "Validate a DeepSpeed config");
  check_command->add_option("config", check.config_path, "DeepSpeed config (JSON or YAML)")
      ->required()
      ->check(kRegularFile);
  check_command->add_option("--model", check.model_path, "Model description, to resolve \"auto\"")
      ->check(kRegularFile);
  check_command
      ->add_option("--world-size", check.world_size,
                   "Data-parallel ranks to check the batch sizes for (default: MPI's)")
      ->check(CLI::PositiveNumber);
  add_trainer_flags(*check_command, check.trainer);

  zt::app::EstimateOptions estimate;
  auto* estimate_command = app.add_subcommand(
      "estimate", "DeepSpeed's table of model-states memory per CPU and GPU (stage 2 or 3)");
  estimate_command
      ->add_option("--model", estimate.model_path,
                   "Model: YAML or Hugging Face config.json (gives both counts)")
      ->check(kRegularFile);
  estimate_command->add_option("--params", estimate.params, "Total parameters, e.g. 2783e6")
      ->check(kFinitePositive);
  estimate_command
      ->add_option("--largest-layer-params", estimate.largest_layer_params,
                   "Parameters of the largest layer, e.g. 65e6 (stage 3)")
      ->check(kFinitePositive);
  estimate_command->add_option("--gpus-per-node", estimate.gpus_per_node)
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  estimate_command->add_option("--nodes", estimate.nodes)
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  estimate_command->add_option("--stage", estimate.stage, "2 or 3")
      ->capture_default_str()
      ->check(CLI::IsMember({2, 3}));
  estimate_command->add_option("--additional-buffer-factor", estimate.additional_buffer_factor)
      ->capture_default_str();

  zt::app::PlanOptions plan;
  auto* plan_command = app.add_subcommand(
      "plan", "Every ZeRO stage and offload combination, fastest first, and the fastest that fits");
  plan_command->add_option("--model", plan.model_path, "Model: YAML or Hugging Face config.json")
      ->check(kRegularFile);
  plan_command->add_option("--params", plan.params, "Total parameters, e.g. 2783e6")
      ->check(kFinitePositive);
  plan_command
      ->add_option("--largest-layer-params", plan.largest_layer_params,
                   "Parameters of the largest layer")
      ->check(kFinitePositive);
  plan_command->add_option("--gpus-per-node", plan.gpus_per_node)
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  plan_command->add_option("--nodes", plan.nodes)
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  plan_command->add_option("--gpu-mem", plan.gpu_memory, "Memory per GPU, e.g. 80GiB")->required();
  plan_command->add_option("--cpu-mem", plan.cpu_memory, "Memory per node, e.g. 512GiB")
      ->required();
  plan_command->add_option("--nvme-bandwidth", plan.nvme_bandwidth,
                           "NVMe bandwidth per node, e.g. 3GB (per second)");
  plan_command->add_option("--micro-batch", plan.micro_batch)
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  plan_command->add_option("--seq", plan.seq_len, "Sequence length (default: n_positions)")
      ->check(CLI::PositiveNumber);
  plan_command->add_option("--config-out", plan.config_out,
                           "Also write the recommended config to this file");
  plan_command->add_option("--json", plan.json_out, "Write the whole plan as JSON to this file");
  plan_command
      ->add_option("--config", plan.config_path,
                   "Plan in this DeepSpeed config's precision (fp16, bf16, "
                   "communication_data_type, data_types.grad_accum_dtype)")
      ->check(kRegularFile);
  plan_command->add_option("--precision", plan.precision,
                           "fp32, fp16 or bf16 (default: the config's, else fp32)");

  std::string text_input, hdf5_output;
  auto* data_command = app.add_subcommand("data", "Prepare training data");
  data_command->require_subcommand(1);
  auto* from_text = data_command->add_subcommand(
      "from-text", "Byte-level tokens (vocab 256) of a text file, as an HDF5 dataset 'tokens'");
  from_text->add_option("input", text_input, "Text file")->required();
  from_text->add_option("output", hdf5_output, "HDF5 file to write")->required();
  zt::app::DataCheckOptions data_check;
  auto* check_data = data_command->add_subcommand(
      "check", "Open and validate a token file as training would (tokens within the vocabulary)");
  check_data->add_option("file", data_check.path, "HDF5 token file")->required();
  check_data->add_option("--dataset", data_check.dataset_name, "Dataset name inside the file")
      ->capture_default_str();
  check_data
      ->add_option("--vocab-size", data_check.vocab_size,
                   "Tokens must be below this (default: the file's vocab_size attribute)")
      ->check(CLI::PositiveNumber);
  check_data->add_option("--memory-limit", data_check.memory_limit,
                         "Refuse to use more address space than this, e.g. 4GiB (train's "
                         "helpers run with 4GiB)");
  std::vector<int> data_check_part;
  check_data
      ->add_option("--part", data_check_part,
                   "P N: check part P of N only, as each of N ranks does")
      ->expected(2)
      ->check(CLI::NonNegativeNumber);

  zt::app::AioBenchOptions aio_bench;
  auto* aio_bench_command = app.add_subcommand(
      "aio-bench",
      "Sweep NVMe offload's aio settings on a folder: GB/s per setting, the best as an aio block");
  aio_bench_command
      ->add_option("--path", aio_bench.path, "Folder for the test file (on the NVMe to tune)")
      ->required();
  aio_bench_command
      ->add_option("--size", aio_bench.size,
                   "Test file size (K/M/G = KiB/MiB/GiB); a multiple of 4096 x threads; held in "
                   "memory once")
      ->capture_default_str();
  aio_bench_command
      ->add_option("--block-sizes", aio_bench.block_sizes, "aio.block_size values, e.g. 128K,1M")
      ->capture_default_str();
  aio_bench_command->add_option("--queue-depths", aio_bench.queue_depths, "aio.queue_depth values")
      ->capture_default_str();
  aio_bench_command
      ->add_option("--threads", aio_bench.threads,
                   "aio.intra_op_parallelism values (the docs' thread_count)")
      ->capture_default_str();
  aio_bench_command
      ->add_option("--single-submit", aio_bench.single_submit, "aio.single_submit: false,true")
      ->capture_default_str();
  aio_bench_command
      ->add_option("--overlap-events", aio_bench.overlap_events, "aio.overlap_events: true,false")
      ->capture_default_str();
  aio_bench_command
      ->add_option("--backend", aio_bench.backend, "auto (the faster here), io_uring or libaio")
      ->capture_default_str();
  aio_bench_command->add_option("--csv", aio_bench.csv_path, "Write one CSV row per setting");
  aio_bench_command->add_option("--json", aio_bench.json_path, "Write the results as JSON");
  aio_bench_command->add_option("--label", aio_bench.label,
                                "The CSV's node column (default: the short host name)");
  std::vector<int> aio_bench_part;
  aio_bench_command
      ->add_option("--part", aio_bench_part,
                   "P N: only combinations i with i mod N = P (a job array's task P of N)")
      ->expected(2)
      ->check(CLI::NonNegativeNumber);

  zt::app::ConsolidateOptions consolidate;
  auto* consolidate_command = app.add_subcommand(
      "consolidate",
      "A checkpoint's weights as a Hugging Face GPT-2 model: OUT_DIR/model.safetensors, "
      "model.h5, config.json (serial, no MPI)");
  consolidate_command
      ->add_option("checkpoint_dir", consolidate.checkpoint_dir, "A training run's --save-dir")
      ->required();
  consolidate_command
      ->add_option("output_dir", consolidate.output_dir,
                   "Where the model goes (created if missing)")
      ->required();
  consolidate_command->add_option("--tag", consolidate.tag,
                                  "Checkpoint to consolidate (default: the one 'latest' names)");
  consolidate_command
      ->add_option("--dtype", consolidate.dtype,
                   "fp32 (the fp32 master weights), bf16 or fp16 (rounded to nearest even)")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}))
      ->capture_default_str();

  if (const std::string unknown = unknown_command_message(app, argc, argv); !unknown.empty())
    return usage_error(argc, argv, unknown);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    if (error.get_exit_code() == 0) {  // --help: not an error
      if (is_rank_zero()) app.exit(error);
      return 0;
    }
    return usage_error(argc, argv,
                       std::string(error.what()) + "\nRun with --help for more information.");
  }
  if (train_command->parsed()) {
    train.seed = *zt::app::parse_seed(seed_text);
    // They shape the synthetic source; with --data they would be ignored without a word.
    if (!train.data_path.empty())
      for (const char* flag : {"--synthetic-order", "--synthetic-branching", "--synthetic-tokens"})
        if (train_command->count(flag) > 0)
          return usage_error(
              argc, argv,
              std::string(flag) +
                  " shapes the built-in synthetic data and has no effect with --data");
    if (train.data_path.empty() && train_command->count("--dataset") > 0)
      return usage_error(argc, argv,
                         "--dataset names a dataset inside --data; without --data the built-in "
                         "synthetic data is used");
  }

  if (show_version) {
    if (is_rank_zero()) std::fputs(zt::app::version_report().c_str(), stdout);
    return 0;
  }
  if (train_command->parsed()) return zt::app::run_train(argc, argv, train);
  if (check_command->parsed()) return zt::app::run_check_config(argc, argv, check);
  if (from_text->parsed()) return zt::app::run_data_from_text(text_input, hdf5_output);
  if (check_data->parsed()) {
    if (data_check_part.size() == 2) {
      data_check.part = data_check_part[0];
      data_check.parts = data_check_part[1];
    }
    return zt::app::run_data_check(data_check);
  }
  if (aio_bench_command->parsed()) {
    if (aio_bench_part.size() == 2) {
      aio_bench.part = aio_bench_part[0];
      aio_bench.parts = aio_bench_part[1];
    }
    return zt::app::run_aio_bench(aio_bench);
  }
  if (consolidate_command->parsed()) return zt::app::run_consolidate(consolidate);
  if (estimate_command->parsed()) return zt::app::run_estimate(estimate);
  if (plan_command->parsed()) return zt::app::run_plan(plan);
  if (is_rank_zero()) std::fputs(app.help().c_str(), stdout);
  return 0;
}
