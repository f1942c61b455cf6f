// SPDX-License-Identifier: Apache-2.0
// CUDA launchers of the optimizer element bodies. Plain CUDA (no Kokkos), grid-stride loops.
#include "kernels/cuda/optimizer_launch.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <stdexcept>
#include <string>

namespace zt::kernels::cuda {
namespace {

constexpr int kThreadsPerBlock = 256;
// Upper bound on blocks of the element-wise and reduction kernels: enough to fill an H100
// (132 SMs x 8 resident blocks) while keeping the second reduction pass one block.
constexpr int kMaxBlocks = 1024;

int blocks_for(std::int64_t n) {
  const std::int64_t wanted = (n + kThreadsPerBlock - 1) / kThreadsPerBlock;
  return static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>(wanted, kMaxBlocks)));
}

void check_launch(const char* kernel) {
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess)
    throw std::runtime_error(std::string("CUDA launch of ") + kernel +
                             " failed: " + cudaGetErrorString(status));
}

// Sums each of `values` over the block in shared memory (fixed tree order); thread 0 gets the
// result.
template <int kValues>
__device__ void block_sum(double (&values)[kValues], double (*shared)[kThreadsPerBlock]) {
  for (int k = 0; k < kValues; ++k) shared[k][threadIdx.x] = values[k];
  __syncthreads();
  for (int width = kThreadsPerBlock / 2; width > 0; width /= 2) {
    if (static_cast<int>(threadIdx.x) < width)
      for (int k = 0; k < kValues; ++k) shared[k][threadIdx.x] += shared[k][threadIdx.x + width];
    __syncthreads();
  }
  for (int k = 0; k < kValues; ++k) values[k] = shared[k][0];
}

// Second pass: one block adds the per-block partials (kValues interleaved per block) in order.
template <int kValues>
__global__ void finish_sums_kernel(const double* partials, int partial_count, double* sums) {
  __shared__ double shared[kValues][kThreadsPerBlock];
  double values[kValues] = {};
  for (int i = threadIdx.x; i < partial_count; i += kThreadsPerBlock)
    for (int k = 0; k < kValues; ++k) values[k] += partials[i * kValues + k];
  block_sum<kValues>(values, shared);
  if (threadIdx.x == 0)
    for (int k = 0; k < kValues; ++k) sums[k] = values[k];
}

__global__ void adam_update_kernel(float* params, const float* grads, float* exp_avg,
                                   float* exp_avg_sq, std::int64_t n,
                                   AdamElementConstants constants) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride)
    adam_update_element(params[i], grads[i], exp_avg[i], exp_avg_sq[i], constants);
}

__global__ void lamb_update_moments_kernel(const float* params, const float* grads, float* exp_avg,
                                           float* exp_avg_sq, std::int64_t n,
                                           LambElementConstants constants, double* partials) {
  __shared__ double shared[2][kThreadsPerBlock];
  double sums[2] = {0.0, 0.0};  // sum(p^2), sum(u^2)
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    const float param = params[i];
    const float direction =
        lamb_update_moments_element(param, grads[i], exp_avg[i], exp_avg_sq[i], constants);
    sums[0] += static_cast<double>(param) * param;
    sums[1] += static_cast<double>(direction) * direction;
  }
  block_sum<2>(sums, shared);
  if (threadIdx.x == 0) {
    partials[2 * blockIdx.x] = sums[0];
    partials[2 * blockIdx.x + 1] = sums[1];
  }
}

__global__ void lamb_apply_kernel(float* params, const float* exp_avg, const float* exp_avg_sq,
                                  std::int64_t n, float trust_ratio,
                                  LambElementConstants constants) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride)
    lamb_apply_element(params[i], exp_avg[i], exp_avg_sq[i], trust_ratio, constants);
}

__global__ void sum_of_squares_kernel(const float* values, std::int64_t n, double* partials) {
  __shared__ double shared[1][kThreadsPerBlock];
  double sum[1] = {0.0};
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride)
    sum[0] += static_cast<double>(values[i]) * values[i];
  block_sum<1>(sum, shared);
  if (threadIdx.x == 0) partials[blockIdx.x] = sum[0];
}

__global__ void scale_kernel(float* values, std::int64_t n, float factor) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  for (std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride)
    values[i] *= factor;
}

}  // namespace

std::int64_t reduction_workspace_doubles() {
  return 2 * kMaxBlocks;
}

void launch_adam_update(float* params, const float* grads, float* exp_avg, float* exp_avg_sq,
                        std::int64_t n, const AdamElementConstants& constants, Stream stream) {
  if (n <= 0) return;
  adam_update_kernel<<<blocks_for(n), kThreadsPerBlock, 0, stream>>>(params, grads, exp_avg,
                                                                     exp_avg_sq, n, constants);
  check_launch("adam_update_kernel");
}

void launch_lamb_update_moments(const float* params, const float* grads, float* exp_avg,
                                float* exp_avg_sq, std::int64_t n,
                                const LambElementConstants& constants, double* workspace,
                                double* sums, Stream stream) {
  const int blocks = blocks_for(n);
  lamb_update_moments_kernel<<<blocks, kThreadsPerBlock, 0, stream>>>(
      params, grads, exp_avg, exp_avg_sq, n, constants, workspace);
  check_launch("lamb_update_moments_kernel");
  finish_sums_kernel<2><<<1, kThreadsPerBlock, 0, stream>>>(workspace, blocks, sums);
  check_launch("finish_sums_kernel<2>");
}

void launch_lamb_apply(float* params, const float* exp_avg, const float* exp_avg_sq, std::int64_t n,
                       float trust_ratio, const LambElementConstants& constants, Stream stream) {
  if (n <= 0) return;
  lamb_apply_kernel<<<blocks_for(n), kThreadsPerBlock, 0, stream>>>(params, exp_avg, exp_avg_sq, n,
                                                                    trust_ratio, constants);
  check_launch("lamb_apply_kernel");
}

void launch_sum_of_squares(const float* values, std::int64_t n, double* workspace, double* result,
                           Stream stream) {
  const int blocks = blocks_for(n);
  sum_of_squares_kernel<<<blocks, kThreadsPerBlock, 0, stream>>>(values, n, workspace);
  check_launch("sum_of_squares_kernel");
  finish_sums_kernel<1><<<1, kThreadsPerBlock, 0, stream>>>(workspace, blocks, result);
  check_launch("finish_sums_kernel<1>");
}

void launch_scale(float* values, std::int64_t n, float factor, Stream stream) {
  if (n <= 0) return;
  scale_kernel<<<blocks_for(n), kThreadsPerBlock, 0, stream>>>(values, n, factor);
  check_launch("scale_kernel");
}

}  // namespace zt::kernels::cuda
