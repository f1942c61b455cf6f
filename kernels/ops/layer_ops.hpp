// SPDX-License-Identifier: Apache-2.0
// Op bodies of the GPT-2 layers, one function per op, written once for host and device.
//
// Conventions: activations are row-major (rows = B*T positions, columns = channels).
// "Row" bodies handle one position and are launched in parallel over rows. Parameter
// gradients are sums over rows; "column" bodies accumulate one channel block over all
// rows, so launchers parallelise over channels without atomics and the result does not
// depend on the thread count (bitwise reproducible). Every parameter gradient is
// ACCUMULATED (+=), activation gradients are written (=) unless said otherwise.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/ops/host_device.hpp"

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

// ---- embedding ---------------------------------------------------------------------------

/// out[c] = wte[token, c] + wpe[position, c]
ZT_HOST_DEVICE inline void embedding_forward_row(const float* wte, const float* wpe,
                                                 std::int32_t token, int position, int channels,
                                                 float* out) {
  const float* token_row = wte + static_cast<std::int64_t>(token) * channels;
  const float* position_row = wpe + static_cast<std::int64_t>(position) * channels;
  for (int c = 0; c < channels; ++c) out[c] = token_row[c] + position_row[c];
}

/// Channels [c_begin, c_end) of both embedding gradients, summed over all rows:
/// dwte[token(r), c] and dwpe[r mod T, c] += dout[r, c]. Calls on disjoint channel ranges
/// touch disjoint parts of dwte/dwpe, so they run in parallel without atomics even when a
/// token repeats; a block of 16 channels reads whole cache lines of each row.
ZT_HOST_DEVICE inline void embedding_backward_channels(const float* dout,
                                                       const std::int32_t* tokens, int rows,
                                                       int seq_len, int channels, int c_begin,
                                                       int c_end, float* dwte, float* dwpe) {
  for (int r = 0; r < rows; ++r) {
    const float* g = dout + static_cast<std::int64_t>(r) * channels;
    float* token_grad = dwte + static_cast<std::int64_t>(tokens[r]) * channels;
    float* position_grad = dwpe + static_cast<std::int64_t>(r % seq_len) * channels;
    for (int c = c_begin; c < c_end; ++c) {
      token_grad[c] += g[c];
      position_grad[c] += g[c];
    }
  }
}

// ---- layer normalisation -------------------------------------------------------------------

/// out = (x - mean) * rstd * weight + bias with the biased variance (divide by C), as
/// GPT-2 / PyTorch. Saves mean and rstd for the backward pass.
ZT_HOST_DEVICE inline void layernorm_forward_row(const float* x, const float* weight,
                                                 const float* bias, int channels, float epsilon,
                                                 float* out, float* mean_out, float* rstd_out) {
  float sum = 0.0f;
  for (int c = 0; c < channels; ++c) sum += x[c];
  const float mean = sum / static_cast<float>(channels);
  float sum_sq = 0.0f;  // two passes: avoids the cancellation of E[x^2] - mean^2
  for (int c = 0; c < channels; ++c) {
    const float d = x[c] - mean;
    sum_sq += d * d;
  }
  const float rstd = 1.0f / sqrtf(sum_sq / static_cast<float>(channels) + epsilon);
  for (int c = 0; c < channels; ++c) out[c] = (x[c] - mean) * rstd * weight[c] + bias[c];
  *mean_out = mean;
  *rstd_out = rstd;
}

/// Input gradient of one row, ADDED to dx (the residual stream's gradient flows through):
/// dx += rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dout * weight.
ZT_HOST_DEVICE inline void layernorm_backward_input_row(const float* dout, const float* x,
                                                        const float* weight, float mean, float rstd,
                                                        int channels, float* dx) {
  float mean_g = 0.0f;
  float mean_g_xhat = 0.0f;
  for (int c = 0; c < channels; ++c) {
    const float g = dout[c] * weight[c];
    mean_g += g;
    mean_g_xhat += g * (x[c] - mean) * rstd;
  }
  mean_g /= static_cast<float>(channels);
  mean_g_xhat /= static_cast<float>(channels);
  for (int c = 0; c < channels; ++c) {
    const float xhat = (x[c] - mean) * rstd;
    dx[c] += rstd * (dout[c] * weight[c] - mean_g - xhat * mean_g_xhat);
  }
}

