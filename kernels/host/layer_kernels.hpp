// SPDX-License-Identifier: Apache-2.0
// Host launchers of the op bodies in kernels/ops/layer_ops.hpp: Kokkos parallel loops on the
// default host execution space, parallel over rows (positions) or over channels for the
// parameter-gradient reductions (deterministic: no atomics, no per-thread partial sums).
// All pointers are host memory; see layer_ops.hpp for the math and the += / = conventions.
#pragma once

#include <cstdint>

namespace zt::kernels::host {

void set_zero(float* out, std::int64_t count);

void embedding_forward(const float* wte, const float* wpe, const std::int32_t* tokens, int rows,
                       int seq_len, int channels, float* out);
void embedding_backward(const float* dout, const std::int32_t* tokens, int rows, int seq_len,
                        int channels, float* dwte, float* dwpe);

void layernorm_forward(const float* x, const float* weight, const float* bias, int rows,
                       int channels, float epsilon, float* out, float* mean, float* rstd);
/// dx += input gradient; dweight, dbias += parameter gradients.
void layernorm_backward(const float* dout, const float* x, const float* weight, const float* mean,
                        const float* rstd, int rows, int channels, float* dx, float* dweight,
                        float* dbias);

void bias_fill(const float* bias, int rows, int width, float* out);
void bias_add(const float* bias, int rows, int width, float* out);
void residual_bias_fill(const float* residual, const float* bias, int rows, int width, float* out);
void residual_add(const float* a, const float* b, int rows, int width, float* out);
/// dbias += column sums of dout (rows x width)
void bias_backward(const float* dout, int rows, int width, float* dbias);

void bias_gelu_forward(const float* bias, int rows, int width, float* pre, float* out);
void gelu_backward(const float* pre, int rows, int width, float* grad);

/// In place on `count` independent T x T score matrices (count = B * n_head).
void causal_softmax_forward(int count, int seq_len, float scale, float* scores);
void causal_softmax_backward(int count, int seq_len, float scale, const float* prob, float* dprob);

/// Per-position losses and log-sum-exp; returns the mean loss (double accumulation).
double cross_entropy_forward(const float* logits, const std::int32_t* targets, int rows,
                             int vocab_size, float* losses, float* log_sum_exp);
/// In place: logits become grad_scale * (softmax - onehot).
void cross_entropy_backward(const std::int32_t* targets, const float* log_sum_exp, int rows,
                            int vocab_size, float grad_scale, float* logits_to_grad);

}  // namespace zt::kernels::host
