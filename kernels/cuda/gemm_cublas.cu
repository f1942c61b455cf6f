// SPDX-License-Identifier: Apache-2.0
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "kernels/cuda/gemm_cublas.hpp"

namespace zt::kernels::cuda {
namespace {

// One handle per host thread (cuBLAS handles are not thread-safe to share), created on first
// use and destroyed at thread exit.
struct Handle {
  cublasHandle_t handle = nullptr;
  Handle() {
    const cublasStatus_t status = cublasCreate(&handle);
    if (status != CUBLAS_STATUS_SUCCESS)
      throw std::runtime_error("cublasCreate failed: " +
                               std::string(cublasGetStatusString(status)));
  }
  ~Handle() {
    if (handle != nullptr) cublasDestroy(handle);
  }
};

cublasHandle_t thread_handle() {
  thread_local Handle h;
  return h.handle;
}

void check(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string(what) + " failed: " + cublasGetStatusString(status));
}

cublasOperation_t op(bool transpose) {
  return transpose ? CUBLAS_OP_T : CUBLAS_OP_N;
}

}  // namespace

// cuBLAS is column-major. A row-major matrix with leading dimension ld is the column-major
// transpose with the same ld, so row-major C = op(A) op(B) is column-major
// C^T = op(B)^T op(A)^T: swap the operands and M with N, keep the transpose flags.
void gemm(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
          const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float beta, float* C,
          std::int64_t ldc) {
  if (M == 0 || N == 0) return;
  check(cublasSgemm(thread_handle(), op(trans_b), op(trans_a), static_cast<int>(N),
                    static_cast<int>(M), static_cast<int>(K), &alpha, B, static_cast<int>(ldb), A,
                    static_cast<int>(lda), &beta, C, static_cast<int>(ldc)),
        "cublasSgemm");
}

void gemm_strided_batched(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N,
                          std::int64_t K, float alpha, const float* A, std::int64_t lda,
                          std::int64_t stride_a, const float* B, std::int64_t ldb,
                          std::int64_t stride_b, float beta, float* C, std::int64_t ldc,
                          std::int64_t stride_c, int batch) {
  if (M == 0 || N == 0 || batch == 0) return;
  check(cublasSgemmStridedBatched(thread_handle(), op(trans_b), op(trans_a), static_cast<int>(N),
                                  static_cast<int>(M), static_cast<int>(K), &alpha, B,
                                  static_cast<int>(ldb), stride_b, A, static_cast<int>(lda),
                                  stride_a, &beta, C, static_cast<int>(ldc), stride_c, batch),
        "cublasSgemmStridedBatched");
}

void set_gemm_stream(void* stream) {
  check(cublasSetStream(thread_handle(), static_cast<cudaStream_t>(stream)), "cublasSetStream");
}

}  // namespace zt::kernels::cuda