/// Weight and bias gradients of channels [c_begin, c_end) summed over all rows:
/// dweight[c] += sum dout*xhat, dbias[c] += sum dout.
ZT_HOST_DEVICE inline void layernorm_backward_params_channels(const float* dout, const float* x,
                                                              const float* mean, const float* rstd,
                                                              int rows, int channels, int c_begin,
                                                              int c_end, float* dweight,
                                                              float* dbias) {
  for (int r = 0; r < rows; ++r) {
    const std::int64_t row = static_cast<std::int64_t>(r) * channels;
    for (int c = c_begin; c < c_end; ++c) {
      dweight[c] += dout[row + c] * (x[row + c] - mean[r]) * rstd[r];
      dbias[c] += dout[row + c];
    }
  }
}

// ---- bias, residual ------------------------------------------------------------------------

/// out[j] = bias[j]: fills a GEMM output row so the GEMM can accumulate onto it (beta = 1),
/// which adds the bias without an extra pass over the output.
ZT_HOST_DEVICE inline void bias_fill_row(const float* bias, int width, float* out) {
  for (int j = 0; j < width; ++j) out[j] = bias[j];
}

/// out[j] += bias[j]
ZT_HOST_DEVICE inline void bias_add_row(const float* bias, int width, float* out) {
  for (int j = 0; j < width; ++j) out[j] += bias[j];
}

/// out[j] = residual[j] + bias[j]: the start of "x + proj(y) + b", finished by a GEMM
/// accumulating proj(y) onto out (residual and bias add fused into the GEMM's beta = 1).
ZT_HOST_DEVICE inline void residual_bias_fill_row(const float* residual, const float* bias,
                                                  int width, float* out) {
  for (int j = 0; j < width; ++j) out[j] = residual[j] + bias[j];
}

/// out[j] = a[j] + b[j]
ZT_HOST_DEVICE inline void residual_add_row(const float* a, const float* b, int width, float* out) {
  for (int j = 0; j < width; ++j) out[j] = a[j] + b[j];
}

