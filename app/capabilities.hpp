// SPDX-License-Identifier: Apache-2.0
// What this build's engine can run, beyond what the config reader accepts: the config module
// knows every DeepSpeed key; the engine may not implement every value yet. `train` and
// `check-config` both ask here, so a config that check-config passes also trains.
#pragma once

#include <string>
#include <vector>

#include "config/config.hpp"

namespace zt::app {

/// Every setting of `config` this build cannot run yet, as "not supported yet: ..." lines.
inline std::vector<std::string> unsupported_by_engine(const config::ResolvedConfig& config) {
  // Every ZeRO stage trains in fp32, fp16 and bf16, with the optimizer offloaded to CPU memory
  // or NVMe (stages 1-3) and the parameters too (stage 3). Where an offload device may be used,
  // and the keys that only matter with another one, the config reader checks.
  std::vector<std::string> problems;
  const auto none = config::OffloadDevice::kNone;
  const auto& zero = config.zero;
  if (zero.offload_param.device != none && zero.offload_optimizer.device == none)
    problems.push_back(
        "not supported yet: zero_optimization.offload_param without offload_optimizer (the "
        "CPU optimizer writes the offloaded parameters; set offload_optimizer.device to \"cpu\" "
        "or \"nvme\" as well)");
  if (zero.offload_param.device != none && zero.offload_optimizer.ratio < 1.0)
    problems.push_back(
        "not supported yet: zero_optimization.offload_optimizer.ratio < 1 together with "
        "offload_param (the device's sub-groups would update parameters off the device)");
  const auto& precision = config.precision;
  // The engine accumulates in the training dtype, or in fp32 at stages 0-1 (DeepSpeed's
  // BF16_Optimizer, what bf16 without ZeRO gets by default).
  const bool fp32_at_stage_0_or_1 =
      precision.grad_accum_dtype == config::DataType::kFp32 && config.zero.stage <= 1;
  if (precision.grad_accum_dtype != precision.training_dtype && !fp32_at_stage_0_or_1)
    problems.push_back(
        "not supported yet: data_types.grad_accum_dtype different from the training dtype at "
        "ZeRO stage 2 or 3 (gradients accumulate in the model's dtype there, as DeepSpeed's "
        "ZeRO does by default)");
  return problems;
}

}  // namespace zt::app
