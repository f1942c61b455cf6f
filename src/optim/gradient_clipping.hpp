// SPDX-License-Identifier: Apache-2.0
// Gradient-norm clipping as DeepSpeed's ZeRO optimizers do it (stage_1_and_2.py / stage3.py
// `unscale_and_clip_grads`). The engine computes the local sum of squares of its gradient
// slice, all-reduces it (sum) across ranks, takes the square root, and multiplies its slice by
// gradient_multiplier(...).
#pragma once

#include <cstdint>

namespace zt::optim {

/// sum(values[i]^2) over n floats, each square exact in double and summed in double, at memory
/// speed (host::sum_of_squares, which also takes 16-bit values and reports inf/NaN).
double sum_of_squares(const float* values, std::int64_t n);

/// values[i] *= factor.
void scale(float* values, std::int64_t n, float factor);

/// The global norm from the all-reduced sum of squares; -1 when it is inf or NaN (DeepSpeed's
/// convention, which turns clipping off for that step; fp16 runs skip such a step anyway).
double global_norm_from_sum_of_squares(double total_sum_of_squares);

/// DeepSpeed's clip coefficient for an unscaled global norm: with max_norm > 0 and
/// clip = (norm + 1e-6) / max_norm > 1 it is 1 / clip (= max_norm / (norm + 1e-6)); otherwise 1
/// (no clipping: max_norm <= 0, norm small enough, or norm == -1).
double clip_coefficient(double unscaled_global_norm, double max_norm);

/// The factor DeepSpeed multiplies gradients by in one pass: 1 / (loss_scale * clip), where
/// clip = max(1, (scaled_norm / loss_scale + 1e-6) / max_norm) when max_norm > 0.
/// `scaled_global_norm` is the norm of the gradients still multiplied by the loss scale.
double gradient_multiplier(double scaled_global_norm, double loss_scale, double max_norm);

}  // namespace zt::optim
