// SPDX-License-Identifier: Apache-2.0
// Host fp32 GEMM: C = alpha * op(A) * op(B) + beta * C, row-major, op(X) = X or X^T.
// Backed by oneDNN's dnnl_sgemm (AVX-512/AMX dispatch at run time) or a CBLAS fallback.
// Called from the main thread it uses all OpenMP threads; called inside an OpenMP (Kokkos)
// parallel region it runs on the calling thread only.
#pragma once

#include <cstdint>
#include <string>

namespace zt::kernels {

/// Row-major SGEMM. op(A) is M x K, op(B) is K x N, C is M x N; lda/ldb/ldc are the row
/// strides of the stored (untransposed) arrays. Throws std::runtime_error on a library error.
void gemm(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
          const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float beta, float* C,
          std::int64_t ldc);

/// "oneDNN 2.6.3" or "OpenBLAS" etc., for the start-up banner.
std::string gemm_library();
/// The instruction set the library dispatches to, e.g. "AVX-512 core + AMX" (oneDNN) or the
/// OpenBLAS core name. Never changes the library's choice (OPENBLAS_CORETYPE is left alone).
std::string gemm_instruction_set();

/// Runs odd-shaped problems in all four transpose combinations against a plain triple-loop
/// reference (double accumulation) and returns the largest relative error, measured as
/// max|C - C_ref| / max|C_ref| per problem. The application refuses to train above 1e-4,
/// which catches a GEMM kernel that is wrong on this CPU.
double gemm_self_check();

}  // namespace zt::kernels
