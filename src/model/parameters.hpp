// SPDX-License-Identifier: Apache-2.0
// The GPT-2 parameter registry (names, shapes, layers, init rules) and an initialisation
// that does not depend on how the parameters are partitioned across ranks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/gpt_config.hpp"

namespace zt::model {

enum class InitRule {
  Normal,  // N(0, init_std)
  Zeros,
  Ones,
};

struct ParamInfo {
  /// Hugging Face GPT-2 tensor name without the "transformer." prefix, e.g. "h.3.mlp.c_fc.weight".
  std::string name;
  /// Shape as zerotrain stores it (row-major). Linear weights are (out, in) like nn.Linear.
  std::vector<std::int64_t> shape;
  std::int64_t numel = 0;
  /// 0 = embeddings (wte, wpe), 1..n_layer = transformer blocks, n_layer + 1 = final LN + head.
  int layer = 0;
  InitRule init = InitRule::Zeros;
  float init_std = 0.0f;
  /// HF's GPT-2 stores these weights as Conv1D, (in, out): an export to HF layout transposes.
  bool transposed_vs_hf = false;
};

/// Index of each parameter of a block in the registry, relative to the block's first one.
enum BlockParam : int {
  kLn1Weight = 0,
  kLn1Bias,
  kAttnQkvWeight,
  kAttnQkvBias,
  kAttnProjWeight,
  kAttnProjBias,
  kLn2Weight,
  kLn2Bias,
  kMlpFcWeight,
  kMlpFcBias,
  kMlpProjWeight,
  kMlpProjBias,
  kParamsPerBlock
};

/// Registry indices (fixed registration order: wte, wpe, then block by block, then ln_f).
struct ParamIndex {
  int n_layer;
  static constexpr int wte = 0;
  static constexpr int wpe = 1;
  /// block: 0-based block number (the block is layer block + 1)
  int block(int block_number, BlockParam which) const {
    return 2 + block_number * kParamsPerBlock + which;
  }
  int ln_f_weight() const { return 2 + n_layer * kParamsPerBlock; }
  int ln_f_bias() const { return ln_f_weight() + 1; }
  int count() const { return ln_f_bias() + 1; }
};

std::vector<ParamInfo> build_parameter_registry(const GptConfig& config);

/// Fills out[0 .. end-begin) with elements [begin, end) of parameter `param_index`. The values
/// depend only on (seed, param_index, element index), so any partition of the parameters over
/// ranks initialises the same model.
void init_parameter_range(const ParamInfo& info, int param_index, std::uint64_t seed,
                          std::int64_t begin, std::int64_t end, float* out);

/// The standard normal the initialisation uses for one element (exposed for tests).
double counter_normal(std::uint64_t seed, std::uint64_t param_index, std::uint64_t element);

}  // namespace zt::model
