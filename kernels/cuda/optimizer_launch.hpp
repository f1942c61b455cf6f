// SPDX-License-Identifier: Apache-2.0
// CUDA launchers of the optimizer bodies in kernels/ops/optimizer_ops.hpp, for fp32 arrays in
// device memory. Every launcher is asynchronous on `stream` and checks the launch; reductions
// are deterministic (fixed grid for a given n, partial sums combined in a fixed order), so a
// rerun reproduces the same bits.
//
// This header does not include the CUDA runtime, so host code can declare calls without nvcc.
#pragma once

#include <cstdint>

#include "kernels/ops/optimizer_ops.hpp"

struct CUstream_st;  // the type behind cudaStream_t

namespace zt::kernels::cuda {

using Stream = CUstream_st*;

/// Doubles of scratch a reduction launcher needs in `workspace` (device memory).
std::int64_t reduction_workspace_doubles();

/// One Adam/AdamW step over n elements.
void launch_adam_update(float* params, const float* grads, float* exp_avg, float* exp_avg_sq,
                        std::int64_t n, const AdamElementConstants& constants, Stream stream);

/// LAMB phase 1 over the n elements of one tensor (or the part of it in this slice): updates the
/// moments and writes sum(p^2) to sums[0] and sum(u^2) to sums[1] (device memory, overwritten).
/// `workspace` holds reduction_workspace_doubles() doubles.
void launch_lamb_update_moments(const float* params, const float* grads, float* exp_avg,
                                float* exp_avg_sq, std::int64_t n,
                                const LambElementConstants& constants, double* workspace,
                                double* sums, Stream stream);

/// LAMB phase 2 over the n elements of one tensor with its trust ratio (see lamb_trust_ratio).
void launch_lamb_apply(float* params, const float* exp_avg, const float* exp_avg_sq, std::int64_t n,
                       float trust_ratio, const LambElementConstants& constants, Stream stream);

/// sum(values^2) accumulated in double, written to *result (device memory).
void launch_sum_of_squares(const float* values, std::int64_t n, double* workspace, double* result,
                           Stream stream);

/// values *= factor.
void launch_scale(float* values, std::int64_t n, float factor, Stream stream);

}  // namespace zt::kernels::cuda
