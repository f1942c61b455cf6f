// SPDX-License-Identifier: Apache-2.0
// zerotrain's reader of DeepSpeed configs (JSON, or the same structure in YAML).
//
//   ResolvedConfig cfg = zt::config::load_config("ds_config.json", flags, model, world, steps);
//   std::cout << zt::config::format_effective_config(cfg);
//
// What it does, in order (errors are collected, not thrown one by one; ConfigError carries all):
//  1. parse with yaml-cpp (JSON is YAML); duplicate keys are an error (DeepSpeed fails on them);
//  2. walk every key against the schema (schema.hpp, a table of every key DeepSpeed 0.19 reads):
//     unknown key -> error with the closest valid name; wrong type, out of range, bad choice ->
//     error; DeepSpeed's lax coercions are accepted (5e8 for ints, "100", 0/1, "true");
//     both spellings of one setting with different values -> error;
//  3. resolve "auto" the way the Hugging Face Trainer does (trainer_config_process/_finalize),
//     from CommandLineOverrides (HF flag names) and ModelFacts; a given flag that contradicts a
//     concrete config value is an error naming both;
//  4. derive the batch triple exactly as DeepSpeed does (integer division, same assertion);
//  5. refuse what zerotrain does not do yet ("not supported yet: <key> = <value>"): a key is
//     honoured, or accepted because its value is DeepSpeed's default/disabled, or refused.
// Every effective value is recorded with where it came from (Entry) for the start-up print.
//
// Decisions where DeepSpeed or the reference leave room (see also schema.cpp):
//  - Unknown keys are errors everywhere, top level included (DeepSpeed ignores those).
//  - aio.thread_count (the docs' name, ignored by DeepSpeed >= 0.16.4) is read as an alias of
//    intra_op_parallelism (DESIGN.md §1); the other "look valid but are not read" names of
//    deepspeed-keys.md §16 are refused with a hint naming the right key.
//  - "auto": the HF keys are resolved as the Trainer does; "auto" on another direct key of a
//    pydantic section (fp16, zero_optimization, ...) means DeepSpeed's default (DeepSpeed drops
//    it); anywhere else it is an error. A flag given for a key the config omits fills it
//    (source "flag"); the HF Trainer would ignore the flag there. A flag contradicting a
//    concrete value is an error; without the flag the config wins. For betas only the given
//    beta is compared. train_batch_size "auto" = world x micro x gas with the effective micro
//    and gas. total_num_steps "auto" without --max_steps takes run_steps.
//  - The Trainer default --warmup_steps 0 makes warmup_num_steps 0, which DeepSpeed refuses
//    ("must be a positive integer"); so is it here — pass --warmup_steps.
//  - No optimizer section: AdamW from the flags/Trainer defaults (zerotrain has no client
//    optimizer; the HF Trainer does the same). No scheduler section: constant lr.
//  - steps_per_print unset (DeepSpeed: None, no progress lines): 10, source "default".
//  - Sections whose presence turns a feature on in DeepSpeed (sparse_attention, zenflow,
//    comms_logger, weight_quantization, checkpoint.writer, datastates_ckpt) are refused unless
//    null or `enabled: false`.
//  - Precision (deepspeed-keys.md §4): fp16 and bf16 are honoured; what the engine needs is
//    resolved in ResolvedConfig::precision and communication_data_type (unset: the training
//    dtype, as DeepSpeed's None). Refused with their reason: fp16.auto_cast, fp16/bf16 16-bit
//    master weights, bf16_optimizer_states, amp, torch_autocast. loss_scale_window and
//    min_loss_scale must be > 0 when fp16 is enabled with dynamic scaling (as DeepSpeed); so must
//    hysteresis (DeepSpeed accepts <= 0 and then never lowers the scale). bf16 together with the
//    deprecated bfloat16: DeepSpeed ignores bfloat16; here a bfloat16 key that would change
//    anything (differs from bf16's value or default) is an error. bf16.immediate_grad_update is
//    accepted with no effect (see its entry): DeepSpeed's ZeRO optimizers do not read it.
//  - Offload (deepspeed-keys.md §5.1): device "cpu" or "nvme" for offload_optimizer at stages
//    1-3 (DeepSpeed silently runs "nvme" as "cpu" at stages 1-2; zerotrain swaps to NVMe there
//    too) and for offload_param at stage 3; elsewhere (where DeepSpeed has no offload or ignores
//    it) refused by name. A key of an offload section written with a value other than
//    DeepSpeed's default where DeepSpeed does not read it (the NVMe-only keys unless the device
//    is nvme, every key while it is "none") is an error. The deprecated cpu_offload /
//    cpu_offload_param: true set the device to "cpu"; cpu_offload_use_pin_memory is not applied
//    (DeepSpeed only warns). No "optimizer" section with optimizer offload is DeepSpeed's
//    client-optimizer error unless zero_force_ds_cpu_optimizer is false.
//  - NVMe (ZeRO-Infinity): nvme_path is required with device "nvme" (DeepSpeed's None fails in
//    its swapper); whether the folder exists and is writable is checked when training starts,
//    on every node, not here. offload_optimizer.buffer_count counts host buffers of one
//    sub-group's array; the engine needs 3 per set (fp32 master, exp_avg, exp_avg_sq): at least
//    1 set (buffer_count >= 3), 2 with pipeline_read or pipeline_write (>= 6), 3 with both
//    (>= 9). offload_param nvme needs buffer_count and buffer_size >= 1. fast_init true is
//    accepted and changes nothing (the fp32 master is always built from the parameters; the
//    start-up print says so).
//  - aio (deepspeed-keys.md §6): thread_count and intra_op_parallelism are one setting;
//    block_size must be a multiple of 4096 (O_DIRECT), queue_depth in [1, 32768],
//    intra_op_parallelism in [1, 1024]; use_gds true is not supported yet (GPUDirect Storage).
//    Without NVMe offload the block is accepted and its written keys are marked unused. The
//    Hugging Face guide writes the block inside zero_optimization (which DeepSpeed's strict
//    section would reject); it is read there as the top-level aio, key by key the same setting.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace zt::config {

