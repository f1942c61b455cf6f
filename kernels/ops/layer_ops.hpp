// SPDX-License-Identifier: Apache-2.0
// Op bodies of the GPT-2 layers, one function per op, written once for host and device.
//
// Conventions: activations are row-major (rows = B*T positions, columns = channels).
// "Row" bodies handle one position and are launched in parallel over rows. Parameter
// gradients are sums over rows; "column" bodies accumulate one channel block over all
// rows, so launchers parallelise over channels without atomics and the result does not
// depend on the thread count (bitwise reproducible). Every parameter gradient is
// ACCUMULATED (+=), activation gradients are written (=) unless said otherwise.
//
// Storage: T (float, fp16 or bf16) is the type of activations, parameters and gradients;
// LayerNorm statistics, losses and log-sum-exps are float and tokens int32. Every body loads
// T with load (to_float), computes in float and rounds with store<T> (from_float<T>) once per
// stored value, so a 16-bit run differs from an fp32 run on the same inputs by one rounding of each
// output. The column bodies keep their sums over rows in float registers and round into the T
// gradient once per call: per-row rounding would lose every addend below half an ulp of the running
// sum (a bf16 bias gradient summed over 4096 rows would stop growing after ~256 of them). For
// T = float the operations and their order are exactly those of the fp32-only code, so fp32
// results are unchanged bit for bit.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/ops/dtype.hpp"
#include "kernels/ops/host_device.hpp"

// F16C converts 8 (AVX-512: 16) fp16 values per instruction; the host row helpers at the end of
// this file use it (with AVX2 for the NaN fix-ups). Never under nvcc: the CUDA launchers compile
// these bodies too.
#if !defined(__CUDACC__) && defined(__F16C__) && defined(__AVX2__)
#define ZT_HOST_F16C 1
#include <immintrin.h>
#endif

// Element-wise loops over 16-bit storage: inlined into the Kokkos launchers GCC may keep them
// scalar (it gave up on the aliasing checks for fp16 GELU, 10x slower than fp32), so they are
// marked for vectorisation. Only loops without a carried dependency are marked: the results
// are those of the scalar loop, bit for bit.
#if defined(_OPENMP) && !defined(__CUDA_ARCH__)
#define ZT_SIMD _Pragma("omp simd")
#else
#define ZT_SIMD
#endif

