// SPDX-License-Identifier: Apache-2.0
// Central finite-difference gradient checks for the kernel and model tests.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace zt::testing {

/// One input of the function under test, with the analytic gradient the backward produced.
struct CheckedTensor {
  std::string name;
  std::vector<float>* value;
  const std::vector<float>* analytic_grad;
};

struct GradientCheckOptions {
  float step = 1e-2f;
  double relative_tolerance = 2e-2;
  /// Floor for entries whose gradient is at the fp32 noise level of the difference quotient.
  double absolute_tolerance = 5e-4;
  int samples_per_tensor = 40;  // every entry when the tensor is smaller
  unsigned seed = 1;

  GradientCheckOptions& with_step(float h) {
    step = h;
    return *this;
  }
  GradientCheckOptions& with_tolerances(double relative, double absolute) {
    relative_tolerance = relative;
    absolute_tolerance = absolute;
    return *this;
  }
  GradientCheckOptions& with_samples(int n) {
    samples_per_tensor = n;
    return *this;
  }
};

/// objective() evaluates the scalar (in double) at the current values. For each tensor,
/// compares analytic_grad with (J(x + h) - J(x - h)) / 2h on sampled entries. Returns the
/// number of entries checked; any mismatch is a test failure naming the tensor and entry.
inline int check_gradients(const std::vector<CheckedTensor>& tensors,
                           const std::function<double()>& objective,
                           const GradientCheckOptions& options = {}) {
  std::mt19937 rng(options.seed);
  int checked = 0;
  for (const CheckedTensor& t : tensors) {
    std::vector<float>& x = *t.value;
    EXPECT_EQ(x.size(), t.analytic_grad->size()) << t.name;
    std::vector<std::size_t> entries(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) entries[i] = i;
    if (static_cast<int>(x.size()) > options.samples_per_tensor) {
      std::shuffle(entries.begin(), entries.end(), rng);
      entries.resize(options.samples_per_tensor);
    }
    for (std::size_t i : entries) {
      const float keep = x[i];
      x[i] = keep + options.step;
      const float up_step = x[i] - keep;  // the step actually taken in fp32
      const double up = objective();
      x[i] = keep - options.step;
      const float down_step = keep - x[i];
      const double down = objective();
      x[i] = keep;
      const double numeric = (up - down) / (static_cast<double>(up_step) + down_step);
      const double analytic = (*t.analytic_grad)[i];
      const double tolerance =
          options.relative_tolerance * std::max(std::abs(numeric), std::abs(analytic)) +
          options.absolute_tolerance;
      EXPECT_NEAR(analytic, numeric, tolerance) << t.name << "[" << i << "]";
      ++checked;
    }
  }
  return checked;
}

/// Fills with uniform values in [lo, hi).
inline void fill_uniform(std::vector<float>& v, float lo, float hi, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(lo, hi);
  for (float& x : v) x = u(rng);
}

/// J = sum_i weight_i * out_i in double: a scalar whose gradient w.r.t. out is `weight`.
inline double weighted_sum(const std::vector<float>& out, const std::vector<float>& weight) {
  double sum = 0;
  for (std::size_t i = 0; i < out.size(); ++i) sum += static_cast<double>(weight[i]) * out[i];
  return sum;
}

}  // namespace zt::testing
