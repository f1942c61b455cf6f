// SPDX-License-Identifier: Apache-2.0
// Host launchers of the optimizer element bodies (kernels/ops/optimizer_ops.hpp) through
// Kokkos on the default host execution space. They take raw pointers, so the engine can also
// run them on buffers it owns (states swapped in from NVMe, pinned staging buffers).
// Kokkos must be initialised.
#pragma once

#include <cstdint>

#include "kernels/ops/optimizer_ops.hpp"

namespace zt::optim::host {

/// One Adam/AdamW step over n elements.
void adam_update(float* params, const float* grads, float* exp_avg, float* exp_avg_sq,
                 std::int64_t n, const kernels::AdamElementConstants& constants);

/// Partial sums of squares of one tensor's weights and LAMB directions.
struct LambSquareSums {
  double weight = 0.0;
  double update = 0.0;
};

/// LAMB phase 1 over n elements: updates the moments, returns sum(p^2) and sum(u^2).
LambSquareSums lamb_update_moments(const float* params, const float* grads, float* exp_avg,
                                   float* exp_avg_sq, std::int64_t n,
                                   const kernels::LambElementConstants& constants);

/// LAMB phase 2 over n elements of one tensor.
void lamb_apply(float* params, const float* exp_avg, const float* exp_avg_sq, std::int64_t n,
                float trust_ratio, const kernels::LambElementConstants& constants);

}  // namespace zt::optim::host
