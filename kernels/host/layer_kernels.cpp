// SPDX-License-Identifier: Apache-2.0
#include "kernels/host/layer_kernels.hpp"

#include <Kokkos_Core.hpp>

#include "kernels/ops/layer_ops.hpp"

namespace zt::kernels::host {
namespace {

using HostSpace = Kokkos::DefaultHostExecutionSpace;
using Range = Kokkos::RangePolicy<HostSpace>;

inline std::int64_t offset(int row, int width) {
  return static_cast<std::int64_t>(row) * width;
}

// Parameter-gradient reductions run over blocks of channels: one 64-byte cache line of each
// row per block, and each block owns its outputs (no atomics, same result on any thread count).
constexpr int kChannelBlock = 16;
inline int channel_blocks(int channels) {
  return (channels + kChannelBlock - 1) / kChannelBlock;
}
inline int block_end(int block, int channels) {
  return (block + 1) * kChannelBlock < channels ? (block + 1) * kChannelBlock : channels;
}

}  // namespace

void set_zero(float* out, std::int64_t count) {
  Kokkos::parallel_for(
      "zt::set_zero", Kokkos::RangePolicy<HostSpace, Kokkos::IndexType<std::int64_t>>(0, count),
      KOKKOS_LAMBDA(std::int64_t i) { out[i] = 0.0f; });
}

void embedding_forward(const float* wte, const float* wpe, const std::int32_t* tokens, int rows,
                       int seq_len, int channels, float* out) {
  Kokkos::parallel_for(
      "zt::embedding_forward", Range(0, rows), KOKKOS_LAMBDA(int r) {
        ops::embedding_forward_row(wte, wpe, tokens[r], r % seq_len, channels,
                                   out + offset(r, channels));
      });
}

void embedding_backward(const float* dout, const std::int32_t* tokens, int rows, int seq_len,
                        int channels, float* dwte, float* dwpe) {
  Kokkos::parallel_for(
      "zt::embedding_backward", Range(0, channel_blocks(channels)), KOKKOS_LAMBDA(int block) {
        ops::embedding_backward_channels(dout, tokens, rows, seq_len, channels,
                                         block * kChannelBlock, block_end(block, channels), dwte,
                                         dwpe);
      });
}

void layernorm_forward(const float* x, const float* weight, const float* bias, int rows,
                       int channels, float epsilon, float* out, float* mean, float* rstd) {
  Kokkos::parallel_for(
      "zt::layernorm_forward", Range(0, rows), KOKKOS_LAMBDA(int r) {
        ops::layernorm_forward_row(x + offset(r, channels), weight, bias, channels, epsilon,
                                   out + offset(r, channels), mean + r, rstd + r);
      });
}

void layernorm_backward(const float* dout, const float* x, const float* weight, const float* mean,
                        const float* rstd, int rows, int channels, float* dx, float* dweight,
                        float* dbias) {
  Kokkos::parallel_for(
      "zt::layernorm_backward_input", Range(0, rows), KOKKOS_LAMBDA(int r) {
        ops::layernorm_backward_input_row(dout + offset(r, channels), x + offset(r, channels),
                                          weight, mean[r], rstd[r], channels,
                                          dx + offset(r, channels));
      });
  Kokkos::parallel_for(
      "zt::layernorm_backward_params", Range(0, channel_blocks(channels)),
      KOKKOS_LAMBDA(int block) {
        ops::layernorm_backward_params_channels(dout, x, mean, rstd, rows, channels,
                                                block * kChannelBlock, block_end(block, channels),
                                                dweight, dbias);
      });
}

void bias_fill(const float* bias, int rows, int width, float* out) {
  Kokkos::parallel_for(
      "zt::bias_fill", Range(0, rows),
      KOKKOS_LAMBDA(int r) { ops::bias_fill_row(bias, width, out + offset(r, width)); });
}

void bias_add(const float* bias, int rows, int width, float* out) {
  Kokkos::parallel_for(
      "zt::bias_add", Range(0, rows),
      KOKKOS_LAMBDA(int r) { ops::bias_add_row(bias, width, out + offset(r, width)); });
}

void residual_bias_fill(const float* residual, const float* bias, int rows, int width, float* out) {
  Kokkos::parallel_for(
      "zt::residual_bias_fill", Range(0, rows), KOKKOS_LAMBDA(int r) {
        ops::residual_bias_fill_row(residual + offset(r, width), bias, width,
                                    out + offset(r, width));
      });
}

void residual_add(const float* a, const float* b, int rows, int width, float* out) {
  Kokkos::parallel_for(
      "zt::residual_add", Range(0, rows), KOKKOS_LAMBDA(int r) {
        ops::residual_add_row(a + offset(r, width), b + offset(r, width), width,
                              out + offset(r, width));
      });
}

void bias_backward(const float* dout, int rows, int width, float* dbias) {
  Kokkos::parallel_for(
      "zt::bias_backward", Range(0, channel_blocks(width)), KOKKOS_LAMBDA(int block) {
        ops::bias_backward_channels(dout, rows, width, block * kChannelBlock,
                                    block_end(block, width), dbias);
      });
}

void bias_gelu_forward(const float* bias, int rows, int width, float* pre, float* out) {
  Kokkos::parallel_for(
      "zt::bias_gelu_forward", Range(0, rows), KOKKOS_LAMBDA(int r) {
        ops::bias_gelu_forward_row(bias, width, pre + offset(r, width), out + offset(r, width));
      });
}

void gelu_backward(const float* pre, int rows, int width, float* grad) {
  Kokkos::parallel_for(
      "zt::gelu_backward", Range(0, rows), KOKKOS_LAMBDA(int r) {
        ops::gelu_backward_row(pre + offset(r, width), width, grad + offset(r, width));
      });
}

void causal_softmax_forward(int count, int seq_len, float scale, float* scores) {
  const int rows = count * seq_len;
  Kokkos::parallel_for(
      "zt::causal_softmax_forward", Range(0, rows), KOKKOS_LAMBDA(int r) {
        ops::causal_softmax_forward_row(r % seq_len, seq_len, scale, scores + offset(r, seq_len));
      });
}

void causal_softmax_backward(int count, int seq_len, float scale, const float* prob, float* dprob) {
  const int rows = count * seq_len;
  Kokkos::parallel_for(
      "zt::causal_softmax_backward", Range(0, rows), KOKKOS_LAMBDA(int r) {
        ops::causal_softmax_backward_row(r % seq_len, seq_len, scale, prob + offset(r, seq_len),
                                         dprob + offset(r, seq_len));
      });
}

double cross_entropy_forward(const float* logits, const std::int32_t* targets, int rows,
                             int vocab_size, float* losses, float* log_sum_exp) {
  Kokkos::parallel_for(
      "zt::cross_entropy_forward", Range(0, rows), KOKKOS_LAMBDA(int r) {
        losses[r] = ops::cross_entropy_forward_row(logits + offset(r, vocab_size), vocab_size,
                                                   targets[r], log_sum_exp + r);
      });
  // Summed in a fixed order so the loss does not depend on the thread count.
  double total = 0.0;
  for (int r = 0; r < rows; ++r) total += static_cast<double>(losses[r]);
  return total / static_cast<double>(rows);
}

void cross_entropy_backward(const std::int32_t* targets, const float* log_sum_exp, int rows,
                            int vocab_size, float grad_scale, float* logits_to_grad) {
  Kokkos::parallel_for(
      "zt::cross_entropy_backward", Range(0, rows), KOKKOS_LAMBDA(int r) {
        ops::cross_entropy_backward_row(vocab_size, targets[r], log_sum_exp[r], grad_scale,
                                        logits_to_grad + offset(r, vocab_size));
      });
}

}  // namespace zt::kernels::host
