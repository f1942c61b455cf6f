// SPDX-License-Identifier: Apache-2.0
#include "kernels/host/attention.hpp"

#include <Kokkos_Core.hpp>
#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/gemm.hpp"
#include "kernels/ops/layer_ops.hpp"

namespace zt::kernels::host {
namespace {

using HostSpace = Kokkos::DefaultHostExecutionSpace;
using Range = Kokkos::RangePolicy<HostSpace>;

AttentionParallelism g_parallelism = AttentionParallelism::Automatic;

// Causality: row block [r0, r1) of the scores only needs keys [0, r1). Blocks of this many
// rows skip most of the upper triangle (T=1024: 9/16 of the square is computed); 32..256
// measured alike at T=1024, a whole-T block was 1.5x slower.
constexpr int kRowBlock = 128;

bool run_over_heads(const AttentionShape& s) {
  switch (g_parallelism) {
    case AttentionParallelism::OverHeads:
      return true;
    case AttentionParallelism::InsideGemm:
      return false;
    case AttentionParallelism::Automatic:
      break;
  }
  // Measured on 2 cores (GPT-2 small, B=4, 12 heads): one thread per head was as fast or
  // slightly faster than threaded GEMMs at T=64 and T=1024 (the per-head problems are too
  // small to split well); with few heads per thread the threaded GEMMs keep all cores busy.
  return s.batch * s.n_head >= 4 * HostSpace().concurrency();
}

// Views of one (b, h) problem.
struct HeadView {
  const float* q;
  const float* k;
  const float* v;
  std::int64_t qkv_ld;
};

HeadView head_view(const AttentionShape& s, const float* qkv, int b, int h) {
  const int head_size = s.channels / s.n_head;
  const float* base = qkv + static_cast<std::int64_t>(b) * s.seq_len * 3 * s.channels +
                      static_cast<std::int64_t>(h) * head_size;
  return {base, base + s.channels, base + 2 * s.channels,
          3 * static_cast<std::int64_t>(s.channels)};
}

// Softmax rows [r0, r1) of one problem; on the calling thread or spread over all threads.
void softmax_rows(bool parallel, int r0, int r1, int T, float scale, float* P) {
  if (parallel) {
    Kokkos::parallel_for(
        "zt::attention_softmax", Range(r0, r1), KOKKOS_LAMBDA(int t) {
          ops::causal_softmax_forward_row(t, T, scale, P + static_cast<std::int64_t>(t) * T);
        });
  } else {
    for (int t = r0; t < r1; ++t)
      ops::causal_softmax_forward_row(t, T, scale, P + static_cast<std::int64_t>(t) * T);
  }
}

void softmax_backward_rows(bool parallel, int r0, int r1, int T, float scale, const float* P,
                           float* dP) {
  if (parallel) {
    Kokkos::parallel_for(
        "zt::attention_softmax_backward", Range(r0, r1), KOKKOS_LAMBDA(int t) {
          const std::int64_t row = static_cast<std::int64_t>(t) * T;
          ops::causal_softmax_backward_row(t, T, scale, P + row, dP + row);
        });
  } else {
    for (int t = r0; t < r1; ++t) {
      const std::int64_t row = static_cast<std::int64_t>(t) * T;
      ops::causal_softmax_backward_row(t, T, scale, P + row, dP + row);
    }
  }
}

void forward_one_head(const AttentionShape& s, const float* qkv, float* prob, float* out, int b,
                      int h, bool parallel_softmax) {
  const int T = s.seq_len;
  const int C = s.channels;
  const int head_size = C / s.n_head;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_size));
  const HeadView x = head_view(s, qkv, b, h);
  float* P = prob + (static_cast<std::int64_t>(b) * s.n_head + h) * T * T;
  float* Y = out + static_cast<std::int64_t>(b) * T * C + static_cast<std::int64_t>(h) * head_size;
  for (int r0 = 0; r0 < T; r0 += kRowBlock) {
    const int r1 = std::min(T, r0 + kRowBlock);
    // raw scores of rows [r0, r1) against keys [0, r1): S = Q K^T (scale folded into softmax)
    gemm(false, true, r1 - r0, r1, head_size, 1.0f, x.q + r0 * x.qkv_ld, x.qkv_ld, x.k, x.qkv_ld,
         0.0f, P + static_cast<std::int64_t>(r0) * T, T);
    softmax_rows(parallel_softmax, r0, r1, T, scale, P);
    // Y = P V over keys [0, r1) (the rest of each row is zero)
    gemm(false, false, r1 - r0, head_size, r1, 1.0f, P + static_cast<std::int64_t>(r0) * T, T, x.v,
         x.qkv_ld, 0.0f, Y + static_cast<std::int64_t>(r0) * C, C);
  }
}

