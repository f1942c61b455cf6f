// SPDX-License-Identifier: Apache-2.0
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include "kernels/gemm.hpp"

namespace {

using zt::kernels::bf16;
using zt::kernels::DType;
using zt::kernels::fp16;
using zt::kernels::from_float;
using zt::kernels::to_float;
using zt::kernels::detail::GemmRoute;

struct Case {
  bool trans_a, trans_b;
  int M, N, K;
};

// C = alpha op(A) op(B) + beta C, by the definition, in double.
std::vector<double> reference(const Case& c, float alpha, const std::vector<float>& A, int lda,
                              const std::vector<float>& B, int ldb, float beta,
                              const std::vector<float>& C0, int ldc) {
  std::vector<double> C(C0.begin(), C0.end());
  for (int i = 0; i < c.M; ++i)
    for (int j = 0; j < c.N; ++j) {
      double sum = 0;
      for (int k = 0; k < c.K; ++k)
        sum += static_cast<double>(c.trans_a ? A[k * lda + i] : A[i * lda + k]) *
               (c.trans_b ? B[j * ldb + k] : B[k * ldb + j]);
      C[i * ldc + j] = alpha * sum + beta * C[i * ldc + j];
    }
  return C;
}

TEST(Gemm, MatchesReferenceForAllTransposesAndOddShapes) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  const int shapes[][3] = {{1, 1, 1}, {3, 5, 7}, {17, 1, 33}, {65, 31, 9}, {100, 129, 257}};
  for (const auto& s : shapes)
    for (int combo = 0; combo < 4; ++combo) {
      const Case c{(combo & 1) != 0, (combo & 2) != 0, s[0], s[1], s[2]};
      const int lda = (c.trans_a ? c.M : c.K) + 1, ldb = (c.trans_b ? c.K : c.N) + 2, ldc = c.N + 3;
      std::vector<float> A((c.trans_a ? c.K : c.M) * lda), B((c.trans_b ? c.N : c.K) * ldb),
          C(c.M * ldc);
      for (auto* v : {&A, &B, &C})
        for (float& x : *v) x = uniform(rng);
      const float alpha = 1.5f, beta = combo == 3 ? 0.0f : -0.5f;
      const auto expected = reference(c, alpha, A, lda, B, ldb, beta, C, ldc);
      const std::vector<float> before = C;
      zt::kernels::gemm(c.trans_a, c.trans_b, c.M, c.N, c.K, alpha, A.data(), lda, B.data(), ldb,
                        beta, C.data(), ldc);
      for (int i = 0; i < c.M; ++i)
        for (int j = 0; j < c.N; ++j)
          ASSERT_NEAR(C[i * ldc + j], expected[i * ldc + j], 1e-5 * (1 + std::sqrt(c.K) * 2))
              << "M=" << c.M << " N=" << c.N << " K=" << c.K << " ta=" << c.trans_a
              << " tb=" << c.trans_b << " at (" << i << "," << j << ")";
      // the padding after each row of C (ldc > N) is never written
      for (int i = 0; i < c.M; ++i)
        for (int j = c.N; j < ldc; ++j) ASSERT_EQ(C[i * ldc + j], before[i * ldc + j]);
    }
}

TEST(Gemm, SelfCheckPassesAndBannerIsReadable) {
  EXPECT_LT(zt::kernels::gemm_self_check(), 1e-4);
  EXPECT_FALSE(zt::kernels::gemm_library().empty());
  EXPECT_FALSE(zt::kernels::gemm_instruction_set().empty());
  for (DType type : {DType::F32, DType::F16, DType::BF16})
    EXPECT_FALSE(zt::kernels::gemm_path(type).empty()) << zt::kernels::dtype_name(type);
}

// ---------------------------------------------------------------------------------------------
// Typed GEMM: fp32, fp16 and bf16 against a double reference of the (rounded) inputs.
// ---------------------------------------------------------------------------------------------

// Unit roundoff of the stored output: the one rounding of C that a correct 16-bit GEMM adds.
template <class T>
double unit_roundoff() {
  if constexpr (std::is_same_v<T, fp16>) return 0x1p-11;
  if constexpr (std::is_same_v<T, bf16>) return 0x1p-8;
  return 0x1p-24;
}

