// SPDX-License-Identifier: Apache-2.0
// Tests of zt_config: DeepSpeed configs from its docs/tutorials and the HF Trainer, the schema
// against the reference key list, validation messages, "auto" resolution, the batch triple and
// the scheduler/optimizer parameters.
#include <gtest/gtest.h>

#include "files/files.hpp"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "config/config.hpp"
#include "config/schema.hpp"

namespace zt::config {
namespace {

const std::string kData = ZT_CONFIG_TEST_DATA;

ResolvedConfig parse(const std::string& text, int world = 1, const CommandLineOverrides& flags = {},
                     const ModelFacts& model = {}, std::int64_t run_steps = 0) {
  return parse_config_text(text, "ds_config.json", flags, model, world, run_steps);
}

// The ConfigError text of a config that must fail ("" if it parsed).
std::string errors_of(const std::string& text, int world = 1,
                      const CommandLineOverrides& flags = {}, const ModelFacts& model = {},
                      std::int64_t run_steps = 0) {
  try {
    parse(text, world, flags, model, run_steps);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_CONTAINS(haystack, needle)                                                          \
  do {                                                                                             \
    const std::string h_ = (haystack);                                                             \
    EXPECT_NE(h_.find(needle), std::string::npos) << "expected to find: " << (needle) << "\nin:\n" \
                                                  << h_;                                           \
  } while (0)

const Entry* find_entry(const ResolvedConfig& c, const std::string& path) {
  for (const Entry& e : c.entries) {
    if (e.path == path) return &e;
  }
  return nullptr;
}

std::string read_text(const std::string& path);  // below

const char* kMinimal = R"({"train_batch_size": 8, "optimizer": {"type": "AdamW"}})";

// ---------------------------------------------------------------- real configs

TEST(RealConfigs, Zero1TutorialFailsOnlyOnMaxGradNorm) {
  const std::string errors = [] {
    try {
      load_config(kData + "/ds_zero1_tutorial.json", {}, {}, 1, 0);
    } catch (const ConfigError& e) {
      EXPECT_EQ(e.problems.size(), 1u) << e.what();
      return std::string(e.what());
    }
    return std::string();
  }();
  EXPECT_EQ(errors.find("fp16"), std::string::npos) << "fp16 is honoured now";
  EXPECT_CONTAINS(errors, "optimizer.params.max_grad_norm");
  EXPECT_CONTAINS(errors, "gradient_clipping");
}

TEST(RealConfigs, Zero2TutorialResolves) {
  const ResolvedConfig c = load_config(kData + "/ds_zero2_tutorial.json", {}, {}, 4, 0);
  EXPECT_EQ(c.zero.stage, 2);
  EXPECT_EQ(c.train_batch_size, 32);
  EXPECT_EQ(c.train_micro_batch_size_per_gpu, 4);
  EXPECT_EQ(c.gradient_accumulation_steps, 2);
  EXPECT_EQ(c.zero.reduce_bucket_size, 500000000);
  EXPECT_EQ(c.zero.allgather_bucket_size, 500000000);
  EXPECT_FALSE(c.zero.overlap_comm);
  EXPECT_EQ(c.optimizer.type, OptimizerType::kAdamW);
  EXPECT_TRUE(c.optimizer.adam_w_mode);
  EXPECT_DOUBLE_EQ(c.optimizer.beta2, 0.95);
  EXPECT_DOUBLE_EQ(c.optimizer.weight_decay, 0.1);
  EXPECT_EQ(c.scheduler.type, SchedulerType::kWarmupDecayLR);
  EXPECT_EQ(c.scheduler.total_num_steps, 1000);
  EXPECT_EQ(c.scheduler.warmup_num_steps, 100);
}

TEST(RealConfigs, Zero3CpuOffloadTutorialResolves) {
  const ResolvedConfig c = load_config(kData + "/ds_zero3_offload_tutorial.json", {}, {}, 8, 0);
  EXPECT_EQ(c.zero.stage, 3);
  EXPECT_EQ(c.zero.offload_optimizer.device, OffloadDevice::kCpu);
  EXPECT_EQ(c.zero.offload_param.device, OffloadDevice::kCpu);
  EXPECT_TRUE(c.zero.offload_optimizer.pin_memory);  // DeepSpeed 0.19's default
  EXPECT_TRUE(c.zero.offload_param.pin_memory);
  EXPECT_EQ(c.zero.offload_param.buffer_count, 5);
  EXPECT_EQ(c.optimizer.type, OptimizerType::kAdam);  // DeepSpeed: DeepSpeedCPUAdam
  EXPECT_FALSE(c.optimizer_from_trainer);
}

TEST(RealConfigs, ZeroInfinityNvmeResolves) {
  const ResolvedConfig c = load_config(kData + "/ds_zero3_nvme_infinity.json", {}, {}, 2, 0);
  EXPECT_EQ(c.zero.stage, 3);
  EXPECT_EQ(c.zero.offload_optimizer.device, OffloadDevice::kNvme);
  EXPECT_EQ(c.zero.offload_param.device, OffloadDevice::kNvme);
  EXPECT_EQ(c.zero.offload_optimizer.nvme_path, "/local_nvme");
  EXPECT_EQ(c.zero.offload_param.nvme_path, "/local_nvme");
  EXPECT_EQ(c.zero.offload_optimizer.buffer_count, 4);
  EXPECT_EQ(c.zero.offload_param.buffer_count, 5);
  EXPECT_EQ(c.aio.block_size, 262144);
  EXPECT_EQ(c.aio.queue_depth, 32);
  EXPECT_EQ(c.aio.intra_op_parallelism, 1);  // written as thread_count
  EXPECT_EQ(find_entry(c, "aio.intra_op_parallelism")->detail, "written as aio.thread_count");
}

TEST(RealConfigs, HfZero3CpuOffloadResolves) {
  CommandLineOverrides flags;
  flags.learning_rate = 1e-4;
  flags.warmup_steps = 100;  // the Trainer default 0 is refused, as DeepSpeed refuses it
  const ResolvedConfig c =
      load_config(kData + "/hf_ds_config_zero3.json", flags, ModelFacts{768}, 2, 1000);
  EXPECT_EQ(c.zero.offload_optimizer.device, OffloadDevice::kCpu);
  EXPECT_EQ(c.zero.offload_param.device, OffloadDevice::kCpu);
}

// reference/hf-guide-configs/zero3_cpu_offload.json, copied unchanged: the HF guide's notebook
// config runs with the Trainer's flags and a model.
TEST(RealConfigs, HfGuideZero3CpuOffloadResolves) {
  CommandLineOverrides flags;
  flags.fp16 = true;
  flags.learning_rate = 3e-5;
  flags.warmup_steps = 10;
  flags.per_device_train_batch_size = 4;
  const ResolvedConfig c =
      load_config(kData + "/hf_guide_zero3_cpu_offload.json", flags, ModelFacts{768}, 2, 100);
  EXPECT_EQ(c.zero.stage, 3);
  EXPECT_EQ(c.zero.offload_optimizer.device, OffloadDevice::kCpu);
  EXPECT_EQ(c.zero.offload_param.device, OffloadDevice::kCpu);
  EXPECT_TRUE(c.zero.offload_optimizer.pin_memory);
  EXPECT_TRUE(c.zero.offload_param.pin_memory);
  EXPECT_EQ(c.zero.offload_param.buffer_count, 5);
  EXPECT_EQ(c.zero.offload_param.buffer_size, 100000000);
  EXPECT_EQ(c.zero.offload_param.max_in_cpu, 1000000000);
  EXPECT_DOUBLE_EQ(c.zero.offload_optimizer.ratio, 1.0);
  EXPECT_TRUE(c.fp16.enabled);
  EXPECT_EQ(c.optimizer.type, OptimizerType::kAdamW);
  EXPECT_FALSE(c.optimizer_from_trainer);
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 3e-5);
  EXPECT_EQ(c.train_batch_size, 8);
  EXPECT_EQ(c.zero.reduce_bucket_size, 768 * 768);
  EXPECT_EQ(c.zero.param_persistence_threshold, 7680);
  const std::string printed = format_effective_config(c);
  EXPECT_CONTAINS(printed, "[zero_optimization.offload_optimizer]");
  EXPECT_CONTAINS(printed, "[zero_optimization.offload_param]");
  EXPECT_EQ(find_entry(c, "zero_optimization.offload_optimizer.device")->value_text, "\"cpu\"");
  EXPECT_EQ(find_entry(c, "zero_optimization.offload_param.device")->source, Source::kFile);
}

TEST(RealConfigs, HfZero2ResolvesAutos) {
  CommandLineOverrides flags;
  flags.learning_rate = 3e-4;
  flags.per_device_train_batch_size = 4;
  flags.warmup_steps = 50;
  flags.max_steps = 2000;
  const ResolvedConfig c =
      load_config(kData + "/hf_ds_config_zero2.json", flags, ModelFacts{1024}, 2, 0);
  EXPECT_EQ(c.train_micro_batch_size_per_gpu, 4);
  EXPECT_EQ(c.gradient_accumulation_steps, 1);
  EXPECT_EQ(c.train_batch_size, 8);
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 3e-4);
  EXPECT_DOUBLE_EQ(c.optimizer.beta1, 0.9);
  EXPECT_DOUBLE_EQ(c.optimizer.beta2, 0.999);
  EXPECT_DOUBLE_EQ(c.optimizer.eps, 1e-8);
  EXPECT_DOUBLE_EQ(c.gradient_clipping, 1.0);
  EXPECT_EQ(c.zero.reduce_bucket_size, 1024 * 1024);
  EXPECT_EQ(c.scheduler.warmup_num_steps, 50);
  EXPECT_EQ(c.scheduler.total_num_steps, 2000);
  EXPECT_DOUBLE_EQ(c.scheduler.warmup_max_lr, 3e-4);
  EXPECT_DOUBLE_EQ(c.scheduler.warmup_min_lr, 0.0);
  EXPECT_FALSE(c.fp16.enabled);
  EXPECT_FALSE(c.bf16.enabled);
  EXPECT_EQ(find_entry(c, "optimizer.params.lr")->source, Source::kAutoFromFlag);
  EXPECT_EQ(find_entry(c, "optimizer.params.eps")->source, Source::kAutoTrainerDefault);
  EXPECT_EQ(find_entry(c, "zero_optimization.reduce_bucket_size")->source, Source::kAutoModel);
  EXPECT_EQ(find_entry(c, "fp16.enabled")->source, Source::kAutoTrainerDefault);
}

TEST(RealConfigs, YamlConfigParses) {
  const ResolvedConfig c = load_config(kData + "/zero3_fp32.yaml", {}, {}, 4, 0);
  EXPECT_EQ(c.zero.stage, 3);
  EXPECT_TRUE(c.zero.overlap_comm);  // None -> true at stage 3
  EXPECT_EQ(c.train_micro_batch_size_per_gpu, 8);
  EXPECT_EQ(c.zero.prefetch_bucket_size, 50000000);
  EXPECT_EQ(c.aio.intra_op_parallelism, 2);
  // No offload uses NVMe here: the aio block is accepted and marked unused.
  EXPECT_EQ(find_entry(c, "aio.intra_op_parallelism")->detail,
            "written as aio.thread_count; unused: no offload device is \"nvme\" (DeepSpeed reads "
            "aio only for NVMe swapping)");
  EXPECT_EQ(c.checkpoint.tag_validation, "Fail");
  EXPECT_EQ(c.scheduler.type, SchedulerType::kWarmupCosineLR);
  EXPECT_EQ(c.scheduler.warmup_type, "linear");
}

TEST(RealConfigs, ExampleInputsResolve) {
  for (const char* name :
       {"zero0.json", "zero1.json", "zero2.json", "zero3.json", "zero2_cpu_offload.json",
        "zero3_cpu_offload.json", "hf_trainer_auto.json"}) {
    SCOPED_TRACE(name);
    EXPECT_NO_THROW(
        load_config(std::string(ZT_CONFIG_INPUTS) + "/" + name, {}, ModelFacts{768}, 2, 100));
  }
}

TEST(RealConfigs, MissingOrIrregularFilesAreFileErrors) {
  EXPECT_THROW(load_config(kData + "/no_such_file.json", {}, {}, 1, 0), zt::files::FileError);
  EXPECT_THROW(load_config(kData, {}, {}, 1, 0), zt::files::FileError);  // a directory
  EXPECT_THROW(load_config("/dev/null", {}, {}, 1, 0), zt::files::FileError);
}

TEST(RealConfigs, SyntaxErrorNamesTheLine) {
  EXPECT_CONTAINS(errors_of("{\n\"train_batch_size\": 8,\n\"optimizer\": [1, \n}"),
                  "ds_config.json:");
}

// ---------------------------------------------------------------- schema coverage

TEST(Schema, KnowsEveryKeyOfTheReference) {
  std::ifstream file(kData + "/deepspeed_keys.txt");
  ASSERT_TRUE(file) << "missing deepspeed_keys.txt";
  std::string line;
  int checked = 0;
  while (std::getline(file, line)) {
    if (line.empty() || line[0] == '#') continue;
    EXPECT_NE(find_key_spec(line), nullptr) << "schema lacks " << line;
    ++checked;
  }
  EXPECT_GT(checked, 500);
}

TEST(Schema, EveryKeyAtItsDefaultIsAccepted) {
  // Build one config holding every leaf key with a default, at that default.
  YAML::Node root(YAML::NodeType::Map);
  root["train_batch_size"] = 8;
  root["optimizer"]["type"] = "Adam";
  root["scheduler"]["type"] = "WarmupLR";
  auto under_presence_section = [](const std::string& path) {
    for (const KeySpec& s : all_key_specs()) {
      if (s.support == Support::kPresenceUnsupported &&
          path.compare(0, s.path.size() + 1, s.path + ".") == 0) {
        return true;
      }
    }
    return false;
  };
  int written = 0;
  for (const KeySpec& spec : all_key_specs()) {
    if (spec.default_text.empty() || !spec.alias_of.empty() || spec.support == Support::kNotRead ||
        spec.path.find('*') != std::string::npos ||
        spec.path.find("layer_specs") != std::string::npos || spec.kind == ValueKind::kSection ||
        under_presence_section(spec.path) || spec.path == "datastates_ckpt") {
      continue;
    }
    if (!spec.applies_to.empty()) {
      const bool for_adam = std::find(spec.applies_to.begin(), spec.applies_to.end(), "adam") !=
                            spec.applies_to.end();
      const bool for_warmup = std::find(spec.applies_to.begin(), spec.applies_to.end(),
                                        "warmuplr") != spec.applies_to.end();
      if (!for_adam && !for_warmup) continue;
    }
    std::vector<std::string> parts;
    std::stringstream ss(spec.path);
    for (std::string part; std::getline(ss, part, '.');) parts.push_back(part);
    std::vector<YAML::Node> chain{root};
    for (std::size_t i = 0; i + 1 < parts.size(); ++i) chain.push_back(chain.back()[parts[i]]);
    chain.back()[parts.back()] = YAML::Load(spec.default_text);
    ++written;
  }
  YAML::Emitter emitter;
  emitter << root;
  const std::string errors = errors_of(emitter.c_str(), 1);
  EXPECT_EQ(errors, "");
  EXPECT_GT(written, 250);
}

TEST(Schema, EditDistance) {
  EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(closest_name("reduce_bucket_sise", {"reduce_bucket_size", "stage"}),
            "reduce_bucket_size");
  EXPECT_EQ(closest_name("completely_different", {"stage"}), "");
}

// ---------------------------------------------------------------- validation

TEST(Validation, MisspelledKeySuggestsClosest) {
  const std::string errors = errors_of(
      R"({"train_batch_size": 8, "zero_optimization": {"stage": 2, "reduce_bucket_sise": 1}})");
  EXPECT_CONTAINS(errors,
                  "ds_config.json: zero_optimization.reduce_bucket_sise: unknown key "
                  "'reduce_bucket_sise'; did you mean 'reduce_bucket_size'?");
}

TEST(Validation, UnknownTopLevelKeyIsAnError) {
  const std::string errors = errors_of(R"({"train_batch_size": 8, "zero_optimisation": {}})");
  EXPECT_CONTAINS(errors, "did you mean 'zero_optimization'?");
  EXPECT_CONTAINS(errors, "DeepSpeed silently ignores unknown top-level keys");
}

TEST(Validation, KeyInTheWrongSectionSaysWhere) {
  const std::string errors = errors_of(R"({"train_batch_size": 8, "overlap_comm": true})");
  EXPECT_CONTAINS(errors, "is a key of 'zero_optimization'");
}

TEST(Validation, NamesThatLookValidGetTheirHint) {
  const struct {
    const char* config;
    const char* hint;
  } cases[] = {
      {R"({"elasticity": {"prefer_large_batch": true}})", "prefer_larger_batch"},
      {R"({"optimizer": {"type": "Adam", "params": {"max_grad_norm": 1}}})", "gradient_clipping"},
      {R"({"zero_optimization": {"grad_hooks": true}})", "not a field"},
      {R"({"bf16": {"check_overflow": true}})", "check_grad_overflow"},
      {R"({"bf16": {"loss_scale": 0}})", "fp16-only key"},
      {R"({"zero_optimization": {"cpu_offload_params": true}})", "cpu_offload_param"},
      {R"({"autotuning": {"start_step": 1}})", "start_profile_step"},
      {R"({"autotuning": {"end_step": 1}})", "end_profile_step"},
      {R"({"eigenvalue": {"enabled": true}})", "quantize_training.eigenvalue"},
      {R"({"quantize_training": {"quantize_bits": {"start_bits": 8}}})", "legacy MoQ"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.config);
    std::string config = c.config;
    config.insert(1, "\"train_batch_size\": 8, ");
    EXPECT_CONTAINS(errors_of(config), c.hint);
  }
}

TEST(Validation, WrongTypesAreErrors) {
  EXPECT_CONTAINS(
      errors_of(R"({"train_batch_size": 8, "zero_optimization": {"stage": "four"}})"),
      "ds_config.json: zero_optimization.stage: expected an integer 0..3, got \"four\"");
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "zero_optimization": {"stage": 1.5}})"),
                  "expected an integer 0..3, got 1.5");
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "wall_clock_breakdown": 2})"),
                  "wall_clock_breakdown: expected a bool");
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "gradient_clipping": true})"),
                  "gradient_clipping: expected a number");
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "zero_optimization": [1, 2]})"),
                  "zero_optimization: expected a section");
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "log_level": 5})"),
                  "log_level: expected one of");
}

