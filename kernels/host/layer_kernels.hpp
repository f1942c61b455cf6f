// SPDX-License-Identifier: Apache-2.0
// Host launchers of the op bodies in kernels/ops/layer_ops.hpp: Kokkos parallel loops on the
// default host execution space, parallel over rows (positions) or over channels for the
// parameter-gradient reductions (deterministic: no atomics, no per-thread partial sums).
// All pointers are host memory; see layer_ops.hpp for the math and the += / = conventions.
//
// T is the storage type of activations, parameters and gradients: float, fp16 or bf16
// (explicitly instantiated in layer_kernels.cpp for those three; arithmetic is fp32).
// LayerNorm mean/rstd, losses and log-sum-exps are float; tokens and targets int32.
#pragma once

#include <cstdint>

#include "kernels/ops/dtype.hpp"

namespace zt::kernels::host {

template <class T>
void set_zero(T* out, std::int64_t count);

template <class T>
void embedding_forward(const T* wte, const T* wpe, const std::int32_t* tokens, int rows,
                       int seq_len, int channels, T* out);
/// dwte, dwpe += gradients; each gradient element is rounded to T once per call.
template <class T>
void embedding_backward(const T* dout, const std::int32_t* tokens, int rows, int seq_len,
                        int channels, T* dwte, T* dwpe);

template <class T>
void layernorm_forward(const T* x, const T* weight, const T* bias, int rows, int channels,
                       float epsilon, T* out, float* mean, float* rstd);
/// dx += input gradient; dweight, dbias += parameter gradients.
template <class T>
void layernorm_backward(const T* dout, const T* x, const T* weight, const float* mean,
                        const float* rstd, int rows, int channels, T* dx, T* dweight, T* dbias);

template <class T>
void bias_fill(const T* bias, int rows, int width, T* out);
template <class T>
void bias_add(const T* bias, int rows, int width, T* out);
template <class T>
void residual_bias_fill(const T* residual, const T* bias, int rows, int width, T* out);
template <class T>
void residual_add(const T* a, const T* b, int rows, int width, T* out);
/// dbias += column sums of dout (rows x width)
template <class T>
void bias_backward(const T* dout, int rows, int width, T* dbias);

template <class T>
void bias_gelu_forward(const T* bias, int rows, int width, T* pre, T* out);
template <class T>
void gelu_backward(const T* pre, int rows, int width, T* grad);

/// In place on `count` independent T x T score matrices (count = B * n_head).
template <class T>
void causal_softmax_forward(int count, int seq_len, float scale, T* scores);
template <class T>
void causal_softmax_backward(int count, int seq_len, float scale, const T* prob, T* dprob);

/// Per-position losses and log-sum-exp; returns the mean loss (double accumulation).
template <class T>
double cross_entropy_forward(const T* logits, const std::int32_t* targets, int rows, int vocab_size,
                             float* losses, float* log_sum_exp);
/// In place: logits become grad_scale * (softmax - onehot).
template <class T>
void cross_entropy_backward(const std::int32_t* targets, const float* log_sum_exp, int rows,
                            int vocab_size, float grad_scale, T* logits_to_grad);

}  // namespace zt::kernels::host
