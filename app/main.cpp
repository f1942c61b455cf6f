// SPDX-License-Identifier: Apache-2.0
// zerotrain: command-line entry. Parses arguments (identically on every rank) and hands over
// to one subcommand.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <cstdlib>

#include "app/commands.hpp"

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
      ->check(CLI::ExistingFile);
  train_command->add_option("--model", train.model_path, "Model: YAML or Hugging Face config.json")
      ->check(CLI::ExistingFile);
  train_command->add_option("--data", train.data_path,
                            "HDF5 token file (default: the synthetic Markov source)");
  train_command->add_option("--dataset", train.dataset_name, "Dataset name inside --data")
      ->capture_default_str();
  train_command->add_option("--seed", train.seed, "Seed of initialisation, data and sampler")
      ->capture_default_str();
  train_command->add_option("--seq-len", train.seq_len, "Sequence length (default: n_positions)");
  train_command->add_option("--output-dir", train.output_dir,
                            "Where outputs go (default: runs/default or runs/<config name>)");
  train_command->add_option(
      "--summary-json", train.summary_json,
      "Write the final summary as JSON here (default: <output-dir>/summary.json)");
  train_command->add_option("--save-weights", train.save_weights,
                            "Write the final fp32 weights to this safetensors file (gathered one "
                            "tensor at a time)");
  train_command->add_option(
      "--device-memory-limit", train.device_memory_limit,
      "Cap on device bytes per rank, e.g. 64MiB (CPU runs: the tracked arena)");
  const char* synthetic = "Synthetic data";
  train_command
      ->add_option("--synthetic-order", train.synthetic_order,
                   "Markov order of the synthetic source (>= 2)")
      ->group(synthetic)
      ->capture_default_str();
  train_command
      ->add_option("--synthetic-branching", train.synthetic_branching,
                   "Possible next tokens per context")
      ->group(synthetic);
  train_command
      ->add_option("--synthetic-tokens", train.synthetic_tokens,
                   "Length of the generated token stream")
      ->group(synthetic);
  add_trainer_flags(*train_command, train.trainer);

  zt::app::CheckConfigOptions check;
  auto* check_command = app.add_subcommand("check-config", "Validate a DeepSpeed config");
  check_command->add_option("config", check.config_path, "DeepSpeed config (JSON or YAML)")
      ->required()
      ->check(CLI::ExistingFile);
  check_command->add_option("--model", check.model_path, "Model description, to resolve \"auto\"")
      ->check(CLI::ExistingFile);
  check_command->add_option("--world-size", check.world_size,
                            "Data-parallel ranks to check the batch sizes for (default: MPI's)");
  add_trainer_flags(*check_command, check.trainer);

  zt::app::EstimateOptions estimate;
  auto* estimate_command = app.add_subcommand(
      "estimate", "DeepSpeed's table of model-states memory per CPU and GPU (stage 2 or 3)");
  estimate_command
      ->add_option("--model", estimate.model_path,
                   "Model: YAML or Hugging Face config.json (gives both counts)")
      ->check(CLI::ExistingFile);
  estimate_command->add_option("--params", estimate.params, "Total parameters, e.g. 2783e6");
  estimate_command->add_option("--largest-layer-params", estimate.largest_layer_params,
                               "Parameters of the largest layer, e.g. 65e6 (stage 3)");
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
      ->check(CLI::ExistingFile);
  plan_command->add_option("--params", plan.params, "Total parameters, e.g. 2783e6");
  plan_command->add_option("--largest-layer-params", plan.largest_layer_params,
                           "Parameters of the largest layer");
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
  plan_command->add_option("--seq", plan.seq_len, "Sequence length (default: n_positions)");
  plan_command->add_option("--config-out", plan.config_out,
                           "Also write the recommended config to this file");
  plan_command->add_option("--json", plan.json_out, "Write the whole plan as JSON to this file");

  std::string text_input, hdf5_output;
  auto* data_command = app.add_subcommand("data", "Prepare training data");
  data_command->require_subcommand(1);
  auto* from_text = data_command->add_subcommand(
      "from-text", "Byte-level tokens (vocab 256) of a text file, as an HDF5 dataset 'tokens'");
  from_text->add_option("input", text_input, "Text file")->required();
  from_text->add_option("output", hdf5_output, "HDF5 file to write")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    const int code = is_rank_zero() ? app.exit(error) : error.get_exit_code();
    return code == 0 ? 0 : 2;  // --help is not an error; usage errors exit 2
  }

  if (show_version) {
    if (is_rank_zero()) std::fputs(zt::app::version_report().c_str(), stdout);
    return 0;
  }
  if (train_command->parsed()) return zt::app::run_train(argc, argv, train);
  if (check_command->parsed()) return zt::app::run_check_config(argc, argv, check);
  if (from_text->parsed()) return zt::app::run_data_from_text(text_input, hdf5_output);
  if (estimate_command->parsed()) return zt::app::run_estimate(estimate);
  if (plan_command->parsed()) return zt::app::run_plan(plan);
  if (is_rank_zero()) std::fputs(app.help().c_str(), stdout);
  return 0;
}