TEST(Validation, LaxCoercionsOfDeepSpeedAreAccepted) {
  const ResolvedConfig c = parse(R"({
    "train_batch_size": "8",
    "zero_optimization": {"stage": 2.0, "reduce_bucket_size": 5e8, "allgather_bucket_size": "2e8",
                          "overlap_comm": "true", "contiguous_gradients": 0},
    "wall_clock_breakdown": 1, "optimizer": {"type": "adamw"}})");
  EXPECT_EQ(c.train_batch_size, 8);
  EXPECT_EQ(c.zero.stage, 2);
  EXPECT_EQ(c.zero.reduce_bucket_size, 500000000);
  EXPECT_EQ(c.zero.allgather_bucket_size, 200000000);
  EXPECT_TRUE(c.zero.overlap_comm);
  EXPECT_FALSE(c.zero.contiguous_gradients);
  EXPECT_TRUE(c.wall_clock_breakdown);
}

TEST(Validation, OutOfRangeAndBadChoices) {
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "zero_optimization": {"stage": 4}})"),
                  "zero_optimization.stage: expected an integer 0..3, got 4");
  EXPECT_CONTAINS(
      errors_of(
          R"({"train_batch_size": 8, "zero_optimization": {"stage3_max_reuse_distance": -1}})"),
      "stage3_max_reuse_distance: expected an integer >= 0, got -1");
  EXPECT_CONTAINS(
      errors_of(
          R"({"train_batch_size": 8, "zero_optimization": {"offload_optimizer": {"ratio": 1.5}}})"),
      "ratio: expected a number in [0, 1], got 1.5");
  EXPECT_CONTAINS(
      errors_of(R"({"train_batch_size": 8, "checkpoint": {"tag_validation": "Maybe"}})"),
      "expected one of Ignore|Warn|Fail");
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "communication_data_type": "fp8"})"),
                  "communication_data_type: expected one of fp16|bf16|fp32");
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "optimizer": {"type": "AdamW",
                  "params": {"betas": [0.9]}}})"),
                  "two numbers");
}

TEST(Validation, AliasPairs) {
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "zero_optimization": {"stage": 3,
      "stage3_prefetch_bucket_size": 100, "prefetch_bucket_size": 200}})"),
                  "are two spellings of one setting with different values");
  const ResolvedConfig same = parse(R"({"train_batch_size": 8, "zero_optimization": {"stage": 3,
      "stage3_prefetch_bucket_size": 100, "prefetch_bucket_size": 100, "max_live_parameters": 7}})");
  EXPECT_EQ(same.zero.prefetch_bucket_size, 100);
  EXPECT_EQ(same.zero.max_live_parameters, 7);
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "aio": {"thread_count": 4,
      "intra_op_parallelism": 2}})"),
                  "'aio.thread_count' = 4 and 'aio.intra_op_parallelism' = 2");
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "bf16": {"enabled": false},
      "bfloat16": {"enabled": true}})"),
                  "two spellings of one setting");
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "zero_optimization": {"cpu_offload": false,
      "offload_optimizer": {"device": "none"}}})"),
                  "ds_config.json: zero_optimization.offload_optimizer: Cannot provide deprecated "
                  "parameter 'cpu_offload' and replacing parameter 'offload_optimizer' together");
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "zero_optimization": {"stage": 3,
      "stage3_gather_fp16_weights_on_model_save": true,
      "gather_16bit_weights_on_model_save": true}})"),
                  "deprecated");
}

TEST(Validation, DuplicateKeys) {
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "train_batch_size": 16})"),
                  "ds_config.json: train_batch_size: duplicate key");
  EXPECT_CONTAINS(
      errors_of(R"({"train_batch_size": 8, "zero_optimization": {"stage": 1, "stage": 2}})"),
      "zero_optimization.stage: duplicate key");
}

TEST(Validation, AllProblemsAreReportedTogether) {
  try {
    parse(R"({"train_batch_size": 8, "zero_optimization": {"stage": 9, "bogus": 1},
              "tensorboard": {"enabled": true}, "typo_key": 1})");
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_GE(e.problems.size(), 4u) << e.what();
  }
}

TEST(Validation, AutoOnlyWhereResolvable) {
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "steps_per_print": "auto"})"),
                  "steps_per_print: \"auto\" cannot be resolved here");
  // Strict DeepSpeed sections drop "auto": default.
  const ResolvedConfig c = parse(
      R"({"train_batch_size": 8, "zero_optimization": {"stage": 2, "overlap_comm": "auto"}})");
  EXPECT_FALSE(c.zero.overlap_comm);
  EXPECT_EQ(find_entry(c, "zero_optimization.overlap_comm")->source, Source::kDerived);
}

// ---------------------------------------------------------------- support status

TEST(Support, DisabledFeaturesAreAcceptedEnabledOnesRefused) {
  EXPECT_NO_THROW(parse(R"({"train_batch_size": 8, "tensorboard": {"enabled": false,
      "output_path": "x"}, "fp16": {"enabled": false, "loss_scale_window": 500},
      "flops_profiler": {"enabled": false}, "weight_quantization": {"enabled": false},
      "zero_optimization": {"offload_param": {"device": "none"}, "offload_optimizer": null}})"));
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "tensorboard": {"enabled": true}})"),
                  "not supported yet: tensorboard.enabled = true");
  EXPECT_NO_THROW(parse(R"({"train_batch_size": 8, "communication_data_type": "FP32"})"));
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "activation_checkpointing":
      {"partition_activations": true}})"),
                  "not supported yet: activation_checkpointing.partition_activations = true");
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "sparse_attention": {"mode": "fixed"}})"),
                  "not supported yet: sparse_attention");
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "comms_logger": {"enabled": true}})"),
                  "not supported yet: comms_logger");
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "zero_optimization": {"zenflow": {}}})"),
                  "not supported yet: zero_optimization.zenflow");
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "dump_state": true})"),
                  "not supported yet: dump_state = true");
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "amp": {"opt_level": "O1"}})"),
                  "amp.enabled: required when 'amp' is present");
  EXPECT_NO_THROW(parse(R"({"train_batch_size": 8, "csv_monitor": {"enabled": true,
      "output_path": "logs", "job_name": "run1"}})"));
}

TEST(Support, Bf16FlagFillsTheAbsentKey) {
  CommandLineOverrides flags;
  flags.bf16 = true;
  const ResolvedConfig c = parse(kMinimal, 1, flags);
  EXPECT_TRUE(c.bf16.enabled);
  EXPECT_EQ(c.precision.training_dtype, DataType::kBf16);
  EXPECT_EQ(find_entry(c, "bf16.enabled")->source, Source::kFlag);
  EXPECT_EQ(find_entry(c, "bf16.enabled")->detail, "--bf16");
}

TEST(Support, Optimizers) {
  const ResolvedConfig adam = parse(R"({"train_batch_size": 8, "optimizer": {"type": "Adam",
      "params": {"lr": 0.01, "adam_w_mode": false, "torch_adam": true, "bias_correction": false}}})");
  EXPECT_EQ(adam.optimizer.type, OptimizerType::kAdam);
  EXPECT_FALSE(adam.optimizer.adam_w_mode);
  EXPECT_FALSE(adam.optimizer.bias_correction);
  EXPECT_TRUE(adam.optimizer.torch_adam);
  const ResolvedConfig adam_default =
      parse(R"({"train_batch_size": 8, "optimizer": {"type": "Adam"}})");
  EXPECT_TRUE(adam_default.optimizer.adam_w_mode);  // DeepSpeed: adam_w_mode defaults to true
  EXPECT_DOUBLE_EQ(adam_default.optimizer.lr, 1e-3);
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "optimizer": {"type": "Adam",
      "params": {"amsgrad": true}}})"),
                  "not supported yet: optimizer.params.amsgrad = true");
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "optimizer": {"type": "Lion"}})"),
                  "not supported yet: optimizer.type = \"Lion\"");
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "optimizer": {"type": "Adam",
      "params": {"max_coeff": 5}}})"),
                  "optimizer.params.max_coeff: not a parameter of Adam");
  const char* lamb_stage1 = R"({"train_batch_size": 8, "zero_optimization": {"stage": 1},
      "optimizer": {"type": "Lamb", "params": {"lr": 0.01, "max_coeff": 5, "min_coeff": 0.1,
      "eps_inside_sqrt": true}}%s})";
  char buffer[512];
  std::snprintf(buffer, sizeof buffer, lamb_stage1, "");
  EXPECT_CONTAINS(errors_of(buffer),
                  "You are using an untested ZeRO Optimizer. Please add "
                  "<\"zero_allow_untested_optimizer\": true> in the configuration file");
  std::snprintf(buffer, sizeof buffer, lamb_stage1, ", \"zero_allow_untested_optimizer\": true");
  const ResolvedConfig lamb = parse(buffer);
  EXPECT_EQ(lamb.optimizer.type, OptimizerType::kLamb);
  EXPECT_DOUBLE_EQ(lamb.optimizer.max_coeff, 5);
  EXPECT_DOUBLE_EQ(lamb.optimizer.min_coeff, 0.1);
  EXPECT_TRUE(lamb.optimizer.eps_inside_sqrt);
  EXPECT_FALSE(lamb.optimizer.adam_w_mode);
}