// Flags with the Hugging Face Trainer's names (--learning_rate ...). Unset = not given.
struct CommandLineOverrides {
  std::optional<double> learning_rate;       // --learning_rate    (Trainer default 5e-5)
  std::optional<double> adam_beta1;          // --adam_beta1       (0.9)
  std::optional<double> adam_beta2;          // --adam_beta2       (0.999)
  std::optional<double> adam_epsilon;        // --adam_epsilon     (1e-8)
  std::optional<double> weight_decay;        // --weight_decay     (0)
  std::optional<double> max_grad_norm;       // --max_grad_norm    (1.0)
  std::optional<std::int64_t> warmup_steps;  // --warmup_steps (0)
  std::optional<std::int64_t> max_steps;     // --max_steps / --steps (none)
  std::optional<std::int64_t> per_device_train_batch_size;  // (8)
  std::optional<std::int64_t> gradient_accumulation_steps;  // (1)
  bool fp16 = false;                                        // --fp16 given
  bool bf16 = false;                                        // --bf16 given
};

// What "auto" may need from the model description.
struct ModelFacts {
  std::int64_t hidden_size = 0;  // 0 = unknown ("auto" bucket sizes then fail)
};

// All problems of one config, one per line in what().
struct ConfigError : std::runtime_error {
  explicit ConfigError(std::vector<std::string> problems);
  std::vector<std::string> problems;
};

