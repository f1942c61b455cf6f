// SPDX-License-Identifier: Apache-2.0
// Device fp32 GEMM through cuBLAS with the host wrapper's row-major signature
// (kernels/gemm.hpp), so model code can switch between the two without re-deriving layouts.
// Pointers are device memory. Plain C++ header: includable without the CUDA headers.
#pragma once

#include <cstdint>

namespace zt::kernels::cuda {

/// Row-major C = alpha op(A) op(B) + beta C on the current stream (set_gemm_stream).
/// Throws std::runtime_error with the cuBLAS status on failure.
void gemm(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
          const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float beta, float* C,
          std::int64_t ldc);

/// `batch` independent row-major GEMMs; problem i uses A + i*stride_a, B + i*stride_b,
/// C + i*stride_c (e.g. all heads of one sequence, whose columns are hs apart).
void gemm_strided_batched(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N,
                          std::int64_t K, float alpha, const float* A, std::int64_t lda,
                          std::int64_t stride_a, const float* B, std::int64_t ldb,
                          std::int64_t stride_b, float beta, float* C, std::int64_t ldc,
                          std::int64_t stride_c, int batch);

/// The stream (a cudaStream_t) the GEMMs of the calling thread run on; nullptr = default.
void set_gemm_stream(void* stream);

}  // namespace zt::kernels::cuda