TEST(Support, NoOptimizerSectionMeansTrainerAdamW) {
  CommandLineOverrides flags;
  flags.learning_rate = 2e-4;
  const ResolvedConfig c = parse(R"({"train_batch_size": 8})", 1, flags);
  EXPECT_EQ(c.optimizer.type, OptimizerType::kAdamW);
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 2e-4);
  EXPECT_DOUBLE_EQ(c.optimizer.beta2, 0.999);
  EXPECT_TRUE(c.optimizer_from_trainer);
  EXPECT_FALSE(parse(kMinimal).optimizer_from_trainer);
}

TEST(Support, LegacyZeroBoolForm) {
  const ResolvedConfig c =
      parse(R"({"train_batch_size": 8, "zero_optimization": true, "allgather_size": 1000})");
  EXPECT_EQ(c.zero.stage, 1);
  EXPECT_EQ(c.zero.allgather_bucket_size, 1000);
}

TEST(Support, CrossRules) {
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "zero_optimization": {"stage": 3},
      "gradient_allreduce_op": "sum"})"),
                  "gradient_allreduce_op");
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "zero_optimization": {"stage": 2},
      "prescale_gradients": true})"),
                  "reduce_scatter");
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "zero_optimization": {"stage": 2,
      "offload_optimizer": {"ratio": 0.5}}})"),
                  "Partial offloading only supported for ZeRO Stage 3.");
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "data_parallel_size": 2})", 4),
                  "data_parallel_size: 2 but the world size is 4");
}

// ---------------------------------------------------------------- offload (§5.1)

// A config with an AdamW section (DeepSpeedCPUAdam under offload) and the given ZeRO section.
std::string with_zero(const std::string& zero, const std::string& top = "") {
  return R"({"train_batch_size": 8, "optimizer": {"type": "AdamW"}, )" + top +
         R"("zero_optimization": )" + zero + "}";
}

TEST(Offload, CpuOptimizerAtStages1To3) {
  for (const int stage : {1, 2, 3}) {
    SCOPED_TRACE(stage);
    const ResolvedConfig c = parse(with_zero(R"({"stage": )" + std::to_string(stage) +
                                             R"(, "offload_optimizer": {"device": "cpu"}})"));
    EXPECT_EQ(c.zero.offload_optimizer.device, OffloadDevice::kCpu);
    EXPECT_EQ(c.zero.offload_param.device, OffloadDevice::kNone);
    EXPECT_TRUE(c.zero.offload_optimizer.pin_memory);
  }
  EXPECT_CONTAINS(errors_of(with_zero(R"({"stage": 0, "offload_optimizer": {"device": "cpu"}})")),
                  "ds_config.json: zero_optimization.offload_optimizer.device: offload to \"cpu\" "
                  "needs ZeRO: DeepSpeed has no offload without ZeRO and zero_optimization.stage "
                  "is 0; set the stage to 1, 2 or 3, or the device to \"none\"");
  // No zero_optimization section at all is stage 0 too; "none" is fine there.
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "optimizer": {"type": "AdamW"},
      "zero_optimization": {"offload_optimizer": {"device": "cpu"}}})"),
                  "needs ZeRO");
  EXPECT_NO_THROW(parse(with_zero(R"({"stage": 0, "offload_optimizer": {"device": "none"}})")));
}

TEST(Offload, CpuParametersAtStage3Only) {
  const ResolvedConfig c = parse(with_zero(R"({"stage": 3, "offload_param": {"device": "cpu"}})"));
  EXPECT_EQ(c.zero.offload_param.device, OffloadDevice::kCpu);
  EXPECT_EQ(c.zero.offload_optimizer.device, OffloadDevice::kNone);
  for (const int stage : {0, 1, 2}) {
    SCOPED_TRACE(stage);
    const std::string errors = errors_of(with_zero(
        R"({"stage": )" + std::to_string(stage) +
        R"(, "offload_param": {"device": "cpu"}, "offload_optimizer": {"device": "cpu"}})"));
    EXPECT_CONTAINS(errors,
                    "ds_config.json: zero_optimization.offload_param.device: offload to "
                    "\"cpu\" needs ZeRO stage 3 and zero_optimization.stage is " +
                        std::to_string(stage) +
                        ": DeepSpeed silently ignores offload_param below stage 3");
  }
  // Stage 2 with only the optimizer offloaded and a disabled offload_param section is fine.
  EXPECT_NO_THROW(parse(with_zero(
      R"({"stage": 2, "offload_param": {"device": "none"}, "offload_optimizer": {"device": "cpu"}})")));
}

// ---------------------------------------------------------------- NVMe offload (ZeRO-Infinity)

// An offload section on NVMe with the given extra keys (", ..." or "").
std::string nvme(const std::string& extra = "") {
  return R"({"device": "nvme", "nvme_path": "/scratch/nvme")" + extra + "}";
}

TEST(Nvme, OptimizerAtStages1To3) {
  // DeepSpeed silently runs "nvme" as CPU offload at stages 1 and 2; zerotrain swaps there too.
  for (const int stage : {1, 2, 3}) {
    SCOPED_TRACE(stage);
    const ResolvedConfig c = parse(with_zero(R"({"stage": )" + std::to_string(stage) +
                                             R"(, "offload_optimizer": )" + nvme() + "}"));
    EXPECT_EQ(c.zero.offload_optimizer.device, OffloadDevice::kNvme);
    EXPECT_EQ(c.zero.offload_optimizer.nvme_path, "/scratch/nvme");
    EXPECT_EQ(c.zero.offload_optimizer.buffer_count, 4);  // DeepSpeed's default: one set
    EXPECT_EQ(c.zero.offload_param.device, OffloadDevice::kNone);
    EXPECT_EQ(find_entry(c, "zero_optimization.offload_optimizer.device")->value_text, "\"nvme\"");
  }
  EXPECT_CONTAINS(errors_of(with_zero(R"({"stage": 0, "offload_optimizer": )" + nvme() + "}")),
                  "ds_config.json: zero_optimization.offload_optimizer.device: offload to "
                  "\"nvme\" needs ZeRO: DeepSpeed has no offload without ZeRO");
}

TEST(Nvme, ParametersAtStage3Only) {
  const ResolvedConfig c = parse(with_zero(R"({"stage": 3, "offload_param": )" + nvme() + "}"));
  EXPECT_EQ(c.zero.offload_param.device, OffloadDevice::kNvme);
  EXPECT_EQ(c.zero.offload_param.nvme_path, "/scratch/nvme");
  EXPECT_EQ(c.zero.offload_optimizer.device, OffloadDevice::kNone);
  // With the optimizer in CPU memory, or on NVMe too.
  const ResolvedConfig cpu = parse(with_zero(R"({"stage": 3, "offload_param": )" + nvme() +
                                             R"(, "offload_optimizer": {"device": "cpu"}})"));
  EXPECT_EQ(cpu.zero.offload_param.device, OffloadDevice::kNvme);
  EXPECT_EQ(cpu.zero.offload_optimizer.device, OffloadDevice::kCpu);
  for (const int stage : {0, 1, 2}) {
    SCOPED_TRACE(stage);
    EXPECT_CONTAINS(
        errors_of(with_zero(R"({"stage": )" + std::to_string(stage) + R"(, "offload_param": )" +
                            nvme() + R"(, "offload_optimizer": )" + nvme() + "}")),
        "ds_config.json: zero_optimization.offload_param.device: offload to "
        "\"nvme\" needs ZeRO stage 3 and zero_optimization.stage is " +
            std::to_string(stage));
  }
}

TEST(Nvme, NvmePathIsRequired) {
  for (const char* section : {"offload_optimizer", "offload_param"}) {
    SCOPED_TRACE(section);
    const std::string key = std::string("zero_optimization.") + section + ".nvme_path";
    const std::string head = std::string(R"({"stage": 3, ")") + section + R"(": )";
    EXPECT_CONTAINS(errors_of(with_zero(head + R"({"device": "nvme"}})")),
                    "ds_config.json: " + key + ": required with " + section +
                        ".device \"nvme\": the folder on the node-local NVMe disk to swap to "
                        "(DeepSpeed's default is None");
    EXPECT_CONTAINS(errors_of(with_zero(head + R"({"device": "nvme", "nvme_path": null}})")),
                    key + ": required with");
    EXPECT_CONTAINS(errors_of(with_zero(head + R"({"device": "nvme", "nvme_path": ""}})")),
                    key + ": \"\" names no folder");
    // The folder itself is checked when training starts (on the nodes), not here.
    const ResolvedConfig c =
        parse(with_zero(head + R"({"device": "nvme", "nvme_path": "/does/not/exist/here"}})"));
    const Entry* entry = find_entry(c, key);
    ASSERT_NE(entry, nullptr);
    EXPECT_EQ(entry->value_text, "\"/does/not/exist/here\"");
    EXPECT_CONTAINS(entry->detail, "checked when training starts");
  }
}

TEST(Nvme, NvmeOnlyKeysAreReadWithNvme) {
  const ResolvedConfig c = parse(
      with_zero(R"({"stage": 3, "offload_optimizer": )" +
                nvme(R"(, "buffer_count": 9, "pipeline_read": true, "pipeline_write": true,
              "pin_memory": false)") +
                R"(, "offload_param": )" +
                nvme(R"(, "buffer_count": 2, "buffer_size": 4096, "max_in_cpu": 1000)") + "}"));
  const OffloadConfig& o = c.zero.offload_optimizer;
  EXPECT_EQ(o.buffer_count, 9);
  EXPECT_TRUE(o.pipeline_read);
  EXPECT_TRUE(o.pipeline_write);
  EXPECT_FALSE(o.pin_memory);
  const OffloadConfig& p = c.zero.offload_param;
  EXPECT_EQ(p.buffer_count, 2);
  EXPECT_EQ(p.buffer_size, 4096);
  EXPECT_EQ(p.max_in_cpu, 1000);
  EXPECT_TRUE(p.pin_memory);
  // With "cpu" the same keys are still refused (DeepSpeed ignores them there).
  EXPECT_CONTAINS(errors_of(with_zero(R"({"stage": 3, "offload_optimizer": {"device": "cpu",
      "pipeline_write": true}})")),
                  "offload_optimizer.pipeline_write: true has no effect: "
                  "offload_optimizer.device is \"cpu\"");
}

TEST(Nvme, OptimizerBufferSets) {
  const struct {
    int count;
    bool read, write;
    const char* message;  // "" = accepted
  } cases[] = {
      {0, false, false,
       "zero_optimization.offload_optimizer.buffer_count: 0 is less than one buffer set (a set "
       "is 3 buffers: the fp32 master weights, exp_avg and exp_avg_sq of one sub-group), which "
       "NVMe optimizer offload needs; set it to at least 3"},
      {2, false, false, "buffer_count: 2 is less than one buffer set"},
      {3, false, false, ""},
      {4, false, false, ""},  // DeepSpeed's default: 1 set (integer division)
      {5, true, false,
       "zero_optimization.offload_optimizer.buffer_count: 5 makes 1 buffer set (a set is 3 "
       "buffers: the fp32 master weights, exp_avg and exp_avg_sq of one sub-group), and "
       "offload_optimizer.pipeline_read true needs 2 (reading sub-group k+1 while k updates); "
       "set offload_optimizer.buffer_count to at least 6"},
      {6, true, false, ""},
      {5, false, true,
       "offload_optimizer.pipeline_write true needs 2 (writing sub-group k-1 back while k "
       "updates); set offload_optimizer.buffer_count to at least 6"},
      {7, false, true, ""},
      {8, true, true,
       "buffer_count: 8 makes 2 buffer sets (a set is 3 buffers: the fp32 master weights, "
       "exp_avg and exp_avg_sq of one sub-group), and offload_optimizer.pipeline_read and "
       "pipeline_write true need 3 (reading sub-group k+1 and writing k-1 back while k "
       "updates); set offload_optimizer.buffer_count to at least 9"},
      {9, true, true, ""},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::to_string(c.count) + (c.read ? " read" : "") + (c.write ? " write" : ""));
    for (const int stage : {1, 3}) {
      const std::string config =
          with_zero(R"({"stage": )" + std::to_string(stage) + R"(, "offload_optimizer": )" +
                    nvme(", \"buffer_count\": " + std::to_string(c.count) +
                         ", \"pipeline_read\": " + (c.read ? "true" : "false") +
                         ", \"pipeline_write\": " + (c.write ? "true" : "false")) +
                    "}");
      if (*c.message == '\0') {
        EXPECT_NO_THROW(parse(config));
      } else {
        EXPECT_CONTAINS(errors_of(config), c.message);
      }
    }
  }
  // Lamb keeps the same three arrays.
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "zero_allow_untested_optimizer": true,
          "optimizer": {"type": "Lamb"}, "zero_optimization": {"stage": 2, "offload_optimizer": )" +
                            nvme(R"(, "buffer_count": 2)") + "}}"),
                  "buffer_count: 2 is less than one buffer set");
}

