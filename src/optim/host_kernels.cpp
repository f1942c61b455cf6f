// SPDX-License-Identifier: Apache-2.0
#include "optim/host_kernels.hpp"

#include <Kokkos_Core.hpp>

namespace zt::optim::host {
namespace {

using HostRange =
    Kokkos::RangePolicy<Kokkos::DefaultHostExecutionSpace, Kokkos::IndexType<std::int64_t>>;

}  // namespace

void adam_update(float* params, const float* grads, float* exp_avg, float* exp_avg_sq,
                 std::int64_t n, const kernels::AdamElementConstants& constants) {
  if (n <= 0) return;
  Kokkos::parallel_for("zt::optim::adam_update", HostRange(0, n), [=](const std::int64_t i) {
    kernels::adam_update_element(params[i], grads[i], exp_avg[i], exp_avg_sq[i], constants);
  });
  Kokkos::fence();
}

LambSquareSums lamb_update_moments(const float* params, const float* grads, float* exp_avg,
                                   float* exp_avg_sq, std::int64_t n,
                                   const kernels::LambElementConstants& constants) {
  LambSquareSums sums;
  if (n <= 0) return sums;
  // Two scalar reductions rather than one over a pair: a custom reduction type needs a join
  // signature that differs between Kokkos 3.4 (volatile) and 4.x. The second pass only reads p.
  Kokkos::parallel_reduce(
      "zt::optim::lamb_update_moments", HostRange(0, n),
      [=](const std::int64_t i, double& update_sum) {
        const float direction = kernels::lamb_update_moments_element(
            params[i], grads[i], exp_avg[i], exp_avg_sq[i], constants);
        update_sum += static_cast<double>(direction) * direction;
      },
      sums.update);
  Kokkos::parallel_reduce(
      "zt::optim::lamb_weight_sum_of_squares", HostRange(0, n),
      [=](const std::int64_t i, double& weight_sum) {
        weight_sum += static_cast<double>(params[i]) * params[i];
      },
      sums.weight);
  return sums;
}

void lamb_apply(float* params, const float* exp_avg, const float* exp_avg_sq, std::int64_t n,
                float trust_ratio, const kernels::LambElementConstants& constants) {
  if (n <= 0) return;
  Kokkos::parallel_for("zt::optim::lamb_apply", HostRange(0, n), [=](const std::int64_t i) {
    kernels::lamb_apply_element(params[i], exp_avg[i], exp_avg_sq[i], trust_ratio, constants);
  });
  Kokkos::fence();
}

}  // namespace zt::optim::host
