// SPDX-License-Identifier: Apache-2.0
#include "kernels/gemm.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#if defined(ZT_GEMM_ONEDNN)
#include <oneapi/dnnl/dnnl.h>
#elif defined(ZT_GEMM_CBLAS)
#include <cblas.h>
#else
#error "define ZT_GEMM_ONEDNN or ZT_GEMM_CBLAS (cmake/ZtGemm.cmake does)"
#endif

namespace zt::kernels {

void gemm(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
          const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float beta, float* C,
          std::int64_t ldc) {
  if (M == 0 || N == 0) return;
#if defined(ZT_GEMM_ONEDNN)
  const dnnl_status_t status = dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', M, N, K, alpha,
                                          A, lda, B, ldb, beta, C, ldc);
  if (status != dnnl_success)
    throw std::runtime_error("dnnl_sgemm failed (status " + std::to_string(status) +
                             ") for M=" + std::to_string(M) + " N=" + std::to_string(N) +
                             " K=" + std::to_string(K));
#else
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(M), static_cast<int>(N),
              static_cast<int>(K), alpha, A, static_cast<int>(lda), B, static_cast<int>(ldb), beta,
              C, static_cast<int>(ldc));
#endif
}

#if defined(ZT_GEMM_CBLAS)
// OpenBLAS exports these; other CBLAS libraries (BLIS, MKL) do not, so they are weak.
extern "C" char* openblas_get_corename(void) __attribute__((weak));
extern "C" char* openblas_get_config(void) __attribute__((weak));
#endif

std::string gemm_library() {
#if defined(ZT_GEMM_ONEDNN)
  const dnnl_version_t* version = dnnl_version();
  return "oneDNN " + std::to_string(version->major) + "." + std::to_string(version->minor) + "." +
         std::to_string(version->patch);
#else
  if (openblas_get_config != nullptr)
    return std::string("OpenBLAS (") + openblas_get_config() + ")";
  return "CBLAS";
#endif
}

std::string gemm_instruction_set() {
#if defined(ZT_GEMM_ONEDNN)
  switch (dnnl_get_effective_cpu_isa()) {
    case dnnl_cpu_isa_sse41:
      return "SSE4.1";
    case dnnl_cpu_isa_avx:
      return "AVX";
    case dnnl_cpu_isa_avx2:
      return "AVX2";
    case dnnl_cpu_isa_avx2_vnni:
      return "AVX2 + VNNI";
    case dnnl_cpu_isa_avx512_mic:
      return "AVX-512 (Xeon Phi)";
    case dnnl_cpu_isa_avx512_mic_4ops:
      return "AVX-512 (Xeon Phi, 4FMAPS)";
    case dnnl_cpu_isa_avx512_core:
      return "AVX-512 core";
    case dnnl_cpu_isa_avx512_core_vnni:
      return "AVX-512 core + VNNI";
    case dnnl_cpu_isa_avx512_core_bf16:
      return "AVX-512 core + BF16";
    case dnnl_cpu_isa_avx512_core_amx:
      return "AVX-512 core + AMX";
    default:
      return "unknown (oneDNN ISA code " + std::to_string(dnnl_get_effective_cpu_isa()) + ")";
  }
#else
  if (openblas_get_corename != nullptr)
    return std::string("OpenBLAS core ") + openblas_get_corename();
  return "unknown (not OpenBLAS)";
#endif
}

namespace {

// C_ref = alpha op(A) op(B) + beta C in double, the plain definition.
void reference_gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha,
                    const std::vector<float>& A, int lda, const std::vector<float>& B, int ldb,
                    float beta, std::vector<double>& C, int ldc) {
  for (int i = 0; i < M; ++i)
    for (int j = 0; j < N; ++j) {
      double sum = 0.0;
      for (int k = 0; k < K; ++k) {
        const double a = trans_a ? A[static_cast<std::size_t>(k) * lda + i]
                                 : A[static_cast<std::size_t>(i) * lda + k];
        const double b = trans_b ? B[static_cast<std::size_t>(j) * ldb + k]
                                 : B[static_cast<std::size_t>(k) * ldb + j];
        sum += a * b;
      }
      double& c = C[static_cast<std::size_t>(i) * ldc + j];
      c = alpha * sum + beta * c;
    }
}

}  // namespace

double gemm_self_check() {
  struct Shape {
    int M, N, K;
  };
  // Odd sizes exercise the kernels' edge handling; the larger ones their blocked main path.
  const Shape shapes[] = {{1, 1, 1}, {7, 13, 5}, {33, 17, 65}, {129, 67, 255}, {64, 300, 97}};
  double worst = 0.0;
  std::uint32_t state = 12345u;
  auto next_value = [&state]() {  // small LCG: the check must not depend on <random> details
    state = state * 1664525u + 1013904223u;
    return static_cast<float>(static_cast<int>(state >> 9) % 2001 - 1000) / 1000.0f;
  };
  for (const Shape& s : shapes)
    for (int combo = 0; combo < 4; ++combo) {
      const bool ta = (combo & 1) != 0;
      const bool tb = (combo & 2) != 0;
      // Padded leading dimensions, so a library that ignores ld would fail.
      const int lda = (ta ? s.M : s.K) + 3;
      const int ldb = (tb ? s.K : s.N) + 2;
      const int ldc = s.N + 1;
      std::vector<float> A(static_cast<std::size_t>(ta ? s.K : s.M) * lda);
      std::vector<float> B(static_cast<std::size_t>(tb ? s.N : s.K) * ldb);
      std::vector<float> C(static_cast<std::size_t>(s.M) * ldc);
      for (float& v : A) v = next_value();
      for (float& v : B) v = next_value();
      for (float& v : C) v = next_value();
      std::vector<double> C_ref(C.begin(), C.end());
      const float alpha = 0.75f;
      const float beta = (combo % 2 == 0) ? 0.5f : 0.0f;
      gemm(ta, tb, s.M, s.N, s.K, alpha, A.data(), lda, B.data(), ldb, beta, C.data(), ldc);
      reference_gemm(ta, tb, s.M, s.N, s.K, alpha, A, lda, B, ldb, beta, C_ref, ldc);
      double max_error = 0.0;
      double max_reference = 0.0;
      for (int i = 0; i < s.M; ++i)
        for (int j = 0; j < s.N; ++j) {
          const std::size_t idx = static_cast<std::size_t>(i) * ldc + j;
          max_error = std::max(max_error, std::abs(C[idx] - C_ref[idx]));
          max_reference = std::max(max_reference, std::abs(C_ref[idx]));
        }
      worst = std::max(worst, max_error / std::max(max_reference, 1e-30));
    }
  return worst;
}

}  // namespace zt::kernels
