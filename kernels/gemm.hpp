// SPDX-License-Identifier: Apache-2.0
// Host GEMM: C = alpha * op(A) * op(B) + beta * C, row-major, op(X) = X or X^T, in fp32, fp16 or
// bf16 (fp32 accumulation). Backed by oneDNN (dnnl_sgemm, and cached matmul primitives where
// they are faster: forward NT products with few rows, and bf16 on CPUs with bf16 instructions;
// kernels/gemm.cpp has the figures) or a CBLAS fallback. Called from the main thread it uses all
// OpenMP threads; called inside an OpenMP (Kokkos) parallel region it runs on the calling thread
// only (dnnl_sgemm, or the fp32 conversion for 16-bit types). Thread-safe.
#pragma once

#include <cstdint>
#include <string>

#include "kernels/ops/dtype.hpp"

namespace zt::kernels {

/// Row-major SGEMM. op(A) is M x K, op(B) is K x N, C is M x N; lda/ldb/ldc are the row
/// strides of the stored (untransposed) arrays. Throws std::runtime_error on a library error.
void gemm(bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K, float alpha,
          const float* A, std::int64_t lda, const float* B, std::int64_t ldb, float beta, float* C,
          std::int64_t ldc);

/// Row-major GEMM with A, B and C all of `type` (F32, F16 or BF16), accumulated in fp32; alpha and
/// beta apply in fp32 and C is rounded once on store (round to nearest even). With beta == 0, C
/// is not read. Where the CPU has instructions for the 16-bit type oneDNN's matmul runs it
/// natively (never a reference implementation); elsewhere the operands are widened to fp32 in
/// reused per-thread scratch around the fp32 GEMM (gemm_path says which). Throws
/// std::invalid_argument for I32.
void gemm(DType type, bool trans_a, bool trans_b, std::int64_t M, std::int64_t N, std::int64_t K,
          float alpha, const void* A, std::int64_t lda, const void* B, std::int64_t ldb, float beta,
          void* C, std::int64_t ldc);
/// How gemm(type, ...) runs here, for the banner: e.g. "oneDNN 2.6.3 matmul brg:avx512_core_bf16"
/// or "converted to fp32 around the fp32 GEMM: ... no fp16 matmul for this CPU ...". Creates
/// (and caches) the primitives it describes.
std::string gemm_path(DType type);

/// "oneDNN 2.6.3" or "OpenBLAS" etc., for the start-up banner.
std::string gemm_library();
/// The instruction set the library dispatches to, e.g. "AVX-512 core + AMX" (oneDNN) or the
/// OpenBLAS core name. Never changes the library's choice (OPENBLAS_CORETYPE is left alone).
std::string gemm_instruction_set();

/// Runs odd-shaped problems in all four transpose combinations, with padded leading dimensions
/// and beta 0 and 0.5, in fp32, fp16 and bf16, against a triple-loop reference (double
/// accumulation of the type's rounded inputs), and returns the largest error, measured as
/// max|C - C_ref| / max|C_ref| per problem. fp16 and bf16 errors are divided by the type's unit
/// roundoff (2^-11, 2^-8) and multiplied by 1e-5, so a correct kernel (one rounding of C) scores
/// about 1e-5 for every type. The application refuses to train above 1e-4, which catches a GEMM
/// kernel that is wrong on this CPU.
double gemm_self_check();

namespace detail {
/// The ways gemm(type, ...) can run a problem: dnnl_sgemm (or cblas_sgemm), oneDNN's matmul on
/// the caller's strided layouts, the matmul with B reordered into its preferred layout on every
/// call, or 16-bit operands converted to fp32 around sgemm.
enum class GemmRoute { sgemm, matmul, packed, converted };
/// For benchmarks and tests: runs the problem by `route`, or returns false (having done
/// nothing) where that route cannot run it (no such primitive, a reference one only, no bf16
/// instructions, or a call inside a parallel region for the matmul routes).
bool gemm_by_route(GemmRoute route, DType type, bool trans_a, bool trans_b, std::int64_t M,
                   std::int64_t N, std::int64_t K, float alpha, const void* A, std::int64_t lda,
                   const void* B, std::int64_t ldb, float beta, void* C, std::int64_t ldc);
/// What gemm(type, ...) runs for this problem when called from outside a parallel region:
/// "dnnl_sgemm", "cblas_sgemm", "converted" (16-bit widened around the fp32 GEMM),
/// "matmul <impl_info_str>" (e.g. "matmul brg:avx512_core_bf16") or "packed <impl_info_str>".
std::string gemm_impl(DType type, bool trans_a, bool trans_b, std::int64_t M, std::int64_t N,
                      std::int64_t K, std::int64_t lda, std::int64_t ldb, std::int64_t ldc,
                      float beta);
}  // namespace detail

}  // namespace zt::kernels
