// SPDX-License-Identifier: Apache-2.0
// The tiled, vectorised, fused host kernels (src/optim/host_kernels.hpp) against the scalar
// element bodies of kernels/ops/optimizer_ops.hpp, bit for bit: every gradient and parameter-copy
// dtype, a gradient multiplier, sizes around the tile and vector widths. Sums of squares against
// exact references, and their inf/NaN detection. ctest runs this on 1 and on 2 threads.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/ops/dtype.hpp"
#include "kernels/ops/optimizer_ops.hpp"
#include "optim/gradient_clipping.hpp"
#include "optim/host_kernels.hpp"

namespace zt::optim::host {
namespace {

using kernels::bf16;
using kernels::DType;
using kernels::fp16;

// Sizes: empty, one element, around the vector widths (8, 16 floats) and the tile, several tiles
// (which run on several threads) with a ragged end.
constexpr std::int64_t kTile = kTileElements;
const std::vector<std::int64_t> kSizes = {0,  1,  7,         15,    16,        17,
                                          31, 33, kTile - 1, kTile, kTile + 1, 3 * kTile + 77};

std::uint32_t bits_of(float value) {
  std::uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}

// Bit patterns, so NaNs compare and -0 differs from +0.
void expect_same_bits(const std::vector<float>& actual, const std::vector<float>& expected,
                      const std::string& what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  std::int64_t mismatches = 0;
  for (std::size_t i = 0; i < actual.size(); ++i)
    if (bits_of(actual[i]) != bits_of(expected[i]) && mismatches++ < 5)
      ADD_FAILURE() << what << " element " << i << ": " << actual[i] << " != " << expected[i];
  EXPECT_EQ(mismatches, 0) << what;
}

std::vector<float> random_floats(std::int64_t n, float low, float high, unsigned seed) {
  std::mt19937 generator(seed);
  std::uniform_real_distribution<float> distribution(low, high);
  std::vector<float> values(static_cast<std::size_t>(n));
  for (float& value : values) value = distribution(generator);
  return values;
}

// Values of one storage dtype as raw bytes, with their float values (what the kernel reads).
struct Typed {
  DType dtype = DType::F32;
  std::vector<unsigned char> bytes;
  std::vector<float> as_float;
  const void* data() const { return bytes.data(); }
};

template <class T>
Typed make_typed_as(const std::vector<float>& values) {
  Typed typed;
  typed.dtype = kernels::dtype_of<T>::value;
  typed.bytes.resize(values.size() * sizeof(T));
  T* out = reinterpret_cast<T*>(typed.bytes.data());
  for (std::size_t i = 0; i < values.size(); ++i) {
    out[i] = kernels::from_float<T>(values[i]);
    typed.as_float.push_back(kernels::to_float(out[i]));
  }
  return typed;
}

Typed make_typed(const std::vector<float>& values, DType dtype) {
  switch (dtype) {
    case DType::F16:
      return make_typed_as<fp16>(values);
    case DType::BF16:
      return make_typed_as<bf16>(values);
    default:
      return make_typed_as<float>(values);
  }
}

// The copy the kernel must write: each value rounded to dtype, as raw bytes.
std::vector<unsigned char> rounded_bytes(const std::vector<float>& values, DType dtype) {
  return make_typed(values, dtype).bytes;
}

// Sums in a different order: close when finite, the same inf or a NaN otherwise.
void expect_sum_near(double actual, double expected, const std::string& what) {
  if (std::isnan(expected))
    EXPECT_TRUE(std::isnan(actual)) << what << ": " << actual;
  else if (std::isinf(expected))
    EXPECT_EQ(actual, expected) << what;
  else
    EXPECT_NEAR(actual, expected, 1e-13 * expected) << what;
}

const DType kStorageTypes[] = {DType::F32, DType::F16, DType::BF16};

// State that makes every part of the update matter: nonzero moments, mixed signs, and (from 40
// elements) gradients and weights at the edges of the 16-bit formats: fp16 subnormals and
// overflow, inf, NaN.
struct AdamCase {
  std::vector<float> master, exp_avg, exp_avg_sq, grads;
  explicit AdamCase(std::int64_t n, unsigned seed)
      : master(random_floats(n, -2.0f, 2.0f, seed)),
        exp_avg(random_floats(n, -0.01f, 0.01f, seed + 1)),
        exp_avg_sq(random_floats(n, 0.0f, 1e-4f, seed + 2)),
        grads(random_floats(n, -0.05f, 0.05f, seed + 3)) {
    if (n < 40) return;
    const float inf = std::numeric_limits<float>::infinity();
    const float special_grads[] = {
        3e-6f, -2e-7f, 1e-30f, 7e4f, -inf, inf, std::numeric_limits<float>::quiet_NaN()};
    for (std::size_t k = 0; k < std::size(special_grads); ++k)
      grads[n - 1 - 3 * k] = special_grads[k];
    const float special_weights[] = {1e5f, -7e4f, 6e-8f, -3e-5f, 65504.0f, 0.0f, -0.0f};
    for (std::size_t k = 0; k < std::size(special_weights); ++k)
      master[n - 2 - 3 * k] = special_weights[k];
  }
};

TEST(HostKernels, AdamStepEqualsTheScalarElementBodyInEveryDtype) {
  // Classic Adam (L2 in the gradient) and AdamW (decoupled decay): both branches of the body.
  const kernels::AdamElementConstants modes[] = {
      kernels::make_adam_constants(1e-3, 0.9, 0.999, 1e-8, 0.01, true, true, 3),
      kernels::make_adam_constants(2e-3, 0.8, 0.99, 1e-6, 0.1, false, true, 7)};
  const float multiplier = 0.37f;  // an unscale-and-clip factor, not a power of two
  for (const auto& c : modes)
    for (const std::int64_t n : kSizes)
      for (const DType grad_dtype : kStorageTypes)
        for (int out_kind = -1; out_kind < 3; ++out_kind) {
          const bool has_out = out_kind >= 0;
          const DType out_dtype = has_out ? kStorageTypes[out_kind] : DType::F32;
          const std::string what = "n=" + std::to_string(n) + " grads " +
                                   kernels::dtype_name(grad_dtype) + " out " +
                                   (has_out ? kernels::dtype_name(out_dtype) : "none") +
                                   (c.l2_weight_decay != 0 ? " L2" : " AdamW");
          const AdamCase start(n, static_cast<unsigned>(n) + 11);
          const Typed grads = make_typed(start.grads, grad_dtype);

          AdamCase expected = start;
          for (std::int64_t i = 0; i < n; ++i)
            kernels::adam_update_element(expected.master[i], grads.as_float[i] * multiplier,
                                         expected.exp_avg[i], expected.exp_avg_sq[i], c);

          AdamCase actual = start;
          // one guard element past the end: the kernel must not write it
          std::vector<unsigned char> out((n + 1) * 4, 0xab);
          adam_step(actual.master.data(), grads.data(), grad_dtype, multiplier,
                    actual.exp_avg.data(), actual.exp_avg_sq.data(), n, c,
                    has_out ? out.data() : nullptr, out_dtype);
          expect_same_bits(actual.master, expected.master, what + " master");
          expect_same_bits(actual.exp_avg, expected.exp_avg, what + " exp_avg");
          expect_same_bits(actual.exp_avg_sq, expected.exp_avg_sq, what + " exp_avg_sq");
          if (has_out) {
            const std::vector<unsigned char> want = rounded_bytes(expected.master, out_dtype);
            const std::vector<unsigned char> got(out.begin(), out.begin() + want.size());
            EXPECT_EQ(got, want) << what << " parameter copy";
            for (std::size_t b = want.size(); b < out.size(); ++b)
              ASSERT_EQ(out[b], 0xab) << what << ": wrote past the end";
          }
        }
}

// The engine without offload converts gradients first (backend convert: scale * float(g)) and
// steps with fp32 gradients; with offload the step reads the 16-bit gradients and multiplies on
// the fly. Both must give the same bits.
TEST(HostKernels, FusedUnscaleEqualsConvertingFirst) {
  const std::int64_t n = 2 * kTileElements + 5;
  const auto c = kernels::make_adam_constants(1e-3, 0.9, 0.999, 1e-8, 0.01, true, true, 2);
  const float scale = 1.0f / 1024.0f * 0.83f;
  for (const DType grad_dtype : kStorageTypes) {
    const AdamCase start(n, 5);
    const Typed grads = make_typed(start.grads, grad_dtype);
    std::vector<float> converted(static_cast<std::size_t>(n));
    for (std::int64_t i = 0; i < n; ++i) converted[i] = scale * grads.as_float[i];

    AdamCase separate = start;
    adam_update(separate.master.data(), converted.data(), separate.exp_avg.data(),
                separate.exp_avg_sq.data(), n, c);
    AdamCase fused = start;
    adam_step(fused.master.data(), grads.data(), grad_dtype, scale, fused.exp_avg.data(),
              fused.exp_avg_sq.data(), n, c, nullptr, DType::F32);
    const std::string what = std::string("grads ") + kernels::dtype_name(grad_dtype);
    expect_same_bits(fused.master, separate.master, what);
    expect_same_bits(fused.exp_avg_sq, separate.exp_avg_sq, what);
  }
}

// Stepping in pieces that split tiles and vectors gives the bits of one call.
TEST(HostKernels, AdamInRaggedPiecesEqualsOneCall) {
  const std::int64_t n = 4 * kTileElements + 3;
  const auto c = kernels::make_adam_constants(1e-3, 0.9, 0.999, 1e-8, 0.01, true, true, 1);
  const AdamCase start(n, 21);
  AdamCase whole = start;
  adam_update(whole.master.data(), whole.grads.data(), whole.exp_avg.data(),
              whole.exp_avg_sq.data(), n, c);
  AdamCase pieces = start;
  for (std::int64_t begin = 0, piece = 1; begin < n; begin += piece, piece = piece * 3 + 1) {
    const std::int64_t count = std::min(piece, n - begin);
    adam_update(pieces.master.data() + begin, pieces.grads.data() + begin,
                pieces.exp_avg.data() + begin, pieces.exp_avg_sq.data() + begin, count, c);
  }
  expect_same_bits(pieces.master, whole.master, "master");
  expect_same_bits(pieces.exp_avg, whole.exp_avg, "exp_avg");
  expect_same_bits(pieces.exp_avg_sq, whole.exp_avg_sq, "exp_avg_sq");
}

TEST(HostKernels, LambPhasesEqualTheScalarElementBodies) {
  const float multiplier = 0.61f;
  for (const bool eps_inside_sqrt : {false, true}) {
    const auto c =
        kernels::make_lamb_constants(1e-3, 0.9, 0.999, 1e-6, 0.01, eps_inside_sqrt, true, 4);
    for (const std::int64_t n : kSizes)
      for (const DType grad_dtype : kStorageTypes)
        for (const DType out_dtype : kStorageTypes) {
          const std::string what = "n=" + std::to_string(n) + " grads " +
                                   kernels::dtype_name(grad_dtype) + " out " +
                                   kernels::dtype_name(out_dtype);
          AdamCase start(n, static_cast<unsigned>(n) + 3);
          // a non-finite gradient would make the tensor's trust ratio, and so every weight, NaN
          for (float& g : start.grads)
            if (!std::isfinite(g)) g = 0.01f;
          const Typed grads = make_typed(start.grads, grad_dtype);

          AdamCase expected = start;
          double weight = 0, update = 0;
          for (std::int64_t i = 0; i < n; ++i) {
            const float u = kernels::lamb_update_moments_element(
                expected.master[i], grads.as_float[i] * multiplier, expected.exp_avg[i],
                expected.exp_avg_sq[i], c);
            weight += static_cast<double>(expected.master[i]) * expected.master[i];
            update += static_cast<double>(u) * u;
          }
          const float ratio = kernels::lamb_trust_ratio(weight, update, 0.01f, 10.0f);
          for (std::int64_t i = 0; i < n; ++i)
            kernels::lamb_apply_element(expected.master[i], expected.exp_avg[i],
                                        expected.exp_avg_sq[i], ratio, c);

          AdamCase actual = start;
          const LambSquareSums sums =
              lamb_update_moments(actual.master.data(), grads.data(), grad_dtype, multiplier,
                                  actual.exp_avg.data(), actual.exp_avg_sq.data(), n, c);
          // The squares are exact in double; only the order of the additions differs.
          expect_sum_near(sums.weight, weight, what + " weight sum");
          expect_sum_near(sums.update, update, what + " update sum");
          expect_same_bits(actual.exp_avg, expected.exp_avg, what + " exp_avg");
          expect_same_bits(actual.exp_avg_sq, expected.exp_avg_sq, what + " exp_avg_sq");
          std::vector<unsigned char> out(n * 4 + 4, 0xab);
          lamb_apply(actual.master.data(), actual.exp_avg.data(), actual.exp_avg_sq.data(), n,
                     ratio, c, out.data(), out_dtype);
          expect_same_bits(actual.master, expected.master, what + " master");
          const std::vector<unsigned char> want = rounded_bytes(expected.master, out_dtype);
          EXPECT_EQ(std::vector<unsigned char>(out.begin(), out.begin() + want.size()), want)
              << what << " parameter copy";
          EXPECT_EQ(out[want.size()], 0xab) << what << ": wrote past the end";
        }
  }
}

TEST(HostKernels, ConvertFromFloatRoundsEveryElement) {
  for (const std::int64_t n : kSizes)
    for (const DType dtype : kStorageTypes) {
      const std::vector<float> values = random_floats(n, -70000.0f, 70000.0f, 9);
      std::vector<unsigned char> out(n * 4);
      convert_from_float(values.data(), n, out.data(), dtype);
      const std::vector<unsigned char> want = rounded_bytes(values, dtype);
      EXPECT_EQ(std::vector<unsigned char>(out.begin(), out.begin() + want.size()), want)
          << "n=" << n << " " << kernels::dtype_name(dtype);
    }
}

TEST(HostKernels, RejectsIntegerDtypes) {
  float x = 0;
  const auto c = kernels::make_adam_constants(1e-3, 0.9, 0.999, 1e-8, 0, true, true, 1);
  EXPECT_THROW(adam_step(&x, &x, DType::I32, 1.0f, &x, &x, 1, c, nullptr, DType::F32),
               std::invalid_argument);
  EXPECT_THROW(adam_step(&x, &x, DType::F32, 1.0f, &x, &x, 1, c, &x, DType::I32),
               std::invalid_argument);
  EXPECT_THROW(sum_of_squares(&x, DType::I32, 1), std::invalid_argument);
}

// ---------------------------------------------------------------------------------------------
// Sum of squares
// ---------------------------------------------------------------------------------------------

// Exact enough to judge a double sum: Kahan-compensated in long double.
double reference_sum_of_squares(const std::vector<float>& values) {
  long double sum = 0, compensation = 0;
  for (const float value : values) {
    const long double term = static_cast<long double>(value) * value - compensation;
    const long double next = sum + term;
    compensation = (next - sum) - term;
    sum = next;
  }
  return static_cast<double>(sum);
}

// The kernel's bound on the relative error: fp32 squares are summed in double; 16-bit squares,
// exact in float, in float partials of 8 terms (7 roundings of at most 2^-24) before double.
double sum_tolerance(DType dtype) {
  return dtype == DType::F32 ? 1e-14 : 7.0 / 16777216.0;
}

TEST(HostKernels, SumOfSquaresIsAccurateInEveryDtype) {
  for (const std::int64_t n : kSizes)
    for (const DType dtype : kStorageTypes) {
      // Mixed magnitudes: a float running sum would lose the small ones.
      std::vector<float> values = random_floats(n, -1.0f, 1.0f, 17);
      for (std::int64_t i = 0; i < n; i += 3) values[i] *= 1e-3f;
      const Typed typed = make_typed(values, dtype);
      const double expected = reference_sum_of_squares(typed.as_float);
      const SquareSum result = sum_of_squares(typed.data(), dtype, n);
      EXPECT_TRUE(result.finite);
      EXPECT_NEAR(result.sum_of_squares, expected, sum_tolerance(dtype) * expected)
          << "n=" << n << " " << kernels::dtype_name(dtype);
    }
}

// 1e8 elements (bf16, 200 MB) of widely spread magnitudes against an exact reference.
TEST(HostKernels, SumOfSquaresOfAHundredMillionElements) {
  const std::int64_t n = 100'000'000;
  std::vector<bf16> values(static_cast<std::size_t>(n));
  std::uint32_t state = 12345;
  long double expected = 0;
  for (std::int64_t i = 0; i < n; ++i) {
    state = state * 1664525u + 1013904223u;
    // values in about [0.5, 2) * 2^k, k in [-8, 7]
    const auto bits = static_cast<std::uint16_t>(0x3f00u + ((state >> 9) & 0x07ffu) - 0x0400u);
    values[i].bits = bits;
    const double v = kernels::to_float(values[i]);
    expected += static_cast<long double>(v * v);  // exact square, 64-bit mantissa sum
  }
  const SquareSum result = sum_of_squares(values.data(), DType::BF16, n);
  EXPECT_TRUE(result.finite);
  // far inside the bound: the roundings of the float partials do not all go one way
  EXPECT_NEAR(result.sum_of_squares, static_cast<double>(expected),
              1e-8 * static_cast<double>(expected));
}

// The worst case for float partials: each lane's first square is large and the rest vanish
// next to it. Only the squares in the large value's own block of 8 may be lost; a sum that kept
// float partials for a whole tile (128 squares per lane) would lose 16 times as much.
TEST(HostKernels, SumOfSquaresOfSixteenBitValuesFlushesFloatPartialsOften) {
  const std::int64_t n = 4 * kTileElements;
  for (const DType dtype : {DType::BF16, DType::F16}) {
    std::vector<float> values(static_cast<std::size_t>(n), 1.0f / 4096.0f);  // square 2^-24
    for (std::int64_t i = 0; i < n; i += kTileElements)
      for (std::int64_t k = 0; k < 64; ++k) values[i + k] = 1.0f;
    const Typed typed = make_typed(values, dtype);
    const double expected = reference_sum_of_squares(typed.as_float);
    const SquareSum result = sum_of_squares(typed.data(), dtype, n);
    EXPECT_NEAR(result.sum_of_squares, expected, sum_tolerance(dtype) * expected)
        << kernels::dtype_name(dtype);
  }
  // bf16 squares past float's range are summed in double: finite, and right
  std::vector<bf16> huge(1000, kernels::from_float<bf16>(1e30f));
  const SquareSum result = sum_of_squares(huge.data(), DType::BF16, 1000);
  const double square =
      static_cast<double>(kernels::to_float(huge[0])) * kernels::to_float(huge[0]);
  EXPECT_TRUE(result.finite);
  EXPECT_NEAR(result.sum_of_squares, 1000 * square, 1e-14 * 1000 * square);
}

TEST(HostKernels, SumOfSquaresDetectsInfAndNaNInEveryDtype) {
  const std::int64_t n = 3 * kTileElements + 77;
  const float specials[] = {std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN()};
  for (const DType dtype : kStorageTypes)
    for (const float special : specials)
      for (const std::int64_t at : {std::int64_t{0}, kTileElements + 5, n - 1}) {
        std::vector<float> values = random_floats(n, -1.0f, 1.0f, 23);
        values[at] = special;
        const Typed typed = make_typed(values, dtype);
        EXPECT_FALSE(sum_of_squares(typed.data(), dtype, n).finite)
            << kernels::dtype_name(dtype) << " " << special << " at " << at;
      }
  // Finite values whose squares overflow float but not double are finite.
  std::vector<float> huge(100, 3e38f);
  const SquareSum result = sum_of_squares(huge.data(), DType::F32, 100);
  EXPECT_TRUE(result.finite);
  EXPECT_NEAR(result.sum_of_squares, 100 * 9e76, 1e-6 * 9e78);
  EXPECT_EQ(sum_of_squares(huge.data(), DType::F32, 0).sum_of_squares, 0.0);
  EXPECT_TRUE(sum_of_squares(nullptr, DType::BF16, 0).finite);
}

// The tile partials are added in tile order, so the sum is that of the tiles' own sums whatever
// the threads (this test also runs with 2 threads), and reruns give the same bits.
TEST(HostKernels, SumOfSquaresAddsTilesInOrderOnAnyThreads) {
  const std::int64_t n = 7 * kTileElements + 123;
  const std::vector<float> values = random_floats(n, -3.0f, 3.0f, 31);
  double tiles = 0;
  for (std::int64_t begin = 0; begin < n; begin += kTileElements)
    tiles += sum_of_squares(values.data() + begin, DType::F32, std::min(kTileElements, n - begin))
                 .sum_of_squares;
  const double whole = sum_of_squares(values.data(), DType::F32, n).sum_of_squares;
  EXPECT_EQ(whole, tiles);
  EXPECT_EQ(optim::sum_of_squares(values.data(), n), whole);  // gradient_clipping's entry
}

TEST(HostKernels, ScaleMultipliesEveryElementExactly) {
  for (const std::int64_t n : kSizes) {
    std::vector<float> values = random_floats(n, -5.0f, 5.0f, 41);
    std::vector<float> expected = values;
    for (float& value : expected) value *= 0.3f;
    scale(values.data(), n, 0.3f);
    expect_same_bits(values, expected, "n=" + std::to_string(n));
  }
}

}  // namespace
}  // namespace zt::optim::host
