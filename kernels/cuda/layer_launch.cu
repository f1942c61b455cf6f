// SPDX-License-Identifier: Apache-2.0
#include <cuda_runtime.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/cuda/gemm_cublas.hpp"
#include "kernels/cuda/layer_launch.hpp"
#include "kernels/ops/layer_ops.hpp"

namespace zt::kernels::cuda {
namespace {

constexpr int kThreads = 256;

int blocks_for(std::int64_t n) {
  return static_cast<int>((n + kThreads - 1) / kThreads);
}
cudaStream_t as_stream(void* s) {
  return static_cast<cudaStream_t>(s);
}
__device__ std::int64_t offset(int row, int width) {
  return static_cast<std::int64_t>(row) * width;
}

void check_launch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    throw std::runtime_error(std::string("CUDA launch of ") + what +
                             " failed: " + cudaGetErrorString(e));
}

__global__ void set_zero_kernel(float* out, std::int64_t count) {
  const std::int64_t i = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < count) out[i] = 0.0f;
}

__global__ void embedding_forward_kernel(const float* wte, const float* wpe,
                                         const std::int32_t* tokens, int rows, int seq_len,
                                         int channels, float* out) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r < rows)
    ops::embedding_forward_row(wte, wpe, tokens[r], r % seq_len, channels,
                               out + offset(r, channels));
}

// Row r's place in the rows sorted stably by token: the rows before it in that order. O(rows^2)
// comparisons, all from cache: well under a millisecond for any batch a GPU trains, and it
// needs neither a sort library nor a host round trip.
__global__ void rows_by_token_kernel(const std::int32_t* tokens, int rows, std::int32_t* order) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r >= rows) return;
  const std::int32_t token = tokens[r];
  int rank = 0;
  for (int other = 0; other < rows; ++other) {
    const std::int32_t t = tokens[other];
    rank += (t < token || (t == token && other < r)) ? 1 : 0;
  }
  order[rank] = r;
}

__global__ void embedding_backward_kernel(const float* dout, const std::int32_t* tokens,
                                          const std::int32_t* rows_by_token, int rows, int seq_len,
                                          int channels, float* dwte, float* dwpe) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c < channels) {
    ops::embedding_backward_token_channels(dout, tokens, rows_by_token, rows, channels, c, c + 1,
                                           dwte);
    ops::embedding_backward_position_channels(dout, rows, seq_len, channels, c, c + 1, dwpe);
  }
}

__global__ void layernorm_forward_kernel(const float* x, const float* weight, const float* bias,
                                         int rows, int channels, float epsilon, float* out,
                                         float* mean, float* rstd) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r < rows)
    ops::layernorm_forward_row(x + offset(r, channels), weight, bias, channels, epsilon,
                               out + offset(r, channels), mean + r, rstd + r);
}

__global__ void layernorm_backward_input_kernel(const float* dout, const float* x,
                                                const float* weight, const float* mean,
                                                const float* rstd, int rows, int channels,
                                                float* dx) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r < rows)
    ops::layernorm_backward_input_row(dout + offset(r, channels), x + offset(r, channels), weight,
                                      mean[r], rstd[r], channels, dx + offset(r, channels));
}

__global__ void layernorm_backward_params_kernel(const float* dout, const float* x,
                                                 const float* mean, const float* rstd, int rows,
                                                 int channels, float* dweight, float* dbias) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  if (c < channels)
    ops::layernorm_backward_params_channels(dout, x, mean, rstd, rows, channels, c, c + 1, dweight,
                                            dbias);
}

__global__ void bias_fill_kernel(const float* bias, int rows, int width, float* out) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r < rows) ops::bias_fill_row(bias, width, out + offset(r, width));
}

__global__ void residual_bias_fill_kernel(const float* residual, const float* bias, int rows,
                                          int width, float* out) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r < rows)
    ops::residual_bias_fill_row(residual + offset(r, width), bias, width, out + offset(r, width));
}

__global__ void bias_backward_kernel(const float* dout, int rows, int width, float* dbias) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j < width) ops::bias_backward_channels(dout, rows, width, j, j + 1, dbias);
}

__global__ void bias_gelu_forward_kernel(const float* bias, int rows, int width, float* pre,
                                         float* out) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r < rows)
    ops::bias_gelu_forward_row(bias, width, pre + offset(r, width), out + offset(r, width));
}

__global__ void gelu_backward_kernel(const float* pre, int rows, int width, float* grad) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r < rows) ops::gelu_backward_row(pre + offset(r, width), width, grad + offset(r, width));
}

__global__ void cross_entropy_forward_kernel(const float* logits, const std::int32_t* targets,
                                             int rows, int vocab_size, float* losses,
                                             float* log_sum_exp) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r < rows)
    losses[r] = ops::cross_entropy_forward_row(logits + offset(r, vocab_size), vocab_size,
                                               targets[r], log_sum_exp + r);
}