// One problem in T with padded leading dimensions, checked element by element against
// alpha sum(a b) + beta c in double. The error budget per element: the output rounding
// (u |ref|, plus half fp16's smallest subnormal), and fp32 accumulation of K products,
// bounded by (K + 4) 2^-24 (|alpha| sum |a b| + |beta c|) with a factor 2 of slack.
// Returns a failure message, or "" on success.
template <class T>
std::string check_typed(GemmRoute* route, const Case& c, float alpha, float beta, int pad,
                        std::mt19937& rng, std::vector<T>* result = nullptr) {
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  const int lda = (c.trans_a ? c.M : c.K) + pad, ldb = (c.trans_b ? c.K : c.N) + 2 * pad,
            ldc = c.N + 3 * pad;
  std::vector<T> A(static_cast<std::size_t>(c.trans_a ? c.K : c.M) * lda),
      B(static_cast<std::size_t>(c.trans_b ? c.N : c.K) * ldb),
      C(static_cast<std::size_t>(c.M) * ldc);
  for (auto* v : {&A, &B})
    for (T& x : *v) x = from_float<T>(uniform(rng));
  // beta == 0: C is not read, so NaN there must not leak into the result
  for (T& x : C)
    x = from_float<T>(beta == 0.0f ? std::numeric_limits<float>::quiet_NaN() : uniform(rng));
  const std::vector<T> before = C;
  const DType type = zt::kernels::dtype_of<T>::value;
  if (route != nullptr) {
    if (!zt::kernels::detail::gemm_by_route(*route, type, c.trans_a, c.trans_b, c.M, c.N, c.K,
                                            alpha, A.data(), lda, B.data(), ldb, beta, C.data(),
                                            ldc))
      return "";  // route not available here: nothing to check
  } else {
    zt::kernels::gemm(type, c.trans_a, c.trans_b, c.M, c.N, c.K, alpha, A.data(), lda, B.data(),
                      ldb, beta, C.data(), ldc);
  }
  const double u = unit_roundoff<T>();
  const double absolute = std::is_same_v<T, fp16> ? 0x1p-25 : 0.0;
  for (int i = 0; i < c.M; ++i) {
    for (int j = 0; j < c.N; ++j) {
      double sum = 0, magnitude = 0;
      for (int k = 0; k < c.K; ++k) {
        const double a = to_float(c.trans_a ? A[static_cast<std::size_t>(k) * lda + i]
                                            : A[static_cast<std::size_t>(i) * lda + k]);
        const double b = to_float(c.trans_b ? B[static_cast<std::size_t>(j) * ldb + k]
                                            : B[static_cast<std::size_t>(k) * ldb + j]);
        sum += a * b;
        magnitude += std::abs(a * b);
      }
      const std::size_t idx = static_cast<std::size_t>(i) * ldc + j;
      const double c0 = beta == 0.0f ? 0.0 : to_float(before[idx]);
      const double expected = alpha * sum + beta * c0;
      const double scale = std::abs(alpha) * magnitude + std::abs(beta * c0);
      const double tolerance =
          u * std::abs(expected) + absolute + 2.0 * (c.K + 4) * 0x1p-24 * scale * (1.0 + u);
      const double got = to_float(C[idx]);
      if (!(std::abs(got - expected) <= tolerance)) {
        std::ostringstream message;
        message << zt::kernels::dtype_name(type) << " M=" << c.M << " N=" << c.N << " K=" << c.K
                << " ta=" << c.trans_a << " tb=" << c.trans_b << " alpha=" << alpha
                << " beta=" << beta << " pad=" << pad << " at (" << i << "," << j << "): got "
                << got << ", expected " << expected << " +- " << tolerance;
        return message.str();
      }
    }
    for (int j = c.N; j < ldc; ++j)  // the padding after each row of C is never written
      if (std::memcmp(&C[static_cast<std::size_t>(i) * ldc + j],
                      &before[static_cast<std::size_t>(i) * ldc + j], sizeof(T)) != 0)
        return "padding of C written at row " + std::to_string(i);
  }
  if (result != nullptr) *result = C;
  return "";
}

