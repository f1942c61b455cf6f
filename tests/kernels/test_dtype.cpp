// SPDX-License-Identifier: Apache-2.0
// The 16-bit storage conversions of kernels/ops/dtype.hpp: exhaustive round trips, agreement
// with the x86 conversion instructions where the CPU has them, and the edge cases (NaN,
// overflow, ties, subnormals) by known values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kernels/ops/dtype.hpp"
#include "kernels/ops/layer_ops.hpp"

#if defined(__F16C__) || defined(__AVX512BF16__)
#include <immintrin.h>
#endif

namespace {

using zt::kernels::bf16;
using zt::kernels::fp16;
using zt::kernels::from_float;
using zt::kernels::to_float;

float bits_float(std::uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}
std::uint32_t float_bits(float value) {
  std::uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}
bool fp16_is_nan(std::uint16_t bits) {
  return (bits & 0x7c00u) == 0x7c00u && (bits & 0x03ffu) != 0;
}
bool bf16_is_nan(std::uint16_t bits) {
  return (bits & 0x7f80u) == 0x7f80u && (bits & 0x007fu) != 0;
}

// Random fp32 inputs that exercise every path: all bit patterns (NaN, inf, subnormal, huge),
// and values spread over the fp16 exponent range, where rounding (not overflow) decides.
float random_float(std::mt19937& rng, int i) {
  if (i % 2 == 0) return bits_float(static_cast<std::uint32_t>(rng()));
  std::uniform_int_distribution<int> exponent(-27, 17);
  std::uniform_int_distribution<std::uint32_t> mantissa(0, (1u << 23) - 1);
  const std::uint32_t sign = (rng() & 1u) << 31;
  return bits_float(sign | (static_cast<std::uint32_t>(exponent(rng) + 127) << 23) | mantissa(rng));
}

TEST(DType, EveryFp16RoundTripsThroughFloat) {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const fp16 value{static_cast<std::uint16_t>(h)};
    const float widened = to_float(value);
    if (fp16_is_nan(value.bits)) {
      EXPECT_TRUE(std::isnan(widened)) << std::hex << h;
      EXPECT_TRUE(fp16_is_nan(from_float<fp16>(widened).bits)) << std::hex << h;
    } else {
      EXPECT_EQ(from_float<fp16>(widened).bits, value.bits) << std::hex << h;
    }
#if defined(__F16C__)
    const float hardware = _cvtsh_ss(value.bits);
    if (std::isnan(hardware))
      EXPECT_TRUE(std::isnan(widened)) << std::hex << h;
    else
      EXPECT_EQ(float_bits(widened), float_bits(hardware)) << std::hex << h;
#endif
  }
}

TEST(DType, EveryBf16RoundTripsThroughFloat) {
  for (std::uint32_t h = 0; h < 65536; ++h) {
    const bf16 value{static_cast<std::uint16_t>(h)};
    const float widened = to_float(value);
    EXPECT_EQ(float_bits(widened), h << 16);
    if (bf16_is_nan(value.bits))
      EXPECT_TRUE(bf16_is_nan(from_float<bf16>(widened).bits)) << std::hex << h;
    else
      EXPECT_EQ(from_float<bf16>(widened).bits, value.bits) << std::hex << h;
  }
}

#if defined(__F16C__)
TEST(DType, Fp16MatchesF16cRoundToNearestEven) {
  std::mt19937 rng(12345);
  int compared = 0;
  for (int i = 0; i < 2000000; ++i) {
    const float x = random_float(rng, i);
    const std::uint16_t hardware = _cvtss_sh(x, 0);  // 0: round to nearest even
    const std::uint16_t ours = from_float<fp16>(x).bits;
    if (std::isnan(x)) {
      EXPECT_TRUE(fp16_is_nan(ours)) << float_bits(x);
    } else {
      ASSERT_EQ(ours, hardware) << "x = " << x << " bits " << std::hex << float_bits(x);
      ++compared;
    }
  }
  EXPECT_GT(compared, 1900000);
}
#endif

#if defined(__AVX512BF16__) && defined(__AVX512VL__)
std::uint16_t hardware_bf16(float x) {
  const __m128bh converted = _mm_cvtneps_pbh(_mm_set1_ps(x));
  std::uint16_t lanes[8];
  std::memcpy(lanes, &converted, sizeof(lanes));
  return lanes[0];
}