__global__ void cross_entropy_backward_kernel(const std::int32_t* targets, const float* log_sum_exp,
                                              int rows, int vocab_size, float grad_scale,
                                              float* logits_to_grad) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r < rows)
    ops::cross_entropy_backward_row(vocab_size, targets[r], log_sum_exp[r], grad_scale,
                                    logits_to_grad + offset(r, vocab_size));
}

// rows = problems * T; row r is query t = r % T of problem r / T
__global__ void causal_softmax_forward_kernel(int rows, int seq_len, float scale, float* scores) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r < rows)
    ops::causal_softmax_forward_row(r % seq_len, seq_len, scale, scores + offset(r, seq_len));
}

__global__ void causal_softmax_backward_kernel(int rows, int seq_len, float scale,
                                               const float* prob, float* dprob) {
  const int r = blockIdx.x * blockDim.x + threadIdx.x;
  if (r < rows)
    ops::causal_softmax_backward_row(r % seq_len, seq_len, scale, prob + offset(r, seq_len),
                                     dprob + offset(r, seq_len));
}

}  // namespace

void set_zero(float* out, std::int64_t count, void* stream) {
  set_zero_kernel<<<blocks_for(count), kThreads, 0, as_stream(stream)>>>(out, count);
  check_launch("set_zero");
}

void embedding_forward(const float* wte, const float* wpe, const std::int32_t* tokens, int rows,
                       int seq_len, int channels, float* out, void* stream) {
  embedding_forward_kernel<<<blocks_for(rows), kThreads, 0, as_stream(stream)>>>(
      wte, wpe, tokens, rows, seq_len, channels, out);
  check_launch("embedding_forward");
}

void embedding_backward(const float* dout, const std::int32_t* tokens, int rows, int seq_len,
                        int channels, float* dwte, float* dwpe, void* stream) {
  if (rows <= 0) return;
  std::int32_t* order = nullptr;
  const cudaError_t allocated = cudaMallocAsync(reinterpret_cast<void**>(&order),
                                                sizeof(std::int32_t) * rows, as_stream(stream));
  if (allocated != cudaSuccess)
    throw std::runtime_error(std::string("embedding_backward: cudaMallocAsync failed: ") +
                             cudaGetErrorString(allocated));
  rows_by_token_kernel<<<blocks_for(rows), kThreads, 0, as_stream(stream)>>>(tokens, rows, order);
  embedding_backward_kernel<<<blocks_for(channels), kThreads, 0, as_stream(stream)>>>(
      dout, tokens, order, rows, seq_len, channels, dwte, dwpe);
  cudaFreeAsync(order, as_stream(stream));  // before the check, so a failed launch leaks nothing
  check_launch("embedding_backward");
}

void layernorm_forward(const float* x, const float* weight, const float* bias, int rows,
                       int channels, float epsilon, float* out, float* mean, float* rstd,
                       void* stream) {
  layernorm_forward_kernel<<<blocks_for(rows), kThreads, 0, as_stream(stream)>>>(
      x, weight, bias, rows, channels, epsilon, out, mean, rstd);
  check_launch("layernorm_forward");
}

void layernorm_backward(const float* dout, const float* x, const float* weight, const float* mean,
                        const float* rstd, int rows, int channels, float* dx, float* dweight,
                        float* dbias, void* stream) {
  layernorm_backward_input_kernel<<<blocks_for(rows), kThreads, 0, as_stream(stream)>>>(
      dout, x, weight, mean, rstd, rows, channels, dx);
  check_launch("layernorm_backward (input)");
  layernorm_backward_params_kernel<<<blocks_for(channels), kThreads, 0, as_stream(stream)>>>(
      dout, x, mean, rstd, rows, channels, dweight, dbias);
  check_launch("layernorm_backward (parameters)");
}

void bias_fill(const float* bias, int rows, int width, float* out, void* stream) {
  bias_fill_kernel<<<blocks_for(rows), kThreads, 0, as_stream(stream)>>>(bias, rows, width, out);
  check_launch("bias_fill");
}

void residual_bias_fill(const float* residual, const float* bias, int rows, int width, float* out,
                        void* stream) {
  residual_bias_fill_kernel<<<blocks_for(rows), kThreads, 0, as_stream(stream)>>>(residual, bias,
                                                                                  rows, width, out);
  check_launch("residual_bias_fill");
}

void bias_backward(const float* dout, int rows, int width, float* dbias, void* stream) {
  bias_backward_kernel<<<blocks_for(width), kThreads, 0, as_stream(stream)>>>(dout, rows, width,
                                                                              dbias);
  check_launch("bias_backward");
}