// Where an effective value came from.
enum class Source {
  kFile,                // written in the config
  kFlag,                // a command-line flag (config key absent)
  kAutoFromFlag,        // "auto" in the config, resolved from a flag
  kAutoTrainerDefault,  // "auto", no flag: the HF Trainer's default for that flag
  kAutoModel,           // "auto" resolved from the model (hidden_size)
  kAutoDefault,         // "auto" in a strict DeepSpeed section: DeepSpeed drops it -> default
  kDerived,             // computed (batch triple, overlap_comm, lr of WarmupLR, run length)
  kDefault,             // DeepSpeed's code default (or zerotrain's, where DeepSpeed has None)
};
const char* source_name(Source source);

struct Entry {
  std::string path;        // canonical dotted key, e.g. "zero_optimization.reduce_bucket_size"
  std::string value_text;  // the effective value as JSON-ish text
  Source source = Source::kDefault;
  std::string detail;  // e.g. "--learning_rate", "hidden_size 768", "bfloat16.enabled"
};

enum class OptimizerType { kAdam, kAdamW, kLamb };
enum class SchedulerType {
  kNone,
  kWarmupLR,
  kWarmupDecayLR,
  kWarmupCosineLR,
  kOneCycle,
  kLRRangeTest
};
enum class DataType { kFp32, kFp16, kBf16 };
enum class OffloadDevice { kNone, kCpu, kNvme };

struct OptimizerConfig {
  OptimizerType type = OptimizerType::kAdamW;
  std::string type_name = "AdamW";  // as written
  double lr = 1e-3;
  double beta1 = 0.9, beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool adam_w_mode = true;  // effective: type == AdamW or params.adam_w_mode (Adam/AdamW only)
  bool bias_correction = true;
  bool torch_adam = false;                    // accepted; same math
  double max_coeff = 10.0, min_coeff = 0.01;  // Lamb trust-ratio clamp
  bool eps_inside_sqrt = false;               // Lamb
};

// Every scheduler parameter; only those of `type` are meaningful.
struct SchedulerConfig {
  SchedulerType type = SchedulerType::kNone;
  // WarmupLR / WarmupDecayLR / WarmupCosineLR
  double warmup_min_lr = 0.0;
  double warmup_max_lr = 1e-3;  // WarmupLR: the optimizer lr when absent; WarmupDecayLR 0.001
  std::int64_t warmup_num_steps = 1000;
  std::string warmup_type = "log";                      // "log" | "linear"
  std::int64_t total_num_steps = 0;                     // WarmupDecayLR, WarmupCosineLR (required)
  double warmup_min_ratio = 0.0, cos_min_ratio = 1e-4;  // WarmupCosineLR
  // OneCycle
  double cycle_min_lr = 0.0, cycle_max_lr = 0.0, decay_lr_rate = 0.0;
  std::int64_t cycle_first_step_size = 2000;
  std::int64_t cycle_second_step_size = 2000;  // None -> first
  std::int64_t cycle_first_stair_count = 0;
  std::int64_t cycle_second_stair_count = 0;  // None -> first stair count
  std::int64_t decay_step_size = 0;
  bool cycle_momentum = true;
  double cycle_min_mom = 0.8, cycle_max_mom = 0.9, decay_mom_rate = 0.0;
  // LRRangeTest
  double lr_range_test_min_lr = 1e-3;
  std::int64_t lr_range_test_step_size = 2000;
  double lr_range_test_step_rate = 1.0;
  bool lr_range_test_staircase = false;
};

struct OffloadConfig {
  OffloadDevice device = OffloadDevice::kNone;
  std::string nvme_path;                 // "" = None
  std::int64_t buffer_count = 0;         // param 5, optimizer 4
  std::int64_t buffer_size = 100000000;  // offload_param only (elements)
  std::int64_t max_in_cpu = 1000000000;  // offload_param only (elements)
  bool pin_memory = true;
  bool pipeline_read = false, pipeline_write = false, fast_init = false;  // optimizer only
  double ratio = 1.0;                                                     // optimizer only
};