TEST(Nvme, FastInitIsAcceptedAndSaysItChangesNothing) {
  const ResolvedConfig c = parse(
      with_zero(R"({"stage": 3, "offload_optimizer": )" + nvme(R"(, "fast_init": true)") + "}"));
  EXPECT_TRUE(c.zero.offload_optimizer.fast_init);
  const Entry* entry = find_entry(c, "zero_optimization.offload_optimizer.fast_init");
  ASSERT_NE(entry, nullptr);
  EXPECT_EQ(entry->value_text, "true");
  EXPECT_CONTAINS(entry->detail, "accepted, changes nothing");
  EXPECT_CONTAINS(entry->detail, "results are identical");
  EXPECT_CONTAINS(format_effective_config(c), "accepted, changes nothing");
}

TEST(Nvme, ParameterBuffersMustHoldSomething) {
  EXPECT_CONTAINS(errors_of(with_zero(R"({"stage": 3, "offload_param": )" +
                                      nvme(R"(, "buffer_count": 0)") + "}")),
                  "ds_config.json: zero_optimization.offload_param.buffer_count: 0 with "
                  "offload_param.device \"nvme\": parameter offload needs at least one staging "
                  "buffer");
  EXPECT_CONTAINS(errors_of(with_zero(R"({"stage": 3, "offload_param": )" +
                                      nvme(R"(, "buffer_size": 0)") + "}")),
                  "ds_config.json: zero_optimization.offload_param.buffer_size: 0 with "
                  "offload_param.device \"nvme\"");
}

TEST(Nvme, DeprecatedCpuOffloadStaysCpu) {
  const ResolvedConfig c = parse(with_zero(R"({"stage": 3, "cpu_offload": true})"));
  EXPECT_EQ(c.zero.offload_optimizer.device, OffloadDevice::kCpu);
}

// ---------------------------------------------------------------- aio (§6)

TEST(Aio, ValuesReachAioConfig) {
  const ResolvedConfig c = parse(with_zero(R"({"stage": 3, "offload_optimizer": )" + nvme() + "}",
                                           R"("aio": {"block_size": 262144, "queue_depth": 32,
      "intra_op_parallelism": 4, "single_submit": true, "overlap_events": false,
      "use_gds": false}, )"));
  EXPECT_EQ(c.aio.block_size, 262144);
  EXPECT_EQ(c.aio.queue_depth, 32);
  EXPECT_EQ(c.aio.intra_op_parallelism, 4);
  EXPECT_TRUE(c.aio.single_submit);
  EXPECT_FALSE(c.aio.overlap_events);
  EXPECT_EQ(find_entry(c, "aio.block_size")->detail, "") << "used: no note";
  // Absent or null: DeepSpeed's defaults.
  for (const char* top : {"", R"("aio": null, )"}) {
    const ResolvedConfig d =
        parse(with_zero(R"({"stage": 1, "offload_optimizer": )" + nvme() + "}", top));
    EXPECT_EQ(d.aio.block_size, 1048576);
    EXPECT_EQ(d.aio.queue_depth, 8);
    EXPECT_EQ(d.aio.intra_op_parallelism, 1);
    EXPECT_FALSE(d.aio.single_submit);
    EXPECT_TRUE(d.aio.overlap_events);
  }
}

TEST(Aio, ThreadCountAndIntraOpParallelismAreOneSetting) {
  const ResolvedConfig docs = parse(R"({"train_batch_size": 8, "aio": {"thread_count": 3}})");
  EXPECT_EQ(docs.aio.intra_op_parallelism, 3);
  const ResolvedConfig both =
      parse(R"({"train_batch_size": 8, "aio": {"thread_count": 3, "intra_op_parallelism": 3}})");
  EXPECT_EQ(both.aio.intra_op_parallelism, 3);
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "aio": {"intra_op_parallelism": 2,
      "thread_count": 5}})"),
                  "ds_config.json: aio.thread_count: 'aio.intra_op_parallelism' = 2 and "
                  "'aio.thread_count' = 5 are two spellings of one setting with different values");
}

TEST(Aio, InsideZeroOptimizationAsTheHfGuideWritesIt) {
  // The Hugging Face guide nests aio in zero_optimization; it is the top-level aio.
  const ResolvedConfig c =
      parse(with_zero(R"({"stage": 3, "offload_optimizer": )" + nvme() +
                      R"(, "aio": {"block_size": 262144, "thread_count": 2}})"));
  EXPECT_EQ(c.aio.block_size, 262144);
  EXPECT_EQ(c.aio.intra_op_parallelism, 2);
  EXPECT_EQ(find_entry(c, "aio.block_size")->detail, "written as zero_optimization.aio.block_size");
  EXPECT_EQ(find_entry(c, "aio.block_size")->source, Source::kFile);
  // Both places: one setting, so the values must agree.
  EXPECT_NO_THROW(parse(with_zero(
      R"({"stage": 3, "offload_optimizer": )" + nvme() + R"(, "aio": {"queue_depth": 16}})",
      R"("aio": {"queue_depth": 16}, )")));
  EXPECT_CONTAINS(errors_of(with_zero(R"({"stage": 3, "offload_optimizer": )" + nvme() +
                                          R"(, "aio": {"queue_depth": 16}})",
                                      R"("aio": {"queue_depth": 32}, )")),
                  "'aio.queue_depth' = 32 and 'zero_optimization.aio.queue_depth' = 16 are two "
                  "spellings of one setting with different values");
  // Its keys are checked as the top-level ones.
  EXPECT_CONTAINS(errors_of(with_zero(R"({"stage": 3, "aio": {"thread": 2}})")),
                  "zero_optimization.aio.thread: unknown key 'thread'");
  EXPECT_CONTAINS(errors_of(with_zero(R"({"stage": 3, "aio": {"block_size": 1000}})")),
                  "zero_optimization.aio.block_size: 1000 is not a multiple of 4096");
}

TEST(Aio, UseGdsIsRefusedByName) {
  const std::string errors = errors_of(R"({"train_batch_size": 8, "aio": {"use_gds": true}})");
  EXPECT_CONTAINS(errors, "not supported yet: aio.use_gds = true");
  EXPECT_CONTAINS(errors, "GPUDirect Storage");
  EXPECT_NO_THROW(parse(R"({"train_batch_size": 8, "aio": {"use_gds": false}})"));
}

TEST(Aio, Ranges) {
  const struct {
    const char* aio;
    const char* message;  // "" = accepted
  } cases[] = {
      {R"("block_size": 1000)",
       "ds_config.json: aio.block_size: 1000 is not a multiple of 4096: swap files are read and "
       "written with O_DIRECT, which needs requests aligned to 4096 bytes"},
      {R"("block_size": 1049600)", "aio.block_size: 1049600 is not a multiple of 4096"},
      {R"("block_size": 4096)", ""},
      {R"("block_size": 8192)", ""},
      {R"("block_size": 0)", "aio.block_size: expected an integer >= 1, got 0"},
      {R"("block_size": -4096)", "aio.block_size: expected an integer >= 1"},
      {R"("queue_depth": 0)", "aio.queue_depth: expected an integer 1..32768, got 0"},
      {R"("queue_depth": 40000)", "aio.queue_depth: expected an integer 1..32768, got 40000"},
      {R"("queue_depth": 32768)", ""},
      {R"("intra_op_parallelism": 0)",
       "aio.intra_op_parallelism: expected an integer 1..1024, got 0"},
      {R"("thread_count": 0)", "aio.thread_count: expected an integer 1..1024, got 0"},
      {R"("thread_count": 5000)", "aio.thread_count: expected an integer 1..1024, got 5000"},
      {R"("single_submit": "sometimes")", "aio.single_submit: expected"},
      {R"("threads": 2)", "aio.threads: unknown key"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.aio);
    const std::string config = with_zero(R"({"stage": 3, "offload_optimizer": )" + nvme() + "}",
                                         std::string(R"("aio": {)") + c.aio + "}, ");
    if (*c.message == '\0') {
      EXPECT_NO_THROW(parse(config));
    } else {
      EXPECT_CONTAINS(errors_of(config), c.message);
    }
  }
}

TEST(Aio, UnusedWithoutNvmeIsANoteNotAnError) {
  const char* aio = R"("aio": {"block_size": 262144, "queue_depth": 32, "thread_count": 2}, )";
  const std::string note =
      "unused: no offload device is \"nvme\" (DeepSpeed reads aio only for NVMe swapping)";
  for (const char* zero :
       {R"({"stage": 2})", R"({"stage": 3, "offload_optimizer": {"device": "cpu"}})"}) {
    SCOPED_TRACE(zero);
    const ResolvedConfig c = parse(with_zero(zero, aio));
    EXPECT_EQ(c.aio.block_size, 262144);
    EXPECT_EQ(find_entry(c, "aio.block_size")->detail, note);
    EXPECT_EQ(find_entry(c, "aio.queue_depth")->detail, note);
    EXPECT_EQ(find_entry(c, "aio.intra_op_parallelism")->detail,
              "written as aio.thread_count; " + note);
    // Keys the file does not write carry no note.
    EXPECT_EQ(find_entry(c, "aio.overlap_events")->detail, "");
    EXPECT_CONTAINS(format_effective_config(c), "unused: no offload device is");
  }
  // The values are still checked: a bad one is wrong whether or not it is read.
  EXPECT_CONTAINS(errors_of(with_zero(R"({"stage": 2})", R"("aio": {"block_size": 1000}, )")),
                  "aio.block_size: 1000 is not a multiple of 4096");
  // With NVMe on either offload the note goes.
  const ResolvedConfig used =
      parse(with_zero(R"({"stage": 3, "offload_param": )" + nvme() + "}", aio));
  EXPECT_EQ(find_entry(used, "aio.block_size")->detail, "");
}

TEST(Nvme, HfGuideInfinityConfigResolvesWithItsNvmePathReplaced) {
  // reference/hf-guide-configs/zero3_infinity_nvme.json, copied unchanged; nvme_path is the one
  // edit a user makes.
  std::string text = read_text(kData + "/hf_guide_zero3_infinity_nvme.json");
  for (std::size_t at; (at = text.find("/local_nvme")) != std::string::npos;)
    text.replace(at, std::string("/local_nvme").size(), "/tmp/zt-scratch/nvme");
  CommandLineOverrides flags;
  flags.fp16 = true;
  flags.learning_rate = 1e-3;
  flags.warmup_steps = 5;
  flags.per_device_train_batch_size = 4;
  const ResolvedConfig c = parse(text, 2, flags, ModelFacts{768}, 100);
  EXPECT_EQ(c.zero.stage, 3);
  EXPECT_TRUE(c.fp16.enabled);
  EXPECT_EQ(c.train_batch_size, 8);
  const OffloadConfig& o = c.zero.offload_optimizer;
  EXPECT_EQ(o.device, OffloadDevice::kNvme);
  EXPECT_EQ(o.nvme_path, "/tmp/zt-scratch/nvme");
  EXPECT_TRUE(o.pin_memory);
  EXPECT_EQ(o.buffer_count, 4);
  EXPECT_FALSE(o.fast_init);
  EXPECT_FALSE(o.pipeline_read);
  EXPECT_FALSE(o.pipeline_write);
  const OffloadConfig& p = c.zero.offload_param;
  EXPECT_EQ(p.device, OffloadDevice::kNvme);
  EXPECT_EQ(p.nvme_path, "/tmp/zt-scratch/nvme");
  EXPECT_TRUE(p.pin_memory);
  EXPECT_EQ(p.buffer_count, 5);
  EXPECT_EQ(p.buffer_size, 100000000);
  EXPECT_EQ(p.max_in_cpu, 1000000000);
  EXPECT_EQ(c.aio.block_size, 262144);
  EXPECT_EQ(c.aio.queue_depth, 32);
  EXPECT_EQ(c.aio.intra_op_parallelism, 1);
  EXPECT_FALSE(c.aio.single_submit);
  EXPECT_TRUE(c.aio.overlap_events);
  EXPECT_EQ(c.zero.sub_group_size, 1000000000);
  const std::string printed = format_effective_config(c);
  EXPECT_CONTAINS(printed, "[aio]");
  EXPECT_CONTAINS(printed, "\"/tmp/zt-scratch/nvme\"");
  EXPECT_EQ(printed.find("unused: no offload"), std::string::npos) << printed;
  // Unchanged (nvme_path /local_nvme, which need not exist where the config is checked) too.
  EXPECT_NO_THROW(parse(read_text(kData + "/hf_guide_zero3_infinity_nvme.json"), 2, flags,
                        ModelFacts{768}, 100));
}

