// SPDX-License-Identifier: Apache-2.0
// Sum of squares, scaling, and DeepSpeed's clip coefficient.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "optim/gradient_clipping.hpp"

namespace zt::optim {
namespace {

TEST(GradientClipping, SumOfSquaresAccumulatesInDouble) {
  std::vector<float> values(100001, 0.001f);
  values[0] = 3.0f;
  values[1] = -4.0f;
  const double expected = 25.0 + 99999.0 * static_cast<double>(0.001f) * 0.001f;
  EXPECT_NEAR(sum_of_squares(values.data(), static_cast<std::int64_t>(values.size())), expected,
              1e-9);
  EXPECT_EQ(sum_of_squares(values.data(), 0), 0.0);
}

TEST(GradientClipping, ScaleMultipliesEveryElement) {
  std::vector<float> values = {1.0f, -2.0f, 0.5f};
  scale(values.data(), 3, 0.25f);
  EXPECT_EQ(values, (std::vector<float>{0.25f, -0.5f, 0.125f}));
}

TEST(GradientClipping, CoefficientMatchesDeepSpeed) {
  // reference_values.py, max_norm 1: norms 0.5, 1, 2, 10, -1 (inf/nan marker)
  const std::vector<double> norms = {0.5, 1.0, 2.0, 10.0, -1.0};
  const std::vector<double> expected = {1.0, 0.9999990000010001, 0.499999750000125,
                                        0.09999999000000101, 1.0};
  for (std::size_t i = 0; i < norms.size(); ++i)
    EXPECT_NEAR(clip_coefficient(norms[i], 1.0), expected[i], 1e-15) << norms[i];
  EXPECT_EQ(clip_coefficient(100.0, 0.0), 1.0);  // gradient_clipping 0 = off
}

TEST(GradientClipping, GlobalNormMarksNonFiniteAsMinusOne) {
  EXPECT_DOUBLE_EQ(global_norm_from_sum_of_squares(25.0), 5.0);
  EXPECT_EQ(global_norm_from_sum_of_squares(std::numeric_limits<double>::infinity()), -1.0);
  EXPECT_EQ(global_norm_from_sum_of_squares(std::nan("")), -1.0);
}

TEST(GradientClipping, MultiplierCombinesLossScaleAndClip) {
  // Scaled norm 2048 at loss scale 1024 = unscaled norm 2; max_norm 1 -> clip = 2 + 1e-6.
  EXPECT_NEAR(gradient_multiplier(2048.0, 1024.0, 1.0), 1.0 / ((2.0 + 1e-6) * 1024.0), 1e-18);
  EXPECT_DOUBLE_EQ(gradient_multiplier(512.0, 1024.0, 1.0), 1.0 / 1024.0);   // no clipping
  EXPECT_DOUBLE_EQ(gradient_multiplier(2048.0, 1024.0, 0.0), 1.0 / 1024.0);  // clipping off
}

}  // namespace
}  // namespace zt::optim