struct ZeroConfig {
  int stage = 0;
  bool contiguous_gradients = true;
  bool reduce_scatter = true;
  std::int64_t reduce_bucket_size = 500000000;
  bool use_multi_rank_bucket_allreduce = true;
  bool allgather_partitions = true;
  std::int64_t allgather_bucket_size = 500000000;
  bool overlap_comm = false;  // DeepSpeed: None -> (stage == 3)
  bool load_from_fp32_weights = true;
  std::int64_t sub_group_size = 1000000000;
  std::int64_t prefetch_bucket_size = 50000000;
  std::int64_t param_persistence_threshold = 100000;
  std::int64_t model_persistence_threshold = INT64_MAX;
  std::int64_t max_live_parameters = 1000000000;
  std::int64_t max_reuse_distance = 1000000000;
  bool gather_16bit_weights_on_model_save = false;
  bool ignore_unused_parameters = true;
  bool round_robin_gradients = false;
  OffloadConfig offload_param{OffloadDevice::kNone, "", 5};
  OffloadConfig offload_optimizer{OffloadDevice::kNone, "", 4};
};

// The fp16 section as written (else DeepSpeed's key defaults); the scaler the engine builds is
// ResolvedConfig::precision.loss_scaler.
struct Fp16Config {
  bool enabled = false;
  double loss_scale = 0.0;  // 0 = dynamic
  int initial_scale_power = 16;
  std::int64_t loss_scale_window = 1000;
  int hysteresis = 2;
  bool consecutive_hysteresis = false;
  double min_loss_scale = 1.0;
  // DeepSpeed quirk (deepspeed.md §1.6): ZeRO's scaler uses these only when at least one of
  // initial_scale_power/loss_scale_window/min_loss_scale/hysteresis/consecutive_hysteresis is
  // written; otherwise its class defaults (2^32, window 1000, min 1, hysteresis 1).
  bool dynamic_scaler_args_given = false;
};

// The loss scaler the engine builds (zero::LossScalerSettings has the same fields; DeepSpeed's
// CreateLossScaler): dynamic only for fp16 with loss_scale 0; otherwise static, with the fp16
// loss_scale or 1.0 (bf16, fp32).
struct LossScalerValues {
  bool dynamic = false;
  double static_scale = 1.0;
  double init_scale = 4294967296.0;  // 2^32
  std::int64_t window = 1000;
  double min_scale = 1.0;
  int delayed_shift = 1;  // hysteresis
  bool consecutive_hysteresis = false;
  bool raise_error_at_min_scale = true;  // DeepSpeed's ZeRO optimizers never turn it off
};

// DeepSpeed's mapping of the fp16 section onto ZeRO's scaler, quirk included: with no dynamic key
// written, DynamicLossScaler's class defaults (2^32, window 1000, min 1, hysteresis 1) instead of
// the fp16 key defaults. Meaningful when fp16.enabled; a disabled fp16 gives static 1.0.
LossScalerValues loss_scaler_values(const Fp16Config& fp16);

struct Bf16Config {
  bool enabled = false;
  bool immediate_grad_update = false;  // accepted, no effect (DeepSpeed's ZeRO does not read it)
  bool check_grad_overflow = true;
};

// Everything the engine needs about precision, resolved.
struct PrecisionConfig {
  DataType training_dtype = DataType::kFp32;  // model weights/activations/gradients (fp16, bf16)
  // Gradient accumulation dtype (data_types.grad_accum_dtype; DeepSpeed's None: the model dtype
  // under ZeRO, fp32 for bf16 without ZeRO).
  DataType grad_accum_dtype = DataType::kFp32;
  // Check gradients for inf/nan and skip the step on overflow: always for fp16, per
  // bf16.check_grad_overflow for bf16 (default true), never for fp32.
  bool check_grad_overflow = false;
  LossScalerValues loss_scaler;  // see loss_scaler_values(); static 1.0 unless fp16
};