TEST(Offload, NvmeOnlyKeysWithCpuAreRefusedUnlessDefault) {
  const struct {
    const char* section;
    const char* key_value;
    const char* message;  // "" = accepted
  } cases[] = {
      {"offload_optimizer", R"("nvme_path": "/local_nvme")",
       "zero_optimization.offload_optimizer.nvme_path: \"/local_nvme\" has no effect: "
       "offload_optimizer.device is \"cpu\" and DeepSpeed ignores nvme_path unless "
       "offload_optimizer.device is \"nvme\"; drop it"},
      {"offload_optimizer", R"("nvme_path": "")", "nvme_path: \"\" has no effect"},
      {"offload_optimizer", R"("nvme_path": null)", ""},
      {"offload_optimizer", R"("buffer_count": 8)",
       "offload_optimizer.buffer_count: 8 has no effect: offload_optimizer.device is \"cpu\""},
      {"offload_optimizer", R"("buffer_count": 4)", ""},
      {"offload_optimizer", R"("pipeline_read": true)",
       "offload_optimizer.pipeline_read: true has no effect"},
      {"offload_optimizer", R"("pipeline_read": false)", ""},
      {"offload_optimizer", R"("pipeline_write": true)",
       "offload_optimizer.pipeline_write: true has no effect"},
      {"offload_optimizer", R"("pipeline_write": false)", ""},
      {"offload_optimizer", R"("fast_init": true)",
       "offload_optimizer.fast_init: true has no effect"},
      {"offload_optimizer", R"("fast_init": false)", ""},
      {"offload_param", R"("nvme_path": "/local_nvme")",
       "zero_optimization.offload_param.nvme_path: \"/local_nvme\" has no effect: "
       "offload_param.device is \"cpu\" and DeepSpeed ignores nvme_path unless "
       "offload_param.device is \"nvme\""},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.section) + " " + c.key_value);
    const std::string config = with_zero(R"({"stage": 3, ")" + std::string(c.section) +
                                         R"(": {"device": "cpu", )" + c.key_value + "}}");
    if (*c.message == '\0') {
      EXPECT_NO_THROW(parse(config));
    } else {
      EXPECT_CONTAINS(errors_of(config), c.message);
    }
  }
}

TEST(Offload, KeysOfADisabledSectionAreRefusedUnlessDefault) {
  EXPECT_CONTAINS(
      errors_of(
          with_zero(R"({"stage": 3, "offload_optimizer": {"device": "none", "ratio": 0.5}})")),
      "zero_optimization.offload_optimizer.ratio: 0.5 has no effect: offload_optimizer.device is "
      "\"none\" (DeepSpeed ignores it then); set the device to \"cpu\" or drop it");
  EXPECT_CONTAINS(errors_of(with_zero(R"({"stage": 3, "offload_optimizer": {"ratio": 0.5}})")),
                  "ratio: 0.5 has no effect");  // {} means device "none"
  EXPECT_CONTAINS(
      errors_of(with_zero(
          R"({"stage": 3, "offload_optimizer": {"device": "none", "pin_memory": false}})")),
      "offload_optimizer.pin_memory: false has no effect");
  EXPECT_CONTAINS(
      errors_of(
          with_zero(R"({"stage": 3, "offload_param": {"device": "none", "buffer_size": 1000}})")),
      "offload_param.buffer_size: 1000 has no effect: offload_param.device is \"none\"");
  EXPECT_CONTAINS(errors_of(with_zero(
                      R"({"stage": 3, "offload_param": {"buffer_count": 2, "max_in_cpu": 9}})")),
                  "offload_param.max_in_cpu: 9 has no effect");
  EXPECT_CONTAINS(
      errors_of(
          with_zero(R"({"stage": 3, "offload_optimizer": {"device": "none", "buffer_count": 2}})")),
      "unless offload_optimizer.device is \"nvme\"");
  // Written at DeepSpeed's defaults: nothing to refuse.
  EXPECT_NO_THROW(parse(with_zero(R"({"stage": 2, "offload_optimizer": {"device": "none",
      "pin_memory": true, "ratio": 1.0, "buffer_count": 4, "pipeline_read": false},
      "offload_param": {"device": "none", "buffer_count": 5, "buffer_size": 1e8,
      "max_in_cpu": 1e9, "pin_memory": true, "nvme_path": null}})")));
}

TEST(Offload, PartialOffloadRatio) {
  const ResolvedConfig c =
      parse(with_zero(R"({"stage": 3, "offload_optimizer": {"device": "cpu", "ratio": 0.25}})"));
  EXPECT_DOUBLE_EQ(c.zero.offload_optimizer.ratio, 0.25);
  EXPECT_CONTAINS(
      errors_of(with_zero(R"({"stage": 2, "offload_optimizer": {"device": "cpu", "ratio": 0.5}})")),
      "Partial offloading only supported for ZeRO Stage 3.");
}

TEST(Offload, ParameterStagingBuffersAndPinnedMemory) {
  const ResolvedConfig c = parse(with_zero(R"({"stage": 3,
      "offload_param": {"device": "cpu", "buffer_count": 2, "buffer_size": 4096,
                        "max_in_cpu": 1000, "pin_memory": false},
      "offload_optimizer": {"device": "cpu", "pin_memory": false}})"));
  EXPECT_EQ(c.zero.offload_param.buffer_count, 2);
  EXPECT_EQ(c.zero.offload_param.buffer_size, 4096);
  EXPECT_EQ(c.zero.offload_param.max_in_cpu, 1000);
  EXPECT_FALSE(c.zero.offload_param.pin_memory);
  EXPECT_FALSE(c.zero.offload_optimizer.pin_memory);
  EXPECT_CONTAINS(
      errors_of(
          with_zero(R"({"stage": 3, "offload_param": {"device": "cpu", "buffer_count": 0}})")),
      "ds_config.json: zero_optimization.offload_param.buffer_count: 0 with "
      "offload_param.device \"cpu\": parameter offload needs at least one staging buffer");
  EXPECT_CONTAINS(errors_of(with_zero(
                      R"({"stage": 3, "offload_param": {"device": "cpu", "buffer_size": -1}})")),
                  "buffer_size: expected an integer >= 0, got -1");
  EXPECT_CONTAINS(errors_of(with_zero(
                      R"({"stage": 3, "offload_param": {"device": "cpu", "pin_memory": "auto"}})")),
                  "offload_param.pin_memory: \"auto\" cannot be resolved here");
}

TEST(Offload, SuperOffloadIsRefused) {
  EXPECT_CONTAINS(
      errors_of(with_zero(
          R"({"stage": 3, "offload_optimizer": {"device": "cpu", "super_offload": true}})")),
      "not supported yet: zero_optimization.offload_optimizer.super_offload = true");
  EXPECT_NO_THROW(parse(with_zero(
      R"({"stage": 3, "offload_optimizer": {"device": "cpu", "cpuadam_cores_perc": 0.5}})")));
}

TEST(Offload, DeprecatedCpuOffloadBooleans) {
  const ResolvedConfig opt = parse(with_zero(R"({"stage": 2, "cpu_offload": true})"));
  EXPECT_EQ(opt.zero.offload_optimizer.device, OffloadDevice::kCpu);
  EXPECT_EQ(opt.zero.offload_param.device, OffloadDevice::kNone);
  EXPECT_TRUE(opt.zero.offload_optimizer.pin_memory);
  const Entry* device = find_entry(opt, "zero_optimization.offload_optimizer.device");
  ASSERT_NE(device, nullptr);
  EXPECT_EQ(device->value_text, "\"cpu\"");
  EXPECT_EQ(device->source, Source::kDerived);
  EXPECT_EQ(device->detail, "deprecated zero_optimization.cpu_offload: true");

  const ResolvedConfig both =
      parse(with_zero(R"({"stage": 3, "cpu_offload": true, "cpu_offload_param": true})"));
  EXPECT_EQ(both.zero.offload_optimizer.device, OffloadDevice::kCpu);
  EXPECT_EQ(both.zero.offload_param.device, OffloadDevice::kCpu);
  EXPECT_EQ(both.zero.offload_param.buffer_count, 5);

  const ResolvedConfig off =
      parse(with_zero(R"({"stage": 3, "cpu_offload": false, "cpu_offload_param": false})"));
  EXPECT_EQ(off.zero.offload_optimizer.device, OffloadDevice::kNone);
  EXPECT_EQ(off.zero.offload_param.device, OffloadDevice::kNone);

  // The stage rules name the deprecated key the device came from.
  EXPECT_CONTAINS(errors_of(with_zero(R"({"stage": 0, "cpu_offload": true})")),
                  "ds_config.json: zero_optimization.cpu_offload: offload to \"cpu\" needs ZeRO");
  EXPECT_CONTAINS(errors_of(with_zero(R"({"stage": 2, "cpu_offload_param": true})")),
                  "ds_config.json: zero_optimization.cpu_offload_param: offload to \"cpu\" needs "
                  "ZeRO stage 3");

  // Together with the replacing section: refused even when false, and against a null section.
  for (const char* zero : {
           R"({"stage": 2, "cpu_offload": true, "offload_optimizer": {"device": "cpu"}})",
           R"({"stage": 2, "offload_optimizer": {"device": "cpu"}, "cpu_offload": false})",
           R"({"stage": 2, "cpu_offload": false, "offload_optimizer": null})",
       }) {
    SCOPED_TRACE(zero);
    EXPECT_CONTAINS(errors_of(with_zero(zero)),
                    "Cannot provide deprecated parameter 'cpu_offload' and replacing parameter "
                    "'offload_optimizer' together");
  }
  EXPECT_CONTAINS(
      errors_of(with_zero(R"({"stage": 3, "cpu_offload_param": false, "offload_param": {}})")),
      "Cannot provide deprecated parameter 'cpu_offload_param' and replacing parameter "
      "'offload_param' together");

  // cpu_offload_use_pin_memory: DeepSpeed only warns; the value is not applied.
  const ResolvedConfig pin =
      parse(with_zero(R"({"stage": 2, "cpu_offload": true, "cpu_offload_use_pin_memory": false})"));
  EXPECT_TRUE(pin.zero.offload_optimizer.pin_memory);
  const Entry* pin_entry = find_entry(pin, "zero_optimization.cpu_offload_use_pin_memory");
  ASSERT_NE(pin_entry, nullptr);
  EXPECT_CONTAINS(pin_entry->detail, "not applied");
}

TEST(Offload, ClientOptimizerNeedsForceDsCpuOptimizerOff) {
  const char* no_optimizer = R"({"train_batch_size": 8, %s
      "zero_optimization": {"stage": 2, "offload_optimizer": {"device": "cpu"}}})";
  char buffer[512];
  std::snprintf(buffer, sizeof buffer, no_optimizer, "");
  EXPECT_CONTAINS(errors_of(buffer),
                  "ds_config.json: zero_force_ds_cpu_optimizer: You are using ZeRO-Offload with a "
                  "client provided optimizer (the HF Trainer's AdamW: the config has no "
                  "\"optimizer\" section)");
  EXPECT_CONTAINS(errors_of(buffer), "or set <\"zero_force_ds_cpu_optimizer\": false>");
  std::snprintf(buffer, sizeof buffer, no_optimizer, R"("zero_force_ds_cpu_optimizer": true,)");
  EXPECT_CONTAINS(errors_of(buffer), "ZeRO-Offload with a client provided optimizer");
  std::snprintf(buffer, sizeof buffer, no_optimizer, R"("zero_force_ds_cpu_optimizer": false,)");
  const ResolvedConfig forced_off = parse(buffer);
  EXPECT_TRUE(forced_off.optimizer_from_trainer);
  EXPECT_FALSE(forced_off.zero_force_ds_cpu_optimizer);
  EXPECT_EQ(forced_off.optimizer.type, OptimizerType::kAdamW);
  EXPECT_EQ(forced_off.zero.offload_optimizer.device, OffloadDevice::kCpu);
  // An Adam/AdamW section is DeepSpeedCPUAdam: no error, whatever zero_force_ds_cpu_optimizer.
  for (const char* type : {"Adam", "AdamW"}) {
    SCOPED_TRACE(type);
    const ResolvedConfig c = parse(R"({"train_batch_size": 8, "optimizer": {"type": ")" +
                                   std::string(type) + R"("}, "zero_optimization": {"stage": 2,
        "offload_optimizer": {"device": "cpu"}}})");
    EXPECT_FALSE(c.optimizer_from_trainer);
    EXPECT_TRUE(c.zero_force_ds_cpu_optimizer);
  }
  // Without offload the Trainer's optimizer needs nothing.
  EXPECT_NO_THROW(parse(R"({"train_batch_size": 8, "zero_optimization": {"stage": 2}})"));
}

