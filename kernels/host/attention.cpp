// SPDX-License-Identifier: Apache-2.0
#include "kernels/host/attention.hpp"

#include <Kokkos_Core.hpp>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

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
template <class T>
struct HeadView {
  const T* q;
  const T* k;
  const T* v;
  std::int64_t qkv_ld;
};

template <class T>
HeadView<T> head_view(const AttentionShape& s, const T* qkv, int b, int h) {
  const int head_size = s.channels / s.n_head;
  const T* base = qkv + static_cast<std::int64_t>(b) * s.seq_len * 3 * s.channels +
                  static_cast<std::int64_t>(h) * head_size;
  return {base, base + s.channels, base + 2 * s.channels,
          3 * static_cast<std::int64_t>(s.channels)};
}

// body(i) for i in [begin, end): on the calling thread, or spread over all threads when the
// (batch, head) problems run one after another.
template <class Body>
void for_rows(bool parallel, int begin, int end, const char* label, const Body& body) {
  if (parallel)
    Kokkos::parallel_for(label, Range(begin, end), body);
  else
    for (int i = begin; i < end; ++i) body(i);
}

// Softmax of score rows [r0, r1) of one problem; `S` points at row r0, rows `ld` apart.
void softmax_rows(bool parallel, int r0, int r1, int ld, float scale, float* S) {
  for_rows(parallel, r0, r1, "zt::attention_softmax", [=](int t) {
    ops::causal_softmax_forward_row(t, ld, scale, S + static_cast<std::int64_t>(t - r0) * ld);
  });
}

template <class P>
void softmax_backward_rows(bool parallel, int r0, int r1, int T, float scale, const P* prob,
                           float* dP) {
  for_rows(parallel, r0, r1, "zt::attention_softmax_backward", [=](int t) {
    const std::int64_t row = static_cast<std::int64_t>(t) * T;
    ops::causal_softmax_backward_row(t, T, scale, prob + row, dP + row);
  });
}

float softmax_scale(const AttentionShape& s) {
  return 1.0f / std::sqrt(static_cast<float>(s.channels / s.n_head));
}

void forward_one_head(const AttentionShape& s, const float* qkv, float* prob, float* out, int b,
                      int h, bool parallel) {
  const int T = s.seq_len;
  const int C = s.channels;
  const int head_size = C / s.n_head;
  const float scale = softmax_scale(s);
  const HeadView<float> x = head_view(s, qkv, b, h);
  float* P = prob + (static_cast<std::int64_t>(b) * s.n_head + h) * T * T;
  float* Y = out + static_cast<std::int64_t>(b) * T * C + static_cast<std::int64_t>(h) * head_size;
  for (int r0 = 0; r0 < T; r0 += kRowBlock) {
    const int r1 = std::min(T, r0 + kRowBlock);
    float* P_block = P + static_cast<std::int64_t>(r0) * T;
    // raw scores of rows [r0, r1) against keys [0, r1): S = Q K^T (scale folded into softmax)
    gemm(false, true, r1 - r0, r1, head_size, 1.0f, x.q + r0 * x.qkv_ld, x.qkv_ld, x.k, x.qkv_ld,
         0.0f, P_block, T);
    softmax_rows(parallel, r0, r1, T, scale, P_block);
    // Y = P V over keys [0, r1) (the rest of each row is zero)
    gemm(false, false, r1 - r0, head_size, r1, 1.0f, P_block, T, x.v, x.qkv_ld, 0.0f,
         Y + static_cast<std::int64_t>(r0) * C, C);
  }
}

