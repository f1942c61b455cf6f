// SPDX-License-Identifier: Apache-2.0
// CUDA launchers of the op bodies in kernels/ops/layer_ops.hpp: one thread per row (position)
// or per channel, calling the same host+device functions as the Kokkos host launchers, so the
// device computes the same math by construction (simple, not tuned). Device pointers;
// `stream` is a cudaStream_t (nullptr = default stream). Launch errors throw.
// Same argument order and += / = conventions as kernels/host/layer_kernels.hpp.
// fp32 storage only for now: the op bodies are templates on the storage type and compile for
// the device as they are, so fp16/bf16 launchers are instantiations away.
#pragma once

#include <cstddef>
#include <cstdint>

namespace zt::kernels::cuda {

void set_zero(float* out, std::int64_t count, void* stream);
void embedding_forward(const float* wte, const float* wpe, const std::int32_t* tokens, int rows,
                       int seq_len, int channels, float* out, void* stream);
void embedding_backward(const float* dout, const std::int32_t* tokens, int rows, int seq_len,
                        int channels, float* dwte, float* dwpe, void* stream);
void layernorm_forward(const float* x, const float* weight, const float* bias, int rows,
                       int channels, float epsilon, float* out, float* mean, float* rstd,
                       void* stream);
void layernorm_backward(const float* dout, const float* x, const float* weight, const float* mean,
                        const float* rstd, int rows, int channels, float* dx, float* dweight,
                        float* dbias, void* stream);
void bias_fill(const float* bias, int rows, int width, float* out, void* stream);
void residual_bias_fill(const float* residual, const float* bias, int rows, int width, float* out,
                        void* stream);
void bias_backward(const float* dout, int rows, int width, float* dbias, void* stream);
void bias_gelu_forward(const float* bias, int rows, int width, float* pre, float* out,
                       void* stream);
void gelu_backward(const float* pre, int rows, int width, float* grad, void* stream);
/// Per-position losses and log-sum-exp (the caller reduces the losses to the mean).
void cross_entropy_forward(const float* logits, const std::int32_t* targets, int rows,
                           int vocab_size, float* losses, float* log_sum_exp, void* stream);
void cross_entropy_backward(const std::int32_t* targets, const float* log_sum_exp, int rows,
                            int vocab_size, float grad_scale, float* logits_to_grad, void* stream);

/// Causal attention with cuBLAS strided-batched GEMMs over the heads of each sequence; same
/// layouts as kernels/host/attention.hpp (qkv (B,T,3C), prob (B,nh,T,T), out (B,T,C)).
void attention_forward(int batch, int seq_len, int n_head, int channels, const float* qkv,
                       float* prob, float* out, void* stream);
/// Device scratch (floats) the backward needs: n_head * T * T.
std::size_t attention_backward_scratch_floats(int n_head, int seq_len);
void attention_backward(int batch, int seq_len, int n_head, int channels, const float* dout,
                        const float* qkv, const float* prob, float* dqkv, float* scratch,
                        void* stream);

}  // namespace zt::kernels::cuda