namespace zt::kernels::ops {

// ---- vectorisable elementary functions ----------------------------------------------------
// libm's expf/tanhf are scalar calls that stop the compiler from vectorising the loops over
// 50257 logits, T keys or 4C MLP channels, and those loops then cost more than the GEMMs
// around them at small batch. These are plain arithmetic (no calls, no branches), so loops
// over them vectorise; accuracy is a few ulp, far below what the fp32 training sees.

/// e^x for x in fp32 range (x < -87.3 gives 0, x > 88.7 gives +inf as expf does).
ZT_HOST_DEVICE inline float fast_exp(float x) {
  const float log2e = 1.44269504088896341f;
  const float ln2_hi = 0.693359375f;  // ln 2 split in two so n*ln2_hi is exact
  const float ln2_lo = -2.12194440e-4f;
  x = x < -87.3365f ? -87.3365f : x;
  x = x > 88.7228f ? 88.7228f : x;
  // n = round(x / ln 2) by the 1.5 * 2^23 trick (no rounding-mode call, vectorises on SSE2)
  const float shifter = 12582912.0f;
  const float t = x * log2e + shifter;
  const float n = t - shifter;
  const float r = (x - n * ln2_hi) - n * ln2_lo;  // |r| <= ln2 / 2
  // e^r: degree-6 polynomial (Cephes expf coefficients)
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  // scale by 2^n through the exponent bits (n in [-126, 128]; 2^128 overflows to inf below)
  std::int32_t n_int;
  std::memcpy(&n_int, &t, sizeof(n_int));
  n_int -= 0x4B400000;                   // the integer bits of t - shifter
  const std::int32_t n_lo = n_int >> 1;  // split so 2^n never needs an exponent field > 254
  const std::int32_t bits_lo = (n_lo + 127) << 23;
  const std::int32_t bits_hi = (n_int - n_lo + 127) << 23;
  float scale_lo, scale_hi;
  std::memcpy(&scale_lo, &bits_lo, sizeof(scale_lo));
  std::memcpy(&scale_hi, &bits_hi, sizeof(scale_hi));
  return p * scale_lo * scale_hi;
}

/// tanh(x) = 1 - 2 / (e^{2x} + 1): exact limits +-1, absolute error ~1e-7.
ZT_HOST_DEVICE inline float fast_tanh(float x) {
  return 1.0f - 2.0f / (fast_exp(2.0f * x) + 1.0f);
}

/// Independent partial results per lane let the compiler vectorise reductions without
/// reassociation flags (-ffast-math); 8 lanes fill an AVX register.
constexpr int kReductionLanes = 8;

// ---- storage loads and stores ----------------------------------------------------------------
// The op bodies' names for dtype.hpp's conversions (which are written to vectorise).

ZT_HOST_DEVICE inline float load(float value) {
  return value;
}
ZT_HOST_DEVICE inline float load(bf16 value) {
  return to_float(value);
}
ZT_HOST_DEVICE inline float load(fp16 value) {
  return to_float(value);
}

template <class T>
ZT_HOST_DEVICE inline T store(float value) {
  return from_float<T>(value);
}

/// Channels processed per pass of a column body: the float partial sums of one pass live in
/// registers (16 floats = one AVX-512 or two AVX registers); wider channel ranges take several
/// passes over the rows.
constexpr int kColumnChunk = 16;

// ---- embedding ---------------------------------------------------------------------------

/// out[c] = wte[token, c] + wpe[position, c]
template <class T>
ZT_HOST_DEVICE inline void embedding_forward_row(const T* wte, const T* wpe, std::int32_t token,
                                                 int position, int channels, T* out) {
  const T* token_row = wte + static_cast<std::int64_t>(token) * channels;
  const T* position_row = wpe + static_cast<std::int64_t>(position) * channels;
  ZT_SIMD
  for (int c = 0; c < channels; ++c) out[c] = store<T>(load(token_row[c]) + load(position_row[c]));
}

/// Channels [c_begin, c_end) of the token-embedding gradient: dwte[token(r), c] += dout[r, c]
/// summed over all rows. `rows_by_token` lists the rows sorted by token, stably (rows of one
/// token in increasing order), so each token's rows form one run that is summed in float and
/// rounded into dwte once. Calls on disjoint channel ranges touch disjoint parts of dwte, so
/// they run in parallel without atomics even when a token repeats.
template <class T>
ZT_HOST_DEVICE inline void embedding_backward_token_channels(const T* dout,
                                                             const std::int32_t* tokens,
                                                             const std::int32_t* rows_by_token,
                                                             int rows, int channels, int c_begin,
                                                             int c_end, T* dwte) {
  for (int chunk = c_begin; chunk < c_end; chunk += kColumnChunk) {
    const int width = c_end - chunk < kColumnChunk ? c_end - chunk : kColumnChunk;
    for (int i = 0; i < rows;) {
      const std::int32_t token = tokens[rows_by_token[i]];
      T* token_grad = dwte + static_cast<std::int64_t>(token) * channels + chunk;
      float sum[kColumnChunk];
      for (int k = 0; k < width; ++k) sum[k] = load(token_grad[k]);
      for (; i < rows && tokens[rows_by_token[i]] == token; ++i) {
        const T* g = dout + static_cast<std::int64_t>(rows_by_token[i]) * channels + chunk;
        for (int k = 0; k < width; ++k) sum[k] += load(g[k]);
      }
      for (int k = 0; k < width; ++k) token_grad[k] = store<T>(sum[k]);
    }
  }
}

/// Channels [c_begin, c_end) of the position-embedding gradient: dwpe[p, c] += sum over the
/// sequences b of dout[b * seq_len + p, c] (rows = batch * seq_len).
template <class T>
ZT_HOST_DEVICE inline void embedding_backward_position_channels(const T* dout, int rows,
                                                                int seq_len, int channels,
                                                                int c_begin, int c_end, T* dwpe) {
  for (int chunk = c_begin; chunk < c_end; chunk += kColumnChunk) {
    const int width = c_end - chunk < kColumnChunk ? c_end - chunk : kColumnChunk;
    for (int p = 0; p < seq_len && p < rows; ++p) {
      T* position_grad = dwpe + static_cast<std::int64_t>(p) * channels + chunk;
      float sum[kColumnChunk];
      for (int k = 0; k < width; ++k) sum[k] = load(position_grad[k]);
      for (int r = p; r < rows; r += seq_len) {
        const T* g = dout + static_cast<std::int64_t>(r) * channels + chunk;
        for (int k = 0; k < width; ++k) sum[k] += load(g[k]);
      }
      for (int k = 0; k < width; ++k) position_grad[k] = store<T>(sum[k]);
    }
  }
}

// ---- layer normalisation -------------------------------------------------------------------

/// out = (x - mean) * rstd * weight + bias with the biased variance (divide by C), as
/// GPT-2 / PyTorch. Saves mean and rstd for the backward pass.
template <class T>
ZT_HOST_DEVICE inline void layernorm_forward_row(const T* x, const T* weight, const T* bias,
                                                 int channels, float epsilon, T* out,
                                                 float* mean_out, float* rstd_out) {
  float sum = 0.0f;
  for (int c = 0; c < channels; ++c) sum += load(x[c]);
  const float mean = sum / static_cast<float>(channels);
  float sum_sq = 0.0f;  // two passes: avoids the cancellation of E[x^2] - mean^2
  for (int c = 0; c < channels; ++c) {
    const float d = load(x[c]) - mean;
    sum_sq += d * d;
  }
  const float rstd = 1.0f / sqrtf(sum_sq / static_cast<float>(channels) + epsilon);
  ZT_SIMD
  for (int c = 0; c < channels; ++c)
    out[c] = store<T>((load(x[c]) - mean) * rstd * load(weight[c]) + load(bias[c]));
  *mean_out = mean;
  *rstd_out = rstd;
}

/// Input gradient of one row, ADDED to dx (the residual stream's gradient flows through):
/// dx += rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dout * weight.
template <class T>
ZT_HOST_DEVICE inline void layernorm_backward_input_row(const T* dout, const T* x, const T* weight,
                                                        float mean, float rstd, int channels,
                                                        T* dx) {
  float mean_g = 0.0f;
  float mean_g_xhat = 0.0f;
  for (int c = 0; c < channels; ++c) {
    const float g = load(dout[c]) * load(weight[c]);
    mean_g += g;
    mean_g_xhat += g * (load(x[c]) - mean) * rstd;
  }
  mean_g /= static_cast<float>(channels);
  mean_g_xhat /= static_cast<float>(channels);
  ZT_SIMD
  for (int c = 0; c < channels; ++c) {
    const float xhat = (load(x[c]) - mean) * rstd;
    dx[c] = store<T>(load(dx[c]) +
                     rstd * (load(dout[c]) * load(weight[c]) - mean_g - xhat * mean_g_xhat));
  }
}

/// Weight and bias gradients of channels [c_begin, c_end) summed over all rows:
/// dweight[c] += sum dout*xhat, dbias[c] += sum dout.
template <class T>
ZT_HOST_DEVICE inline void layernorm_backward_params_channels(const T* dout, const T* x,
                                                              const float* mean, const float* rstd,
                                                              int rows, int channels, int c_begin,
                                                              int c_end, T* dweight, T* dbias) {
  for (int chunk = c_begin; chunk < c_end; chunk += kColumnChunk) {
    const int width = c_end - chunk < kColumnChunk ? c_end - chunk : kColumnChunk;
    float sum_w[kColumnChunk], sum_b[kColumnChunk];
    for (int k = 0; k < width; ++k) {
      sum_w[k] = load(dweight[chunk + k]);
      sum_b[k] = load(dbias[chunk + k]);
    }
    for (int r = 0; r < rows; ++r) {
      const std::int64_t row = static_cast<std::int64_t>(r) * channels + chunk;
      for (int k = 0; k < width; ++k) {
        sum_w[k] += load(dout[row + k]) * (load(x[row + k]) - mean[r]) * rstd[r];
        sum_b[k] += load(dout[row + k]);
      }
    }
    for (int k = 0; k < width; ++k) {
      dweight[chunk + k] = store<T>(sum_w[k]);
      dbias[chunk + k] = store<T>(sum_b[k]);
    }
  }
}

// ---- bias, residual ------------------------------------------------------------------------

/// out[j] = bias[j]: fills a GEMM output row so the GEMM can accumulate onto it (beta = 1),
/// which adds the bias without an extra pass over the output.
template <class T>
ZT_HOST_DEVICE inline void bias_fill_row(const T* bias, int width, T* out) {
  ZT_SIMD
  for (int j = 0; j < width; ++j) out[j] = bias[j];
}

/// out[j] += bias[j]
template <class T>
ZT_HOST_DEVICE inline void bias_add_row(const T* bias, int width, T* out) {
  ZT_SIMD
  for (int j = 0; j < width; ++j) out[j] = store<T>(load(out[j]) + load(bias[j]));
}

/// out[j] = residual[j] + bias[j]: the start of "x + proj(y) + b", finished by a GEMM
/// accumulating proj(y) onto out (residual and bias add fused into the GEMM's beta = 1).
template <class T>
ZT_HOST_DEVICE inline void residual_bias_fill_row(const T* residual, const T* bias, int width,
                                                  T* out) {
  ZT_SIMD
  for (int j = 0; j < width; ++j) out[j] = store<T>(load(residual[j]) + load(bias[j]));
}

/// out[j] = a[j] + b[j]
template <class T>
ZT_HOST_DEVICE inline void residual_add_row(const T* a, const T* b, int width, T* out) {
  ZT_SIMD
  for (int j = 0; j < width; ++j) out[j] = store<T>(load(a[j]) + load(b[j]));
}

/// dbias[j] += sum over rows of dout[r, j], for j in [j_begin, j_end)
template <class T>
ZT_HOST_DEVICE inline void bias_backward_channels(const T* dout, int rows, int width, int j_begin,
                                                  int j_end, T* dbias) {
  for (int chunk = j_begin; chunk < j_end; chunk += kColumnChunk) {
    const int chunk_width = j_end - chunk < kColumnChunk ? j_end - chunk : kColumnChunk;
    float sum[kColumnChunk];
    for (int k = 0; k < chunk_width; ++k) sum[k] = load(dbias[chunk + k]);
    for (int r = 0; r < rows; ++r) {
      const T* row = dout + static_cast<std::int64_t>(r) * width + chunk;
      for (int k = 0; k < chunk_width; ++k) sum[k] += load(row[k]);
    }
    for (int k = 0; k < chunk_width; ++k) dbias[chunk + k] = store<T>(sum[k]);
  }
}

// ---- GELU (tanh approximation, "gelu_new") ----------------------------------------------------

ZT_HOST_DEVICE inline float gelu_tanh(float x) {
  const float k_sqrt_2_over_pi = 0.7978845608028654f;
  const float inner = k_sqrt_2_over_pi * (x + 0.044715f * x * x * x);
  return 0.5f * x * (1.0f + fast_tanh(inner));
}

ZT_HOST_DEVICE inline float gelu_tanh_derivative(float x) {
  const float k_sqrt_2_over_pi = 0.7978845608028654f;
  const float inner = k_sqrt_2_over_pi * (x + 0.044715f * x * x * x);
  const float t = fast_tanh(inner);
  const float sech_sq = 1.0f - t * t;
  return 0.5f * (1.0f + t) +
         0.5f * x * sech_sq * k_sqrt_2_over_pi * (1.0f + 3.0f * 0.044715f * x * x);
}

/// pre[j] += bias[j]; out[j] = gelu(pre[j]). The bias is fused here because the MLP's first
/// GEMM output is read once anyway; pre (with bias) is kept for the backward pass. out is the
/// GELU of the stored (rounded) pre, so forward and backward see the same input.
template <class T>
ZT_HOST_DEVICE inline void bias_gelu_forward_row(const T* bias, int width, T* pre, T* out) {
  ZT_SIMD
  for (int j = 0; j < width; ++j) {
    // the rounded value as float: storing it again is exact, and copying the T itself would
    // be an aggregate copy the vectoriser refuses
    const float v = load(store<T>(load(pre[j]) + load(bias[j])));
    pre[j] = store<T>(v);
    out[j] = store<T>(gelu_tanh(v));
  }
}

/// grad[j] *= gelu'(pre[j]) (in place: the gradient of the GELU output becomes the gradient of
/// its input)
template <class T>
ZT_HOST_DEVICE inline void gelu_backward_row(const T* pre, int width, T* grad) {
  ZT_SIMD
  for (int j = 0; j < width; ++j)
    grad[j] = store<T>(load(grad[j]) * gelu_tanh_derivative(load(pre[j])));
}

// ---- causal softmax of attention scores ------------------------------------------------------

/// Row t of one (batch, head) score matrix, in place: p[j] = softmax(scale * s[0..t])[j] for
/// j <= t and 0 for j > t (causal). `row_length` is the stored width (>= t + 1); the entries
/// past t are zeroed so a following GEMM may read them. For 16-bit T the exponentials are
/// computed twice rather than stored unnormalised, which would round them twice.
template <class T>
ZT_HOST_DEVICE inline void causal_softmax_forward_row(int t, int row_length, float scale,
                                                      T* scores) {
  constexpr bool keep_exponentials = sizeof(T) == sizeof(float);
  float max_value = -INFINITY;
  for (int j = 0; j <= t; ++j) {
    const float v = scale * load(scores[j]);
    max_value = v > max_value ? v : max_value;
  }
  float lane_sum[kReductionLanes] = {};
  int j = 0;
  for (; j + kReductionLanes <= t + 1; j += kReductionLanes)
    for (int k = 0; k < kReductionLanes; ++k) {
      const float e = fast_exp(scale * load(scores[j + k]) - max_value);
      if (keep_exponentials) scores[j + k] = store<T>(e);
      lane_sum[k] += e;
    }
  for (; j <= t; ++j) {
    const float e = fast_exp(scale * load(scores[j]) - max_value);
    if (keep_exponentials) scores[j] = store<T>(e);
    lane_sum[0] += e;
  }
  float sum = 0.0f;
  for (int k = 0; k < kReductionLanes; ++k) sum += lane_sum[k];
  const float inv_sum = 1.0f / sum;
  for (j = 0; j <= t; ++j) {
    const float e =
        keep_exponentials ? load(scores[j]) : fast_exp(scale * load(scores[j]) - max_value);
    scores[j] = store<T>(e * inv_sum);
  }
  for (j = t + 1; j < row_length; ++j) scores[j] = store<T>(0.0f);
}

/// Backward of row t, in place on dprob: ds[j] = scale * p[j] * (dp[j] - sum_k p[k] dp[k]),
/// i.e. the gradient of the raw (unscaled) scores Q·K^T; zero past t. prob and dprob may have
/// different storage (the host attention keeps dprob in fp32 scratch next to a 16-bit prob).
template <class P, class D>
ZT_HOST_DEVICE inline void causal_softmax_backward_row(int t, int row_length, float scale,
                                                       const P* prob, D* dprob) {
  float lane_dot[kReductionLanes] = {};
  int j = 0;
  for (; j + kReductionLanes <= t + 1; j += kReductionLanes)
    for (int k = 0; k < kReductionLanes; ++k) lane_dot[k] += load(prob[j + k]) * load(dprob[j + k]);
  for (; j <= t; ++j) lane_dot[0] += load(prob[j]) * load(dprob[j]);
  float dot = 0.0f;
  for (int k = 0; k < kReductionLanes; ++k) dot += lane_dot[k];
  for (j = 0; j <= t; ++j) dprob[j] = store<D>(scale * load(prob[j]) * (load(dprob[j]) - dot));
  for (j = t + 1; j < row_length; ++j) dprob[j] = store<D>(0.0f);
}

// ---- cross-entropy over the vocabulary -------------------------------------------------------

/// Forward of one position: returns -log softmax(logits)[target] and saves the row's
/// log-sum-exp so the backward pass needs no second reduction.
template <class T>
ZT_HOST_DEVICE inline float cross_entropy_forward_row(const T* logits, int vocab_size,
                                                      std::int32_t target, float* log_sum_exp_out) {
  float lane_max[kReductionLanes];
  for (int k = 0; k < kReductionLanes; ++k) lane_max[k] = -INFINITY;
  int v = 0;
  for (; v + kReductionLanes <= vocab_size; v += kReductionLanes)
    for (int k = 0; k < kReductionLanes; ++k) {
      const float value = load(logits[v + k]);
      lane_max[k] = value > lane_max[k] ? value : lane_max[k];
    }
  for (; v < vocab_size; ++v) {
    const float value = load(logits[v]);
    lane_max[0] = value > lane_max[0] ? value : lane_max[0];
  }
  float max_value = lane_max[0];
  for (int k = 1; k < kReductionLanes; ++k)
    max_value = lane_max[k] > max_value ? lane_max[k] : max_value;
  float lane_sum[kReductionLanes] = {};
  for (v = 0; v + kReductionLanes <= vocab_size; v += kReductionLanes)
    for (int k = 0; k < kReductionLanes; ++k)
      lane_sum[k] += fast_exp(load(logits[v + k]) - max_value);
  for (; v < vocab_size; ++v) lane_sum[0] += fast_exp(load(logits[v]) - max_value);
  float sum = 0.0f;
  for (int k = 0; k < kReductionLanes; ++k) sum += lane_sum[k];
  const float log_sum_exp = max_value + logf(sum);
  *log_sum_exp_out = log_sum_exp;
  return log_sum_exp - load(logits[target]);
}

/// Backward of one position, in place: logits become d(loss_scale * mean loss)/d logits =
/// grad_scale * (softmax - onehot(target)), grad_scale = loss_scale / (B*T). The target's
/// entry is rounded once, after the subtraction.
template <class T>
ZT_HOST_DEVICE inline void cross_entropy_backward_row(int vocab_size, std::int32_t target,
                                                      float log_sum_exp, float grad_scale,
                                                      T* logits_to_grad) {
  const float target_grad = grad_scale * fast_exp(load(logits_to_grad[target]) - log_sum_exp);
  ZT_SIMD
  for (int v = 0; v < vocab_size; ++v)
    logits_to_grad[v] = store<T>(grad_scale * fast_exp(load(logits_to_grad[v]) - log_sum_exp));
  logits_to_grad[target] = store<T>(target_grad - grad_scale);
}

// ---- host: rows of storage to fp32 and back ------------------------------------------------
// load_n / store_n are load / store<T> over n consecutive values, the same bits (NaN included:
// every NaN stores as sign | 0x7e00 for fp16), for host launchers that widen 16-bit rows into fp32
// scratch and run the fp32 bodies on it. Loops over load / store<fp16> of single values stay
// scalar in some of the launchers (GCC 12: fp16 GELU 10-20x slower than fp32); with F16C these
// convert 8 or 16 values per instruction. Rounding is to nearest even (the instruction's immediate
// mode, not MXCSR). Host only: no ZT_HOST_DEVICE.
#if !defined(__CUDACC__)

inline void load_n(const float* src, int n, float* dst) {
  if (n > 0) std::memcpy(dst, src, static_cast<std::size_t>(n) * sizeof(float));
}

inline void load_n(const bf16* src, int n, float* dst) {
  ZT_SIMD
  for (int i = 0; i < n; ++i) dst[i] = load(src[i]);
}

#if defined(ZT_HOST_F16C)
namespace detail {
// vcvtph2ps quiets a signalling NaN (sets mantissa bit 22) where load keeps it signalling:
// put the fp16 quiet bit (9, bit 22 once shifted) back in NaN lanes.
inline __m256 restore_signalling(__m256 widened, __m128i half) {
  const __m256 nan = _mm256_cmp_ps(widened, widened, _CMP_UNORD_Q);
  if (_mm256_movemask_ps(nan) == 0) return widened;  // the usual case: no NaN
  const __m256i quiet = _mm256_slli_epi32(
      _mm256_and_si256(_mm256_cvtepu16_epi32(half), _mm256_set1_epi32(0x0200)), 13);
  const __m256i bits = _mm256_or_si256(
      _mm256_andnot_si256(_mm256_set1_epi32(0x00400000), _mm256_castps_si256(widened)), quiet);
  return _mm256_blendv_ps(widened, _mm256_castsi256_ps(bits), nan);
}
// store<fp16> gives every NaN as sign | 0x7e00: the conversion of sign | 0x7fc00000.
inline __m256 canonical_nan(__m256 x) {
  const __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
  const __m256i bits = _mm256_or_si256(
      _mm256_and_si256(_mm256_castps_si256(x), _mm256_set1_epi32(static_cast<int>(0x80000000u))),
      _mm256_set1_epi32(0x7fc00000));
  return _mm256_blendv_ps(x, _mm256_castsi256_ps(bits), nan);
}
#if defined(__AVX512F__)
// The AVX-512 forms below are the zero-masking ones with every lane set: the plain ones start
// from _mm512_undefined_*, which GCC 12 reports as maybe-uninitialized when inlined.
constexpr __mmask16 kAll16 = 0xffff;
inline __m512 restore_signalling(__m512 widened, __m256i half) {
  const __mmask16 nan = _mm512_cmp_ps_mask(widened, widened, _CMP_UNORD_Q);
  if (nan == 0) return widened;  // the usual case: no NaN
  const __m512i quiet = _mm512_maskz_slli_epi32(
      kAll16,
      _mm512_and_si512(_mm512_maskz_cvtepu16_epi32(kAll16, half), _mm512_set1_epi32(0x0200)), 13);
  const __m512i bits = _mm512_or_si512(
      _mm512_and_si512(_mm512_castps_si512(widened), _mm512_set1_epi32(~0x00400000)), quiet);
  return _mm512_mask_mov_ps(widened, nan, _mm512_castsi512_ps(bits));
}
inline __m512 canonical_nan(__m512 x) {
  const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  const __m512i bits = _mm512_or_si512(
      _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(static_cast<int>(0x80000000u))),
      _mm512_set1_epi32(0x7fc00000));
  return _mm512_mask_mov_ps(x, nan, _mm512_castsi512_ps(bits));
}
#endif
}  // namespace detail
#endif

