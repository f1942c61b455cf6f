// SPDX-License-Identifier: Apache-2.0
// `zerotrain check-config FILE`: validate a DeepSpeed config without training.
#include <cstdio>

#include "app/capabilities.hpp"
#include "app/commands.hpp"
#include "config/config.hpp"
#include "model/gpt_config.hpp"
#include "runtime/environment.hpp"
#include "runtime/log.hpp"

namespace zt::app {

int run_check_config(int argc, char** argv, const CheckConfigOptions& options) {
  runtime::Environment environment(argc, argv);
  try {
    config::ModelFacts facts;
    if (!options.model_path.empty()) {
      try {
        facts.hidden_size = model::load_gpt_config(options.model_path).n_embd;
      } catch (const model::ConfigError& error) {
        throw runtime::UserError(error.what());
      }
    }
    const int world_size = options.world_size.value_or(environment.info().world_size);
    config::CommandLineOverrides overrides;
    overrides.learning_rate = options.trainer.learning_rate;
    overrides.adam_beta1 = options.trainer.adam_beta1;
    overrides.adam_beta2 = options.trainer.adam_beta2;
    overrides.adam_epsilon = options.trainer.adam_epsilon;
    overrides.weight_decay = options.trainer.weight_decay;
    overrides.max_grad_norm = options.trainer.max_grad_norm;
    overrides.warmup_steps = options.trainer.warmup_steps;
    overrides.max_steps = options.trainer.max_steps;
    overrides.per_device_train_batch_size = options.trainer.per_device_train_batch_size;
    overrides.gradient_accumulation_steps = options.trainer.gradient_accumulation_steps;
    overrides.fp16 = options.trainer.fp16;
    overrides.bf16 = options.trainer.bf16;
    try {
      const auto resolved = config::load_config(
          options.config_path, overrides, facts, world_size,
          overrides.max_steps ? *overrides.max_steps : options.trainer.steps.value_or(0));
      if (auto problems = unsupported_by_engine(resolved); !problems.empty())
        throw config::ConfigError(problems);
      runtime::print(runtime::concat(options.config_path, ": ok for ", world_size, " rank",
                                     world_size == 1 ? "" : "s", "; effective config:"));
      runtime::print(config::format_effective_config(resolved));
    } catch (const config::ConfigError& error) {
      std::string text = runtime::concat(options.config_path, ": ", error.problems.size(),
                                         " problem", error.problems.size() == 1 ? "" : "s", ":");
      for (const auto& problem : error.problems) text += "\n  - " + problem;
      throw runtime::UserError(text);
    }
    return 0;
  } catch (const std::exception& error) {
    return environment.fail(error);
  }
}

}  // namespace zt::app