TEST(Offload, ContiguousGradientsFalseWithOptimizerOffloadAtStage1Or2) {
  EXPECT_CONTAINS(errors_of(with_zero(R"({"stage": 2, "contiguous_gradients": false,
      "offload_optimizer": {"device": "cpu"}})")),
                  "zero_optimization.contiguous_gradients: false with offload_optimizer at stage "
                  "2: DeepSpeed silently forces contiguous_gradients true");
  EXPECT_NO_THROW(parse(with_zero(R"({"stage": 3, "contiguous_gradients": false,
      "offload_optimizer": {"device": "cpu"}})")));
  EXPECT_NO_THROW(parse(with_zero(R"({"stage": 2, "contiguous_gradients": false})")));
}

TEST(Offload, EffectiveConfigPrintsTheOffloadKeys) {
  const ResolvedConfig c = parse(with_zero(
      R"({"stage": 3, "offload_optimizer": {"device": "cpu"}, "offload_param": {"device": "cpu"}})"));
  const std::string printed = format_effective_config(c);
  for (const char* key :
       {"[zero_optimization.offload_optimizer]", "[zero_optimization.offload_param]", "pin_memory",
        "buffer_size", "max_in_cpu", "ratio"}) {
    EXPECT_CONTAINS(printed, key);
  }
  EXPECT_EQ(find_entry(c, "zero_optimization.offload_param.device")->source, Source::kFile);
  EXPECT_EQ(find_entry(c, "zero_optimization.offload_param.pin_memory")->source, Source::kDefault);
}

// ---------------------------------------------------------------- batch triple

struct BatchCase {
  const char* keys;
  int world;
  std::int64_t train, micro, gas;
};

TEST(BatchTriple, EveryRowOfDeepSpeedsTable) {
  const BatchCase cases[] = {
      {R"("train_batch_size": 32, "train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2)",
       4, 32, 4, 2},
      {R"("train_batch_size": 32, "train_micro_batch_size_per_gpu": 4)", 4, 32, 4, 2},
      {R"("train_batch_size": 32, "gradient_accumulation_steps": 2)", 4, 32, 4, 2},
      {R"("train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 2)", 4, 32, 4, 2},
      {R"("train_batch_size": 32)", 4, 32, 8, 1},
      {R"("train_micro_batch_size_per_gpu": 4)", 4, 16, 4, 1},
  };
  for (const BatchCase& c : cases) {
    SCOPED_TRACE(c.keys);
    const ResolvedConfig r = parse(std::string("{") + c.keys + "}", c.world);
    EXPECT_EQ(r.train_batch_size, c.train);
    EXPECT_EQ(r.train_micro_batch_size_per_gpu, c.micro);
    EXPECT_EQ(r.gradient_accumulation_steps, c.gas);
  }
  EXPECT_CONTAINS(errors_of(R"({"gradient_accumulation_steps": 2})"),
                  "Either train_batch_size or train_micro_batch_size_per_gpu needs to be provided");
  EXPECT_CONTAINS(errors_of(R"({})"), "Either train_batch_size or train_micro_batch_size_per_gpu");
}

TEST(BatchTriple, InconsistentShowsTheNumbers) {
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 10})", 4),
                  "Check batch related parameters. train_batch_size is not equal to "
                  "micro_batch_per_gpu * gradient_acc_step * world_size 10 != 2 * 1 * 4");
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 30, "train_micro_batch_size_per_gpu": 4,
      "gradient_accumulation_steps": 2})",
                            4),
                  "30 != 4 * 2 * 4");
  // Integer division first, then the assertion (DeepSpeed's order).
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 36, "train_micro_batch_size_per_gpu": 4})", 4),
                  "36 != 4 * 2 * 4");
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 2})", 4), "2 != 0 * 1 * 4");
}

// ---------------------------------------------------------------- auto resolution

const char* kAllAuto = R"({
  "train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
  "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
  "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto",
                                            "weight_decay": "auto"}},
  "scheduler": {"type": "WarmupDecayLR", "params": {"warmup_min_lr": "auto",
      "warmup_max_lr": "auto", "warmup_num_steps": "auto", "total_num_steps": "auto"}},
  "fp16": {"enabled": "auto"}, "bf16": {"enabled": "auto"},
  "zero_optimization": {"stage": 3, "reduce_bucket_size": "auto",
      "stage3_prefetch_bucket_size": "auto", "stage3_param_persistence_threshold": "auto"}})";

TEST(Auto, FromFlags) {
  CommandLineOverrides f;
  f.learning_rate = 1e-4;
  f.adam_beta1 = 0.8;
  f.adam_beta2 = 0.95;
  f.adam_epsilon = 1e-6;
  f.weight_decay = 0.01;
  f.warmup_steps = 10;
  f.max_steps = 500;
  f.per_device_train_batch_size = 2;
  f.gradient_accumulation_steps = 3;
  f.max_grad_norm = 0.5;
  const ResolvedConfig c = parse(kAllAuto, 4, f, ModelFacts{100});
  EXPECT_EQ(c.train_micro_batch_size_per_gpu, 2);
  EXPECT_EQ(c.gradient_accumulation_steps, 3);
  EXPECT_EQ(c.train_batch_size, 24);
  EXPECT_DOUBLE_EQ(c.gradient_clipping, 0.5);
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 1e-4);
  EXPECT_DOUBLE_EQ(c.optimizer.beta1, 0.8);
  EXPECT_DOUBLE_EQ(c.optimizer.beta2, 0.95);
  EXPECT_DOUBLE_EQ(c.optimizer.eps, 1e-6);
  EXPECT_DOUBLE_EQ(c.optimizer.weight_decay, 0.01);
  EXPECT_DOUBLE_EQ(c.scheduler.warmup_min_lr, 0.0);
  EXPECT_DOUBLE_EQ(c.scheduler.warmup_max_lr, 1e-4);
  EXPECT_EQ(c.scheduler.warmup_num_steps, 10);
  EXPECT_EQ(c.scheduler.total_num_steps, 500);
  EXPECT_EQ(c.zero.reduce_bucket_size, 10000);
  EXPECT_EQ(c.zero.prefetch_bucket_size, 9000);
  EXPECT_EQ(c.zero.param_persistence_threshold, 1000);
  const Entry* lr = find_entry(c, "optimizer.params.lr");
  ASSERT_NE(lr, nullptr);
  EXPECT_EQ(lr->source, Source::kAutoFromFlag);
  EXPECT_EQ(lr->detail, "--learning_rate");
  EXPECT_EQ(find_entry(c, "zero_optimization.stage3_prefetch_bucket_size")->source,
            Source::kAutoModel);
}

TEST(Auto, TrainerDefaultsWithoutFlags) {
  CommandLineOverrides f;
  f.warmup_steps = 5;  // DeepSpeed's WarmupDecayLR needs warmup_num_steps > 0
  const ResolvedConfig c = parse(kAllAuto, 2, f, ModelFacts{64}, 1234);
  EXPECT_EQ(c.train_micro_batch_size_per_gpu, 8);
  EXPECT_EQ(c.gradient_accumulation_steps, 1);
  EXPECT_EQ(c.train_batch_size, 16);
  EXPECT_DOUBLE_EQ(c.gradient_clipping, 1.0);
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 5e-5);
  EXPECT_DOUBLE_EQ(c.optimizer.beta1, 0.9);
  EXPECT_DOUBLE_EQ(c.optimizer.beta2, 0.999);
  EXPECT_DOUBLE_EQ(c.optimizer.eps, 1e-8);
  EXPECT_DOUBLE_EQ(c.optimizer.weight_decay, 0.0);
  EXPECT_EQ(c.scheduler.total_num_steps, 1234);  // run length from the caller
  EXPECT_FALSE(c.fp16.enabled);
  EXPECT_FALSE(c.bf16.enabled);
  EXPECT_EQ(find_entry(c, "optimizer.params.lr")->source, Source::kAutoTrainerDefault);
  EXPECT_EQ(find_entry(c, "scheduler.params.total_num_steps")->source, Source::kDerived);
  EXPECT_EQ(find_entry(c, "train_batch_size")->source, Source::kAutoTrainerDefault);
}

TEST(Auto, WarmupZeroFromTrainerDefaultIsRefusedLikeDeepSpeed) {
  EXPECT_CONTAINS(errors_of(kAllAuto, 1, {}, ModelFacts{64}, 100),
                  "scheduler.params.warmup_num_steps: expected an integer >= 1, got 0");
}

TEST(Auto, NeedsRunLengthAndHiddenSize) {
  CommandLineOverrides f;
  f.warmup_steps = 5;
  const std::string errors = errors_of(kAllAuto, 1, f, ModelFacts{0}, 0);
  EXPECT_CONTAINS(errors, "scheduler.params.total_num_steps: \"auto\" needs --max_steps");
  EXPECT_CONTAINS(errors,
                  "zero_optimization.reduce_bucket_size: \"auto\" needs the model's "
                  "hidden_size");
}

TEST(Auto, Stage3KeysAtStage2TakeTheDefault) {
  const ResolvedConfig c = parse(R"({"train_batch_size": 8, "zero_optimization": {"stage": 2,
      "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto"}})",
                                 1, {}, ModelFacts{10});
  EXPECT_EQ(c.zero.reduce_bucket_size, 100);
  EXPECT_EQ(c.zero.prefetch_bucket_size, 50000000);
  EXPECT_EQ(find_entry(c, "zero_optimization.stage3_prefetch_bucket_size")->source,
            Source::kAutoDefault);
}

TEST(Auto, FlagAgainstConcreteValueIsAMismatch) {
  CommandLineOverrides f;
  f.learning_rate = 1e-4;
  f.max_grad_norm = 2.0;
  const std::string errors = errors_of(R"({"train_batch_size": 8, "gradient_clipping": 1.0,
      "optimizer": {"type": "AdamW", "params": {"lr": 3e-4}}})",
                                       1, f);
  EXPECT_CONTAINS(errors,
                  "optimizer.params.lr: the config says 0.0003 but --learning_rate says 0.0001");
  EXPECT_CONTAINS(errors, "gradient_clipping: the config says 1.0 but --max_grad_norm says 2.0");
  // Same value: fine. No flag: the config wins silently (no mismatch to report).
  f.learning_rate = 3e-4;
  f.max_grad_norm = 1.0;
  EXPECT_NO_THROW(parse(R"({"train_batch_size": 8, "gradient_clipping": 1.0,
      "optimizer": {"type": "AdamW", "params": {"lr": 3e-4}}})",
                        1, f));
  EXPECT_NO_THROW(parse(R"({"train_batch_size": 8, "gradient_clipping": 0.3})"));
}

TEST(Auto, FlagFillsAnAbsentKey) {
  CommandLineOverrides f;
  f.per_device_train_batch_size = 4;
  f.max_grad_norm = 0.25;
  const ResolvedConfig c = parse(R"({"optimizer": {"type": "AdamW"}})", 2, f);
  EXPECT_EQ(c.train_micro_batch_size_per_gpu, 4);
  EXPECT_EQ(c.train_batch_size, 8);
  EXPECT_DOUBLE_EQ(c.gradient_clipping, 0.25);
  EXPECT_EQ(find_entry(c, "gradient_clipping")->source, Source::kFlag);
}

// ---------------------------------------------------------------- schedulers

TEST(Schedulers, EachTypesParams) {
  const ResolvedConfig warmup = parse(R"({"train_batch_size": 8, "optimizer": {"type": "AdamW",
      "params": {"lr": 0.002}}, "scheduler": {"type": "WarmupLR", "params": {"warmup_min_lr": 0.0001,
      "warmup_num_steps": 50, "warmup_type": "linear"}}})");
  EXPECT_EQ(warmup.scheduler.type, SchedulerType::kWarmupLR);
  EXPECT_DOUBLE_EQ(warmup.scheduler.warmup_min_lr, 1e-4);
  EXPECT_DOUBLE_EQ(warmup.scheduler.warmup_max_lr, 0.002);  // None -> optimizer lr
  EXPECT_EQ(warmup.scheduler.warmup_num_steps, 50);
  EXPECT_EQ(warmup.scheduler.warmup_type, "linear");

  const ResolvedConfig decay = parse(R"({"train_batch_size": 8, "scheduler": {"type":
      "WarmupDecayLR", "params": {"total_num_steps": 900}}})");
  EXPECT_EQ(decay.scheduler.total_num_steps, 900);
  EXPECT_DOUBLE_EQ(decay.scheduler.warmup_max_lr, 0.001);
  EXPECT_EQ(decay.scheduler.warmup_num_steps, 1000);
  EXPECT_EQ(decay.scheduler.warmup_type, "log");

  const ResolvedConfig cosine = parse(R"({"train_batch_size": 8, "scheduler": {"type":
      "WarmupCosineLR", "params": {"total_num_steps": 800, "warmup_min_ratio": 0.1,
      "cos_min_ratio": 0.01, "warmup_num_steps": 20}}})");
  EXPECT_EQ(cosine.scheduler.type, SchedulerType::kWarmupCosineLR);
  EXPECT_DOUBLE_EQ(cosine.scheduler.warmup_min_ratio, 0.1);
  EXPECT_DOUBLE_EQ(cosine.scheduler.cos_min_ratio, 0.01);

  const ResolvedConfig one_cycle = parse(R"({"train_batch_size": 8, "scheduler": {"type":
      "OneCycle", "params": {"cycle_min_lr": 0.0001, "cycle_max_lr": 0.001, "decay_lr_rate": 0.5,
      "cycle_first_step_size": 100, "cycle_first_stair_count": 3, "decay_step_size": 10,
      "cycle_momentum": false, "cycle_min_mom": 0.85, "cycle_max_mom": 0.95,
      "decay_mom_rate": 0.1}}})");
  const SchedulerConfig& s = one_cycle.scheduler;
  EXPECT_EQ(s.type, SchedulerType::kOneCycle);
  EXPECT_DOUBLE_EQ(s.cycle_min_lr, 1e-4);
  EXPECT_DOUBLE_EQ(s.cycle_max_lr, 1e-3);
  EXPECT_DOUBLE_EQ(s.decay_lr_rate, 0.5);
  EXPECT_EQ(s.cycle_first_step_size, 100);
  EXPECT_EQ(s.cycle_second_step_size, 100);  // None -> first
  EXPECT_EQ(s.cycle_second_stair_count, 3);
  EXPECT_EQ(s.decay_step_size, 10);
  EXPECT_FALSE(s.cycle_momentum);
  EXPECT_DOUBLE_EQ(s.cycle_min_mom, 0.85);
  EXPECT_DOUBLE_EQ(s.cycle_max_mom, 0.95);
  EXPECT_DOUBLE_EQ(s.decay_mom_rate, 0.1);

  const ResolvedConfig range = parse(R"({"train_batch_size": 8, "scheduler": {"type":
      "LRRangeTest", "params": {"lr_range_test_min_lr": 0.00001, "lr_range_test_step_size": 10,
      "lr_range_test_step_rate": 2.0, "lr_range_test_staircase": true}}})");
  EXPECT_EQ(range.scheduler.type, SchedulerType::kLRRangeTest);
  EXPECT_DOUBLE_EQ(range.scheduler.lr_range_test_min_lr, 1e-5);
  EXPECT_EQ(range.scheduler.lr_range_test_step_size, 10);
  EXPECT_DOUBLE_EQ(range.scheduler.lr_range_test_step_rate, 2.0);
  EXPECT_TRUE(range.scheduler.lr_range_test_staircase);
}

