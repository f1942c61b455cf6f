// SPDX-License-Identifier: Apache-2.0
// Per-element optimizer updates (Adam/AdamW and LAMB), written once for the host (Kokkos
// launchers in src/optim) and the device (kernels/cuda/optimizer_launch.cu).
//
// The arithmetic follows DeepSpeed: Adam as DeepSpeedCPUAdam / FusedAdam (fp32 math, eps added
// outside the square root, decoupled decay applied before the Adam step), LAMB as FusedLamb's
// three CUDA kernels (bias correction folded into the step size, trust ratio per tensor).
// Scalars that depend only on the step (bias corrections, step sizes) are computed once per
// step on the host, in double, by the make_*_constants functions below and passed by value.
//
// No MPI, no Kokkos here: this header must compile with any C++17 compiler and with nvcc.
#pragma once

#include <cmath>
#include <cstdint>

#ifndef ZT_HOST_DEVICE
#if defined(__CUDACC__)
#define ZT_HOST_DEVICE __host__ __device__
#else
#define ZT_HOST_DEVICE
#endif
#endif

namespace zt::kernels {

// ---------------------------------------------------------------------------------------------
// Adam / AdamW
// ---------------------------------------------------------------------------------------------

/// Everything one Adam step needs besides the four arrays.
struct AdamElementConstants {
  float beta1;
  float beta2;
  float one_minus_beta1;
  float one_minus_beta2;
  float eps;
  /// lr / (1 - beta1^t) with bias correction, lr without.
  float step_size;
  /// 1 / sqrt(1 - beta2^t) with bias correction, 1 without; sqrt(v) * this = sqrt(v_hat).
  float inverse_sqrt_bias_correction2;
  /// Classic Adam (adam_w_mode false): weight_decay, added to the gradient as an L2 term.
  /// 0 in AdamW mode and whenever weight_decay <= 0 (DeepSpeed only decays when wd > 0).
  float l2_weight_decay;
  /// AdamW (adam_w_mode true): lr * weight_decay, p -= this * p. 0 otherwise.
  float decoupled_weight_decay;
};

/// Builds the constants of Adam step `step` (1 for the first update). Host only.
inline AdamElementConstants make_adam_constants(double lr, double beta1, double beta2, double eps,
                                                double weight_decay, bool adam_w_mode,
                                                bool bias_correction, std::int64_t step) {
  AdamElementConstants c{};
  c.beta1 = static_cast<float>(beta1);
  c.beta2 = static_cast<float>(beta2);
  c.one_minus_beta1 = static_cast<float>(1.0 - beta1);
  c.one_minus_beta2 = static_cast<float>(1.0 - beta2);
  c.eps = static_cast<float>(eps);
  double bias_correction1 = 1.0;
  double bias_correction2 = 1.0;
  if (bias_correction) {
    // Recomputed from the current betas every step (as DeepSpeed does whenever the betas
    // change, e.g. under OneCycle momentum cycling) instead of a running product.
    bias_correction1 = 1.0 - std::pow(beta1, static_cast<double>(step));
    bias_correction2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  }
  c.step_size = static_cast<float>(lr / bias_correction1);
  c.inverse_sqrt_bias_correction2 = static_cast<float>(1.0 / std::sqrt(bias_correction2));
  const bool decays = weight_decay > 0.0;
  c.l2_weight_decay = (decays && !adam_w_mode) ? static_cast<float>(weight_decay) : 0.0f;
  c.decoupled_weight_decay = (decays && adam_w_mode) ? static_cast<float>(lr * weight_decay) : 0.0f;
  return c;
}

/// One Adam/AdamW update of one element, in place:
///   g += l2*p;  m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*g^2;
///   denom = sqrt(v)/sqrt(1-b2^t) + eps;  p -= lr*wd*p;  p -= lr/(1-b1^t) * m/denom.
ZT_HOST_DEVICE inline void adam_update_element(float& param, float grad, float& exp_avg,
                                               float& exp_avg_sq, const AdamElementConstants& c) {
  if (c.l2_weight_decay != 0.0f) grad += c.l2_weight_decay * param;
  exp_avg = c.beta1 * exp_avg + c.one_minus_beta1 * grad;
  exp_avg_sq = c.beta2 * exp_avg_sq + c.one_minus_beta2 * grad * grad;
  const float denom = ::sqrtf(exp_avg_sq) * c.inverse_sqrt_bias_correction2 + c.eps;
  if (c.decoupled_weight_decay != 0.0f) param -= c.decoupled_weight_decay * param;
  param -= c.step_size * (exp_avg / denom);
}

// ---------------------------------------------------------------------------------------------
// LAMB (DeepSpeed FusedLamb)
// ---------------------------------------------------------------------------------------------
//
// Phase 1, per element: update the moments and form the direction
//   u = m / denom + weight_decay * p,  denom = sqrt(v + eps) (eps_inside_sqrt) or sqrt(v) + eps,
// with m and v *not* bias corrected; accumulate ||p||^2 and ||u||^2 per tensor.
// Between the phases: trust ratio per tensor from the complete norms.
// Phase 2, per element: recompute u from (p, m, v) and apply p -= step_size * ratio * u, where
// step_size = lr * sqrt(1 - beta2^t) / (1 - beta1^t) with bias correction, lr without.

struct LambElementConstants {
  float beta1;
  float beta2;
  float one_minus_beta1;
  float one_minus_beta2;
  float eps;
  float weight_decay;  // added to the direction (decoupled), for any sign, as FusedLamb does
  float step_size;
  bool eps_inside_sqrt;
};

/// Builds the constants of LAMB step `step` (1 for the first update). Host only.
inline LambElementConstants make_lamb_constants(double lr, double beta1, double beta2, double eps,
                                                double weight_decay, bool eps_inside_sqrt,
                                                bool bias_correction, std::int64_t step) {
  LambElementConstants c{};
  c.beta1 = static_cast<float>(beta1);
  c.beta2 = static_cast<float>(beta2);
  c.one_minus_beta1 = static_cast<float>(1.0 - beta1);
  c.one_minus_beta2 = static_cast<float>(1.0 - beta2);
  c.eps = static_cast<float>(eps);
  c.weight_decay = static_cast<float>(weight_decay);
  c.eps_inside_sqrt = eps_inside_sqrt;
  double step_size = lr;
  if (bias_correction) {
    const double bias_correction1 = 1.0 - std::pow(beta1, static_cast<double>(step));
    const double bias_correction2 = 1.0 - std::pow(beta2, static_cast<double>(step));
    step_size = lr * std::sqrt(bias_correction2) / bias_correction1;
  }
  c.step_size = static_cast<float>(step_size);
  return c;
}

/// The LAMB direction u of one element from its current moments.
ZT_HOST_DEVICE inline float lamb_direction(float param, float exp_avg, float exp_avg_sq,
                                           const LambElementConstants& c) {
  const float denom = c.eps_inside_sqrt ? ::sqrtf(exp_avg_sq + c.eps) : ::sqrtf(exp_avg_sq) + c.eps;
  return exp_avg / denom + c.weight_decay * param;
}

/// Phase 1 of one element: updates the moments in place and returns the direction u.
/// The caller accumulates param^2 and u^2 for the tensor's norms.
ZT_HOST_DEVICE inline float lamb_update_moments_element(float param, float grad, float& exp_avg,
                                                        float& exp_avg_sq,
                                                        const LambElementConstants& c) {
  exp_avg = c.beta1 * exp_avg + c.one_minus_beta1 * grad;
  exp_avg_sq = c.beta2 * exp_avg_sq + c.one_minus_beta2 * grad * grad;
  return lamb_direction(param, exp_avg, exp_avg_sq, c);
}

/// Trust ratio of one tensor from its complete sums of squares: ||w|| / ||u|| clamped to
/// [min_coeff, max_coeff]; exactly 1 (unclamped) when either norm is zero, as FusedLamb does.
ZT_HOST_DEVICE inline float lamb_trust_ratio(double weight_sum_of_squares,
                                             double update_sum_of_squares, float min_coeff,
                                             float max_coeff) {
  const double weight_norm = ::sqrt(weight_sum_of_squares);
  const double update_norm = ::sqrt(update_sum_of_squares);
  if (weight_norm == 0.0 || update_norm == 0.0) return 1.0f;
  float ratio = static_cast<float>(weight_norm / update_norm);
  if (ratio > max_coeff) ratio = max_coeff;
  if (ratio < min_coeff) ratio = min_coeff;
  return ratio;
}

/// Phase 2 of one element: p -= step_size * trust_ratio * u (u recomputed from p, m, v).
ZT_HOST_DEVICE inline void lamb_apply_element(float& param, float exp_avg, float exp_avg_sq,
                                              float trust_ratio, const LambElementConstants& c) {
  const float direction = lamb_direction(param, exp_avg, exp_avg_sq, c);
  param -= c.step_size * trust_ratio * direction;
}

}  // namespace zt::kernels