struct AioConfig {
  std::int64_t block_size = 1048576;
  std::int64_t queue_depth = 8;
  std::int64_t intra_op_parallelism = 1;  // also read from the docs' name aio.thread_count
  bool single_submit = false;
  bool overlap_events = true;
};

struct CheckpointConfig {
  std::string tag_validation = "Warn";  // Ignore | Warn | Fail (as DeepSpeed capitalises)
  bool load_universal = false;
  bool use_node_local_storage = false;
  bool parallel_write_pipeline_stage = false;
  bool checkpoint_serialization = true;
};

struct ActivationCheckpointingConfig {
  bool partition_activations = false;
  bool cpu_checkpointing = false;
  bool contiguous_memory_optimization = false;
  std::optional<std::int64_t> number_checkpoints;
  bool synchronize_checkpoint_boundary = false;
  bool profile = false;
};

struct CsvMonitorConfig {
  bool enabled = false;
  std::string output_path;
  std::string job_name = "DeepSpeedJobName";
};

struct ResolvedConfig {
  std::string source_name;  // file name (for messages)
  int world_size = 1;
  // Batch triple: train_batch_size == micro_batch_per_gpu * gradient_accumulation_steps * world.
  std::int64_t train_batch_size = 0;
  std::int64_t train_micro_batch_size_per_gpu = 0;
  std::int64_t gradient_accumulation_steps = 0;
  // DeepSpeed's default is None (no progress lines); zerotrain prints every 10 steps then
  // (the value DeepSpeed's docs state), and the entry's source says "default".
  std::int64_t steps_per_print = 10;
  bool wall_clock_breakdown = false;
  bool memory_breakdown = false;
  double gradient_clipping = 1.0;                      // 0 = off; 1.0 is DeepSpeed 0.19's default
  DataType communication_data_type = DataType::kFp32;  // resolved: unset = training dtype
  std::string gradient_allreduce_op = "mean";
  bool prescale_gradients = false;
  double gradient_predivide_factor = 1.0;
  bool dataloader_drop_last = false;
  std::string log_level;  // "" = not set
  bool zero_allow_untested_optimizer = false;
  bool zero_force_ds_cpu_optimizer = true;
  // No "optimizer" section: the optimizer is the HF Trainer's AdamW built from the flags (a
  // client optimizer to DeepSpeed), not one DeepSpeed builds from the config.
  bool optimizer_from_trainer = false;
  OptimizerConfig optimizer;
  SchedulerConfig scheduler;
  ZeroConfig zero;
  Fp16Config fp16;
  Bf16Config bf16;
  PrecisionConfig precision;  // derived from fp16, bf16, data_types
  AioConfig aio;
  CheckpointConfig checkpoint;
  ActivationCheckpointingConfig activation_checkpointing;
  CsvMonitorConfig csv_monitor;
  // Every honoured key, and every key the config sets, with its effective value and source.
  std::vector<Entry> entries;
};

// Reads the file and resolves it. world_size: data-parallel ranks; run_steps: the run length the
// caller will use when --max_steps is not given (0 = unknown). Throws ConfigError, or
// files::FileError when the path is not a readable regular file.
ResolvedConfig load_config(const std::string& path, const CommandLineOverrides& flags,
                           const ModelFacts& model, int world_size, std::int64_t run_steps);

// The name a config file goes by in messages: its file name, escaped.
std::string config_display_name(const std::string& path);

// Same from text; source_name is used in messages ("ds_config.json: ...").
ResolvedConfig parse_config_text(const std::string& text, const std::string& source_name,
                                 const CommandLineOverrides& flags, const ModelFacts& model,
                                 int world_size, std::int64_t run_steps);

// The start-up print: one block per section, aligned "key  value  source" columns. Honoured
// keys always appear; other keys only when the config sets them.
std::string format_effective_config(const ResolvedConfig& config);

}  // namespace zt::config
