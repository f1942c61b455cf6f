// SPDX-License-Identifier: Apache-2.0
#include "optim/gradient_clipping.hpp"

#include <cmath>

#include "optim/host_kernels.hpp"

namespace zt::optim {
namespace {

// DeepSpeed adds this to the norm before dividing by max_norm.
constexpr double kClipEpsilon = 1e-6;

}  // namespace

double sum_of_squares(const float* values, std::int64_t n) {
  return host::sum_of_squares(values, kernels::DType::F32, n).sum_of_squares;
}

void scale(float* values, std::int64_t n, float factor) {
  host::scale(values, n, factor);
}

double global_norm_from_sum_of_squares(double total_sum_of_squares) {
  const double norm = std::sqrt(total_sum_of_squares);
  return std::isfinite(norm) ? norm : -1.0;
}

double clip_coefficient(double unscaled_global_norm, double max_norm) {
  if (!(max_norm > 0.0)) return 1.0;
  const double clip = (unscaled_global_norm + kClipEpsilon) / max_norm;
  return clip > 1.0 ? 1.0 / clip : 1.0;
}

double gradient_multiplier(double scaled_global_norm, double loss_scale, double max_norm) {
  double combined_scale = loss_scale;
  if (max_norm > 0.0) {
    const double clip = (scaled_global_norm / loss_scale + kClipEpsilon) / max_norm;
    if (clip > 1.0) combined_scale = clip * loss_scale;
  }
  return 1.0 / combined_scale;
}

}  // namespace zt::optim
