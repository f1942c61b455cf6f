// SPDX-License-Identifier: Apache-2.0
// The DeepSpeed 0.19 key table (reference/deepspeed-keys.md) as data. Each row says the shape a
// key accepts, DeepSpeed's code default, its range or choices, its other spellings, and what
// zerotrain does with it (Support). Sections are listed before their children so the tree
// builder attaches section flags; sections that are not listed are implied by their children.
#include "config/schema.hpp"

#include <algorithm>
#include <cctype>
#include <limits>
#include <map>
#include <memory>

namespace zt::config {
namespace {

// Fluent builder so each table row reads as one line of data.
struct K {
  KeySpec spec;
  K(const char* path, ValueKind kind, const char* default_text = "") {
    spec.path = path;
    spec.kind = kind;
    spec.default_text = default_text;
  }
  K& range(double lo, double hi) {
    spec.min_value = lo;
    spec.max_value = hi;
    return *this;
  }
  K& at_least(double lo) {
    spec.min_value = lo;
    return *this;
  }
  K& one_of(std::vector<std::string> values) {
    spec.choices = std::move(values);
    return *this;
  }
  K& exact_case() {
    spec.choices_case_sensitive = true;
    return *this;
  }
  K& alias(const char* canonical) {
    spec.alias_of = canonical;
    return *this;
  }
  K& deprecated(const char* canonical) {
    spec.alias_of = canonical;
    spec.deprecated_alias = true;
    return *this;
  }
  K& honoured() {
    spec.support = Support::kHonoured;
    return *this;
  }
  K& supports(std::vector<std::string> values) {
    spec.support = Support::kHonoured;
    spec.supported_values = std::move(values);
    return *this;
  }
  K& default_only() {
    spec.support = Support::kDefaultOnly;
    return *this;
  }
  K& inert() {
    spec.support = Support::kInert;
    return *this;
  }
  K& presence() {
    spec.support = Support::kPresenceUnsupported;
    return *this;
  }
  K& not_read(const char* hint) {
    spec.support = Support::kNotRead;
    spec.hint = hint;
    return *this;
  }
  K& note(const char* text) {
    spec.hint = text;
    return *this;
  }
  K& refused_because(const char* text) {
    spec.why_unsupported = text;
    return *this;
  }
  K& only_for(std::vector<std::string> types) {
    spec.applies_to = std::move(types);
    return *this;
  }
  K& strict() {
    spec.strict_section = true;
    return *this;
  }
  K& nullable() {
    spec.nullable = true;
    return *this;
  }
  K& required() {
    spec.required_when_present = true;
    return *this;
  }
  K& hf() {
    spec.hf_auto = true;
    return *this;
  }
  operator KeySpec() const { return spec; }  // NOLINT: rows convert implicitly into the table
};

constexpr auto kSec = ValueKind::kSection;
constexpr auto kBool = ValueKind::kBool;
constexpr auto kInt = ValueKind::kInt;
constexpr auto kFloat = ValueKind::kFloat;
constexpr auto kStr = ValueKind::kString;
constexpr auto kInts = ValueKind::kIntList;
constexpr auto kFloats = ValueKind::kFloatList;
constexpr auto kStrs = ValueKind::kStringList;
constexpr auto kList = ValueKind::kAnyList;
constexpr auto kAny = ValueKind::kOpaque;

const std::vector<std::string> kAdamFamily = {"adam", "adamw"};
const std::vector<std::string> kWithBetas = {"adam",        "adamw",      "lamb", "onebitadam",
                                             "zerooneadam", "onebitlamb", "lion", "muon"};
const std::vector<std::string> kWithEps = {"adam",       "adamw",       "adagrad",    "lamb",
                                           "onebitadam", "zerooneadam", "onebitlamb", "muon"};
const std::vector<std::string> kWithBiasCorrection = {"adam",       "adamw",       "lamb",
                                                      "onebitadam", "zerooneadam", "onebitlamb"};
const std::vector<std::string> kWithAmsgrad = {"adam",       "adamw",       "adagrad",   "lamb",
                                               "onebitadam", "zerooneadam", "onebitlamb"};
const std::vector<std::string> kLambFamily = {"lamb", "onebitlamb"};
const std::vector<std::string> kOneBit = {"onebitadam", "zerooneadam", "onebitlamb"};
const std::vector<std::string> kWarmupSchedules = {"warmuplr", "warmupdecaylr"};
const std::vector<std::string> kAllWarmupSchedules = {"warmuplr", "warmupdecaylr",
                                                      "warmupcosinelr"};
const std::vector<std::string> kDecaySchedules = {"warmupdecaylr", "warmupcosinelr"};
const std::vector<std::string> kDtypeSpellings = {
    "fp16",           "float16", "half",    "torch.float16", "bf16",          "bfloat16",
    "torch.bfloat16", "fp32",    "float32", "float",         "torch.float32", "int8"};
const std::vector<std::string> kFp32Spellings = {"fp32", "float32", "float", "torch.float32"};
// Every spelling of a float type the engine can hold (int8 is not one).
const std::vector<std::string> kFloatSpellings = {
    "fp16",           "float16", "half",    "torch.float16", "bf16",         "bfloat16",
    "torch.bfloat16", "fp32",    "float32", "float",         "torch.float32"};
const char* kMaxSize = "9223372036854775807";  // Python sys.maxsize

std::vector<KeySpec> build_table() {
  std::vector<KeySpec> t = {
      // ---- §2 top-level scalars (DeepSpeed: mode L, unknown keys ignored; here: refused) ----
      K("train_batch_size", kInt).at_least(1).honoured().hf(),
      K("train_micro_batch_size_per_gpu", kInt).at_least(1).honoured().hf(),
      K("gradient_accumulation_steps", kInt).at_least(1).honoured().hf(),
      K("managed_gradient_accumulation", kBool, "true").default_only(),
      K("steps_per_print", kInt).at_least(1).honoured(),
      K("dump_state", kBool, "false").default_only(),
      K("disable_allgather", kBool, "false").default_only(),
      K("communication_data_type", kStr).one_of({"fp16", "bf16", "fp32"}).honoured(),
      K("seq_parallel_communication_data_type", kStr, "fp32")
          .one_of({"fp16", "bf16", "fp32"})
          .default_only(),
      K("prescale_gradients", kBool, "false").honoured(),
      K("gradient_predivide_factor", kFloat, "1.0").at_least(0).honoured(),
      K("gradient_allreduce_op", kStr, "mean").one_of({"mean", "sum"}).honoured(),
      K("sparse_gradients", kBool, "false").default_only(),
      K("gradient_clipping", kFloat, "1.0").at_least(0).honoured().hf(),
      K("graph_harvesting", kBool, "false").default_only(),
      K("zero_allow_untested_optimizer", kBool, "false").honoured(),
      K("zero_force_ds_cpu_optimizer", kBool, "true").honoured(),
      K("wall_clock_breakdown", kBool, "false").honoured(),
      K("memory_breakdown", kBool, "false").honoured(),
      K("use_data_before_expert_parallelism", kBool, "false").default_only(),
      K("dataloader_drop_last", kBool, "false").honoured(),
      K("log_level", kStr).one_of({"debug", "info", "warning", "error", "critical"}).honoured(),
      K("vocabulary_size", kInt).at_least(1).inert().note("DeepSpeed only warns on it"),
      K("sequence_parallel_size", kInt, "1").at_least(1).default_only(),
      K("data_parallel_size", kInt)
          .at_least(1)
          .inert()
          .note("must equal the world size: zerotrain is data-parallel only"),
      K("allgather_size", kInt, "500000000")
          .at_least(0)
          .inert()
          .note("read only with the legacy \"zero_optimization\": true form"),
      K("eigenvalue", kAny)
          .not_read("DeepSpeed does not read a top-level 'eigenvalue' section; the only eigenvalue "
                    "keys it "
                    "reads are quantize_training.eigenvalue.*"),

      // ---- §3 optimizer ----
      K("optimizer", kSec).nullable(),
      K("optimizer.type", kStr)
          .honoured()
          .one_of({"Adam", "AdamW", "Adagrad", "Lamb", "OneBitAdam", "ZeroOneAdam", "OneBitLamb",
                   "MuAdam", "MuAdamW", "MuSGD", "Lion", "Muon"})
          .supports({"adam", "adamw", "lamb"})
          .note("other names are torch.optim classes in DeepSpeed"),
      K("optimizer.params", kSec).nullable(),
      K("optimizer.legacy_fusion", kBool, "false").default_only(),
      K("optimizer.params.lr", kFloat, "0.001").at_least(0).honoured().hf(),
      K("optimizer.params.betas", kFloats, "[0.9, 0.999]")
          .range(0, 1)
          .honoured()
          .hf()
          .only_for(kWithBetas),
      K("optimizer.params.eps", kFloat, "1e-08").at_least(0).honoured().hf().only_for(kWithEps),
      K("optimizer.params.weight_decay", kFloat, "0.0").at_least(0).honoured().hf(),
      K("optimizer.params.bias_correction", kBool, "true").honoured().only_for(kWithBiasCorrection),
      K("optimizer.params.amsgrad", kBool, "false")
          .supports({"false"})
          .only_for(kWithAmsgrad)
          .note("FusedAdam raises on amsgrad"),
      K("optimizer.params.set_grad_none", kBool, "true").inert().only_for(kAdamFamily),
      K("optimizer.params.torch_adam", kBool, "false")
          .honoured()
          .only_for(kAdamFamily)
          .note("same math as the fused kernel"),
      K("optimizer.params.adam_w_mode", kBool, "true").honoured().only_for(kAdamFamily),
      K("optimizer.params.fp32_optimizer_states", kBool, "true")
          .default_only()
          .only_for(kAdamFamily),
      K("optimizer.params.eps_inside_sqrt", kBool, "false")
          .honoured()
          .only_for({"lamb", "onebitadam", "zerooneadam", "onebitlamb"}),
      K("optimizer.params.max_coeff", kFloat, "10.0").at_least(0).honoured().only_for(kLambFamily),
      K("optimizer.params.min_coeff", kFloat, "0.01").at_least(0).honoured().only_for(kLambFamily),
      K("optimizer.params.freeze_step", kInt, "100000")
          .inert()
          .only_for({"onebitadam", "onebitlamb"}),
      K("optimizer.params.cuda_aware", kBool, "false").inert().only_for(kOneBit),
      K("optimizer.params.comm_backend_name", kStr, "nccl").inert().only_for(kOneBit),
      K("optimizer.params.var_freeze_step", kInt, "100000").inert().only_for({"zerooneadam"}),
      K("optimizer.params.var_update_scaler", kInt, "16").inert().only_for({"zerooneadam"}),
      K("optimizer.params.local_step_scaler", kInt, "32678").inert().only_for({"zerooneadam"}),
      K("optimizer.params.local_step_clipper", kInt, "16").inert().only_for({"zerooneadam"}),
      K("optimizer.params.coeff_beta", kFloat, "0.9").inert().only_for({"onebitlamb"}),
      K("optimizer.params.factor_max", kFloat, "4.0").inert().only_for({"onebitlamb"}),
      K("optimizer.params.factor_min", kFloat, "0.5").inert().only_for({"onebitlamb"}),
      K("optimizer.params.factor_threshold", kFloat, "0.1").inert().only_for({"onebitlamb"}),
      K("optimizer.params.momentum", kFloat, "0.95").inert().only_for({"muon"}),
      K("optimizer.params.muon_lr", kFloat).inert().only_for({"muon"}),
      K("optimizer.params.adam_lr", kFloat).inert().only_for({"muon"}),
      K("optimizer.params.ns_method", kStr, "gram")
          .one_of({"gram", "standard"})
          .inert()
          .only_for({"muon"}),
      K("optimizer.params.max_grad_norm", kAny)
          .not_read(
              "DeepSpeed raises ValueError on optimizer.params.max_grad_norm: use the top-level "
              "'gradient_clipping' instead"),

      // ---- §3 scheduler (params depend on type) ----
      K("scheduler", kSec).nullable(),
      K("scheduler.type", kStr)
          .exact_case()
          .honoured()
          .one_of({"LRRangeTest", "OneCycle", "WarmupLR", "WarmupDecayLR", "WarmupCosineLR"})
          .note("other names are torch.optim.lr_scheduler classes in DeepSpeed"),
      K("scheduler.params", kSec).nullable(),
      K("scheduler.params.last_batch_iteration", kInt, "-1").default_only(),
      K("scheduler.params.lr_range_test_min_lr", kFloat, "0.001")
          .at_least(0)
          .honoured()
          .only_for({"lrrangetest"}),
      K("scheduler.params.lr_range_test_step_size", kInt, "2000")
          .at_least(1)
          .honoured()
          .only_for({"lrrangetest"}),
      K("scheduler.params.lr_range_test_step_rate", kFloat, "1.0")
          .honoured()
          .only_for({"lrrangetest"}),
      K("scheduler.params.lr_range_test_staircase", kBool, "false")
          .honoured()
          .only_for({"lrrangetest"}),
      K("scheduler.params.cycle_min_lr", kFloat).at_least(0).honoured().only_for({"onecycle"}),
      K("scheduler.params.cycle_max_lr", kFloat).at_least(0).honoured().only_for({"onecycle"}),
      K("scheduler.params.decay_lr_rate", kFloat, "0.0")
          .at_least(0)
          .honoured()
          .only_for({"onecycle"}),
      K("scheduler.params.cycle_first_step_size", kInt, "2000")
          .at_least(1)
          .honoured()
          .only_for({"onecycle"}),
      K("scheduler.params.cycle_second_step_size", kInt)
          .at_least(1)
          .honoured()
          .only_for({"onecycle"}),
      K("scheduler.params.cycle_first_stair_count", kInt, "0").honoured().only_for({"onecycle"}),
      K("scheduler.params.cycle_second_stair_count", kInt).honoured().only_for({"onecycle"}),
      K("scheduler.params.decay_step_size", kInt, "0")
          .at_least(0)
          .honoured()
          .only_for({"onecycle"}),
      K("scheduler.params.cycle_momentum", kBool, "true").honoured().only_for({"onecycle"}),
      K("scheduler.params.cycle_min_mom", kFloat, "0.8")
          .range(0, 1)
          .honoured()
          .only_for({"onecycle"}),
      K("scheduler.params.cycle_max_mom", kFloat, "0.9")
          .range(0, 1)
          .honoured()
          .only_for({"onecycle"}),
      K("scheduler.params.decay_mom_rate", kFloat, "0.0").honoured().only_for({"onecycle"}),
      K("scheduler.params.warmup_min_lr", kFloat, "0.0")
          .at_least(0)
          .honoured()
          .hf()
          .only_for(kWarmupSchedules),
      K("scheduler.params.warmup_max_lr", kFloat)
          .at_least(0)
          .honoured()
          .hf()
          .only_for(kWarmupSchedules)
          .note("default: the optimizer lr for WarmupLR, 0.001 for WarmupDecayLR"),
      K("scheduler.params.warmup_num_steps", kInt, "1000")
          .at_least(1)
          .honoured()
          .hf()
          .only_for(kAllWarmupSchedules),
      K("scheduler.params.warmup_type", kStr, "log")
          .one_of({"log", "linear"})
          .honoured()
          .only_for(kAllWarmupSchedules),
      K("scheduler.params.total_num_steps", kInt)
          .at_least(1)
          .honoured()
          .hf()
          .only_for(kDecaySchedules),
      K("scheduler.params.warmup_min_ratio", kFloat, "0.0")
          .range(0, 1)
          .honoured()
          .only_for({"warmupcosinelr"}),
      K("scheduler.params.cos_min_ratio", kFloat, "0.0001")
          .range(0, 1)
          .honoured()
          .only_for({"warmupcosinelr"}),

      // ---- §4 precision ----
      // Range rules DeepSpeed applies only when fp16 is enabled with dynamic scaling
      // (loss_scale_window, min_loss_scale > 0; zerotrain adds hysteresis >= 1) are checked in
      // config.cpp; here only the types.
      K("fp16", kSec).strict().nullable(),
      K("fp16.enabled", kBool, "false").honoured().hf(),
      K("fp16.auto_cast", kBool, "false")
          .default_only()
          .refused_because(
              "DeepSpeed's auto_cast calls .half() on every forward input, token ids included "
              "(which breaks the embedding lookup); zerotrain's model takes only integer token "
              "ids, so there is nothing to cast: drop it (fp16.enabled already runs the model "
              "in fp16)"),
      K("fp16.loss_scale", kFloat, "0.0").at_least(0).honoured(),
      K("fp16.initial_scale_power", kInt, "16").at_least(0).honoured(),
      K("fp16.loss_scale_window", kInt, "1000").honoured(),
      K("fp16.hysteresis", kInt, "2").honoured(),
      K("fp16.consecutive_hysteresis", kBool, "false").honoured(),
      K("fp16.min_loss_scale", kInt, "1").honoured(),
      K("fp16.fp16_master_weights_and_grads", kBool, "false")
          .default_only()
          .refused_because("fp16 master weights and gradients without an fp32 master copy "
                           "(DeepSpeed: ZeRO 2 + CPU offload + DeepSpeedCPUAdam); zerotrain "
                           "keeps fp32 master weights"),
      K("bf16", kSec).strict().nullable(),
      K("bf16.enabled", kBool, "false").honoured().hf(),
      K("bf16.immediate_grad_update", kBool, "false").honoured(),
      K("bf16.check_grad_overflow", kBool, "true").honoured(),
      K("bf16.bf16_master_weights_and_grads", kBool, "false")
          .default_only()
          .refused_because("bf16 master weights and gradients without an fp32 master copy; "
                           "zerotrain keeps fp32 master weights"),
      K("bf16.bf16_optimizer_states", kBool, "false")
          .default_only()
          .refused_because("bf16 optimizer moments; zerotrain keeps them in fp32"),
      K("bf16.check_overflow", kAny)
          .not_read("DeepSpeed rejects 'check_overflow' (the name in its help text): use "
                    "'check_grad_overflow'"),
      K("bfloat16", kSec)
          .strict()
          .nullable()
          .alias("bf16")
          .note("deprecated spelling of bf16 (DeepSpeed ignores it when bf16 is also given)"),
      K("amp", kSec).nullable(),
      K("amp.enabled", kBool, "false")
          .default_only()
          .required()
          .hf()
          .refused_because("NVIDIA apex AMP is a PyTorch library; use fp16 or bf16"),
      K("amp.opt_level", kAny).inert().hf().note("passed to apex amp.initialize"),
      K("amp.*", kAny).inert().note("every other key is passed to apex amp.initialize"),
      K("torch_autocast", kSec).nullable(),
      K("torch_autocast.enabled", kBool, "false")
          .default_only()
          .refused_because("torch.autocast runs chosen modules in 16-bit over fp32 weights; "
                           "zerotrain has no autocast: use fp16 or bf16 (16-bit model, fp32 "
                           "master weights)"),
      K("torch_autocast.dtype", kStr).one_of(kDtypeSpellings).inert(),
      K("torch_autocast.lower_precision_safe_modules", kStrs).inert(),

      // ---- §5 zero_optimization ----
      K("zero_optimization", ValueKind::kSectionOrBool).strict().nullable(),
      K("zero_optimization.stage", kInt, "0").range(0, 3).honoured(),
      K("zero_optimization.contiguous_gradients", kBool, "true").honoured(),
      K("zero_optimization.reduce_scatter", kBool, "true").honoured(),
      K("zero_optimization.reduce_bucket_size", kInt, "500000000").at_least(0).honoured().hf(),
      K("zero_optimization.use_multi_rank_bucket_allreduce", kBool, "true").honoured(),
      K("zero_optimization.allgather_partitions", kBool, "true").honoured(),
      K("zero_optimization.allgather_bucket_size", kInt, "500000000").at_least(0).honoured(),
      K("zero_optimization.overlap_comm", kBool)
          .honoured()
          .note("default: true at stage 3, else false"),
      K("zero_optimization.load_from_fp32_weights", kBool, "true").honoured(),
      K("zero_optimization.elastic_checkpoint", kBool, "false").default_only(),
      K("zero_optimization.sub_group_size", kInt, "1000000000").at_least(0).honoured(),
      K("zero_optimization.stage3_prefetch_bucket_size", kInt, "50000000")
          .at_least(0)
          .honoured()
          .hf(),
      K("zero_optimization.prefetch_bucket_size", kInt)
          .at_least(0)
          .alias("zero_optimization.stage3_prefetch_bucket_size"),
      K("zero_optimization.stage3_param_persistence_threshold", kInt, "100000")
          .at_least(0)
          .honoured()
          .hf(),
      K("zero_optimization.param_persistence_threshold", kInt)
          .at_least(0)
          .alias("zero_optimization.stage3_param_persistence_threshold"),
      K("zero_optimization.stage3_model_persistence_threshold", kInt, kMaxSize)
          .at_least(0)
          .honoured(),
      K("zero_optimization.model_persistence_threshold", kInt)
          .at_least(0)
          .alias("zero_optimization.stage3_model_persistence_threshold"),
      K("zero_optimization.stage3_max_live_parameters", kInt, "1000000000").at_least(0).honoured(),
      K("zero_optimization.max_live_parameters", kInt)
          .at_least(0)
          .alias("zero_optimization.stage3_max_live_parameters"),
      K("zero_optimization.stage3_max_reuse_distance", kInt, "1000000000").at_least(0).honoured(),
      K("zero_optimization.max_reuse_distance", kInt)
          .at_least(0)
          .alias("zero_optimization.stage3_max_reuse_distance"),
      K("zero_optimization.stage3_gather_16bit_weights_on_model_save", kBool, "false").honoured(),
      K("zero_optimization.gather_16bit_weights_on_model_save", kBool)
          .alias("zero_optimization.stage3_gather_16bit_weights_on_model_save"),
      K("zero_optimization.stage3_gather_fp16_weights_on_model_save", kBool)
          .deprecated("zero_optimization.stage3_gather_16bit_weights_on_model_save"),
      K("zero_optimization.stage3_module_granularity_threshold", kInt, "0")
          .at_least(0)
          .default_only(),
      K("zero_optimization.module_granularity_threshold", kInt)
          .at_least(0)
          .alias("zero_optimization.stage3_module_granularity_threshold"),
      K("zero_optimization.stage3_use_all_reduce_for_fetch_params", kBool, "false").default_only(),
      K("zero_optimization.use_all_reduce_for_fetch_params", kBool)
          .alias("zero_optimization.stage3_use_all_reduce_for_fetch_params"),
      K("zero_optimization.stage3_allgather_sequential", kBool, "false").default_only(),
      K("zero_optimization.allgather_sequential", kBool)
          .alias("zero_optimization.stage3_allgather_sequential"),
      K("zero_optimization.cpu_offload", kBool)
          .deprecated("zero_optimization.offload_optimizer")
          .note("deprecated: true means offload_optimizer.device = cpu"),
      K("zero_optimization.cpu_offload_param", kBool)
          .deprecated("zero_optimization.offload_param")
          .note("deprecated: true means offload_param.device = cpu"),
      K("zero_optimization.cpu_offload_use_pin_memory", kBool)
          .inert()
          .note("deprecated; DeepSpeed only warns, the value is not applied: the pin_memory of "
                "offload_optimizer/offload_param decides"),
      K("zero_optimization.cpu_offload_params", kAny)
          .not_read("DeepSpeed rejects 'cpu_offload_params' (plural): the deprecated key is "
                    "'cpu_offload_param'; better use 'offload_param'"),
      K("zero_optimization.ignore_unused_parameters", kBool, "true").honoured(),
      K("zero_optimization.legacy_stage1", kBool, "false").default_only(),
      K("zero_optimization.round_robin_gradients", kBool, "false").default_only(),
      K("zero_optimization.zero_hpz_partition_size", kInt, "1").at_least(0).default_only(),
      K("zero_optimization.zero_quantized_weights", kBool, "false").default_only(),
      K("zero_optimization.zero_quantized_nontrainable_weights", kBool, "false").default_only(),
      K("zero_optimization.zero_quantized_gradients", kBool, "false").default_only(),
      K("zero_optimization.zeropp_loco_param", kAny)
          .default_only()
          .note("free-form (err_beta, reset_T); any value enables ZeRO++ LoCo"),
      K("zero_optimization.mics_shard_size", kInt, "-1").default_only(),
      K("zero_optimization.mics_hierarchical_params_gather", kBool, "false").default_only(),
      K("zero_optimization.memory_efficient_linear", kBool, "true").inert(),
      K("zero_optimization.pipeline_loading_checkpoint", kBool, "false").default_only(),
      K("zero_optimization.override_module_apply", kBool, "true").inert(),
      K("zero_optimization.log_trace_cache_warnings", kBool, "false").inert(),
      K("zero_optimization.enable_sanity_checks", kBool, "false").inert(),
      K("zero_optimization.save_muon_momentum_buffer_in_memory", kBool, "false").default_only(),
      K("zero_optimization.leaf_module", kSec).nullable(),
      K("zero_optimization.leaf_module.classes", kStrs).inert(),
      K("zero_optimization.leaf_module.names", kStrs, "[]").inert(),
      K("zero_optimization.leaf_module.name_suffixes", kStrs, "[]").inert(),
      K("zero_optimization.grad_hooks", kAny)
          .not_read(
              "documented by DeepSpeed but not a field: DeepSpeed rejects it (ValidationError)"),
      // §5.1 offload. Which device is allowed at which stage, the keys that matter only with
      // another device, and the optimizer rules are cross-key rules in config.cpp
      // (check_offload): a key given with a value other than DeepSpeed's default where DeepSpeed
      // ignores it is refused, naming it.
      K("zero_optimization.offload_param", kSec).nullable(),
      K("zero_optimization.offload_param.device", kStr, "none")
          .one_of({"none", "cpu", "nvme"})
          .exact_case()
          .honoured()
          .note("\"cpu\" or \"nvme\" at stage 3 only: DeepSpeed ignores offload_param below "
                "stage 3, zerotrain refuses it"),
      K("zero_optimization.offload_param.nvme_path", kStr)
          .honoured()
          .note("required with device \"nvme\" (checked when training starts: it must be a "
                "writable folder on every node); refused whenever given (non-null) with device "
                "\"none\" or \"cpu\", which DeepSpeed ignores it with"),
      K("zero_optimization.offload_param.buffer_count", kInt, "5")
          .at_least(0)
          .honoured()
          .note("staging buffers for parameter fetches (device cpu) or NVMe reads (device "
                "nvme); at least 1"),
      K("zero_optimization.offload_param.buffer_size", kInt, "100000000")
          .at_least(0)
          .honoured()
          .note("elements of one staging buffer for parameter fetches (cpu) or NVMe reads "
                "(nvme; at least 1)"),
      K("zero_optimization.offload_param.max_in_cpu", kInt, "1000000000")
          .at_least(0)
          .honoured()
          .note("device cpu: the largest parameter slice (elements) host memory may hold; "
                "device nvme: slice elements kept in host memory, the rest swapped to NVMe"),
      K("zero_optimization.offload_param.pin_memory", kBool, "true")
          .honoured()
          .note("pinned host memory when a GPU is present, plain aligned memory otherwise"),
      K("zero_optimization.offload_optimizer", kSec).nullable(),
      K("zero_optimization.offload_optimizer.device", kStr, "none")
          .one_of({"none", "cpu", "nvme"})
          .exact_case()
          .honoured()
          .note("\"cpu\" or \"nvme\" at stages 1-3: DeepSpeed has no offload without ZeRO, "
                "and silently runs \"nvme\" as \"cpu\" at stages 1-2; zerotrain honours "
                "\"nvme\" at every stage"),
      K("zero_optimization.offload_optimizer.nvme_path", kStr)
          .honoured()
          .note("required with device \"nvme\" (checked when training starts: it must be a "
                "writable folder on every node); refused whenever given (non-null) with device "
                "\"none\" or \"cpu\", which DeepSpeed ignores it with"),
      K("zero_optimization.offload_optimizer.buffer_count", kInt, "4")
          .at_least(0)
          .honoured()
          .note("NVMe only: host buffers of one sub-group's array each; three make a set (fp32 "
                "master, exp_avg, exp_avg_sq), at least 1 set, 2 with pipeline_read or "
                "pipeline_write, 3 with both; a value other than 4 is refused with device "
                "\"none\" or \"cpu\" (DeepSpeed ignores it there)"),
      K("zero_optimization.offload_optimizer.pin_memory", kBool, "true")
          .honoured()
          .note("pinned host memory when a GPU is present, plain aligned memory otherwise"),
      K("zero_optimization.offload_optimizer.pipeline_read", kBool, "false")
          .honoured()
          .note("NVMe only: true is refused with device \"none\" or \"cpu\" (DeepSpeed ignores "
                "it there)"),
      K("zero_optimization.offload_optimizer.pipeline_write", kBool, "false")
          .honoured()
          .note("NVMe only: true is refused with device \"none\" or \"cpu\" (DeepSpeed ignores "
                "it there)"),
      K("zero_optimization.offload_optimizer.fast_init", kBool, "false")
          .honoured()
          .note("NVMe only: true is accepted with device \"nvme\" and changes nothing "
                "(zerotrain always builds the fp32 master from the parameters; results are "
                "identical); refused with device \"none\" or \"cpu\" (DeepSpeed ignores it "
                "there)"),
      K("zero_optimization.offload_optimizer.ratio", kFloat, "1.0")
          .range(0, 1)
          .honoured()
          .note("< 1 needs stage 3 and a device other than \"none\""),
      K("zero_optimization.offload_optimizer.super_offload", kBool, "false").default_only(),
      K("zero_optimization.offload_optimizer.cpuadam_cores_perc", kFloat, "0.8")
          .range(0, 1)
          .inert()
          .note("read only with super_offload, which is refused"),
      // Hugging Face's DeepSpeed guide writes its ZeRO-Infinity example's aio block inside
      // zero_optimization (reference/hf-guide-configs/zero3_infinity_nvme.json), which
      // DeepSpeed's strict section would reject; the guide's configs must run unchanged, so
      // it is read as the top-level aio (both given: each key must agree).
      K("zero_optimization.aio", kSec)
          .nullable()
          .alias("aio")
          .note("the Hugging Face guide's place for the aio block; read as the top-level aio"),
      // §5.2 zenflow: any non-null value turns it on
      K("zero_optimization.zenflow", kSec).nullable().presence(),
      K("zero_optimization.zenflow.topk_ratio", kFloat, "0.1").range(0, 1).inert(),
      K("zero_optimization.zenflow.select_strategy", kStr, "auto")
          .one_of({"auto", "step", "epoch"})
          .inert(),
      K("zero_optimization.zenflow.select_interval", ValueKind::kIntOrAuto, "auto").inert(),
      K("zero_optimization.zenflow.update_interval", ValueKind::kIntOrAuto, "auto").inert(),
      K("zero_optimization.zenflow.overlap_step", kBool, "false").inert(),
      K("zero_optimization.zenflow.offload", kBool, "false").inert(),
      K("zero_optimization.zenflow.auto_ratio", kFloat, "0.99").range(0, 1).inert(),
      K("zero_optimization.zenflow.full_warm_up_rounds", kInt, "0").at_least(0).inert(),
      K("zero_optimization.zenflow.pt_reserved_cores_perc", kFloat, "0.5").range(0, 1).inert(),
      K("zero_optimization.zenflow.steps_per_epoch", kInt).inert(),

      // ---- §6 aio (the NVMe swappers' I/O; unused, and said so, without NVMe offload) ----
      K("aio", kSec).nullable(),
      K("aio.block_size", kInt, "1048576")
          .at_least(1)
          .honoured()
          .note("bytes per request; a multiple of 4096 (O_DIRECT alignment)"),
      K("aio.queue_depth", kInt, "8")
          .range(1, 32768)
          .honoured()
          .note("requests in flight per worker (io_uring's largest ring is 32768)"),
      K("aio.intra_op_parallelism", kInt, "1")
          .range(1, 1024)
          .honoured()
          .note("I/O workers (threads) per transfer"),
      K("aio.thread_count", kInt)
          .range(1, 1024)
          .alias("aio.intra_op_parallelism")
          .note("the name DeepSpeed's docs use; DeepSpeed >= 0.16.4 ignores it silently, "
                "zerotrain reads it as intra_op_parallelism"),
      K("aio.single_submit", kBool, "false").honoured(),
      K("aio.overlap_events", kBool, "true").honoured(),
      K("aio.use_gds", kBool, "false")
          .default_only()
          .refused_because("GPUDirect Storage: zerotrain's NVMe offload moves data through host "
                           "memory with its aio engine"),

      // ---- §7 activation_checkpointing ----
      K("activation_checkpointing", kSec).nullable(),
      K("activation_checkpointing.partition_activations", kBool, "false").supports({"false"}),
      K("activation_checkpointing.contiguous_memory_optimization", kBool, "false").default_only(),
      K("activation_checkpointing.cpu_checkpointing", kBool, "false").supports({"false"}),
      K("activation_checkpointing.number_checkpoints", kInt).at_least(0).honoured(),
      K("activation_checkpointing.synchronize_checkpoint_boundary", kBool, "false").honoured(),
      K("activation_checkpointing.profile", kBool, "false").honoured(),
      K("activation_checkpointing.partitioned_activations", kAny)
          .not_read(
              "DeepSpeed's help text misspells it; the key it reads is 'partition_activations'"),

      // ---- §8 checkpoint, data_types ----
      K("checkpoint", kSec).nullable(),
      K("checkpoint.tag_validation", kStr, "Warn").one_of({"Ignore", "Warn", "Fail"}).honoured(),
      K("checkpoint.load_universal", kBool, "false").honoured(),
      K("checkpoint.use_node_local_storage", kBool, "false").honoured(),
      K("checkpoint.parallel_write", kSec).nullable(),
      K("checkpoint.parallel_write.pipeline_stage", kBool, "false").honoured(),
      K("checkpoint.checkpoint_serialization", kBool, "true").honoured(),
      K("checkpoint.writer", kSec)
          .nullable()
          .presence()
          .note("selects DeepSpeed's fast/decoupled torch checkpoint writer"),
      K("checkpoint.writer.type", kStr, "fast").one_of({"mock", "python", "fast"}).inert(),
      K("checkpoint.writer.decoupled", kBool, "false").inert(),
      K("checkpoint.writer.io_buffer_size", kInt, "67108864").at_least(1).inert(),
      K("checkpoint.writer.io_buffer_double", kBool, "true").inert(),
      K("checkpoint.writer.show_statistics", kBool, "false").inert(),
      K("checkpoint.writer.data_parallel", kStr).one_of({"replica", "socket", "machine"}).inert(),
      K("checkpoint.writer.io_multiplier", kInt, "1").at_least(1).inert(),
      K("data_types", kSec).nullable(),
      // Which accumulation dtypes the engine runs with which training dtype and stage is
      // app/capabilities.hpp's to say.
      K("data_types.grad_accum_dtype", kStr).one_of(kDtypeSpellings).supports(kFloatSpellings),
      K("data_types.param_dtype", kStr).one_of(kDtypeSpellings).supports(kFp32Spellings),
      K("data_types.buffer_dtype", kStr).one_of(kDtypeSpellings).supports(kFp32Spellings),

      // ---- §9 monitoring, logging, profiling ----
      K("tensorboard", kSec).strict().nullable(),
      K("tensorboard.enabled", kBool, "false").default_only(),
      K("tensorboard.output_path", kStr, "").inert(),
      K("tensorboard.job_name", kStr, "DeepSpeedJobName").inert(),
      K("wandb", kSec).strict().nullable(),
      K("wandb.enabled", kBool, "false").default_only(),
      K("wandb.group", kStr).inert(),
      K("wandb.team", kStr).inert(),
      K("wandb.project", kStr, "deepspeed").inert(),
      K("csv_monitor", kSec).strict().nullable(),
      K("csv_monitor.enabled", kBool, "false").honoured(),
      K("csv_monitor.output_path", kStr, "").honoured(),
      K("csv_monitor.job_name", kStr, "DeepSpeedJobName").honoured(),
      K("comet", kSec).strict().nullable(),
      K("comet.enabled", kBool, "false").default_only(),
      K("comet.samples_log_interval", kInt, "100").at_least(1).inert(),
      K("comet.project", kStr).inert(),
      K("comet.workspace", kStr).inert(),
      K("comet.api_key", kStr).inert(),
      K("comet.experiment_name", kStr).inert(),
      K("comet.experiment_key", kStr).inert(),
      K("comet.online", kBool).inert(),
      K("comet.mode", kStr).inert(),
      K("comms_logger", kSec)
          .strict()
          .nullable()
          .presence()
          .note("DeepSpeed turns comms logging on whenever the section is present"),
      K("comms_logger.enabled", kBool, "false").inert(),
      K("comms_logger.verbose", kBool, "false").inert(),
      K("comms_logger.prof_all", kBool, "true").inert(),
      K("comms_logger.debug", kBool, "false").inert(),
      K("comms_logger.prof_ops", kStrs, "[]").inert(),
      K("flops_profiler", kSec).nullable(),
      K("flops_profiler.enabled", kBool, "false").default_only(),
      K("flops_profiler.recompute_fwd_factor", kFloat, "0.0").at_least(0).inert(),
      K("flops_profiler.profile_step", kInt, "1").inert(),
      K("flops_profiler.module_depth", kInt, "-1").inert(),
      K("flops_profiler.top_modules", kInt, "1").inert(),
      K("flops_profiler.detailed", kBool, "true").inert(),
      K("flops_profiler.output_file", kStr).inert(),
      K("timers", kSec).nullable(),
      K("timers.throughput", kSec).strict().nullable(),
      K("timers.throughput.enabled", kBool, "true").inert(),
      K("timers.throughput.synchronized", kBool, "true").inert(),

      // ---- §10 autotuning, elasticity ----
      K("autotuning", kSec).nullable(),
      K("autotuning.enabled", kBool, "false").default_only(),
      K("autotuning.fast", kBool, "true").inert(),
      K("autotuning.results_dir", kStr, "autotuning_results").inert(),
      K("autotuning.exps_dir", kStr, "autotuning_exps").inert(),
      K("autotuning.overwrite", kBool, "true").inert(),
      K("autotuning.start_profile_step", kInt, "3").inert(),
      K("autotuning.end_profile_step", kInt, "5").inert(),
      K("autotuning.start_step", kAny)
          .not_read("DeepSpeed ignores 'start_step': the key is 'start_profile_step'"),
      K("autotuning.end_step", kAny)
          .not_read("DeepSpeed ignores 'end_step': the key is 'end_profile_step'"),
      K("autotuning.metric", kStr, "throughput").one_of({"latency", "throughput", "flops"}).inert(),
      K("autotuning.metric_path", kStr).inert(),
      K("autotuning.tuner_type", kStr, "gridsearch")
          .one_of({"gridsearch", "random", "model_based"})
          .inert(),
      K("autotuning.tuner_early_stopping", kInt, "5").inert(),
      K("autotuning.tuner_num_trials", kInt, "50").inert(),
      K("autotuning.arg_mappings", kAny).inert().note("free-form: DeepSpeed key -> script flag"),
      K("autotuning.model_info", kSec).nullable(),
      K("autotuning.model_info.profile", kBool, "false").inert(),
      K("autotuning.model_info.num_params", kInt).inert(),
      K("autotuning.model_info.hidden_size", kInt).inert(),
      K("autotuning.model_info.num_layers", kInt).inert(),
      K("autotuning.model_info_path", kStr).inert(),
      K("autotuning.mp_size", kInt, "1").inert(),
      K("autotuning.max_train_batch_size", kInt).inert(),
      K("autotuning.min_train_batch_size", kInt, "1").inert(),
      K("autotuning.max_train_micro_batch_size_per_gpu", kInt, "1024").inert(),
      K("autotuning.min_train_micro_batch_size_per_gpu", kInt, "1").inert(),
      K("autotuning.num_tuning_micro_batch_sizes", kInt, "3").inert(),
      K("elasticity", kSec).nullable(),
      K("elasticity.enabled", kBool, "false").default_only(),
      K("elasticity.max_train_batch_size", kInt, "2000").at_least(1).inert(),
      K("elasticity.micro_batch_sizes", kInts, "[2, 4, 6]").at_least(1).inert(),
      K("elasticity.min_gpus", kInt, "1").at_least(1).inert(),
      K("elasticity.max_gpus", kInt, "10000").at_least(1).inert(),
      K("elasticity.min_time", kInt, "0").at_least(0).inert(),
      K("elasticity.version", kFloat, "0.2").range(0, 0.2).inert(),
      K("elasticity.prefer_larger_batch", kBool, "true").inert(),
      K("elasticity.prefer_large_batch", kAny)
          .not_read("DeepSpeed's docs spell it 'prefer_large_batch' but the code reads "
                    "'prefer_larger_batch' (the docs name is silently ignored)"),
      K("elasticity.ignore_non_elastic_batch_info", kBool, "false").inert(),
      K("elasticity.num_gpus_per_node", kInt, "1").at_least(1).inert(),
      K("elasticity.model_parallel_size", kInt, "1").at_least(1).inert(),

      // ---- §11 pipeline, sparse_attention, progressive_layer_drop ----
      K("pipeline", kSec).nullable(),
      K("pipeline.stages", ValueKind::kIntOrAuto, "auto").default_only(),
      K("pipeline.partition", kStr, "best").default_only(),
      K("pipeline.seed_layers", kBool, "false").default_only(),
      K("pipeline.activation_checkpoint_interval", kInt, "0").default_only(),
      K("pipeline.pipe_partitioned", kBool, "true").default_only(),
      K("pipeline.grad_partitioned", kBool, "true").default_only(),
      K("pipeline.use_reentrant", kBool, "true").default_only(),
      K("sparse_attention", kSec).nullable().presence(),
      K("sparse_attention.mode", kStr, "fixed")
          .one_of({"dense", "fixed", "variable", "bigbird", "bslongformer"})
          .inert(),
      K("sparse_attention.block", kInt, "16").at_least(1).inert(),
      K("sparse_attention.different_layout_per_head", kBool, "false").inert(),
      K("sparse_attention.num_local_blocks", kInt, "4").inert(),
      K("sparse_attention.num_global_blocks", kInt, "1").inert(),
      K("sparse_attention.attention", kStr, "bidirectional")
          .one_of({"unidirectional", "bidirectional"})
          .inert(),
      K("sparse_attention.horizontal_global_attention", kBool, "false").inert(),
      K("sparse_attention.num_different_global_patterns", kInt, "1").inert(),
      K("sparse_attention.num_random_blocks", kInt, "0").inert(),
      K("sparse_attention.local_window_blocks", kInts, "[4]").inert(),
      K("sparse_attention.global_block_indices", kInts, "[0]").inert(),
      K("sparse_attention.global_block_end_indices", kInts).inert(),
      K("sparse_attention.num_sliding_window_blocks", kInt, "3").inert(),
      K("progressive_layer_drop", kSec).nullable(),
      K("progressive_layer_drop.enabled", kBool, "false").default_only().required(),
      K("progressive_layer_drop.theta", kFloat, "1.0").inert(),
      K("progressive_layer_drop.gamma", kFloat, "0.001").inert(),

      // ---- §12 curriculum_learning (legacy), data_efficiency ----
      K("curriculum_learning", kSec).nullable(),
      K("curriculum_learning.enabled", kBool, "false").default_only().required(),
      K("curriculum_learning.curriculum_type", kStr).inert(),
      K("curriculum_learning.min_difficulty", kInt).inert(),
      K("curriculum_learning.max_difficulty", kInt).inert(),
      K("curriculum_learning.schedule_type", kStr)
          .one_of({"fixed_linear", "fixed_root", "fixed_discrete", "custom"})
          .inert(),
      K("curriculum_learning.schedule_config.total_curriculum_step", kInt).inert(),
      K("curriculum_learning.schedule_config.difficulty_step", kInt).inert(),
      K("curriculum_learning.schedule_config.root_degree", kInt).inert(),
      K("curriculum_learning.schedule_config.difficulty", kInts).inert(),
      K("curriculum_learning.schedule_config.max_step", kInts).inert(),
      K("data_efficiency", kSec).nullable(),
      K("data_efficiency.enabled", kBool, "false").default_only(),
      K("data_efficiency.seed", kInt, "1234").inert(),
      K("data_efficiency.data_sampling.enabled", kBool, "false").default_only(),
      K("data_efficiency.data_sampling.num_epochs", kInt, "1000").inert(),
      K("data_efficiency.data_sampling.num_workers", kInt, "0").inert(),
      K("data_efficiency.data_sampling.pin_memory", kBool, "false").inert(),
      K("data_efficiency.data_sampling.curriculum_learning.enabled", kBool, "false").default_only(),
      K("data_efficiency.data_sampling.curriculum_learning.data_cluster_path", kStr).inert(),
  };
  // Per-metric curriculum keys (the metric name is the user's).
  const std::string metric =
      "data_efficiency.data_sampling.curriculum_learning.curriculum_metrics.*.";
  for (const char* key : {"index_to_sample_path", "index_to_metric_path"}) {
    t.push_back(K((metric + key).c_str(), kStr).inert());
  }
  t.push_back(
      K((metric + "difficulty_type").c_str(), kStr).one_of({"value", "percentile"}).inert());
  t.push_back(K((metric + "clustering_type").c_str(), kStr)
                  .one_of({"schedule_based", "single_cluster"})
                  .inert());
  t.push_back(K((metric + "min_difficulty").c_str(), kInt).inert());
  t.push_back(K((metric + "max_difficulty").c_str(), kInt).inert());
  t.push_back(K((metric + "schedule_type").c_str(), kStr)
                  .one_of({"fixed_linear", "fixed_root", "fixed_discrete", "custom"})
                  .inert());
  for (const char* key : {"total_curriculum_step", "difficulty_step", "root_degree"}) {
    t.push_back(K((metric + "schedule_config." + key).c_str(), kInt).inert());
  }
  for (const char* key : {"difficulty", "max_step"}) {
    t.push_back(K((metric + "schedule_config." + key).c_str(), kInts).inert());
  }
  const std::string dynamic = "data_efficiency.data_sampling.dynamic_batching.";
  const std::string ltd = "data_efficiency.data_routing.random_ltd.";
  std::vector<KeySpec> more = {
      K((dynamic + "enabled").c_str(), kBool, "false").default_only(),
      K((dynamic + "metrics_path").c_str(), kStr).inert(),
      K((dynamic + "lr_scaling_method").c_str(), kStr, "linear")
          .one_of({"linear", "sqrt", "none"})
          .inert(),
      K((dynamic + "min_batch_size").c_str(), kInt, "1").inert(),
      K((dynamic + "max_batch_size").c_str(), kInt).inert(),
      K((dynamic + "sequence_picking_order").c_str(), kStr, "dataloader")
          .one_of({"random", "seqlen", "dataloader"})
          .inert(),
      K((dynamic + "max_tokens").c_str(), kInt).inert(),
      K((dynamic + "verbose").c_str(), kBool, "false").inert(),
      K("data_efficiency.data_routing.enabled", kBool, "false").default_only(),
      K((ltd + "enabled").c_str(), kBool, "false").default_only(),
      K((ltd + "total_layer_num").c_str(), kInt).inert(),
      K((ltd + "random_ltd_layer_num").c_str(), kInt).inert(),
      K((ltd + "random_ltd_layer_id").c_str(), kInts).inert(),
      K((ltd + "model_mask_name").c_str(), kStr).inert(),
      K((ltd + "model_type").c_str(), kStr).one_of({"encoder", "decoder"}).inert(),
      K((ltd + "hidden_state_order").c_str(), kStr)
          .one_of({"batch_seq_dim", "seq_batch_dim"})
          .inert(),
      K((ltd + "random_ltd_schedule.min_value").c_str(), kInt).inert(),
      K((ltd + "random_ltd_schedule.max_value").c_str(), kInt).inert(),
      K((ltd + "random_ltd_schedule.schedule_type").c_str(), kStr).one_of({"fixed_linear"}).inert(),
      K((ltd + "random_ltd_schedule.schedule_config.require_steps").c_str(), kInt).inert(),
      K((ltd + "random_ltd_schedule.schedule_config.seq_per_step").c_str(), kInt).inert(),
      K((ltd + "layer_token_lr_schedule.enabled").c_str(), kBool, "false").inert(),
      K((ltd + "layer_token_lr_schedule.total_layer_tokens").c_str(), kInt).inert(),
      K((ltd + "layer_token_lr_schedule.warmup_type").c_str(), kStr).inert(),
      K((ltd + "layer_token_lr_schedule.warmup_layer_tokens").c_str(), kInt).inert(),
      K((ltd + "micro_batch_size").c_str(), kInt).inert(),
      K((ltd + "global_batch_size").c_str(), kInt).inert(),

      // ---- §13 compression_training (techniques are gated by shared_parameters.enabled) ----
      K("compression_training", kSec).nullable(),
      K("compression_training.layer_reduction.enabled", kBool, "false").default_only(),
      K("compression_training.layer_reduction.keep_number_layer", kInt).inert(),
      K("compression_training.layer_reduction.module_name_prefix", kStr).inert(),
      K("compression_training.layer_reduction.teacher_layer", kInts).inert(),
      K("compression_training.layer_reduction.other_module_name", kStrs).inert(),
  };
  t.insert(t.end(), more.begin(), more.end());
  const std::string ct = "compression_training.";
  for (const char* technique : {"weight_quantization", "activation_quantization", "sparse_pruning",
                                "row_pruning", "head_pruning", "channel_pruning"}) {
    const std::string shared = ct + technique + ".shared_parameters.";
    const std::string group = ct + technique + ".different_groups.*.";
    t.push_back(K((shared + "enabled").c_str(), kBool, "false").default_only());
    t.push_back(K((group + "modules").c_str(), kStrs, "[\"*\"]").inert());
    t.push_back(K((group + "related_modules").c_str(), kList).inert());
  }
  const std::string wq = ct + "weight_quantization.shared_parameters.";
  const std::string aq = ct + "activation_quantization.shared_parameters.";
  const std::string sp = ct + "sparse_pruning.shared_parameters.";
  more = {
      K((wq + "quantizer_kernel").c_str(), kBool, "false").inert(),
      K((wq + "schedule_offset").c_str(), kInt, "0").inert(),
      K((wq + "quantize_groups").c_str(), kInt, "1").inert(),
      K((wq + "quantize_verbose").c_str(), kBool, "false").inert(),
      K((wq + "quantization_type").c_str(), kStr, "symmetric")
          .one_of({"symmetric", "asymmetric"})
          .inert(),
      K((wq + "rounding").c_str(), kStr, "nearest").one_of({"nearest", "stochastic"}).inert(),
      K((wq + "quantize_weight_in_forward").c_str(), kBool, "false").inert(),
      K((wq + "fp16_mixed_quantize.enabled").c_str(), kBool, "false").inert(),
      K((wq + "fp16_mixed_quantize.quantize_change_ratio").c_str(), kFloat, "0.001").inert(),
      K((ct + "weight_quantization.different_groups.*.params.start_bits").c_str(), kInt).inert(),
      K((ct + "weight_quantization.different_groups.*.params.target_bits").c_str(), kInt).inert(),
      K((ct + "weight_quantization.different_groups.*.params.quantization_period").c_str(), kInt,
        "1")
          .inert(),
      K((aq + "quantization_type").c_str(), kStr, "symmetric")
          .one_of({"symmetric", "asymmetric"})
          .inert(),
      K((aq + "range_calibration").c_str(), kStr, "dynamic").one_of({"dynamic", "static"}).inert(),
      K((aq + "schedule_offset").c_str(), kInt, "1000").inert(),
      K((ct + "activation_quantization.different_groups.*.params.bits").c_str(), kInt).inert(),
      K((sp + "method").c_str(), kStr, "l1").one_of({"l1", "topk", "snip_momentum"}).inert(),
      K((sp + "schedule_offset").c_str(), kInt, "1000").inert(),
      K((sp + "block_pattern").c_str(), kStr, "4x1").inert(),
      K((sp + "dense_ratio").c_str(), kFloat, "0.1").range(0, 1).inert(),
      K((sp + "schedule_offset_stride").c_str(), kInt, "1").inert(),
      K((sp + "excluded_modules").c_str(), kStrs, "[]").inert(),
      K((sp + "schedule_offset_end").c_str(), kInt).inert(),
      K((ct + "sparse_pruning.different_groups.*.params.dense_ratio").c_str(), kFloat).inert(),
  };
  t.insert(t.end(), more.begin(), more.end());
  for (const char* technique : {"row_pruning", "head_pruning", "channel_pruning"}) {
    const std::string shared = ct + technique + ".shared_parameters.";
    const bool head = std::string(technique) == "head_pruning";
    t.push_back(
        K((shared + "method").c_str(), kStr, head ? "topk" : "l1").one_of({"l1", "topk"}).inert());
    t.push_back(K((shared + "schedule_offset").c_str(), kInt, "1000").inert());
    t.push_back(
        K((ct + technique + ".different_groups.*.params.dense_ratio").c_str(), kFloat).inert());
  }
  t.push_back(K((ct + "head_pruning.shared_parameters.num_heads").c_str(), kInt).inert());

  const char* kMoqHint =
      "a legacy MoQ key that DeepSpeed silently ignores since 0.7 (#2105); MoQ lives in "
      "compression_training.weight_quantization";
  more = {
      K("quantize_training", kSec).nullable(),
      K("quantize_training.eigenvalue.enabled", kBool, "false").default_only(),
      K("quantize_training.eigenvalue.verbose", kBool, "false").inert(),
      K("quantize_training.eigenvalue.max_iter", kInt, "100").inert(),
      K("quantize_training.eigenvalue.tol", kFloat, "0.01").inert(),
      K("quantize_training.eigenvalue.stability", kFloat, "1e-06").inert(),
      K("quantize_training.eigenvalue.gas_boundary_resolution", kInt, "1").inert(),
      K("quantize_training.eigenvalue.layer_name", kStr, "bert.encoder.layer").inert(),
      K("quantize_training.eigenvalue.layer_num", kInt, "0").inert(),
      K("quantize_training.enabled", kAny).not_read(kMoqHint),
      K("quantize_training.quantize_bits", kAny).not_read(kMoqHint),
      K("quantize_training.quantize_schedule", kAny).not_read(kMoqHint),
      K("quantize_training.quantize_groups", kAny).not_read(kMoqHint),
      K("quantize_training.quantize_algo", kAny).not_read(kMoqHint),
      K("quantize_training.quantize_verbose", kAny).not_read(kMoqHint),
      K("quantize_training.quantizer_kernel", kAny).not_read(kMoqHint),
      K("quantize_training.fp16_mixed_quantize", kAny).not_read(kMoqHint),
      // Presence = enabled (enabled defaults to true).
      K("weight_quantization", kSec).strict().nullable().presence(),
      K("weight_quantization.enabled", kBool, "true").inert(),
      K("weight_quantization.num_bits", kInt, "8").at_least(1).inert(),
      K("weight_quantization.q_type", kStr, "symmetric")
          .one_of({"symmetric", "asymmetric"})
          .inert(),
      K("weight_quantization.q_groups", kInt, "1").at_least(1).inert(),
      K("weight_quantization.quantized_initialization", kAny, "{}").inert(),
      K("weight_quantization.post_init_quant", kAny, "{}").inert(),

      // ---- §14 hybrid_engine, compile, tensor_parallel, expert_parallel ----
      K("hybrid_engine", kSec).strict().nullable(),
      K("hybrid_engine.enabled", kBool, "false").default_only(),
      K("hybrid_engine.max_out_tokens", kInt, "512").inert(),
      K("hybrid_engine.inference_tp_size", kInt, "1").inert(),
      K("hybrid_engine.release_inference_cache", kBool, "false").inert(),
      K("hybrid_engine.pin_parameters", kBool, "true").inert(),
      K("hybrid_engine.tp_gather_partition_size", kInt, "8").inert(),
      K("hybrid_engine.enable_cuda_graph", kBool, "false").inert(),
      K("compile", kSec).strict().nullable(),
      K("compile.deepcompile", kBool, "false").default_only(),
      K("compile.free_activation", kBool, "false").inert(),
      K("compile.free_activation_threshold", kInt, "10485760").inert(),
      K("compile.offload_activation", kBool, "false").inert(),
      K("compile.offload_activation_pin_memory", kBool, "true").inert(),
      K("compile.offload_opt_states", kBool, "false").inert(),
      K("compile.offload_parameters", kBool, "false").inert(),
      K("compile.double_buffer", kBool, "true").inert(),
      K("compile.symmetric_memory", kBool, "false").inert(),
      K("compile.debug_log", kBool, "false").inert(),
      K("compile.sync_before_reduce", kBool, "false").inert(),
      K("compile.sync_after_reduce", kBool, "false").inert(),
      K("compile.sync_before_allgather", kBool, "false").inert(),
      K("compile.sync_after_allgather", kBool, "false").inert(),
      K("compile.keep_int_input_tensors", kBool, "true").inert(),
      K("compile.keep_all_input_tensors", kBool, "false").inert(),
      K("compile.passes", kStrs).one_of({"z1", "z3", "autosp", "autotp"}).inert(),
      K("tensor_parallel", kSec).strict().nullable(),
      K("tensor_parallel.autotp_size", kInt, "0").at_least(0).default_only(),
      K("tensor_parallel.tp_overlap_comm", kBool, "false").inert(),
      K("tensor_parallel.preset_model", kStr)
          .one_of({"llama", "bloom", "chatglm", "mixtral", "deepseek_v2", "qwen2", "phi3"})
          .inert(),
      K("tensor_parallel.partition_config", kSec).nullable(),
      K("tensor_parallel.partition_config.use_default_specs", kBool, "true").inert(),
      K("tensor_parallel.partition_config.tp_size", kInt, "1").inert(),
      K("tensor_parallel.partition_config.embedding_partition_dim", kInt, "1").inert(),
      K("tensor_parallel.partition_config.lm_head_patterns", kStrs, "[\"lm_head\", \"embed_out\"]")
          .inert(),
      K("tensor_parallel.partition_config.strict_mode", kBool, "false").inert(),
      K("tensor_parallel.partition_config.layer_specs", ValueKind::kListOfSections).inert(),
      K("tensor_parallel.partition_config.layer_specs.patterns", kStrs, "[]").inert(),
      K("tensor_parallel.partition_config.layer_specs.partition_type", kStr, "column")
          .one_of({"row", "column", "skip"})
          .inert(),
      K("tensor_parallel.partition_config.layer_specs.shape", kList).inert(),
      K("tensor_parallel.partition_config.layer_specs.partition_dim", kInt).inert(),
      K("tensor_parallel.partition_config.layer_specs.model_types", kStrs).inert(),
      K("tensor_parallel.partition_config.layer_specs.gather_output", kBool, "false").inert(),
      K("tensor_parallel.partition_config.layer_specs.grad_allreduce", kBool, "false").inert(),
      K("tensor_parallel.keep_module_on_host", kBool, "false").inert(),
      K("tensor_parallel.replace_with_kernel_inject", kBool, "false").default_only(),
      K("tensor_parallel.kernel_inject", kBool).alias("tensor_parallel.replace_with_kernel_inject"),
      K("tensor_parallel.tp", kSec).nullable(),
      K("tensor_parallel.tp.tp_size", kInt, "1").range(1, 1).default_only(),
      K("tensor_parallel.tp.tp_grain_size", kInt, "1").inert(),
      K("tensor_parallel.tp.mpu", kAny).inert(),
      K("tensor_parallel.tp.tp_group", kAny).inert(),
      K("tensor_parallel.tensor_parallel", kSec).nullable().alias("tensor_parallel.tp"),
      K("tensor_parallel.dtype", kAny).inert().note("a torch.dtype; set only via tp_model_init"),
      K("tensor_parallel.injection_policy_tuple", kAny).inert(),
      K("expert_parallel", kSec).nullable(),
      K("expert_parallel.enabled", kBool, "false").default_only(),
      K("expert_parallel.autoep_size", kInt, "1").at_least(1).inert(),
      K("expert_parallel.expert_tensor_parallel_size", kInt, "1").range(1, 1).inert(),
      K("expert_parallel.validate_folding_routing", kBool, "false").inert(),
      K("expert_parallel.preset_model", kStr)
          .one_of({"mixtral", "qwen3_moe", "qwen3_5_moe", "deepseek_v2", "deepseek_v3"})
          .inert(),
      K("expert_parallel.moe_layer_pattern", kStr).inert(),
      K("expert_parallel.router_pattern", kStr).inert(),
      K("expert_parallel.expert_pattern", kStr).inert(),
      K("expert_parallel.use_grouped_mm", kBool, "true").inert(),
      K("expert_parallel.disable_triton_grouped_mm", kBool, "false").inert(),
      K("expert_parallel.score_func", kStr, "auto").one_of({"auto", "softmax", "sigmoid"}).inert(),
      K("expert_parallel.score_apply", kStr, "auto").one_of({"auto", "pre", "post"}).inert(),
      K("expert_parallel.combine_impl", kStr, "auto")
          .one_of({"auto", "weighted_sum", "legacy_bmm"})
          .inert(),
      K("expert_parallel.route_norm", kBool).inert(),
      K("expert_parallel.route_scale", kFloat, "1.0").inert(),
      K("expert_parallel.top_k", ValueKind::kNumberOrString, "auto").inert(),
      K("expert_parallel.routed_scaling_factor", ValueKind::kNumberOrString, "auto").inert(),
      K("expert_parallel.num_expert_groups", kInt).at_least(1).inert(),
      K("expert_parallel.num_limited_groups", kInt).at_least(1).inert(),
      K("expert_parallel.load_balance_coeff", ValueKind::kNullOnly).inert(),
      K("expert_parallel.expert_w1", kStr).inert(),
      K("expert_parallel.expert_w2", kStr).inert(),
      K("expert_parallel.expert_w3", kStr).inert(),
      K("expert_parallel.num_experts_attr", kStr).inert(),
      K("expert_parallel.top_k_attr", kStr).inert(),
      K("expert_parallel.has_shared_experts", kBool).inert(),
      K("expert_parallel.shared_experts_pattern", kStr).inert(),
      K("expert_parallel.shared_experts_gate_pattern", kStr).inert(),

      // ---- §15 nebula, datastates_ckpt ----
      K("nebula", kSec).nullable(),
      K("nebula.enabled", kBool, "false").default_only(),
      K("nebula.enable_nebula_load", kBool, "true").inert(),
      K("nebula.persistent_storage_path", kStr).inert(),
      K("nebula.nebula_load_path", kStr).inert(),
      K("nebula.persistent_time_interval", kInt, "100").inert(),
      K("nebula.num_of_version_in_retention", kInt, "2").inert(),
      K("datastates_ckpt", kAny)
          .presence()
          .note("any value but false hands checkpointing to the DataStates engine"),
  };
  t.insert(t.end(), more.begin(), more.end());

  // bf16-only model: the fp16 loss-scaling keys are rejected by DeepSpeed under bf16.
  for (const char* key :
       {"loss_scale", "initial_scale_power", "loss_scale_window", "hysteresis",
        "consecutive_hysteresis", "min_loss_scale", "auto_cast", "fp16_master_weights_and_grads"}) {
    t.push_back(K((std::string("bf16.") + key).c_str(), kAny)
                    .not_read("an fp16-only key: DeepSpeed rejects it under bf16 (bf16 needs no "
                              "loss scaling); move it to the fp16 section or drop it"));
  }
  return t;
}

// A tree over the table so a walker can look children up by name.
struct SchemaNode {
  const KeySpec* spec = nullptr;
  std::map<std::string, std::unique_ptr<SchemaNode>> children;
};

struct Schema {
  std::vector<KeySpec> table;
  SchemaNode root;
  Schema() : table(build_table()) {
    for (const KeySpec& spec : table) {
      SchemaNode* node = &root;
      std::size_t start = 0;
      while (true) {
        const std::size_t dot = spec.path.find('.', start);
        const std::string part = spec.path.substr(start, dot - start);
        auto& child = node->children[part];
        if (!child) child = std::make_unique<SchemaNode>();
        node = child.get();
        if (dot == std::string::npos) break;
        start = dot + 1;
      }
      node->spec = &spec;
    }
  }
};

const Schema& schema() {
  static const Schema instance;
  return instance;
}

const SchemaNode* find_node(const std::string& dotted_path) {
  const SchemaNode* node = &schema().root;
  if (dotted_path.empty()) return node;
  std::size_t start = 0;
  while (node) {
    const std::size_t dot = dotted_path.find('.', start);
    std::string part = dotted_path.substr(start, dot - start);
    // "layer_specs[]" or "layer_specs[3]": an element of a list of sections.
    const std::size_t bracket = part.find('[');
    if (bracket != std::string::npos && bracket > 0) part.resize(bracket);
    auto it = node->children.find(part);
    if (it == node->children.end()) it = node->children.find("*");
    node = it == node->children.end() ? nullptr : it->second.get();
    // An alias section (bfloat16, tensor_parallel.tensor_parallel) has no children of its own.
    if (node && node->children.empty() && node->spec && !node->spec->alias_of.empty() &&
        dot != std::string::npos) {
      node = find_node(node->spec->alias_of);
    }
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return node;
}

}  // namespace

const std::vector<KeySpec>& all_key_specs() {
  return schema().table;
}

const KeySpec* find_key_spec(const std::string& dotted_path) {
  const SchemaNode* node = find_node(dotted_path);
  if (!node) return nullptr;
  if (node->spec) return node->spec;
  // An implied section (only its children are listed) still exists.
  static const KeySpec implied_section = [] {
    KeySpec spec;
    spec.kind = ValueKind::kSection;
    spec.nullable = true;
    return spec;
  }();
  return &implied_section;
}

std::vector<std::string> child_names(const std::string& section_path) {
  std::vector<std::string> names;
  const SchemaNode* node = find_node(section_path);
  if (!node) return names;
  for (const auto& [name, child] : node->children) {
    if (name == "*") continue;
    if (child->spec && child->spec->support == Support::kNotRead) continue;
    names.push_back(name);
  }
  return names;
}

std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> previous(b.size() + 1), current(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) previous[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    current[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t substitution = previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
      current[j] = std::min({previous[j] + 1, current[j - 1] + 1, substitution});
    }
    std::swap(previous, current);
  }
  return previous[b.size()];
}

namespace {
// The words of a snake_case name, sorted: "comm_overlap" and "overlap_comm" have the same.
std::vector<std::string> sorted_words(const std::string& name) {
  std::vector<std::string> words;
  std::string word;
  for (const char c : name + "_") {
    if (c == '_') {
      if (!word.empty()) words.push_back(word);
      word.clear();
    } else {
      word.push_back(c);
    }
  }
  std::sort(words.begin(), words.end());
  return words;
}
}  // namespace

std::string closest_name(const std::string& name, const std::vector<std::string>& candidates) {
  std::string lowered = name;
  std::transform(lowered.begin(), lowered.end(), lowered.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  // The same words in another order is the likeliest slip of all, however many edits apart
  // (zero_optimization.comm_overlap for overlap_comm, in a published config).
  const std::vector<std::string> words = sorted_words(lowered);
  if (words.size() > 1)
    for (const std::string& candidate : candidates)
      if (sorted_words(candidate) == words) return candidate;
  std::string best;
  std::size_t best_distance = std::numeric_limits<std::size_t>::max();
  for (const std::string& candidate : candidates) {
    const std::size_t distance = edit_distance(lowered, candidate);
    if (distance < best_distance) {
      best_distance = distance;
      best = candidate;
    }
  }
  // A typo is a few edits; a name sharing a long prefix or suffix (stage3_ vs bare) is also a
  // plausible slip, so allow a third of the length as well.
  const std::size_t allowed = std::max<std::size_t>(2, name.size() / 3);
  return best_distance <= allowed ? best : std::string();
}

}  // namespace zt::config