TEST(Schedulers, Errors) {
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "scheduler": {"type": "OneCycle",
      "params": {"cycle_min_lr": 0.1}}})"),
                  "scheduler.params.cycle_max_lr: required by OneCycle");
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "scheduler": {"type": "WarmupCosineLR",
      "params": {}}})"),
                  "total_num_steps: required by WarmupCosineLR");
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "scheduler": {"type": "WarmupLR",
      "params": {"cycle_min_lr": 0.1}}})"),
                  "cycle_min_lr: not a parameter of WarmupLR");
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "scheduler": {"type": "WarmupLR"}})"),
                  "scheduler.params: required when scheduler.type is set");
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "scheduler": {"type": "StepLR",
      "params": {}}})"),
                  "scheduler.type: expected one of LRRangeTest|OneCycle|WarmupLR");
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8, "scheduler": {"type": "WarmupLR",
      "params": {"warmup_type": "cubic"}}})"),
                  "warmup_type: expected one of log|linear");
}

// ---------------------------------------------------------------- result and print

TEST(Result, DefaultsAndPrint) {
  const ResolvedConfig c = parse(kMinimal, 2);
  EXPECT_EQ(c.steps_per_print, 10);
  EXPECT_EQ(find_entry(c, "steps_per_print")->source, Source::kDefault);
  EXPECT_DOUBLE_EQ(c.gradient_clipping, 1.0);
  EXPECT_EQ(c.zero.stage, 0);
  EXPECT_EQ(c.zero.offload_param.buffer_count, 5);
  EXPECT_EQ(c.zero.offload_optimizer.buffer_count, 4);
  EXPECT_TRUE(c.zero.offload_optimizer.pin_memory);
  EXPECT_EQ(c.zero.model_persistence_threshold, INT64_MAX);
  EXPECT_EQ(c.aio.block_size, 1048576);
  EXPECT_EQ(c.checkpoint.tag_validation, "Warn");
  EXPECT_EQ(c.communication_data_type, DataType::kFp32);
  EXPECT_FALSE(c.fp16.dynamic_scaler_args_given);
  const std::string text = format_effective_config(c);
  // Every honoured key appears.
  for (const KeySpec& spec : all_key_specs()) {
    if (spec.support != Support::kHonoured || spec.kind == ValueKind::kSection ||
        !spec.alias_of.empty() || spec.path.compare(0, 10, "scheduler.") == 0 ||
        !spec.applies_to.empty()) {
      continue;
    }
    const std::string last = spec.path.substr(spec.path.rfind('.') + 1);
    EXPECT_NE(text.find(last), std::string::npos) << spec.path << "\n" << text;
  }
  EXPECT_CONTAINS(text, "[zero_optimization.offload_param]");
  EXPECT_CONTAINS(text, "train_batch_size");
  EXPECT_CONTAINS(text, "derived");
}

TEST(Result, Fp16SubKeysAreStored) {
  const ResolvedConfig c = parse(R"({"train_batch_size": 8, "fp16": {"enabled": false,
      "loss_scale": 128, "initial_scale_power": 12, "loss_scale_window": 200, "hysteresis": 4,
      "min_loss_scale": 2, "consecutive_hysteresis": true}})");
  EXPECT_DOUBLE_EQ(c.fp16.loss_scale, 128);
  EXPECT_EQ(c.fp16.initial_scale_power, 12);
  EXPECT_EQ(c.fp16.loss_scale_window, 200);
  EXPECT_EQ(c.fp16.hysteresis, 4);
  EXPECT_DOUBLE_EQ(c.fp16.min_loss_scale, 2);
  EXPECT_TRUE(c.fp16.consecutive_hysteresis);
  EXPECT_TRUE(c.fp16.dynamic_scaler_args_given);
}

}  // namespace
}  // namespace zt::config

namespace zt::config {
namespace {

TEST(Parsing, HjsonCommentsAndTrailingCommas) {
  const ResolvedConfig c = parse(R"({
    // DeepSpeed reads configs with hjson
    "train_batch_size": 8, /* block
    comment */ "optimizer": {"type": "AdamW", "params": {"lr": 0.001,}},
    "csv_monitor": {"output_path": "/runs//a /* not a comment */"},
  })");
  EXPECT_EQ(c.train_batch_size, 8);
  EXPECT_EQ(c.csv_monitor.output_path, "/runs//a /* not a comment */");
  EXPECT_DOUBLE_EQ(c.optimizer.lr, 0.001);
}

TEST(Parsing, AmpAutoTakesTrainerValues) {
  const ResolvedConfig c = parse(R"({"train_batch_size": 8,
      "amp": {"enabled": "auto", "opt_level": "auto"}})");
  const Entry* level = find_entry(c, "amp.opt_level");
  ASSERT_NE(level, nullptr);
  EXPECT_EQ(level->value_text, "\"O1\"");
}

TEST(Parsing, ListOfSectionsAndUserNamedGroups) {
  EXPECT_NO_THROW(parse(R"({"train_batch_size": 8,
      "tensor_parallel": {"partition_config": {"layer_specs": [{"patterns": ["q_proj"],
          "partition_type": "column"}]}},
      "compression_training": {"sparse_pruning": {"shared_parameters": {"enabled": false},
          "different_groups": {"sp1": {"params": {"dense_ratio": 0.5}, "modules": ["fc"]}}}}})"));
  EXPECT_CONTAINS(errors_of(R"({"train_batch_size": 8,
      "tensor_parallel": {"partition_config": {"layer_specs": [{"partition_typ": "row"}]}}})"),
                  "tensor_parallel.partition_config.layer_specs[0].partition_typ: unknown key "
                  "'partition_typ'; did you mean 'partition_type'?");
}

// ---------------------------------------------------------------- precision (keys.md §4)

std::string with_batch(const std::string& body) {
  return std::string(R"({"train_batch_size": 8, )") + body + "}";
}

TEST(Precision, Fp32ByDefault) {
  const ResolvedConfig c = parse(kMinimal);
  EXPECT_EQ(c.precision.training_dtype, DataType::kFp32);
  EXPECT_EQ(c.precision.grad_accum_dtype, DataType::kFp32);
  EXPECT_EQ(c.communication_data_type, DataType::kFp32);
  EXPECT_FALSE(c.precision.check_grad_overflow);
  EXPECT_FALSE(c.precision.loss_scaler.dynamic);
  EXPECT_EQ(c.precision.loss_scaler.static_scale, 1.0);
  const Entry* comm = find_entry(c, "communication_data_type");
  ASSERT_NE(comm, nullptr);
  EXPECT_EQ(comm->value_text, "\"fp32\"");
  EXPECT_EQ(comm->source, Source::kDerived);
}

TEST(Precision, Fp16WithDynamicKeysUsesThem) {
  const ResolvedConfig c = parse(with_batch(R"("fp16": {"enabled": true,
      "initial_scale_power": 12, "loss_scale_window": 200, "hysteresis": 4,
      "min_loss_scale": 2, "consecutive_hysteresis": true}, "zero_optimization": {"stage": 2})"));
  EXPECT_EQ(c.precision.training_dtype, DataType::kFp16);
  EXPECT_TRUE(c.precision.check_grad_overflow);
  const LossScalerValues& s = c.precision.loss_scaler;
  EXPECT_TRUE(s.dynamic);
  EXPECT_EQ(s.init_scale, 4096.0);
  EXPECT_EQ(s.window, 200);
  EXPECT_EQ(s.min_scale, 2.0);
  EXPECT_EQ(s.delayed_shift, 4);
  EXPECT_TRUE(s.consecutive_hysteresis);
  EXPECT_TRUE(s.raise_error_at_min_scale);
  // DeepSpeed's None: the model dtype for the reduction and, under ZeRO, the accumulation.
  EXPECT_EQ(c.communication_data_type, DataType::kFp16);
  EXPECT_EQ(c.precision.grad_accum_dtype, DataType::kFp16);
  EXPECT_EQ(find_entry(c, "communication_data_type")->value_text, "\"fp16\"");
  EXPECT_EQ(find_entry(c, "communication_data_type")->detail, "None: follows the training dtype");
}

TEST(Precision, Fp16WithoutDynamicKeysTakesZeroScalerClassDefaults) {
  // deepspeed.md §1.6: no dynamic key written -> DynamicLossScaler() = 2^32, 1000, min 1, hyst 1.
  // loss_scale is not one of the dynamic keys.
  for (const char* fp16 :
       {R"("fp16": {"enabled": true})", R"("fp16": {"enabled": true, "loss_scale": 0})"}) {
    SCOPED_TRACE(fp16);
    const ResolvedConfig c = parse(with_batch(fp16));
    const LossScalerValues& s = c.precision.loss_scaler;
    EXPECT_TRUE(s.dynamic);
    EXPECT_EQ(s.init_scale, 4294967296.0);
    EXPECT_EQ(s.window, 1000);
    EXPECT_EQ(s.min_scale, 1.0);
    EXPECT_EQ(s.delayed_shift, 1);
    EXPECT_FALSE(s.consecutive_hysteresis);
    // The printout shows what ZeRO really uses.
    const Entry* power = find_entry(c, "fp16.initial_scale_power");
    ASSERT_NE(power, nullptr);
    EXPECT_EQ(power->value_text, "32");
    EXPECT_EQ(power->source, Source::kDerived);
    EXPECT_CONTAINS(power->detail, "no dynamic-scaler key given");
    EXPECT_EQ(find_entry(c, "fp16.hysteresis")->value_text, "1");
  }
  // One dynamic key is enough to switch to the fp16 key defaults (65536, hysteresis 2).
  const ResolvedConfig c =
      parse(with_batch(R"("fp16": {"enabled": true, "consecutive_hysteresis": false})"));
  EXPECT_EQ(c.precision.loss_scaler.init_scale, 65536.0);
  EXPECT_EQ(c.precision.loss_scaler.delayed_shift, 2);
  EXPECT_EQ(find_entry(c, "fp16.initial_scale_power")->value_text, "16");
}

TEST(Precision, LossScalerValuesFunction) {
  Fp16Config f;
  EXPECT_FALSE(loss_scaler_values(f).dynamic);  // disabled: static 1.0
  EXPECT_EQ(loss_scaler_values(f).static_scale, 1.0);
  f.enabled = true;
  f.loss_scale = 64;
  EXPECT_FALSE(loss_scaler_values(f).dynamic);
  EXPECT_EQ(loss_scaler_values(f).static_scale, 64.0);
  f.loss_scale = 0;
  f.dynamic_scaler_args_given = true;
  f.initial_scale_power = 10;
  EXPECT_EQ(loss_scaler_values(f).init_scale, 1024.0);
  EXPECT_EQ(loss_scaler_values(f).delayed_shift, 2);
}

TEST(Precision, Fp16StaticScale) {
  // DeepSpeed checks window/min only when dynamic: a static scale accepts them as written.
  const ResolvedConfig c = parse(with_batch(
      R"("fp16": {"enabled": true, "loss_scale": 128.5, "loss_scale_window": 0, "min_loss_scale": 0})"));
  EXPECT_FALSE(c.precision.loss_scaler.dynamic);
  EXPECT_EQ(c.precision.loss_scaler.static_scale, 128.5);
  EXPECT_TRUE(c.precision.check_grad_overflow);  // ZeRO still skips overflowed fp16 steps
  EXPECT_CONTAINS(find_entry(c, "fp16.loss_scale")->detail, "static loss scale");
}