TEST(DType, Bf16MatchesAvx512Bf16ForNormalInputs) {
  std::mt19937 rng(54321);
  int compared = 0;
  for (int i = 0; i < 2000000; ++i) {
    const float x = random_float(rng, i);
    const std::uint16_t ours = from_float<bf16>(x).bits;
    if (std::isnan(x)) {
      EXPECT_TRUE(bf16_is_nan(ours)) << std::hex << float_bits(x);
    } else if (std::fpclassify(x) == FP_SUBNORMAL) {
      continue;  // the instruction flushes these to zero; ours rounds them (test below)
    } else {
      ASSERT_EQ(ours, hardware_bf16(x)) << "x = " << x << " bits " << std::hex << float_bits(x);
      ++compared;
    }
  }
  EXPECT_GT(compared, 1500000);
}
#endif

TEST(DType, Bf16KeepsSubnormalsRoundedToNearestEven) {
  // bf16 subnormals are the fp32 subnormals with 16 low bits zero: they survive, not flush.
  EXPECT_EQ(from_float<bf16>(bits_float(0x00010000u)).bits, 0x0001u);
  EXPECT_EQ(from_float<bf16>(bits_float(0x80010000u)).bits, 0x8001u);
  EXPECT_EQ(from_float<bf16>(bits_float(0x007f0000u)).bits, 0x007fu);  // largest subnormal
  EXPECT_EQ(from_float<bf16>(bits_float(0x00017fffu)).bits, 0x0001u);  // below the midpoint
  EXPECT_EQ(from_float<bf16>(bits_float(0x00018000u)).bits, 0x0002u);  // tie, odd: up
  EXPECT_EQ(from_float<bf16>(bits_float(0x00028000u)).bits, 0x0002u);  // tie, even: down
  EXPECT_EQ(from_float<bf16>(bits_float(0x00008000u)).bits, 0x0000u);  // tie to zero
  EXPECT_EQ(from_float<bf16>(bits_float(0x00008001u)).bits, 0x0001u);
  // the largest subnormal rounds up into the smallest normal
  EXPECT_EQ(from_float<bf16>(bits_float(0x007fc000u)).bits, 0x0080u);
}

TEST(DType, NanStaysNan) {
  const float quiet = std::numeric_limits<float>::quiet_NaN();
  const float signalling = bits_float(0x7f800001u);  // payload only in the low bits
  const float negative = bits_float(0xffc00000u);
  const float low_payload = bits_float(0x7f80ffffu);  // truncation alone would give inf
  for (const float x : {quiet, signalling, negative, low_payload}) {
    EXPECT_TRUE(bf16_is_nan(from_float<bf16>(x).bits)) << std::hex << float_bits(x);
    EXPECT_TRUE(fp16_is_nan(from_float<fp16>(x).bits)) << std::hex << float_bits(x);
    EXPECT_TRUE(std::isnan(to_float(from_float<bf16>(x))));
    EXPECT_TRUE(std::isnan(to_float(from_float<fp16>(x))));
  }
}

TEST(DType, OverflowGivesInfinity) {
  const float inf = std::numeric_limits<float>::infinity();
  EXPECT_EQ(from_float<fp16>(65504.0f).bits, 0x7bffu);    // largest finite
  EXPECT_EQ(from_float<fp16>(65519.996f).bits, 0x7bffu);  // below the midpoint to 2^16
  EXPECT_EQ(from_float<fp16>(65520.0f).bits, 0x7c00u);    // the midpoint: even is 2^16 = inf
  EXPECT_EQ(from_float<fp16>(-65520.0f).bits, 0xfc00u);
  EXPECT_EQ(from_float<fp16>(1e10f).bits, 0x7c00u);
  EXPECT_EQ(from_float<fp16>(inf).bits, 0x7c00u);
  EXPECT_EQ(from_float<fp16>(-inf).bits, 0xfc00u);
  EXPECT_EQ(from_float<bf16>(std::numeric_limits<float>::max()).bits, 0x7f80u);
  EXPECT_EQ(from_float<bf16>(-std::numeric_limits<float>::max()).bits, 0xff80u);
  EXPECT_EQ(from_float<bf16>(bits_float(0x7f7f7fffu)).bits, 0x7f7fu);  // stays finite
  EXPECT_EQ(from_float<bf16>(inf).bits, 0x7f80u);
  EXPECT_EQ(from_float<bf16>(-inf).bits, 0xff80u);
}

