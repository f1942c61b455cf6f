// SPDX-License-Identifier: Apache-2.0
// The built-in default job's config and model (inputs/default/, embedded at build time).
#pragma once

namespace zt::app {
extern const char* const kDefaultConfigName;
extern const char* const kDefaultModelName;
extern const char* const kDefaultConfigText;
extern const char* const kDefaultModelText;
/// Steps of the default job (its scheduler's total_num_steps says the same).
inline constexpr long kDefaultSteps = 700;
}  // namespace zt::app