void backward_one_head(const AttentionShape& s, const float* dout, const float* qkv,
                       const float* prob, float* dqkv, float* dP, int b, int h,
                       bool parallel_softmax) {
  const int T = s.seq_len;
  const int C = s.channels;
  const int head_size = C / s.n_head;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_size));
  const HeadView x = head_view(s, qkv, b, h);
  const HeadView dx = head_view(s, dqkv, b, h);
  float* dq = const_cast<float*>(dx.q);
  float* dk = const_cast<float*>(dx.k);
  float* dv = const_cast<float*>(dx.v);
  const std::int64_t ld = x.qkv_ld;
  const float* P = prob + (static_cast<std::int64_t>(b) * s.n_head + h) * T * T;
  const float* dY =
      dout + static_cast<std::int64_t>(b) * T * C + static_cast<std::int64_t>(h) * head_size;

  // dP = dY V^T, then dS (the gradient of the raw scores) in place, row block by row block.
  for (int r0 = 0; r0 < T; r0 += kRowBlock) {
    const int r1 = std::min(T, r0 + kRowBlock);
    gemm(false, true, r1 - r0, r1, head_size, 1.0f, dY + static_cast<std::int64_t>(r0) * C, C, x.v,
         ld, 0.0f, dP + static_cast<std::int64_t>(r0) * T, T);
    softmax_backward_rows(parallel_softmax, r0, r1, T, scale, P, dP);
  }
  // dQ = dS K: query rows [r0, r1) see keys [0, r1).
  for (int r0 = 0; r0 < T; r0 += kRowBlock) {
    const int r1 = std::min(T, r0 + kRowBlock);
    gemm(false, false, r1 - r0, head_size, r1, 1.0f, dP + static_cast<std::int64_t>(r0) * T, T, x.k,
         ld, 0.0f, dq + r0 * ld, ld);
  }
  // dV = P^T dY and dK = dS^T Q: key rows [j0, j1) are seen by queries [j0, T).
  for (int j0 = 0; j0 < T; j0 += kRowBlock) {
    const int j1 = std::min(T, j0 + kRowBlock);
    const std::int64_t corner = static_cast<std::int64_t>(j0) * T + j0;
    gemm(true, false, j1 - j0, head_size, T - j0, 1.0f, P + corner, T,
         dY + static_cast<std::int64_t>(j0) * C, C, 0.0f, dv + j0 * ld, ld);
    gemm(true, false, j1 - j0, head_size, T - j0, 1.0f, dP + corner, T, x.q + j0 * ld, ld, 0.0f,
         dk + j0 * ld, ld);
  }
}

}  // namespace

void set_attention_parallelism(AttentionParallelism mode) {
  g_parallelism = mode;
}
AttentionParallelism attention_parallelism() {
  return g_parallelism;
}

void attention_forward(const AttentionShape& s, const float* qkv, float* prob, float* out) {
  const int problems = s.batch * s.n_head;
  if (run_over_heads(s)) {
    Kokkos::parallel_for("zt::attention_forward", Range(0, problems), [=](int i) {
      forward_one_head(s, qkv, prob, out, i / s.n_head, i % s.n_head, false);
    });
  } else {
    for (int i = 0; i < problems; ++i)
      forward_one_head(s, qkv, prob, out, i / s.n_head, i % s.n_head, true);
  }
}

std::size_t attention_backward_scratch_floats(int seq_len) {
  const Kokkos::Experimental::UniqueToken<HostSpace> tokens;
  return static_cast<std::size_t>(tokens.size()) * seq_len * seq_len;
}

void attention_backward(const AttentionShape& s, const float* dout, const float* qkv,
                        const float* prob, float* dqkv, float* scratch) {
  const int problems = s.batch * s.n_head;
  const std::int64_t block = static_cast<std::int64_t>(s.seq_len) * s.seq_len;
  if (run_over_heads(s)) {
    // Each worker thread owns one T x T scratch block for dP while it works on a head.
    const Kokkos::Experimental::UniqueToken<HostSpace> tokens;
    Kokkos::parallel_for("zt::attention_backward", Range(0, problems), [=](int i) {
      const int slot = tokens.acquire();
      backward_one_head(s, dout, qkv, prob, dqkv, scratch + slot * block, i / s.n_head,
                        i % s.n_head, false);
      tokens.release(slot);
    });
  } else {
    for (int i = 0; i < problems; ++i)
      backward_one_head(s, dout, qkv, prob, dqkv, scratch, i / s.n_head, i % s.n_head, true);
  }
}

}  // namespace zt::kernels::host
