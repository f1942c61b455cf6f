// SPDX-License-Identifier: Apache-2.0
// Host launchers of the optimizer element bodies (kernels/ops/optimizer_ops.hpp) through
// Kokkos on the default host execution space. They take raw pointers, so the engine can also
// run them on buffers it owns (states swapped in from NVMe, pinned staging buffers).
// Kokkos must be initialised.
//
// The CPU optimizer step of ZeRO-Offload is bound by memory bandwidth (DESIGN.md §4-5; Adam
// moves 28 bytes per parameter for a handful of flops), so every launcher here is one fused pass
// at memory speed: the range is cut into tiles of kTileElements, the tiles are spread over the
// host execution space's threads, and inside a tile a plain loop over the element body is
// vectorised by the compiler. The element body is the same inline function the device and the
// scalar reference use, and no result depends on where tiles or vectors start, so the bits do
// not depend on the thread count, the range being stepped whole or in pieces, or the vector
// width. Sums are accumulated per tile in fixed lanes and the tile partials added in tile
// order, which makes them independent of the thread count as well.
//
// Gradients and parameter copies may be 16-bit (kernels::DType F16, BF16): they are converted
// on load and store with kernels::to_float / from_float (round to nearest even), in the same
// pass, so a 16-bit copy costs its own 2 bytes per element and no second sweep over the master.
#pragma once

#include <cstdint>

#include "kernels/ops/dtype.hpp"
#include "kernels/ops/optimizer_ops.hpp"

namespace zt::optim::host {

/// Elements per unit of work: large enough that the per-tile scheduling and the partial sums
/// cost nothing next to the streaming, small enough to balance threads on a sub_group_size
/// piece. A multiple of 64, so tiles of 64-byte-aligned buffers start on cache lines.
inline constexpr std::int64_t kTileElements = 8192;

/// One fused Adam/AdamW step over n elements: g = to_float(grads[i]) * grad_multiplier (in
/// float, exactly as a separate unscale pass would compute it), the Adam update of master[i],
/// exp_avg[i] and exp_avg_sq[i], and, when param_out is not null, param_out[i] = master[i]
/// rounded to param_dtype (an fp32 param_out is a plain copy). grad_dtype and param_dtype are
/// F32, F16 or BF16 (std::invalid_argument otherwise).
void adam_step(float* master, const void* grads, kernels::DType grad_dtype, float grad_multiplier,
               float* exp_avg, float* exp_avg_sq, std::int64_t n,
               const kernels::AdamElementConstants& constants, void* param_out,
               kernels::DType param_dtype);

/// adam_step with fp32 gradients, multiplier 1 and no parameter copy.
void adam_update(float* params, const float* grads, float* exp_avg, float* exp_avg_sq,
                 std::int64_t n, const kernels::AdamElementConstants& constants);

/// Partial sums of squares of one tensor's weights and LAMB directions.
struct LambSquareSums {
  double weight = 0.0;
  double update = 0.0;
};

/// LAMB phase 1 over n elements in one pass: g = to_float(grads[i]) * grad_multiplier, updates
/// the moments, returns sum(master^2) and sum(u^2) (each square taken in double).
LambSquareSums lamb_update_moments(const float* master, const void* grads,
                                   kernels::DType grad_dtype, float grad_multiplier, float* exp_avg,
                                   float* exp_avg_sq, std::int64_t n,
                                   const kernels::LambElementConstants& constants);

/// lamb_update_moments with fp32 gradients and multiplier 1.
LambSquareSums lamb_update_moments(const float* params, const float* grads, float* exp_avg,
                                   float* exp_avg_sq, std::int64_t n,
                                   const kernels::LambElementConstants& constants);

/// LAMB phase 2 over n elements of one tensor; writes param_out[i] = master[i] rounded to
/// param_dtype when param_out is not null.
void lamb_apply(float* master, const float* exp_avg, const float* exp_avg_sq, std::int64_t n,
                float trust_ratio, const kernels::LambElementConstants& constants, void* param_out,
                kernels::DType param_dtype);

/// lamb_apply without a parameter copy.
void lamb_apply(float* params, const float* exp_avg, const float* exp_avg_sq, std::int64_t n,
                float trust_ratio, const kernels::LambElementConstants& constants);

/// out[i] = values[i] rounded to out_dtype (the 16-bit copy of master weights LAMB's gaps and
/// other callers need without an update).
void convert_from_float(const float* values, std::int64_t n, void* out, kernels::DType out_dtype);

struct SquareSum {
  double sum_of_squares = 0;
  /// False when an element is inf or NaN. The sum tells: squares of finite floats are exact in
  /// double and their sum stays finite for any n a machine holds.
  bool finite = true;
};

/// sum(float(values[i])^2) over n elements of `dtype` (F32, F16, BF16), at memory speed.
/// fp32: each square exact in double, summed in double. 16-bit: the squares are exact in float
/// and summed 8 at a time in float lanes before double, a relative error below 7 * 2^-24.
SquareSum sum_of_squares(const void* values, kernels::DType dtype, std::int64_t n);

/// values[i] *= factor.
void scale(float* values, std::int64_t n, float factor);

}  // namespace zt::optim::host
