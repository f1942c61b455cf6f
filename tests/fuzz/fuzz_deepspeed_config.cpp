// SPDX-License-Identifier: Apache-2.0
// Fuzz target: the DeepSpeed config reader (config::parse_config_text) and the start-up print
// of what it resolved, with the world size, model facts, run length and Hugging Face Trainer
// flags taken from the input's trailer (fuzz_input.hpp). A ConfigError is the expected answer
// to a bad config; any other exception, a sanitizer report or a resolved config that breaks
// DeepSpeed's batch invariant is a finding.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>

#include "config/config.hpp"
#include "tests/fuzz/fuzz_input.hpp"

namespace {

using zt::fuzz::FuzzInput;
using zt::fuzz::invariant_failed;

// Values a user can type for a floating-point flag (CLI11 reads nan and inf too).
const double kDoubleFlags[] = {0.0,
                               5e-5,
                               1e-3,
                               0.5,
                               0.9,
                               0.999,
                               1.0,
                               1e-8,
                               2.0,
                               -1.0,
                               1e300,
                               std::numeric_limits<double>::denorm_min(),
                               std::numeric_limits<double>::quiet_NaN(),
                               std::numeric_limits<double>::infinity(),
                               -std::numeric_limits<double>::infinity(),
                               -0.0};

// Values a user can type for an integer flag.
const std::int64_t kIntegerFlags[] = {0,
                                      1,
                                      2,
                                      3,
                                      8,
                                      16,
                                      100,
                                      1000,
                                      -1,
                                      std::int64_t{1} << 31,
                                      std::int64_t{1} << 40,
                                      std::numeric_limits<std::int64_t>::max(),
                                      std::numeric_limits<std::int64_t>::min(),
                                      std::numeric_limits<std::int32_t>::max(),
                                      std::numeric_limits<std::int64_t>::max() / 2 + 1,
                                      7};

const int kWorldSizes[] = {1, 2, 4, 8, 3, 16, 1024, 65536};

// hidden_size is a model's n_embd: an int the model description accepted.
const std::int64_t kModelWidths[] = {1,     7,     768,   1600,
                                     12288, 23170, 65536, std::numeric_limits<std::int32_t>::max()};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzInput input(data, size);
  zt::config::CommandLineOverrides flags;
  zt::config::ModelFacts model;
  model.hidden_size = 768;
  int world_size = 1;
  std::int64_t run_steps = 0;
  if (input.has_trailer()) {
    world_size = input.pick(kWorldSizes);
    const std::uint8_t hidden = input.byte();
    // 0 = the model is unknown; otherwise a width a real model could have, or an extreme one.
    model.hidden_size = hidden == 0 ? 0 : hidden < 128 ? 64 * hidden : input.pick(kModelWidths);
    run_steps = input.pick(kIntegerFlags);
    const std::uint64_t given = input.unsigned_bytes(2);
    auto optional_double = [&](int bit, std::optional<double>* flag) {
      if (given & (std::uint64_t{1} << bit)) *flag = input.pick(kDoubleFlags);
    };
    auto optional_integer = [&](int bit, std::optional<std::int64_t>* flag) {
      if (given & (std::uint64_t{1} << bit)) *flag = input.pick(kIntegerFlags);
    };
    optional_double(0, &flags.learning_rate);
    optional_double(1, &flags.adam_beta1);
    optional_double(2, &flags.adam_beta2);
    optional_double(3, &flags.adam_epsilon);
    optional_double(4, &flags.weight_decay);
    optional_double(5, &flags.max_grad_norm);
    optional_integer(6, &flags.warmup_steps);
    optional_integer(7, &flags.max_steps);
    optional_integer(8, &flags.per_device_train_batch_size);
    optional_integer(9, &flags.gradient_accumulation_steps);
    flags.fp16 = (given >> 10) & 1;
    flags.bf16 = (given >> 11) & 1;
  }

  zt::config::ResolvedConfig config;
  try {
    config = zt::config::parse_config_text(input.document(), "fuzz.json", flags, model, world_size,
                                           run_steps);
  } catch (const zt::config::ConfigError& error) {
    if (error.problems.empty()) invariant_failed("ConfigError without a problem");
    return 0;
  }
  // The engine relies on these (DeepSpeed asserts the same after deriving the triple).
  const std::int64_t micro = config.train_micro_batch_size_per_gpu;
  const std::int64_t gas = config.gradient_accumulation_steps;
  if (micro <= 0 || gas <= 0 || config.train_batch_size <= 0)
    invariant_failed("resolved a batch size <= 0");
  if (config.world_size != world_size) invariant_failed("resolved world size differs");
  std::int64_t product = 0;
  if (__builtin_mul_overflow(micro, gas, &product) ||
      __builtin_mul_overflow(product, std::int64_t{world_size}, &product) ||
      product != config.train_batch_size)
    invariant_failed("train_batch_size != micro * gas * world");
  // A file cannot spell NaN or inf (the reader refuses them), so one here came from a flag
  // that skipped the range checks; training would turn it into NaN weights.
  for (const double value :
       {config.optimizer.lr, config.optimizer.beta1, config.optimizer.beta2, config.optimizer.eps,
        config.optimizer.weight_decay, config.gradient_clipping, config.scheduler.warmup_min_lr,
        config.scheduler.warmup_max_lr}) {
    if (!std::isfinite(value)) invariant_failed("resolved a non-finite optimizer setting");
  }
  const std::string text = zt::config::format_effective_config(config);
  if (text.empty()) invariant_failed("empty effective-config print");
  return 0;
}
