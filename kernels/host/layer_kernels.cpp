// SPDX-License-Identifier: Apache-2.0
#include "kernels/host/layer_kernels.hpp"

#include <Kokkos_Core.hpp>
#include <algorithm>
#include <cstring>
#include <numeric>
#include <type_traits>
#include <vector>

#include "kernels/ops/layer_ops.hpp"

namespace zt::kernels::host {
namespace {

using HostSpace = Kokkos::DefaultHostExecutionSpace;
using Range = Kokkos::RangePolicy<HostSpace>;

inline std::int64_t offset(int row, int width) {
  return static_cast<std::int64_t>(row) * width;
}

// Parameter-gradient reductions run over blocks of channels: one 64-byte cache line of each
// fp32 row per block, and each block owns its outputs (no atomics, same result on any thread
// count). One block is one register chunk of the column bodies (ops::kColumnChunk).
constexpr int kChannelBlock = ops::kColumnChunk;
inline int channel_blocks(int channels) {
  return (channels + kChannelBlock - 1) / kChannelBlock;
}
inline int block_end(int block, int channels) {
  return (block + 1) * kChannelBlock < channels ? (block + 1) * kChannelBlock : channels;
}

// ---- 16-bit storage: widened to fp32 scratch ---------------------------------------------------
// For fp16 and bf16 the launchers convert each row (or chunk of one, or tile of rows for the
// column bodies) to fp32 with ops::load_n, run the fp32 body on it and round the results back
// with ops::store_n. The body computes in float either way, and store<T> of its float result is
// exactly what the T body stores, so the outputs are the T body's bit for bit (NaNs stay NaN in
// the same places; where several NaNs or infinities meet, which NaN's sign or payload survives
// is the compiler's operand order, here as in the T body); but the fp32 bodies vectorise
// everywhere, and load_n / store_n convert 8-16 values per instruction (F16C), where the fp16
// bodies inlined here stayed partly scalar (GCC 12: fp16 GELU 10-20x, LayerNorm and cross-entropy
// 2-3x slower than fp32 at GPT-2 small shapes on 2 cores).
#if defined(__GNUC__)
#define ZT_INLINE __attribute__((always_inline))
#else
#define ZT_INLINE
#endif
template <class T>
constexpr bool kWidened = !std::is_same<T, float>::value;

// Element-wise rows go through chunks on the stack, inlined (ZT_INLINE) so that conversions and
// compute of neighbouring chunks overlap; 64 measured faster than 16 or 256-512 for GELU.
constexpr int kChunk = 64;
template <class Body>
inline void for_chunks(int width, const Body& body) {
  int j = 0;
  for (; j + kChunk <= width; j += kChunk) body(j, kChunk);
  if (j < width) body(j, width - j);
}

// Whole-row scratch (LayerNorm rows, softmax and cross-entropy rows): per thread, grown to the
// largest row seen and kept.
inline float* scratch_row(int slot, std::int64_t count) {
  thread_local std::vector<float> rows[3];
  std::vector<float>& row = rows[slot];
  if (static_cast<std::int64_t>(row.size()) < count) row.resize(static_cast<std::size_t>(count));
  return row.data();
}

// A small read-only T vector (weights, biases) widened once per call.
template <class T>
std::vector<float> widened(const T* values, int count) {
  std::vector<float> result(static_cast<std::size_t>(count > 0 ? count : 0));
  ops::load_n(values, count, result.data());
  return result;
}

// Column bodies: rows in tiles of this many, each tile of one channel block widened into a
// dense fp32 tile (16 KiB: stays in L1) and the fp32 column body run on it with fp32
// accumulators, so the sums over rows run in the same order as in one pass.
constexpr int kTileRows = 128;
template <class T>
inline void load_tile(const T* src, int ld, int row0, int rows, int c0, int width, float* tile) {
  if (width == kChannelBlock) {  // a full block: one conversion per row, the count a constant
    for (int i = 0; i < rows; ++i)
      ops::load_n(src + offset(row0 + i, ld) + c0, kChannelBlock, tile + i * kChannelBlock);
    return;
  }
  for (int i = 0; i < rows; ++i)
    ops::load_n(src + offset(row0 + i, ld) + c0, width, tile + i * width);
}

}  // namespace

template <class T>
void set_zero(T* out, std::int64_t count) {
  Kokkos::parallel_for(
      "zt::set_zero", Kokkos::RangePolicy<HostSpace, Kokkos::IndexType<std::int64_t>>(0, count),
      KOKKOS_LAMBDA(std::int64_t i) { out[i] = from_float<T>(0.0f); });
}

template <class T>
void embedding_forward(const T* wte, const T* wpe, const std::int32_t* tokens, int rows,
                       int seq_len, int channels, T* out) {
  if constexpr (kWidened<T>) {
    Kokkos::parallel_for(
        "zt::embedding_forward", Range(0, rows), KOKKOS_LAMBDA(int r) {
          const T* token_row = wte + offset(tokens[r], channels);
          const T* position_row = wpe + offset(r % seq_len, channels);
          for_chunks(channels, [&](int j, int n) ZT_INLINE {
            float a[kChunk], b[kChunk];
            ops::load_n(token_row + j, n, a);
            ops::load_n(position_row + j, n, b);
            ops::residual_add_row(a, b, n, a);  // = embedding_forward_row's sum, in float
            ops::store_n(a, n, out + offset(r, channels) + j);
          });
        });
    return;
  }
  Kokkos::parallel_for(
      "zt::embedding_forward", Range(0, rows), KOKKOS_LAMBDA(int r) {
        ops::embedding_forward_row(wte, wpe, tokens[r], r % seq_len, channels,
                                   out + offset(r, channels));
      });
}

template <class T>
void embedding_backward(const T* dout, const std::int32_t* tokens, int rows, int seq_len,
                        int channels, T* dwte, T* dwpe) {
  // Rows grouped by token (stable, so each token's rows keep their order and the fp32 sums
  // are those of a plain loop over rows): O(rows log rows), negligible next to the gradient.
  std::vector<std::int32_t> rows_by_token(static_cast<std::size_t>(rows > 0 ? rows : 0));
  std::iota(rows_by_token.begin(), rows_by_token.end(), 0);
  std::stable_sort(rows_by_token.begin(), rows_by_token.end(),
                   [tokens](std::int32_t a, std::int32_t b) { return tokens[a] < tokens[b]; });
  const std::int32_t* order = rows_by_token.data();
  Kokkos::parallel_for(
      "zt::embedding_backward", Range(0, channel_blocks(channels)), KOKKOS_LAMBDA(int block) {
        const int c_begin = block * kChannelBlock, c_end = block_end(block, channels);
        ops::embedding_backward_token_channels(dout, tokens, order, rows, channels, c_begin, c_end,
                                               dwte);
        ops::embedding_backward_position_channels(dout, rows, seq_len, channels, c_begin, c_end,
                                                  dwpe);
      });
}

template <class T>
void layernorm_forward(const T* x, const T* weight, const T* bias, int rows, int channels,
                       float epsilon, T* out, float* mean, float* rstd) {
  if constexpr (kWidened<T>) {
    const std::vector<float> weight_f = widened(weight, channels), bias_f = widened(bias, channels);
    const float* w = weight_f.data();
    const float* b = bias_f.data();
    Kokkos::parallel_for(
        "zt::layernorm_forward", Range(0, rows), KOKKOS_LAMBDA(int r) {
          float* x_f = scratch_row(0, channels);
          float* out_f = scratch_row(1, channels);
          ops::load_n(x + offset(r, channels), channels, x_f);
          ops::layernorm_forward_row(x_f, w, b, channels, epsilon, out_f, mean + r, rstd + r);
          ops::store_n(out_f, channels, out + offset(r, channels));
        });
    return;
  }
  Kokkos::parallel_for(
      "zt::layernorm_forward", Range(0, rows), KOKKOS_LAMBDA(int r) {
        ops::layernorm_forward_row(x + offset(r, channels), weight, bias, channels, epsilon,
                                   out + offset(r, channels), mean + r, rstd + r);
      });
}

template <class T>
void layernorm_backward(const T* dout, const T* x, const T* weight, const float* mean,
                        const float* rstd, int rows, int channels, T* dx, T* dweight, T* dbias) {
  if constexpr (kWidened<T>) {
    const std::vector<float> weight_f = widened(weight, channels);
    const float* w = weight_f.data();
    Kokkos::parallel_for(
        "zt::layernorm_backward_input", Range(0, rows), KOKKOS_LAMBDA(int r) {
          float* dout_f = scratch_row(0, channels);
          float* x_f = scratch_row(1, channels);
          float* dx_f = scratch_row(2, channels);
          ops::load_n(dout + offset(r, channels), channels, dout_f);
          ops::load_n(x + offset(r, channels), channels, x_f);
          ops::load_n(dx + offset(r, channels), channels, dx_f);
          ops::layernorm_backward_input_row(dout_f, x_f, w, mean[r], rstd[r], channels, dx_f);
          ops::store_n(dx_f, channels, dx + offset(r, channels));
        });
    Kokkos::parallel_for(
        "zt::layernorm_backward_params", Range(0, channel_blocks(channels)),
        KOKKOS_LAMBDA(int block) {
          const int c0 = block * kChannelBlock, width = block_end(block, channels) - c0;
          float dweight_f[kChannelBlock], dbias_f[kChannelBlock];
          float dout_tile[kTileRows * kChannelBlock], x_tile[kTileRows * kChannelBlock];
          ops::load_n(dweight + c0, width, dweight_f);
          ops::load_n(dbias + c0, width, dbias_f);
          for (int r0 = 0; r0 < rows; r0 += kTileRows) {
            const int tile_rows = rows - r0 < kTileRows ? rows - r0 : kTileRows;
            load_tile(dout, channels, r0, tile_rows, c0, width, dout_tile);
            load_tile(x, channels, r0, tile_rows, c0, width, x_tile);
            ops::layernorm_backward_params_channels(dout_tile, x_tile, mean + r0, rstd + r0,
                                                    tile_rows, width, 0, width, dweight_f, dbias_f);
          }
          ops::store_n(dweight_f, width, dweight + c0);
          ops::store_n(dbias_f, width, dbias + c0);
        });
    return;
  }
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

template <class T>
void bias_fill(const T* bias, int rows, int width, T* out) {
  if constexpr (kWidened<T>) {  // a copy: GCC keeps the loop over 2-byte structs scalar
    Kokkos::parallel_for(
        "zt::bias_fill", Range(0, rows), KOKKOS_LAMBDA(int r) {
          std::memcpy(out + offset(r, width), bias, static_cast<std::size_t>(width) * sizeof(T));
        });
    return;
  }
  Kokkos::parallel_for(
      "zt::bias_fill", Range(0, rows),
      KOKKOS_LAMBDA(int r) { ops::bias_fill_row(bias, width, out + offset(r, width)); });
}

template <class T>
void bias_add(const T* bias, int rows, int width, T* out) {
  if constexpr (kWidened<T>) {
    const std::vector<float> bias_f = widened(bias, width);
    const float* b = bias_f.data();
    Kokkos::parallel_for(
        "zt::bias_add", Range(0, rows), KOKKOS_LAMBDA(int r) {
          for_chunks(width, [&](int j, int n) ZT_INLINE {
            float o[kChunk];
            ops::load_n(out + offset(r, width) + j, n, o);
            ops::bias_add_row(b + j, n, o);
            ops::store_n(o, n, out + offset(r, width) + j);
          });
        });
    return;
  }
  Kokkos::parallel_for(
      "zt::bias_add", Range(0, rows),
      KOKKOS_LAMBDA(int r) { ops::bias_add_row(bias, width, out + offset(r, width)); });
}

template <class T>
void residual_bias_fill(const T* residual, const T* bias, int rows, int width, T* out) {
  if constexpr (kWidened<T>) {
    const std::vector<float> bias_f = widened(bias, width);
    const float* b = bias_f.data();
    Kokkos::parallel_for(
        "zt::residual_bias_fill", Range(0, rows), KOKKOS_LAMBDA(int r) {
          for_chunks(width, [&](int j, int n) ZT_INLINE {
            float o[kChunk];
            ops::load_n(residual + offset(r, width) + j, n, o);
            ops::residual_bias_fill_row(o, b + j, n, o);
            ops::store_n(o, n, out + offset(r, width) + j);
          });
        });
    return;
  }
  Kokkos::parallel_for(
      "zt::residual_bias_fill", Range(0, rows), KOKKOS_LAMBDA(int r) {
        ops::residual_bias_fill_row(residual + offset(r, width), bias, width,
                                    out + offset(r, width));
      });
}

template <class T>
void residual_add(const T* a, const T* b, int rows, int width, T* out) {
  if constexpr (kWidened<T>) {
    Kokkos::parallel_for(
        "zt::residual_add", Range(0, rows), KOKKOS_LAMBDA(int r) {
          for_chunks(width, [&](int j, int n) ZT_INLINE {
            float a_f[kChunk], b_f[kChunk];
            ops::load_n(a + offset(r, width) + j, n, a_f);
            ops::load_n(b + offset(r, width) + j, n, b_f);
            ops::residual_add_row(a_f, b_f, n, a_f);
            ops::store_n(a_f, n, out + offset(r, width) + j);
          });
        });
    return;
  }
  Kokkos::parallel_for(
      "zt::residual_add", Range(0, rows), KOKKOS_LAMBDA(int r) {
        ops::residual_add_row(a + offset(r, width), b + offset(r, width), width,
                              out + offset(r, width));
      });
}

template <class T>
void bias_backward(const T* dout, int rows, int width, T* dbias) {
  if constexpr (kWidened<T>) {
    Kokkos::parallel_for(
        "zt::bias_backward", Range(0, channel_blocks(width)), KOKKOS_LAMBDA(int block) {
          const int c0 = block * kChannelBlock, block_width = block_end(block, width) - c0;
          float dbias_f[kChannelBlock];
          float tile[kTileRows * kChannelBlock];
          ops::load_n(dbias + c0, block_width, dbias_f);
          for (int r0 = 0; r0 < rows; r0 += kTileRows) {
            const int tile_rows = rows - r0 < kTileRows ? rows - r0 : kTileRows;
            load_tile(dout, width, r0, tile_rows, c0, block_width, tile);
            ops::bias_backward_channels(tile, tile_rows, block_width, 0, block_width, dbias_f);
          }
          ops::store_n(dbias_f, block_width, dbias + c0);
        });
    return;
  }
  Kokkos::parallel_for(
      "zt::bias_backward", Range(0, channel_blocks(width)), KOKKOS_LAMBDA(int block) {
        ops::bias_backward_channels(dout, rows, width, block * kChannelBlock,
                                    block_end(block, width), dbias);
      });
}

template <class T>
void bias_gelu_forward(const T* bias, int rows, int width, T* pre, T* out) {
  if constexpr (kWidened<T>) {
    const std::vector<float> bias_f = widened(bias, width);
    const float* b = bias_f.data();
    Kokkos::parallel_for(
        "zt::bias_gelu_forward", Range(0, rows), KOKKOS_LAMBDA(int r) {
          T* pre_row = pre + offset(r, width);
          for_chunks(width, [&](int j, int n) ZT_INLINE {
            float v[kChunk], o[kChunk];
            ops::load_n(pre_row + j, n, v);
            ops::bias_add_row(b + j, n, v);
            // as bias_gelu_forward_row: the GELU of the stored (rounded) pre
            ops::store_n(v, n, pre_row + j);
            ops::load_n(pre_row + j, n, v);
            ZT_SIMD
            for (int k = 0; k < n; ++k) o[k] = ops::gelu_tanh(v[k]);
            ops::store_n(o, n, out + offset(r, width) + j);
          });
        });
    return;
  }
  Kokkos::parallel_for(
      "zt::bias_gelu_forward", Range(0, rows), KOKKOS_LAMBDA(int r) {
        ops::bias_gelu_forward_row(bias, width, pre + offset(r, width), out + offset(r, width));
      });
}

template <class T>
void gelu_backward(const T* pre, int rows, int width, T* grad) {
  if constexpr (kWidened<T>) {
    Kokkos::parallel_for(
        "zt::gelu_backward", Range(0, rows), KOKKOS_LAMBDA(int r) {
          for_chunks(width, [&](int j, int n) ZT_INLINE {
            float p[kChunk], g[kChunk];
            ops::load_n(pre + offset(r, width) + j, n, p);
            ops::load_n(grad + offset(r, width) + j, n, g);
            ops::gelu_backward_row(p, n, g);
            ops::store_n(g, n, grad + offset(r, width) + j);
          });
        });
    return;
  }
  Kokkos::parallel_for(
      "zt::gelu_backward", Range(0, rows), KOKKOS_LAMBDA(int r) {
        ops::gelu_backward_row(pre + offset(r, width), width, grad + offset(r, width));
      });
}

template <class T>
void causal_softmax_forward(int count, int seq_len, float scale, T* scores) {
  const int rows = count * seq_len;
  if constexpr (kWidened<T>) {
    // The fp32 body keeps its exponentials where the 16-bit one computes them twice: the same
    // values, so the same probabilities.
    Kokkos::parallel_for(
        "zt::causal_softmax_forward", Range(0, rows), KOKKOS_LAMBDA(int r) {
          const int t = r % seq_len;
          float* row = scratch_row(0, seq_len);
          ops::load_n(scores + offset(r, seq_len), t + 1, row);  // the body reads [0, t]
          ops::causal_softmax_forward_row(t, seq_len, scale, row);
          ops::store_n(row, seq_len, scores + offset(r, seq_len));
        });
    return;
  }
  Kokkos::parallel_for(
      "zt::causal_softmax_forward", Range(0, rows), KOKKOS_LAMBDA(int r) {
        ops::causal_softmax_forward_row(r % seq_len, seq_len, scale, scores + offset(r, seq_len));
      });
}

template <class T>
void causal_softmax_backward(int count, int seq_len, float scale, const T* prob, T* dprob) {
  const int rows = count * seq_len;
  if constexpr (kWidened<T>) {
    Kokkos::parallel_for(
        "zt::causal_softmax_backward", Range(0, rows), KOKKOS_LAMBDA(int r) {
          const int t = r % seq_len;
          float* prob_f = scratch_row(0, seq_len);
          float* dprob_f = scratch_row(1, seq_len);
          ops::load_n(prob + offset(r, seq_len), t + 1, prob_f);  // the body reads [0, t]
          ops::load_n(dprob + offset(r, seq_len), t + 1, dprob_f);
          ops::causal_softmax_backward_row(t, seq_len, scale, prob_f, dprob_f);
          ops::store_n(dprob_f, seq_len, dprob + offset(r, seq_len));
        });
    return;
  }
  Kokkos::parallel_for(
      "zt::causal_softmax_backward", Range(0, rows), KOKKOS_LAMBDA(int r) {
        ops::causal_softmax_backward_row(r % seq_len, seq_len, scale, prob + offset(r, seq_len),
                                         dprob + offset(r, seq_len));
      });
}

template <class T>
double cross_entropy_forward(const T* logits, const std::int32_t* targets, int rows, int vocab_size,
                             float* losses, float* log_sum_exp) {
  if constexpr (kWidened<T>) {
    Kokkos::parallel_for(
        "zt::cross_entropy_forward", Range(0, rows), KOKKOS_LAMBDA(int r) {
          float* row = scratch_row(0, vocab_size);  // 200 KB at GPT-2's vocabulary: in L2
          ops::load_n(logits + offset(r, vocab_size), vocab_size, row);
          losses[r] = ops::cross_entropy_forward_row(row, vocab_size, targets[r], log_sum_exp + r);
        });
  } else {
    Kokkos::parallel_for(
        "zt::cross_entropy_forward", Range(0, rows), KOKKOS_LAMBDA(int r) {
          losses[r] = ops::cross_entropy_forward_row(logits + offset(r, vocab_size), vocab_size,
                                                     targets[r], log_sum_exp + r);
        });
  }
  // Summed in a fixed order so the loss does not depend on the thread count.
  double total = 0.0;
  for (int r = 0; r < rows; ++r) total += static_cast<double>(losses[r]);
  return total / static_cast<double>(rows);
}

template <class T>
void cross_entropy_backward(const std::int32_t* targets, const float* log_sum_exp, int rows,
                            int vocab_size, float grad_scale, T* logits_to_grad) {
  if constexpr (kWidened<T>) {
    Kokkos::parallel_for(
        "zt::cross_entropy_backward", Range(0, rows), KOKKOS_LAMBDA(int r) {
          // cross_entropy_backward_row in chunks (each value depends on itself only), the
          // target's entry first and last as there
          T* logits = logits_to_grad + offset(r, vocab_size);
          const float lse = log_sum_exp[r];
          const float target_grad = grad_scale * ops::fast_exp(ops::load(logits[targets[r]]) - lse);
          for_chunks(vocab_size, [&](int j, int n) ZT_INLINE {
            float v[kChunk];
            ops::load_n(logits + j, n, v);
            ZT_SIMD
            for (int k = 0; k < n; ++k) v[k] = grad_scale * ops::fast_exp(v[k] - lse);
            ops::store_n(v, n, logits + j);
          });
          logits[targets[r]] = ops::store<T>(target_grad - grad_scale);
        });
    return;
  }
  Kokkos::parallel_for(
      "zt::cross_entropy_backward", Range(0, rows), KOKKOS_LAMBDA(int r) {
        ops::cross_entropy_backward_row(vocab_size, targets[r], log_sum_exp[r], grad_scale,
                                        logits_to_grad + offset(r, vocab_size));
      });
}

#define ZT_INSTANTIATE_LAYER_KERNELS(T)                                                           \
  template void set_zero<T>(T*, std::int64_t);                                                    \
  template void embedding_forward<T>(const T*, const T*, const std::int32_t*, int, int, int, T*); \
  template void embedding_backward<T>(const T*, const std::int32_t*, int, int, int, T*, T*);      \
  template void layernorm_forward<T>(const T*, const T*, const T*, int, int, float, T*, float*,   \
                                     float*);                                                     \
  template void layernorm_backward<T>(const T*, const T*, const T*, const float*, const float*,   \
                                      int, int, T*, T*, T*);                                      \
  template void bias_fill<T>(const T*, int, int, T*);                                             \
  template void bias_add<T>(const T*, int, int, T*);                                              \
  template void residual_bias_fill<T>(const T*, const T*, int, int, T*);                          \
  template void residual_add<T>(const T*, const T*, int, int, T*);                                \
  template void bias_backward<T>(const T*, int, int, T*);                                         \
  template void bias_gelu_forward<T>(const T*, int, int, T*, T*);                                 \
  template void gelu_backward<T>(const T*, int, int, T*);                                         \
  template void causal_softmax_forward<T>(int, int, float, T*);                                   \
  template void causal_softmax_backward<T>(int, int, float, const T*, T*);                        \
  template double cross_entropy_forward<T>(const T*, const std::int32_t*, int, int, float*,       \
                                           float*);                                               \
  template void cross_entropy_backward<T>(const std::int32_t*, const float*, int, int, float, T*);

ZT_INSTANTIATE_LAYER_KERNELS(float)
ZT_INSTANTIATE_LAYER_KERNELS(fp16)
ZT_INSTANTIATE_LAYER_KERNELS(bf16)
#undef ZT_INSTANTIATE_LAYER_KERNELS

}  // namespace zt::kernels::host