inline void load_n(const fp16* src, int n, float* dst) {
  int i = 0;
#if defined(ZT_HOST_F16C)
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) {
    const __m256i half = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
    _mm512_storeu_ps(dst + i,
                     detail::restore_signalling(_mm512_maskz_cvtph_ps(detail::kAll16, half), half));
  }
#endif
  for (; i + 8 <= n; i += 8) {
    const __m128i half = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i));
    _mm256_storeu_ps(dst + i, detail::restore_signalling(_mm256_cvtph_ps(half), half));
  }
#endif
  for (; i < n; ++i) dst[i] = load(src[i]);
}

template <class T>
inline void store_n(const float* src, int n, T* dst) {
  ZT_SIMD
  for (int i = 0; i < n; ++i) dst[i] = store<T>(src[i]);
}
template <>
inline void store_n<float>(const float* src, int n, float* dst) {
  if (n > 0 && src != dst) std::memcpy(dst, src, static_cast<std::size_t>(n) * sizeof(float));
}
template <>
inline void store_n<fp16>(const float* src, int n, fp16* dst) {
  int i = 0;
#if defined(ZT_HOST_F16C)
#if defined(__AVX512F__)
  for (; i + 16 <= n; i += 16) {
    const __m512 x = detail::canonical_nan(_mm512_loadu_ps(src + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                        _mm512_maskz_cvtps_ph(detail::kAll16, x, _MM_FROUND_TO_NEAREST_INT));
  }
#endif
  for (; i + 8 <= n; i += 8) {
    const __m256 x = detail::canonical_nan(_mm256_loadu_ps(src + i));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT));
  }
#endif
  for (; i < n; ++i) dst[i] = store<fp16>(src[i]);
}

#endif  // !__CUDACC__

}  // namespace zt::kernels::ops
