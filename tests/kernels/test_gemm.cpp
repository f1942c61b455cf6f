// SPDX-License-Identifier: Apache-2.0
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/gemm.hpp"

namespace {

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
}

}  // namespace
