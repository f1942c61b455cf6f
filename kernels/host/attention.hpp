// SPDX-License-Identifier: Apache-2.0
// Causal multi-head self-attention on the host: per (batch, head) GEMMs for Q·K^T and P·V
// (and their backward) around the softmax op body. The qkv activation is (B, T, 3C) with rows
// [Q | K | V] and head h in columns h*hs .. (h+1)*hs-1 of each block, so every head is a
// strided view (leading dimension 3C) and nothing is copied or transposed.
#pragma once

#include <cstddef>

#include "kernels/ops/dtype.hpp"

namespace zt::kernels::host {

/// How the (batch, head) problems share the threads.
enum class AttentionParallelism {
  /// A parallel loop over (batch, head), each GEMM on one thread (many small problems).
  OverHeads,
  /// One (batch, head) after another, each GEMM on all threads (few large problems).
  InsideGemm,
  /// OverHeads when batch * n_head covers the threads several times, else InsideGemm.
  Automatic,
};
void set_attention_parallelism(AttentionParallelism mode);
AttentionParallelism attention_parallelism();

struct AttentionShape {
  int batch;
  int seq_len;
  int n_head;
  int channels;  // C = n_head * head size
};

/// prob: (B, n_head, T, T), the causal softmax probabilities kept for backward (zero above the
/// diagonal). out: (B, T, C), heads side by side. T is float, fp16 or bf16 (instantiated in
/// attention.cpp); scores, softmax and GEMM accumulation are fp32 whatever T, and prob and out
/// are rounded to T once.
template <class T>
void attention_forward(const AttentionShape& shape, const T* qkv, T* prob, T* out);

/// Scratch the backward pass needs, in floats (one T x T block per worker thread), for every
/// storage type. 16-bit runs also keep a few fp32 (seq_len x head size) copies of one head's
/// operands per worker thread, in thread-local buffers that grow to the largest shape seen.
std::size_t attention_backward_scratch_floats(int seq_len);

/// dqkv (B, T, 3C) is WRITTEN (not accumulated). scratch: attention_backward_scratch_floats.
template <class T>
void attention_backward(const AttentionShape& shape, const T* dout, const T* qkv, const T* prob,
                        T* dqkv, float* scratch);

}  // namespace zt::kernels::host