void backward_one_head(const AttentionShape& s, const float* dout, const float* qkv,
                       const float* prob, float* dqkv, float* dP, int b, int h, bool parallel) {
  const int T = s.seq_len;
  const int C = s.channels;
  const int head_size = C / s.n_head;
  const float scale = softmax_scale(s);
  const HeadView<float> x = head_view(s, qkv, b, h);
  const HeadView<float> dx = head_view<float>(s, dqkv, b, h);
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
    softmax_backward_rows(parallel, r0, r1, T, scale, P, dP);
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

// ---- 16-bit storage ----------------------------------------------------------------------
// Route: each head's Q, K, V (and dY) are widened once into contiguous fp32 thread-local
// buffers and the same fp32 GEMMs as above run on them; results are rounded to T once.
// Why not the typed gemm on the strided 16-bit views: the scores must stay fp32 for the
// softmax (a 16-bit S would cost the softmax |s| * 2^-8 of absolute error in bf16), the typed
// gemm converts its operands on every call anyway where the CPU has no 16-bit instructions,
// and a head's K and V are read by every row block (T / 128 times) so converting them once
// is cheaper than once per GEMM. Measured (2 shared cores, B=4, T=1024, C=768, 12 heads):
// bf16 forward and backward took 0.7-1.0x the fp32 time (the contiguous fp32 copies suit the
// GEMM better than the strided views), fp16 1.0-1.5x.

// Per-thread fp32 copies of one head's operands; grow to the largest shape seen and stay.
struct HeadScratch {
  std::vector<float> q, k, v, dy, dq, dk, dv, block;
  static HeadScratch& local() {
    thread_local HeadScratch scratch;
    return scratch;
  }
};

inline float* sized(std::vector<float>& buffer, std::int64_t count) {
  if (static_cast<std::int64_t>(buffer.size()) < count)
    buffer.resize(static_cast<std::size_t>(count));
  return buffer.data();
}

// rows x width of a strided T matrix into a dense fp32 one (ld = width); load_n / store_n
// convert 8-16 values per instruction (F16C), where the loops over load / store<fp16> stayed
// scalar (fp16 attention forward was 1.3-1.5x the fp32 time).
template <class T>
void widen(bool parallel, int rows, int width, const T* src, std::int64_t src_ld, float* dst) {
  for_rows(parallel, 0, rows, "zt::attention_widen", [=](int t) {
    ops::load_n(src + t * src_ld, width, dst + static_cast<std::int64_t>(t) * width);
  });
}

template <class T>
void narrow(bool parallel, int rows, int width, const float* src, T* dst, std::int64_t dst_ld) {
  for_rows(parallel, 0, rows, "zt::attention_narrow", [=](int t) {
    ops::store_n(src + static_cast<std::int64_t>(t) * width, width, dst + t * dst_ld);
  });
}

template <class T>
void forward_one_head(const AttentionShape& s, const T* qkv, T* prob, T* out, int b, int h,
                      bool parallel) {
  const int T_ = s.seq_len;
  const int C = s.channels;
  const int hs = C / s.n_head;
  const float scale = softmax_scale(s);
  const HeadView<T> x = head_view(s, qkv, b, h);
  const std::int64_t head_elements = static_cast<std::int64_t>(T_) * hs;
  HeadScratch& scratch = HeadScratch::local();
  float* q = sized(scratch.q, head_elements);
  float* k = sized(scratch.k, head_elements);
  float* v = sized(scratch.v, head_elements);
  float* y = sized(scratch.dq, head_elements);
  float* S = sized(scratch.block, static_cast<std::int64_t>(kRowBlock) * T_);
  widen(parallel, T_, hs, x.q, x.qkv_ld, q);
  widen(parallel, T_, hs, x.k, x.qkv_ld, k);
  widen(parallel, T_, hs, x.v, x.qkv_ld, v);
  T* P = prob + (static_cast<std::int64_t>(b) * s.n_head + h) * T_ * T_;
  for (int r0 = 0; r0 < T_; r0 += kRowBlock) {
    const int r1 = std::min(T_, r0 + kRowBlock);
    gemm(false, true, r1 - r0, r1, hs, 1.0f, q + static_cast<std::int64_t>(r0) * hs, hs, k, hs,
         0.0f, S, T_);
    softmax_rows(parallel, r0, r1, T_, scale, S);
    narrow(parallel, r1 - r0, T_, S, P + static_cast<std::int64_t>(r0) * T_, T_);
    // Y from the fp32 probabilities: the rounding of prob is storage for backward only.
    gemm(false, false, r1 - r0, hs, r1, 1.0f, S, T_, v, hs, 0.0f,
         y + static_cast<std::int64_t>(r0) * hs, hs);
  }
  narrow(parallel, T_, hs, y,
         out + static_cast<std::int64_t>(b) * T_ * C + static_cast<std::int64_t>(h) * hs, C);
}

template <class T>
void backward_one_head(const AttentionShape& s, const T* dout, const T* qkv, const T* prob, T* dqkv,
                       float* dP, int b, int h, bool parallel) {
  const int T_ = s.seq_len;
  const int C = s.channels;
  const int hs = C / s.n_head;
  const float scale = softmax_scale(s);
  const HeadView<T> x = head_view(s, qkv, b, h);
  const std::int64_t head_elements = static_cast<std::int64_t>(T_) * hs;
  HeadScratch& scratch = HeadScratch::local();
  float* q = sized(scratch.q, head_elements);
  float* k = sized(scratch.k, head_elements);
  float* v = sized(scratch.v, head_elements);
  float* dy = sized(scratch.dy, head_elements);
  float* dq = sized(scratch.dq, head_elements);
  float* dk = sized(scratch.dk, head_elements);
  float* dv = sized(scratch.dv, head_elements);
  // P^T panels for dV: rows [j0, T) x columns [j0, j1) of P, widened per key block.
  float* P_panel = sized(scratch.block, static_cast<std::int64_t>(kRowBlock) * T_);
  widen(parallel, T_, hs, x.q, x.qkv_ld, q);
  widen(parallel, T_, hs, x.k, x.qkv_ld, k);
  widen(parallel, T_, hs, x.v, x.qkv_ld, v);
  const T* dY_src =
      dout + static_cast<std::int64_t>(b) * T_ * C + static_cast<std::int64_t>(h) * hs;
  widen(parallel, T_, hs, dY_src, C, dy);
  const T* P = prob + (static_cast<std::int64_t>(b) * s.n_head + h) * T_ * T_;

  for (int r0 = 0; r0 < T_; r0 += kRowBlock) {
    const int r1 = std::min(T_, r0 + kRowBlock);
    gemm(false, true, r1 - r0, r1, hs, 1.0f, dy + static_cast<std::int64_t>(r0) * hs, hs, v, hs,
         0.0f, dP + static_cast<std::int64_t>(r0) * T_, T_);
    softmax_backward_rows(parallel, r0, r1, T_, scale, P, dP);
  }
  for (int r0 = 0; r0 < T_; r0 += kRowBlock) {
    const int r1 = std::min(T_, r0 + kRowBlock);
    gemm(false, false, r1 - r0, hs, r1, 1.0f, dP + static_cast<std::int64_t>(r0) * T_, T_, k, hs,
         0.0f, dq + static_cast<std::int64_t>(r0) * hs, hs);
  }
  for (int j0 = 0; j0 < T_; j0 += kRowBlock) {
    const int j1 = std::min(T_, j0 + kRowBlock);
    const std::int64_t corner = static_cast<std::int64_t>(j0) * T_ + j0;
    widen(parallel, T_ - j0, j1 - j0, P + corner, T_, P_panel);
    gemm(true, false, j1 - j0, hs, T_ - j0, 1.0f, P_panel, j1 - j0,
         dy + static_cast<std::int64_t>(j0) * hs, hs, 0.0f, dv + static_cast<std::int64_t>(j0) * hs,
         hs);
    gemm(true, false, j1 - j0, hs, T_ - j0, 1.0f, dP + corner, T_,
         q + static_cast<std::int64_t>(j0) * hs, hs, 0.0f, dk + static_cast<std::int64_t>(j0) * hs,
         hs);
  }
  T* dq_out = dqkv + static_cast<std::int64_t>(b) * T_ * 3 * C + static_cast<std::int64_t>(h) * hs;
  narrow(parallel, T_, hs, dq, dq_out, x.qkv_ld);
  narrow(parallel, T_, hs, dk, dq_out + C, x.qkv_ld);
  narrow(parallel, T_, hs, dv, dq_out + 2 * C, x.qkv_ld);
}

}  // namespace

void set_attention_parallelism(AttentionParallelism mode) {
  g_parallelism = mode;
}
AttentionParallelism attention_parallelism() {
  return g_parallelism;
}

template <class T>
void attention_forward(const AttentionShape& s, const T* qkv, T* prob, T* out) {
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

template <class T>
void attention_backward(const AttentionShape& s, const T* dout, const T* qkv, const T* prob,
                        T* dqkv, float* scratch) {
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

template void attention_forward<float>(const AttentionShape&, const float*, float*, float*);
template void attention_forward<fp16>(const AttentionShape&, const fp16*, fp16*, fp16*);
template void attention_forward<bf16>(const AttentionShape&, const bf16*, bf16*, bf16*);
template void attention_backward<float>(const AttentionShape&, const float*, const float*,
                                        const float*, float*, float*);
template void attention_backward<fp16>(const AttentionShape&, const fp16*, const fp16*, const fp16*,
                                       fp16*, float*);
template void attention_backward<bf16>(const AttentionShape&, const bf16*, const bf16*, const bf16*,
                                       bf16*, float*);

}  // namespace zt::kernels::host