void bias_gelu_forward(const float* bias, int rows, int width, float* pre, float* out,
                       void* stream) {
  bias_gelu_forward_kernel<<<blocks_for(rows), kThreads, 0, as_stream(stream)>>>(bias, rows, width,
                                                                                 pre, out);
  check_launch("bias_gelu_forward");
}

void gelu_backward(const float* pre, int rows, int width, float* grad, void* stream) {
  gelu_backward_kernel<<<blocks_for(rows), kThreads, 0, as_stream(stream)>>>(pre, rows, width,
                                                                             grad);
  check_launch("gelu_backward");
}

void cross_entropy_forward(const float* logits, const std::int32_t* targets, int rows,
                           int vocab_size, float* losses, float* log_sum_exp, void* stream) {
  cross_entropy_forward_kernel<<<blocks_for(rows), kThreads, 0, as_stream(stream)>>>(
      logits, targets, rows, vocab_size, losses, log_sum_exp);
  check_launch("cross_entropy_forward");
}

void cross_entropy_backward(const std::int32_t* targets, const float* log_sum_exp, int rows,
                            int vocab_size, float grad_scale, float* logits_to_grad, void* stream) {
  cross_entropy_backward_kernel<<<blocks_for(rows), kThreads, 0, as_stream(stream)>>>(
      targets, log_sum_exp, rows, vocab_size, grad_scale, logits_to_grad);
  check_launch("cross_entropy_backward");
}

// Per sequence b, one strided-batched GEMM covers all heads: head h's columns start h*hs
// after head 0's, so the batch stride is hs. The full T x T scores are computed and the
// softmax masks the upper triangle (simple; the host version skips it).
void attention_forward(int batch, int seq_len, int n_head, int channels, const float* qkv,
                       float* prob, float* out, void* stream) {
  const int T = seq_len, C = channels, hs = C / n_head;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const std::int64_t ld = 3 * static_cast<std::int64_t>(C),
                     square = static_cast<std::int64_t>(T) * T;
  set_gemm_stream(stream);
  for (int b = 0; b < batch; ++b) {
    const float* q = qkv + static_cast<std::int64_t>(b) * T * ld;
    float* P = prob + static_cast<std::int64_t>(b) * n_head * square;
    gemm_strided_batched(false, true, T, T, hs, 1.0f, q, ld, hs, q + C, ld, hs, 0.0f, P, T, square,
                         n_head);
    causal_softmax_forward_kernel<<<blocks_for(n_head * T), kThreads, 0, as_stream(stream)>>>(
        n_head * T, T, scale, P);
    check_launch("causal_softmax_forward");
    gemm_strided_batched(false, false, T, hs, T, 1.0f, P, T, square, q + 2 * C, ld, hs, 0.0f,
                         out + static_cast<std::int64_t>(b) * T * C, C, hs, n_head);
  }
}

std::size_t attention_backward_scratch_floats(int n_head, int seq_len) {
  return static_cast<std::size_t>(n_head) * seq_len * seq_len;
}

void attention_backward(int batch, int seq_len, int n_head, int channels, const float* dout,
                        const float* qkv, const float* prob, float* dqkv, float* scratch,
                        void* stream) {
  const int T = seq_len, C = channels, hs = C / n_head;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hs));
  const std::int64_t ld = 3 * static_cast<std::int64_t>(C),
                     square = static_cast<std::int64_t>(T) * T;
  set_gemm_stream(stream);
  for (int b = 0; b < batch; ++b) {
    const float* q = qkv + static_cast<std::int64_t>(b) * T * ld;
    float* dq = dqkv + static_cast<std::int64_t>(b) * T * ld;
    const float* P = prob + static_cast<std::int64_t>(b) * n_head * square;
    const float* dY = dout + static_cast<std::int64_t>(b) * T * C;
    float* dP = scratch;  // reused by every sequence: the stream orders the work
    gemm_strided_batched(false, true, T, T, hs, 1.0f, dY, C, hs, q + 2 * C, ld, hs, 0.0f, dP, T,
                         square, n_head);  // dP = dY V^T
    gemm_strided_batched(true, false, T, hs, T, 1.0f, P, T, square, dY, C, hs, 0.0f, dq + 2 * C, ld,
                         hs, n_head);  // dV = P^T dY
    causal_softmax_backward_kernel<<<blocks_for(n_head * T), kThreads, 0, as_stream(stream)>>>(
        n_head * T, T, scale, P, dP);
    check_launch("causal_softmax_backward");
    gemm_strided_batched(false, false, T, hs, T, 1.0f, dP, T, square, q + C, ld, hs, 0.0f, dq, ld,
                         hs, n_head);  // dQ = dS K
    gemm_strided_batched(true, false, T, hs, T, 1.0f, dP, T, square, q, ld, hs, 0.0f, dq + C, ld,
                         hs, n_head);  // dK = dS^T Q
  }
}

}  // namespace zt::kernels::cuda