/// dbias[j] += sum over rows of dout[r, j], for j in [j_begin, j_end)
ZT_HOST_DEVICE inline void bias_backward_channels(const float* dout, int rows, int width,
                                                  int j_begin, int j_end, float* dbias) {
  for (int r = 0; r < rows; ++r) {
    const float* row = dout + static_cast<std::int64_t>(r) * width;
    for (int j = j_begin; j < j_end; ++j) dbias[j] += row[j];
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
/// GEMM output is read once anyway; pre (with bias) is kept for the backward pass.
ZT_HOST_DEVICE inline void bias_gelu_forward_row(const float* bias, int width, float* pre,
                                                 float* out) {
  for (int j = 0; j < width; ++j) {
    const float v = pre[j] + bias[j];
    pre[j] = v;
    out[j] = gelu_tanh(v);
  }
}

/// grad[j] *= gelu'(pre[j]) (in place: the gradient of the GELU output becomes the gradient of
/// its input)
ZT_HOST_DEVICE inline void gelu_backward_row(const float* pre, int width, float* grad) {
  for (int j = 0; j < width; ++j) grad[j] *= gelu_tanh_derivative(pre[j]);
}

// ---- causal softmax of attention scores ------------------------------------------------------

/// Row t of one (batch, head) score matrix, in place: p[j] = softmax(scale * s[0..t])[j] for
/// j <= t and 0 for j > t (causal). `row_length` is the stored width (>= t + 1); the entries
/// past t are zeroed so a following GEMM may read them.
ZT_HOST_DEVICE inline void causal_softmax_forward_row(int t, int row_length, float scale,
                                                      float* scores) {
  float max_value = -INFINITY;
  for (int j = 0; j <= t; ++j) {
    const float v = scale * scores[j];
    max_value = v > max_value ? v : max_value;
  }
  float lane_sum[kReductionLanes] = {};
  int j = 0;
  for (; j + kReductionLanes <= t + 1; j += kReductionLanes)
    for (int k = 0; k < kReductionLanes; ++k) {
      const float e = fast_exp(scale * scores[j + k] - max_value);
      scores[j + k] = e;
      lane_sum[k] += e;
    }
  for (; j <= t; ++j) {
    const float e = fast_exp(scale * scores[j] - max_value);
    scores[j] = e;
    lane_sum[0] += e;
  }
  float sum = 0.0f;
  for (int k = 0; k < kReductionLanes; ++k) sum += lane_sum[k];
  const float inv_sum = 1.0f / sum;
  for (j = 0; j <= t; ++j) scores[j] *= inv_sum;
  for (j = t + 1; j < row_length; ++j) scores[j] = 0.0f;
}

/// Backward of row t, in place on dprob: ds[j] = scale * p[j] * (dp[j] - sum_k p[k] dp[k]),
/// i.e. the gradient of the raw (unscaled) scores Q·K^T; zero past t.
ZT_HOST_DEVICE inline void causal_softmax_backward_row(int t, int row_length, float scale,
                                                       const float* prob, float* dprob) {
  float lane_dot[kReductionLanes] = {};
  int j = 0;
  for (; j + kReductionLanes <= t + 1; j += kReductionLanes)
    for (int k = 0; k < kReductionLanes; ++k) lane_dot[k] += prob[j + k] * dprob[j + k];
  for (; j <= t; ++j) lane_dot[0] += prob[j] * dprob[j];
  float dot = 0.0f;
  for (int k = 0; k < kReductionLanes; ++k) dot += lane_dot[k];
  for (j = 0; j <= t; ++j) dprob[j] = scale * prob[j] * (dprob[j] - dot);
  for (j = t + 1; j < row_length; ++j) dprob[j] = 0.0f;
}

// ---- cross-entropy over the vocabulary -------------------------------------------------------

/// Forward of one position: returns -log softmax(logits)[target] and saves the row's
/// log-sum-exp so the backward pass needs no second reduction.
ZT_HOST_DEVICE inline float cross_entropy_forward_row(const float* logits, int vocab_size,
                                                      std::int32_t target, float* log_sum_exp_out) {
  float lane_max[kReductionLanes];
  for (int k = 0; k < kReductionLanes; ++k) lane_max[k] = -INFINITY;
  int v = 0;
  for (; v + kReductionLanes <= vocab_size; v += kReductionLanes)
    for (int k = 0; k < kReductionLanes; ++k)
      lane_max[k] = logits[v + k] > lane_max[k] ? logits[v + k] : lane_max[k];
  for (; v < vocab_size; ++v) lane_max[0] = logits[v] > lane_max[0] ? logits[v] : lane_max[0];
  float max_value = lane_max[0];
  for (int k = 1; k < kReductionLanes; ++k)
    max_value = lane_max[k] > max_value ? lane_max[k] : max_value;
  float lane_sum[kReductionLanes] = {};
  for (v = 0; v + kReductionLanes <= vocab_size; v += kReductionLanes)
    for (int k = 0; k < kReductionLanes; ++k) lane_sum[k] += fast_exp(logits[v + k] - max_value);
  for (; v < vocab_size; ++v) lane_sum[0] += fast_exp(logits[v] - max_value);
  float sum = 0.0f;
  for (int k = 0; k < kReductionLanes; ++k) sum += lane_sum[k];
  const float log_sum_exp = max_value + logf(sum);
  *log_sum_exp_out = log_sum_exp;
  return log_sum_exp - logits[target];
}

/// Backward of one position, in place: logits become d(loss_scale * mean loss)/d logits =
/// grad_scale * (softmax - onehot(target)), grad_scale = loss_scale / (B*T).
ZT_HOST_DEVICE inline void cross_entropy_backward_row(int vocab_size, std::int32_t target,
                                                      float log_sum_exp, float grad_scale,
                                                      float* logits_to_grad) {
  for (int v = 0; v < vocab_size; ++v)
    logits_to_grad[v] = grad_scale * fast_exp(logits_to_grad[v] - log_sum_exp);
  logits_to_grad[target] -= grad_scale;
}

}  // namespace zt::kernels::ops