// Shapes: degenerate (1x1x1, 1xN, Mx1, K=1), odd, and past the converted route's 4096 block
// edge in each of M, N and K so its blocking is exercised.
const Case kShapes[] = {{false, false, 1, 1, 1},       {false, false, 1, 37, 19},
                        {false, false, 41, 1, 23},     {false, false, 17, 29, 1},
                        {false, false, 33, 17, 65},    {false, false, 65, 31, 9},
                        {false, false, 100, 129, 257}, {false, false, 8, 6, 5000},
                        {false, false, 4100, 3, 5},    {false, false, 2, 4099, 3}};

template <class T>
void check_all_shapes(GemmRoute* route) {
  std::mt19937 rng(11);
  const float alphas[] = {1.0f, -0.75f, 1.0f};
  const float betas[] = {0.0f, 1.0f, -0.5f};
  int problem = 0;
  for (Case c : kShapes)
    for (int combo = 0; combo < 4; ++combo) {
      c.trans_a = (combo & 1) != 0;
      c.trans_b = (combo & 2) != 0;
      for (int b = 0; b < 3; ++b, ++problem) {
        const float alpha = alphas[(b + combo) % 3];
        const int pad = problem % 3;  // dense and padded leading dimensions
        const std::string failure = check_typed<T>(route, c, alpha, betas[b], pad, rng);
        ASSERT_TRUE(failure.empty()) << failure;
      }
    }
}

TEST(GemmTyped, Fp32MatchesReference) {
  check_all_shapes<float>(nullptr);
}
TEST(GemmTyped, Fp16MatchesReference) {
  check_all_shapes<fp16>(nullptr);
}
TEST(GemmTyped, Bf16MatchesReference) {
  check_all_shapes<bf16>(nullptr);
}

// Every route on its own, whatever gemm() chooses on this CPU (a route that cannot run here is
// skipped inside check_typed).
TEST(GemmTyped, EveryRouteMatchesReference) {
  if (zt::kernels::gemm_library().rfind("oneDNN", 0) == 0) {
    // oneDNN has a non-reference fp32 matmul on every x86-64 CPU: both primitive routes run
    std::vector<float> A(64 * 64, 1.0f), B(64 * 64, 1.0f), C(64 * 64);
    for (GemmRoute route : {GemmRoute::matmul, GemmRoute::packed})
      EXPECT_TRUE(zt::kernels::detail::gemm_by_route(route, DType::F32, false, true, 64, 64, 64,
                                                     1.0f, A.data(), 64, B.data(), 64, 0.0f,
                                                     C.data(), 64));
  }
  for (GemmRoute route : {GemmRoute::sgemm, GemmRoute::matmul, GemmRoute::packed}) {
    SCOPED_TRACE(static_cast<int>(route));
    check_all_shapes<float>(&route);
  }
  for (GemmRoute route : {GemmRoute::matmul, GemmRoute::packed, GemmRoute::converted}) {
    SCOPED_TRACE(static_cast<int>(route));
    check_all_shapes<bf16>(&route);
  }
  GemmRoute converted = GemmRoute::converted;
  check_all_shapes<fp16>(&converted);
}

// With beta = 0, K = 1 and B = 1 the fp32 result is alpha * a (a * 1 is exact, the scaling one
// fp32 rounding), so the stored bits must be from_float's of it: round to nearest even, fp16
// subnormals and overflow to infinity included.
template <class T>
void check_rounding(float low_exponent, float high_exponent) {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> exponent(low_exponent, high_exponent);
  std::uniform_real_distribution<float> sign(-1.0f, 1.0f);
  const int M = 257;
  for (float alpha : {1.0f / 3.0f, 3.0f, 0.7f}) {
    std::vector<T> A(M), B(1, from_float<T>(1.0f)), C(M);
    for (T& a : A) a = from_float<T>(std::copysign(std::exp2(exponent(rng)), sign(rng)));
    zt::kernels::gemm(zt::kernels::dtype_of<T>::value, false, false, M, 1, 1, alpha, A.data(), 1,
                      B.data(), 1, 0.0f, C.data(), 1);
    for (int i = 0; i < M; ++i) {
      // 0 + a: the accumulator starts at +0, so an input -0 gives +0, as in the reference sum
      const T expected = from_float<T>(alpha * (0.0f + to_float(A[i])));
      ASSERT_EQ(C[i].bits, expected.bits) << "alpha=" << alpha << " a=" << to_float(A[i]) << " got "
                                          << to_float(C[i]) << " expected " << to_float(expected);
    }
  }
}

