// SPDX-License-Identifier: Apache-2.0
#include "model/parameters.hpp"

#include <cmath>
#include <stdexcept>

namespace zt::model {
namespace {

// splitmix64's finaliser: a bijective mix with full avalanche, good enough to turn a
// counter into independent-looking bits (a counter-based RNG: no state to carry).
std::uint64_t mix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

ParamInfo make(std::string name, std::vector<std::int64_t> shape, int layer, InitRule init,
               float init_std, bool transposed_vs_hf) {
  ParamInfo info;
  info.name = std::move(name);
  info.numel = 1;
  for (std::int64_t d : shape) info.numel *= d;
  info.shape = std::move(shape);
  info.layer = layer;
  info.init = init;
  info.init_std = init_std;
  info.transposed_vs_hf = transposed_vs_hf;
  return info;
}

}  // namespace

double counter_normal(std::uint64_t seed, std::uint64_t param_index, std::uint64_t element) {
  const std::uint64_t key = mix64(mix64(seed) ^ mix64(param_index + 0x632BE59BD9B4E019ull));
  const std::uint64_t bits_a = mix64(key ^ (2 * element));
  const std::uint64_t bits_b = mix64(key ^ (2 * element + 1));
  // 53-bit uniforms; u1 in (0, 1] so the logarithm is finite.
  const double u1 = (static_cast<double>(bits_a >> 11) + 1.0) * 0x1.0p-53;
  const double u2 = static_cast<double>(bits_b >> 11) * 0x1.0p-53;
  const double two_pi = 6.283185307179586476925;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(two_pi * u2);  // Box-Muller
}

std::vector<ParamInfo> build_parameter_registry(const GptConfig& config) {
  const std::int64_t C = config.n_embd;
  const int L = config.n_layer;
  const float std_weight = config.initializer_range;
  // GPT-2 scales the residual projections by 1/sqrt(2 L): two residual additions per block.
  const float std_residual_proj = config.initializer_range / std::sqrt(2.0f * L);
  std::vector<ParamInfo> registry;
  registry.push_back(
      make("wte.weight", {config.vocab_size, C}, 0, InitRule::Normal, std_weight, false));
  registry.push_back(
      make("wpe.weight", {config.n_positions, C}, 0, InitRule::Normal, std_weight, false));
  for (int b = 0; b < L; ++b) {
    const std::string p = "h." + std::to_string(b) + ".";
    const int layer = b + 1;
    registry.push_back(make(p + "ln_1.weight", {C}, layer, InitRule::Ones, 0, false));
    registry.push_back(make(p + "ln_1.bias", {C}, layer, InitRule::Zeros, 0, false));
    registry.push_back(
        make(p + "attn.c_attn.weight", {3 * C, C}, layer, InitRule::Normal, std_weight, true));
    registry.push_back(make(p + "attn.c_attn.bias", {3 * C}, layer, InitRule::Zeros, 0, false));
    registry.push_back(
        make(p + "attn.c_proj.weight", {C, C}, layer, InitRule::Normal, std_residual_proj, true));
    registry.push_back(make(p + "attn.c_proj.bias", {C}, layer, InitRule::Zeros, 0, false));
    registry.push_back(make(p + "ln_2.weight", {C}, layer, InitRule::Ones, 0, false));
    registry.push_back(make(p + "ln_2.bias", {C}, layer, InitRule::Zeros, 0, false));
    registry.push_back(
        make(p + "mlp.c_fc.weight", {4 * C, C}, layer, InitRule::Normal, std_weight, true));
    registry.push_back(make(p + "mlp.c_fc.bias", {4 * C}, layer, InitRule::Zeros, 0, false));
    registry.push_back(make(p + "mlp.c_proj.weight", {C, 4 * C}, layer, InitRule::Normal,
                            std_residual_proj, true));
    registry.push_back(make(p + "mlp.c_proj.bias", {C}, layer, InitRule::Zeros, 0, false));
  }
  registry.push_back(make("ln_f.weight", {C}, L + 1, InitRule::Ones, 0, false));
  registry.push_back(make("ln_f.bias", {C}, L + 1, InitRule::Zeros, 0, false));
  return registry;
}

void init_parameter_range(const ParamInfo& info, int param_index, std::uint64_t seed,
                          std::int64_t begin, std::int64_t end, float* out) {
  if (begin < 0 || end < begin || end > info.numel)
    throw std::out_of_range("init_parameter_range: [" + std::to_string(begin) + ", " +
                            std::to_string(end) + ") is outside " + info.name + " (" +
                            std::to_string(info.numel) + " elements)");
  for (std::int64_t i = begin; i < end; ++i) {
    float value = 0.0f;
    switch (info.init) {
      case InitRule::Zeros:
        value = 0.0f;
        break;
      case InitRule::Ones:
        value = 1.0f;
        break;
      case InitRule::Normal:
        value = static_cast<float>(info.init_std *
                                   counter_normal(seed, static_cast<std::uint64_t>(param_index),
                                                  static_cast<std::uint64_t>(i)));
        break;
    }
    out[i - begin] = value;
  }
}

}  // namespace zt::model
