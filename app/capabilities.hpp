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
  // Every ZeRO stage trains; what the engine cannot run yet (16-bit training, offload) the
  // config reader already refuses with "not supported yet".
  (void)config;
  return {};
}

}  // namespace zt::app