TEST(DType, TiesRoundToEven) {
  // fp16: ulp of 1 is 2^-10
  EXPECT_EQ(from_float<fp16>(1.0f + std::ldexp(1.0f, -11)).bits, 0x3c00u);      // down to even
  EXPECT_EQ(from_float<fp16>(1.0f + 3 * std::ldexp(1.0f, -11)).bits, 0x3c02u);  // up to even
  EXPECT_EQ(from_float<fp16>(1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20)).bits,
            0x3c01u);  // just past the tie
  EXPECT_EQ(from_float<fp16>(-(1.0f + 3 * std::ldexp(1.0f, -11))).bits, 0xbc02u);
  // fp16 subnormals: units of 2^-24
  EXPECT_EQ(from_float<fp16>(std::ldexp(1.0f, -24)).bits, 0x0001u);
  EXPECT_EQ(from_float<fp16>(std::ldexp(1.0f, -25)).bits, 0x0000u);      // tie to zero
  EXPECT_EQ(from_float<fp16>(3 * std::ldexp(1.0f, -25)).bits, 0x0002u);  // tie up to even
  EXPECT_EQ(from_float<fp16>(5 * std::ldexp(1.0f, -25)).bits, 0x0002u);  // tie down to even
  EXPECT_EQ(from_float<fp16>(std::ldexp(1.0f, -26)).bits, 0x0000u);
  EXPECT_EQ(from_float<fp16>(-std::ldexp(1.0f, -24)).bits, 0x8001u);
  EXPECT_EQ(from_float<fp16>(std::ldexp(1023.5f, -24)).bits, 0x0400u);  // into the normals
  // bf16: ulp of 1 is 2^-7
  EXPECT_EQ(from_float<bf16>(1.0f + std::ldexp(1.0f, -8)).bits, 0x3f80u);
  EXPECT_EQ(from_float<bf16>(1.0f + 3 * std::ldexp(1.0f, -8)).bits, 0x3f82u);
  EXPECT_EQ(from_float<bf16>(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)).bits, 0x3f81u);
  EXPECT_EQ(from_float<bf16>(-(1.0f + 3 * std::ldexp(1.0f, -8))).bits, 0xbf82u);
}

// The row conversions of the host launchers (F16C where the CPU has it) against the single-value
// ones, bit for bit, NaN included, over lengths that leave every tail (16-, 8-wide and scalar).
TEST(DType, RowConversionsMatchSingleValues) {
  namespace ops = zt::kernels::ops;
  std::vector<fp16> halves(65536 + 23);
  std::vector<bf16> brains(halves.size());
  for (std::size_t i = 0; i < halves.size(); ++i) {
    halves[i].bits = static_cast<std::uint16_t>(i);
    brains[i].bits = static_cast<std::uint16_t>(i * 40503u);
  }
  std::vector<float> widened(halves.size());
  for (const int n : {0, 1, 7, 8, 9, 15, 16, 17, 24, 31, 65536 + 23}) {
    ops::load_n(halves.data(), n, widened.data());
    for (int i = 0; i < n; ++i)
      ASSERT_EQ(float_bits(widened[i]), float_bits(ops::load(halves[i]))) << std::hex << i;
    ops::load_n(brains.data(), n, widened.data());
    for (int i = 0; i < n; ++i)
      ASSERT_EQ(float_bits(widened[i]), float_bits(ops::load(brains[i]))) << std::hex << i;
  }
  std::mt19937 rng(777);
  std::vector<float> values(1 << 20);
  for (std::size_t i = 0; i < values.size(); ++i)
    values[i] = random_float(rng, static_cast<int>(i));
  std::vector<fp16> narrowed(values.size());
  std::vector<bf16> narrowed_bf16(values.size());
  for (const int n : {0, 1, 7, 8, 9, 15, 16, 17, 24, 31, static_cast<int>(values.size()) - 3}) {
    ops::store_n(values.data(), n, narrowed.data());
    ops::store_n(values.data(), n, narrowed_bf16.data());
    for (int i = 0; i < n; ++i) {
      ASSERT_EQ(narrowed[i].bits, from_float<fp16>(values[i]).bits)
          << std::hex << float_bits(values[i]);
      ASSERT_EQ(narrowed_bf16[i].bits, from_float<bf16>(values[i]).bits)
          << std::hex << float_bits(values[i]);
    }
  }
}

}  // namespace