TEST(GemmTyped, Fp16RoundsOnceToNearestEven) {
  check_rounding<fp16>(-26.0f, 16.5f);
}
TEST(GemmTyped, Bf16RoundsOnceToNearestEven) {
  check_rounding<bf16>(-120.0f, 127.5f);
}

bool cpu_lists_bf16() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line))
    if (line.rfind("flags", 0) == 0) {
      std::istringstream words(line);
      for (std::string word; words >> word;)
        if (word == "avx512_bf16" || word == "amx_bf16") return true;
      return false;
    }
  return false;
}

// A CPU with bf16 instructions must run bf16 natively (a oneDNN matmul that is not a
// reference implementation), not through the fp32 conversion. CI's CPU may have none.
TEST(GemmTyped, Bf16IsNativeWhereTheCpuHasBf16) {
  if (!cpu_lists_bf16()) GTEST_SKIP() << "no avx512_bf16 / amx_bf16 in /proc/cpuinfo";
  if (zt::kernels::gemm_library().rfind("oneDNN", 0) != 0) GTEST_SKIP() << "not a oneDNN build";
  // GPT-2 small's forward shapes, and a padded odd one
  const Case cases[] = {
      {false, true, 256, 2304, 768}, {false, false, 256, 768, 3072}, {true, false, 3072, 768, 256}};
  for (const Case& c : cases) {
    const std::string impl =
        zt::kernels::detail::gemm_impl(DType::BF16, c.trans_a, c.trans_b, c.M, c.N, c.K,
                                       c.trans_a ? c.M : c.K, c.trans_b ? c.K : c.N, c.N, 0.0f);
    EXPECT_TRUE(impl.rfind("matmul ", 0) == 0 || impl.rfind("packed ", 0) == 0) << impl;
    EXPECT_EQ(impl.find("ref"), std::string::npos) << impl;
  }
  EXPECT_EQ(zt::kernels::gemm_path(DType::BF16).rfind("converted", 0), std::string::npos)
      << zt::kernels::gemm_path(DType::BF16);
}

// Cached primitives: the same problem twice gives the same bits; problems that differ only in
// ld, alpha or beta each get their own (correct) result.
template <class T>
void check_cache() {
  std::mt19937 rng(3);
  const Case c{false, true, 48, 40, 36};
  std::vector<T> first, second;
  std::mt19937 rng_copy = rng;
  ASSERT_EQ(check_typed<T>(nullptr, c, 1.0f, 0.0f, 0, rng, &first), "");
  ASSERT_EQ(check_typed<T>(nullptr, c, 1.0f, 0.0f, 0, rng_copy, &second), "");
  ASSERT_EQ(first.size(), second.size());
  for (std::size_t i = 0; i < first.size(); ++i)
    ASSERT_EQ(std::memcmp(&first[i], &second[i], sizeof(T)), 0) << "at " << i;
  for (int pad : {0, 1, 5, 0, 1})
    for (float alpha : {1.0f, 2.0f})
      for (float beta : {0.0f, 1.0f, 0.25f})
        ASSERT_EQ(check_typed<T>(nullptr, c, alpha, beta, pad, rng), "");
}

TEST(GemmTyped, CacheReusesAndSeparatesProblems) {
  check_cache<float>();
  check_cache<fp16>();
  check_cache<bf16>();
}

// Called from inside an OpenMP parallel region (as attention calls it), each thread's GEMM runs
// on that thread and is correct.
TEST(GemmTyped, CallsInsideAParallelRegion) {
#if defined(_OPENMP)
  std::vector<std::string> failures(8);
#pragma omp parallel for num_threads(2) schedule(static, 1)
  for (int t = 0; t < 8; ++t) {
    std::mt19937 rng(100 + t);
    const Case c{(t & 1) != 0, (t & 2) != 0, 37 + t, 29, 64};
    std::string failure = t % 3 == 0   ? check_typed<float>(nullptr, c, 1.0f, 1.0f, 1, rng)
                          : t % 3 == 1 ? check_typed<bf16>(nullptr, c, 1.0f, 0.0f, 1, rng)
                                       : check_typed<fp16>(nullptr, c, 0.5f, 1.0f, 1, rng);
    failures[t] = failure;
  }
  for (const std::string& failure : failures) EXPECT_EQ(failure, "");
#else
  GTEST_SKIP() << "built without OpenMP";
#endif
}

}  // namespace
