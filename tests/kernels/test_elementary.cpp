// SPDX-License-Identifier: Apache-2.0
// The vectorisable exp/tanh the op bodies use instead of libm.
#include <gtest/gtest.h>

#include <cmath>

#include "kernels/ops/layer_ops.hpp"

namespace {

using zt::kernels::ops::fast_exp;
using zt::kernels::ops::fast_tanh;

TEST(Elementary, FastExpIsWithinAFewUlpOverTheFloatRange) {
  double worst = 0;
  for (float x = -87.0f; x <= 88.5f; x += 0.00731f) {
    const double exact = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::abs(fast_exp(x) - exact) / exact);
  }
  EXPECT_LT(worst, 4e-7);  // ~3 ulp
  EXPECT_EQ(fast_exp(0.0f), 1.0f);
  EXPECT_EQ(fast_exp(-200.0f) < 1e-37f, true);    // underflows towards 0 like expf
  EXPECT_EQ(fast_exp(-INFINITY) < 1e-37f, true);  // the masked logits of a causal row
  EXPECT_GT(fast_exp(100.0f), 1e38f);
}

TEST(Elementary, FastTanhHasSmallAbsoluteErrorAndExactLimits) {
  double worst = 0;
  for (float x = -20.0f; x <= 20.0f; x += 0.00137f)
    worst = std::max(worst, std::abs(fast_tanh(x) - std::tanh(static_cast<double>(x))));
  EXPECT_LT(worst, 3e-7);
  EXPECT_EQ(fast_tanh(50.0f), 1.0f);
  EXPECT_EQ(fast_tanh(-50.0f), -1.0f);
}

}  // namespace