TEST(Precision, Fp16StrictnessRules) {
  const struct {
    const char* fp16;
    const char* error;
  } cases[] = {
      {R"({"enabled": true, "loss_scale_window": 0})",
       "fp16.loss_scale_window: must be > 0 when fp16 is enabled with dynamic loss scaling"},
      {R"({"enabled": true, "min_loss_scale": 0})", "fp16.min_loss_scale: must be > 0"},
      {R"({"enabled": true, "hysteresis": 0})", "fp16.hysteresis: must be > 0"},
      {R"({"enabled": true, "initial_scale_power": 2000})", "beyond the largest finite"},
      {R"({"loss_scale_window": 1.5})", "fp16.loss_scale_window: expected an integer"},
      {R"({"loss_scale_window": true})", "fp16.loss_scale_window: expected an integer"},
      {R"({"min_loss_scale": 0.5})", "fp16.min_loss_scale: expected an integer"},
      {R"({"loss_scale": -1})", "fp16.loss_scale: expected a number >= 0"},
      {R"({"loss_scale": true})", "fp16.loss_scale: expected a number"},
      {R"({"loss_scale": ".inf"})", "fp16.loss_scale: expected a number"},
      {R"({"hysteresis": "two"})", "fp16.hysteresis: expected an integer"},
      {R"({"enabled": 2})", "fp16.enabled: expected a bool"},
      {R"({"loss_scale_windows": 10})", "did you mean 'loss_scale_window'?"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.fp16);
    EXPECT_CONTAINS(errors_of(with_batch(std::string("\"fp16\": ") + c.fp16)), c.error);
  }
  // Disabled (or static): the dynamic-only rules do not apply, as in DeepSpeed.
  EXPECT_NO_THROW(parse(with_batch(
      R"("fp16": {"enabled": false, "loss_scale_window": 0, "min_loss_scale": 0, "hysteresis": 0})")));
  // Lax coercions DeepSpeed's pydantic accepts.
  const ResolvedConfig c = parse(with_batch(
      R"("fp16": {"enabled": "true", "loss_scale_window": "500", "min_loss_scale": 4.0})"));
  EXPECT_TRUE(c.fp16.enabled);
  EXPECT_EQ(c.precision.loss_scaler.window, 500);
  EXPECT_EQ(c.precision.loss_scaler.min_scale, 4.0);
}

TEST(Precision, Bf16) {
  const ResolvedConfig c =
      parse(with_batch(R"("bf16": {"enabled": true}, "zero_optimization": {"stage": 1})"));
  EXPECT_EQ(c.precision.training_dtype, DataType::kBf16);
  EXPECT_TRUE(c.precision.check_grad_overflow);  // default true since DeepSpeed #8035
  EXPECT_FALSE(c.precision.loss_scaler.dynamic);
  EXPECT_EQ(c.precision.loss_scaler.static_scale, 1.0);
  EXPECT_EQ(c.communication_data_type, DataType::kBf16);
  EXPECT_EQ(c.precision.grad_accum_dtype, DataType::kBf16);
  const ResolvedConfig no_check = parse(with_batch(
      R"("bf16": {"enabled": true, "check_grad_overflow": false, "immediate_grad_update": true})"));
  EXPECT_FALSE(no_check.precision.check_grad_overflow);
  EXPECT_EQ(no_check.precision.grad_accum_dtype, DataType::kFp32);  // bf16 without ZeRO
  EXPECT_TRUE(no_check.bf16.immediate_grad_update);
  EXPECT_CONTAINS(find_entry(no_check, "bf16.immediate_grad_update")->detail, "no effect");
  EXPECT_CONTAINS(find_entry(c, "bf16.immediate_grad_update")->detail, "no effect");
  // fp16-only keys under bf16 are refused by DeepSpeed.
  EXPECT_CONTAINS(errors_of(with_batch(R"("bf16": {"enabled": true, "hysteresis": 2})")),
                  "bf16.hysteresis: an fp16-only key");
}

TEST(Precision, Fp16AndBf16TogetherIsAnError) {
  EXPECT_CONTAINS(errors_of(with_batch(R"("fp16": {"enabled": true}, "bf16": {"enabled": true})")),
                  "bfloat16 and fp16 modes cannot be simultaneously enabled");
  CommandLineOverrides flags;
  flags.bf16 = true;  // fills the absent bf16.enabled
  EXPECT_CONTAINS(errors_of(with_batch(R"("fp16": {"enabled": true})"), 1, flags),
                  "cannot be simultaneously enabled");
}

TEST(Precision, RefusedKeysNameTheKeyAndTheReason) {
  const struct {
    const char* body;
    const char* key;
    const char* reason;
  } cases[] = {
      {R"("fp16": {"enabled": true, "auto_cast": true})", "fp16.auto_cast = true", "token ids"},
      {R"("fp16": {"enabled": true, "fp16_master_weights_and_grads": true})",
       "fp16.fp16_master_weights_and_grads = true", "fp32 master weights"},
      {R"("bf16": {"enabled": true, "bf16_master_weights_and_grads": true})",
       "bf16.bf16_master_weights_and_grads = true", "fp32 master weights"},
      {R"("bf16": {"enabled": true, "bf16_optimizer_states": true})",
       "bf16.bf16_optimizer_states = true", "in fp32"},
      {R"("amp": {"enabled": true, "opt_level": "O2"})", "amp.enabled = true", "apex"},
      {R"("torch_autocast": {"enabled": true, "dtype": "bfloat16"})",
       "torch_autocast.enabled = true", "no autocast"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.body);
    const std::string errors = errors_of(with_batch(c.body));
    EXPECT_CONTAINS(errors, std::string("not supported yet: ") + c.key);
    EXPECT_CONTAINS(errors, c.reason);
  }
  // Their defaults (and disabled sections) are accepted.
  EXPECT_NO_THROW(parse(with_batch(R"("fp16": {"enabled": true, "auto_cast": false,
      "fp16_master_weights_and_grads": false}, "amp": {"enabled": false},
      "torch_autocast": {"enabled": false, "dtype": "fp16"})")));
}

TEST(Precision, CommunicationDataType) {
  const struct {
    const char* body;
    DataType expected;
  } cases[] = {
      {R"("communication_data_type": "fp16")", DataType::kFp16},
      {R"("communication_data_type": "BF16")", DataType::kBf16},  // case-insensitive
      {R"("communication_data_type": "Fp32", "bf16": {"enabled": true})", DataType::kFp32},
      {R"("fp16": {"enabled": true})", DataType::kFp16},
      {R"("bf16": {"enabled": true})", DataType::kBf16},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.body);
    EXPECT_EQ(parse(with_batch(c.body)).communication_data_type, c.expected);
  }
  const ResolvedConfig written = parse(with_batch(R"("communication_data_type": "bf16")"));
  EXPECT_EQ(find_entry(written, "communication_data_type")->source, Source::kFile);
  // DeepSpeed takes no other spelling (ValueError).
  EXPECT_CONTAINS(errors_of(with_batch(R"("communication_data_type": "float16")")),
                  "communication_data_type: expected one of fp16|bf16|fp32");
}

TEST(Precision, Bfloat16Alias) {
  const ResolvedConfig alone = parse(with_batch(R"("bfloat16": {"enabled": true})"));
  EXPECT_TRUE(alone.bf16.enabled);
  EXPECT_EQ(alone.precision.training_dtype, DataType::kBf16);
  EXPECT_EQ(find_entry(alone, "bf16.enabled")->detail, "written as bfloat16.enabled");
  // Both, agreeing (or the old one only repeating defaults): accepted.
  EXPECT_NO_THROW(parse(with_batch(R"("bf16": {"enabled": true},
      "bfloat16": {"enabled": true, "check_grad_overflow": true})")));
  // Both, disagreeing on a key given twice: the alias rule.
  EXPECT_CONTAINS(errors_of(with_batch(R"("bfloat16": {"enabled": true},
      "bf16": {"enabled": false})")),
                  "two spellings of one setting with different values");
  // A key only under bfloat16 that DeepSpeed would ignore because bf16 is present.
  for (const char* order :
       {R"("bf16": {"enabled": true}, "bfloat16": {"check_grad_overflow": false})",
        R"("bfloat16": {"check_grad_overflow": false}, "bf16": {"enabled": true})"}) {
    SCOPED_TRACE(order);
    const std::string errors = errors_of(with_batch(order));
    EXPECT_CONTAINS(errors, "bfloat16.check_grad_overflow: false is ignored by DeepSpeed");
    EXPECT_CONTAINS(errors, "bf16.check_grad_overflow stays true");
  }
  // bf16: null falls back to bfloat16 (DeepSpeed reads bfloat16 when bf16 is None).
  EXPECT_TRUE(parse(with_batch(R"("bf16": null, "bfloat16": {"enabled": true})")).bf16.enabled);
}

// HF guide configs: fp16 "auto" with the loss-scaler keys written.
std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// The guide's configs with what is refused for reasons other than precision taken out: NVMe
// offload (not built yet: "cpu" instead, without the NVMe-only nvme_path) and the NVMe guide's
// "aio" block nested inside zero_optimization (DeepSpeed's strict zero_optimization refuses it
// too).
std::string without_offload(std::string text) {
  const std::string from = "\"device\": \"nvme\"";
  for (std::size_t at; (at = text.find(from)) != std::string::npos;)
    text.replace(at, from.size(), "\"device\": \"cpu\"");
  for (std::size_t at; (at = text.find("\"nvme_path\"")) != std::string::npos;)
    text.erase(at, text.find('\n', at) + 1 - at);
  const std::size_t aio = text.find("\"aio\": {");
  if (aio != std::string::npos) text.erase(aio, text.find("},", aio) + 2 - aio);
  return text;
}

TEST(Precision, HfGuideConfigsResolveFp16AutoWithAndWithoutTheFlag) {
  for (const char* name : {"hf_ds_config_zero3.json", "hf_guide_zero3_cpu_offload.json",
                           "hf_guide_zero3_infinity_nvme.json"}) {
    SCOPED_TRACE(name);
    CommandLineOverrides flags;
    flags.warmup_steps = 10;
    flags.fp16 = true;
    // Unchanged, each loads (NVMe offload and the aio block nested in zero_optimization
    // included).
    EXPECT_NO_THROW(load_config(kData + "/" + name, flags, ModelFacts{768}, 2, 100));
    const std::string text = without_offload(read_text(kData + "/" + name));
    const ResolvedConfig on = parse(text, 2, flags, ModelFacts{768}, 100);
    EXPECT_TRUE(on.fp16.enabled);
    EXPECT_EQ(find_entry(on, "fp16.enabled")->source, Source::kAutoFromFlag);
    EXPECT_EQ(find_entry(on, "fp16.enabled")->detail, "--fp16");
    EXPECT_EQ(on.precision.training_dtype, DataType::kFp16);
    EXPECT_TRUE(on.precision.loss_scaler.dynamic);            // loss_scale 0
    EXPECT_EQ(on.precision.loss_scaler.init_scale, 65536.0);  // dynamic keys written: 2^16
    EXPECT_EQ(on.precision.loss_scaler.window, 1000);
    EXPECT_EQ(on.precision.loss_scaler.delayed_shift, 2);
    EXPECT_EQ(on.precision.loss_scaler.min_scale, 1.0);
    EXPECT_EQ(on.communication_data_type, DataType::kFp16);
    const std::string printed = format_effective_config(on);
    EXPECT_CONTAINS(printed, "[fp16]");
    EXPECT_CONTAINS(printed, "auto\u2192flag (--fp16)");

    flags.fp16 = false;
    const ResolvedConfig off = parse(text, 2, flags, ModelFacts{768}, 100);
    EXPECT_FALSE(off.fp16.enabled);
    EXPECT_EQ(find_entry(off, "fp16.enabled")->source, Source::kAutoTrainerDefault);
    EXPECT_EQ(off.precision.training_dtype, DataType::kFp32);
    EXPECT_FALSE(off.precision.loss_scaler.dynamic);

    flags.bf16 = true;  // --bf16 with fp16 "auto": fp16 off, bf16 filled by the flag
    const ResolvedConfig bf = parse(text, 2, flags, ModelFacts{768}, 100);
    EXPECT_FALSE(bf.fp16.enabled);
    EXPECT_EQ(bf.precision.training_dtype, DataType::kBf16);
  }
}

TEST(Precision, FlagContradictingTheConfigIsAnError) {
  CommandLineOverrides flags;
  flags.fp16 = true;
  EXPECT_CONTAINS(errors_of(with_batch(R"("fp16": {"enabled": false})"), 1, flags),
                  "fp16.enabled: the config says false but --fp16 says true");
}

TEST(Precision, EffectiveConfigShowsPrecisionKeysWithSources) {
  const ResolvedConfig c =
      parse(with_batch(R"("fp16": {"enabled": true, "loss_scale_window": 500})"));
  const std::string printed = format_effective_config(c);
  for (const char* key : {"loss_scale_window", "initial_scale_power", "hysteresis",
                          "min_loss_scale", "consecutive_hysteresis", "check_grad_overflow",
                          "communication_data_type", "grad_accum_dtype"}) {
    EXPECT_CONTAINS(printed, key);
  }
  EXPECT_EQ(find_entry(c, "fp16.loss_scale_window")->source, Source::kFile);
  EXPECT_EQ(find_entry(c, "fp16.initial_scale_power")->source, Source::kDefault);
  EXPECT_EQ(find_entry(c, "data_types.grad_accum_dtype")->value_text, "\"fp16\"");
}

}  // namespace
}  // namespace zt::config
