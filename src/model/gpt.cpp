// SPDX-License-Identifier: Apache-2.0
#include "model/gpt.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "kernels/gemm.hpp"
#include "kernels/host/attention.hpp"
#include "kernels/host/layer_kernels.hpp"

namespace zt::model {
namespace {

namespace kh = zt::kernels::host;
using memory::Kind;
using memory::Place;
using zt::kernels::gemm;

memory::TrackedBuffer<float> activations(std::int64_t count) {
  return memory::TrackedBuffer<float>(static_cast<std::size_t>(count), Place::Device,
                                      Kind::Activations);
}

void call(LayerHooks* hooks, void (LayerHooks::*event)(int), int layer) {
  if (hooks != nullptr) (hooks->*event)(layer);
}

// Runs in the constructor's initialiser list, before the registry (12 entries per layer) and
// the activations are allocated: a shape past the limits is refused before it can exhaust
// memory or overflow an int.
const GptConfig& checked_config(const GptConfig& config, int max_micro_batch, int max_seq_len) {
  config.validate();
  if (max_micro_batch <= 0 || max_seq_len <= 0)
    throw std::invalid_argument("Gpt: micro-batch size and sequence length must be positive");
  if (max_seq_len > config.n_positions)
    throw std::invalid_argument("Gpt: sequence length " + std::to_string(max_seq_len) +
                                " exceeds n_positions " + std::to_string(config.n_positions));
  config.check_shape(max_micro_batch, max_seq_len);
  return config;
}

}  // namespace

Gpt::Gpt(const GptConfig& config, int max_micro_batch, int max_seq_len)
    : config_(checked_config(config, max_micro_batch, max_seq_len)),
      registry_(build_parameter_registry(config_)),
      index_{config.n_layer},
      max_B_(max_micro_batch),
      max_T_(max_seq_len),
      last_T_(max_seq_len) {
  const std::int64_t L = config.n_layer;
  const std::int64_t BT = static_cast<std::int64_t>(max_B_) * max_T_;
  const std::int64_t C = config.n_embd;
  const std::int64_t V = config.vocab_size;
  const std::int64_t probs = static_cast<std::int64_t>(max_B_) * config.n_head * max_T_ * max_T_;
  ln1_ = activations(L * BT * C);
  ln1_stats_ = activations(L * 2 * BT);
  qkv_ = activations(L * BT * 3 * C);
  prob_ = activations(L * probs);
  attn_out_ = activations(L * BT * C);
  resid_mid_ = activations(L * BT * C);
  ln2_ = activations(L * BT * C);
  ln2_stats_ = activations(L * 2 * BT);
  fc_pre_ = activations(L * BT * 4 * C);
  fc_act_ = activations(L * BT * 4 * C);
  resid_out_ = activations(L * BT * C);
  embedded_ = activations(BT * C);
  lnf_ = activations(BT * C);
  lnf_stats_ = activations(2 * BT);
  logits_ = activations(BT * V);
  losses_ = activations(BT);
  log_sum_exp_ = activations(BT);
  inputs_ = memory::TrackedBuffer<std::int32_t>(BT, Place::Device, Kind::Activations);
  targets_ = memory::TrackedBuffer<std::int32_t>(BT, Place::Device, Kind::Activations);
  d_resid_ = activations(BT * C);
  d_ln_ = activations(BT * C);
  d_qkv_ = activations(BT * 3 * C);
  d_fc_ = activations(BT * 4 * C);
  attention_scratch_ = activations(kh::attention_backward_scratch_floats(max_T_));
}

double Gpt::activation_bytes(const GptConfig& config, std::int64_t max_micro_batch,
                             std::int64_t max_seq_len) {
  // Mirrors the constructor's allocations, buffer by buffer. Every term is an integer, so the
  // sum is exact while it stays below 2^53.
  const double L = config.n_layer;
  const double B = static_cast<double>(max_micro_batch);
  const double T = static_cast<double>(max_seq_len);
  const double BT = B * T;
  const double C = config.n_embd;
  const double V = config.vocab_size;
  const double probs = B * config.n_head * T * T;
  const double per_layer = BT * C * 16 + 2 * 2 * BT + probs;  // ln1 qkv attn mid ln2 fc act out
  const double floats =
      L * per_layer + BT * C * 2 + 2 * BT + BT * V + 2 * BT +
      BT * C * 9 +  // d_resid, d_ln, d_qkv, d_fc
      // one T x T block per worker thread, multiplied here: in size_t it could wrap
      static_cast<double>(kh::attention_backward_scratch_floats(1)) * T * T;
  return floats * 4 + 2 * BT * 4;  // + inputs and targets (int32)
}

memory::ModelShape Gpt::memory_shape(const GptConfig& config, std::int64_t micro_batch,
                                     std::int64_t seq_len, double persistence_threshold) {
  memory::ModelShape shape;
  const double C = config.n_embd;
  const double V = config.vocab_size;
  const double L = config.n_layer;
  const double block = 12 * C * C + 13 * C;
  // In double, like the planner: num_parameters() would saturate for absurd shapes.
  shape.parameters = V * C + config.n_positions * C + L * block + 2 * C;
  shape.largest_module =
      std::max({V * C, config.n_positions * C, 4 * C * C + 4 * C, 3 * C * C + 3 * C});
  shape.layer = block;
  shape.layers = L;
  shape.tied = V * C;
  shape.tensors = static_cast<double>(config.num_tensors());
  // Landing windows are never smaller than the largest layer's own (untied) parameters: a
  // block, or wpe in the embedding layer.
  shape.largest_own_layer = std::max(block, config.n_positions * C);
  // Every block registers the same tensors, so a one-block registry tells what persists at
  // stage 3 (the engine's rule, DeepSpeed's: tensors of at most the threshold stay gathered)
  // and what each layer gathers; layer 1 stands for each of the n_layer blocks.
  auto one_block = config;
  one_block.n_layer = 1;
  const auto registry = build_parameter_registry(one_block);
  for (std::size_t p = 0; p < registry.size(); ++p) {
    const auto& info = registry[p];
    const double numel = static_cast<double>(info.numel);
    const bool is_block = info.layer == 1;
    if (numel <= persistence_threshold) {
      shape.persistent += is_block ? L * numel : numel;
      continue;
    }
    if (is_block) {
      shape.gathered_layer += numel;
    } else if (p == static_cast<std::size_t>(ParamIndex::wte)) {
      shape.gathered_first += numel;  // the embedding layer and the head both read wte
      shape.gathered_last += numel;
    } else if (info.layer == 0) {
      shape.gathered_first += numel;
    } else {
      shape.gathered_last += numel;
    }
  }
  shape.activation_bytes = activation_bytes(config, micro_batch, seq_len);
  // With activation checkpointing (Megatron's estimate): every block keeps its input, one block
  // at a time is recomputed in full.
  const double inputs =
      4.0 * static_cast<double>(micro_batch) * static_cast<double>(seq_len) * C * L;
  shape.activation_bytes_checkpointed = inputs + activation_bytes(one_block, micro_batch, seq_len);
  return shape;
}

std::vector<int> Gpt::parameters_of_layer(int layer) const {
  const int L = config_.n_layer;
  if (layer < 0 || layer > L + 1)
    throw std::out_of_range("parameters_of_layer: layer " + std::to_string(layer) +
                            " is not in 0.." + std::to_string(L + 1));
  if (layer == 0) return {ParamIndex::wte, ParamIndex::wpe};
  if (layer == L + 1) return {index_.ln_f_weight(), index_.ln_f_bias(), ParamIndex::wte};
  std::vector<int> indices;
  for (int p = 0; p < kParamsPerBlock; ++p)
    indices.push_back(index_.block(layer - 1, static_cast<BlockParam>(p)));
  return indices;
}

double Gpt::flops_per_token_training(int seq_len) const {
  const double C = config_.n_embd;
  const double matmul_params = config_.n_layer * 12.0 * C * C + config_.vocab_size * C;
  // forward: 2 FLOPs per matmul weight, and 2 * 2 * C per attended key (Q·K^T and P·V)
  const double forward =
      2.0 * matmul_params + config_.n_layer * 4.0 * C * (static_cast<double>(seq_len) + 1.0) / 2.0;
  return 3.0 * forward;
}

void Gpt::check_tables(const ParamTable& params, const GradTable* grads) const {
  const auto expected = static_cast<std::size_t>(index_.count());
  if (params.size() != expected)
    throw std::invalid_argument("Gpt: the parameter table has " + std::to_string(params.size()) +
                                " entries, the model " + std::to_string(expected));
  if (grads != nullptr && grads->size() != expected)
    throw std::invalid_argument("Gpt: the gradient table has " + std::to_string(grads->size()) +
                                " entries, the model " + std::to_string(expected));
}

float* Gpt::layer_slice(memory::TrackedBuffer<float>& buffer, std::int64_t per_layer, int block) {
  return buffer.data() + per_layer * block;
}

float Gpt::forward(const ParamTable& params, const std::int32_t* inputs,
                   const std::int32_t* targets, int B, int T, LayerHooks* hooks) {
  check_tables(params, nullptr);
  if (B <= 0 || T <= 0 || B > max_B_ || T > max_T_)
    throw std::invalid_argument("Gpt::forward: B=" + std::to_string(B) +
                                ", T=" + std::to_string(T) + " outside the allocated " +
                                std::to_string(max_B_) + " x " + std::to_string(max_T_));
  const int L = config_.n_layer;
  const int C = config_.n_embd;
  const int V = config_.vocab_size;
  const int BT = B * T;
  const float eps = config_.layer_norm_epsilon;
  for (int i = 0; i < BT; ++i) {
    if (inputs[i] < 0 || inputs[i] >= V || targets[i] < 0 || targets[i] >= V)
      throw std::out_of_range(
          "Gpt::forward: token id " +
          std::to_string(inputs[i] < 0 || inputs[i] >= V ? inputs[i] : targets[i]) +
          " at position " + std::to_string(i) + " is outside [0, " + std::to_string(V) + ")");
    inputs_[i] = inputs[i];
    targets_[i] = targets[i];
  }
  B_ = B;
  T_ = T;
  last_T_ = T;
  // Per-block slices are laid out for the maximal shape; a smaller micro-batch uses the front.
  const std::int64_t slice = static_cast<std::int64_t>(max_B_) * max_T_ * C;
  const std::int64_t stats = 2 * static_cast<std::int64_t>(max_B_) * max_T_;
  const std::int64_t prob_slice =
      static_cast<std::int64_t>(max_B_) * config_.n_head * max_T_ * max_T_;
  const kh::AttentionShape shape{B, T, config_.n_head, C};

  call(hooks, &LayerHooks::before_forward, 0);
  kh::embedding_forward(params[ParamIndex::wte], params[ParamIndex::wpe], inputs_.data(), BT, T, C,
                        embedded_.data());
  call(hooks, &LayerHooks::after_forward, 0);

  for (int l = 0; l < L; ++l) {
    call(hooks, &LayerHooks::before_forward, l + 1);
    auto p = [&](BlockParam which) { return params[index_.block(l, which)]; };
    const float* x = l == 0 ? embedded_.data() : layer_slice(resid_out_, slice, l - 1);
    float* ln1 = layer_slice(ln1_, slice, l);
    float* ln1_stats = layer_slice(ln1_stats_, stats, l);
    float* qkv = layer_slice(qkv_, 3 * slice, l);
    float* prob = layer_slice(prob_, prob_slice, l);
    float* attn_out = layer_slice(attn_out_, slice, l);
    float* mid = layer_slice(resid_mid_, slice, l);
    float* ln2 = layer_slice(ln2_, slice, l);
    float* ln2_stats = layer_slice(ln2_stats_, stats, l);
    float* fc_pre = layer_slice(fc_pre_, 4 * slice, l);
    float* fc_act = layer_slice(fc_act_, 4 * slice, l);
    float* out = layer_slice(resid_out_, slice, l);

    kh::layernorm_forward(x, p(kLn1Weight), p(kLn1Bias), BT, C, eps, ln1, ln1_stats,
                          ln1_stats + BT);
    // qkv = ln1 W^T + b: the bias is written first and the GEMM accumulates onto it.
    kh::bias_fill(p(kAttnQkvBias), BT, 3 * C, qkv);
    gemm(false, true, BT, 3 * C, C, 1.0f, ln1, C, p(kAttnQkvWeight), C, 1.0f, qkv, 3 * C);
    kh::attention_forward(shape, qkv, prob, attn_out);
    // mid = x + attn_out W^T + b (residual and bias written first, GEMM accumulates)
    kh::residual_bias_fill(x, p(kAttnProjBias), BT, C, mid);
    gemm(false, true, BT, C, C, 1.0f, attn_out, C, p(kAttnProjWeight), C, 1.0f, mid, C);
    kh::layernorm_forward(mid, p(kLn2Weight), p(kLn2Bias), BT, C, eps, ln2, ln2_stats,
                          ln2_stats + BT);
    gemm(false, true, BT, 4 * C, C, 1.0f, ln2, C, p(kMlpFcWeight), C, 0.0f, fc_pre, 4 * C);
    kh::bias_gelu_forward(p(kMlpFcBias), BT, 4 * C, fc_pre, fc_act);
    kh::residual_bias_fill(mid, p(kMlpProjBias), BT, C, out);
    gemm(false, true, BT, C, 4 * C, 1.0f, fc_act, 4 * C, p(kMlpProjWeight), 4 * C, 1.0f, out, C);
    call(hooks, &LayerHooks::after_forward, l + 1);
  }

  call(hooks, &LayerHooks::before_forward, L + 1);
  const float* last = L == 0 ? embedded_.data() : layer_slice(resid_out_, slice, L - 1);
  kh::layernorm_forward(last, params[index_.ln_f_weight()], params[index_.ln_f_bias()], BT, C, eps,
                        lnf_.data(), lnf_stats_.data(), lnf_stats_.data() + BT);
  // Tied output layer: logits = lnf wte^T (no bias).
  gemm(false, true, BT, V, C, 1.0f, lnf_.data(), C, params[ParamIndex::wte], C, 0.0f,
       logits_.data(), V);
  const double loss = kh::cross_entropy_forward(logits_.data(), targets_.data(), BT, V,
                                                losses_.data(), log_sum_exp_.data());
  call(hooks, &LayerHooks::after_forward, L + 1);
  have_forward_ = true;
  last_loss_ = static_cast<float>(loss);
  return last_loss_;
}

void Gpt::backward(const ParamTable& params, const GradTable& grads, float loss_scale,
                   LayerHooks* hooks) {
  check_tables(params, &grads);
  if (!have_forward_)
    throw std::logic_error("Gpt::backward needs a forward() first (and one backward per forward)");
  have_forward_ = false;  // the logits buffer becomes their gradient below
  const int L = config_.n_layer;
  const int C = config_.n_embd;
  const int V = config_.vocab_size;
  const int B = B_;
  const int T = T_;
  const int BT = B * T;
  const std::int64_t slice = static_cast<std::int64_t>(max_B_) * max_T_ * C;
  const std::int64_t stats = 2 * static_cast<std::int64_t>(max_B_) * max_T_;
  const std::int64_t prob_slice =
      static_cast<std::int64_t>(max_B_) * config_.n_head * max_T_ * max_T_;
  const kh::AttentionShape shape{B, T, config_.n_head, C};
  float* d_resid = d_resid_.data();
  float* d_ln = d_ln_.data();
  float* d_qkv = d_qkv_.data();
  float* d_fc = d_fc_.data();

  // ---- head: loss, tied projection, final LayerNorm
  call(hooks, &LayerHooks::before_backward, L + 1);
  float* d_logits = logits_.data();
  kh::cross_entropy_backward(targets_.data(), log_sum_exp_.data(), BT, V,
                             loss_scale / static_cast<float>(BT), d_logits);
  gemm(false, false, BT, C, V, 1.0f, d_logits, V, params[ParamIndex::wte], C, 0.0f, d_ln, C);
  gemm(true, false, V, C, BT, 1.0f, d_logits, V, lnf_.data(), C, 1.0f, grads[ParamIndex::wte], C);
  const float* last = L == 0 ? embedded_.data() : layer_slice(resid_out_, slice, L - 1);
  kh::set_zero(d_resid, static_cast<std::int64_t>(BT) * C);
  kh::layernorm_backward(d_ln, last, params[index_.ln_f_weight()], lnf_stats_.data(),
                         lnf_stats_.data() + BT, BT, C, d_resid, grads[index_.ln_f_weight()],
                         grads[index_.ln_f_bias()]);
  call(hooks, &LayerHooks::after_backward, L + 1);

  // ---- blocks, last to first; d_resid holds d(loss)/d(block output) on entry
  for (int l = L - 1; l >= 0; --l) {
    call(hooks, &LayerHooks::before_backward, l + 1);
    auto p = [&](BlockParam which) { return params[index_.block(l, which)]; };
    auto g = [&](BlockParam which) { return grads[index_.block(l, which)]; };
    const float* x = l == 0 ? embedded_.data() : layer_slice(resid_out_, slice, l - 1);
    const float* ln1 = layer_slice(ln1_, slice, l);
    const float* ln1_stats = layer_slice(ln1_stats_, stats, l);
    const float* qkv = layer_slice(qkv_, 3 * slice, l);
    const float* prob = layer_slice(prob_, prob_slice, l);
    const float* attn_out = layer_slice(attn_out_, slice, l);
    const float* mid = layer_slice(resid_mid_, slice, l);
    const float* ln2 = layer_slice(ln2_, slice, l);
    const float* ln2_stats = layer_slice(ln2_stats_, stats, l);
    const float* fc_pre = layer_slice(fc_pre_, 4 * slice, l);
    const float* fc_act = layer_slice(fc_act_, 4 * slice, l);

    // MLP output projection: out = mid + fc_act Wp^T + bp
    gemm(true, false, C, 4 * C, BT, 1.0f, d_resid, C, fc_act, 4 * C, 1.0f, g(kMlpProjWeight),
         4 * C);
    kh::bias_backward(d_resid, BT, C, g(kMlpProjBias));
    gemm(false, false, BT, 4 * C, C, 1.0f, d_resid, C, p(kMlpProjWeight), 4 * C, 0.0f, d_fc, 4 * C);
    kh::gelu_backward(fc_pre, BT, 4 * C, d_fc);
    // MLP input projection: fc_pre = ln2 Wfc^T + bfc
    gemm(true, false, 4 * C, C, BT, 1.0f, d_fc, 4 * C, ln2, C, 1.0f, g(kMlpFcWeight), C);
    kh::bias_backward(d_fc, BT, 4 * C, g(kMlpFcBias));
    gemm(false, false, BT, C, 4 * C, 1.0f, d_fc, 4 * C, p(kMlpFcWeight), C, 0.0f, d_ln, C);
    // ln2; its input gradient adds onto the residual stream's: d_resid becomes d(mid)
    kh::layernorm_backward(d_ln, mid, p(kLn2Weight), ln2_stats, ln2_stats + BT, BT, C, d_resid,
                           g(kLn2Weight), g(kLn2Bias));
    // attention output projection: mid = x + attn_out Wo^T + bo (d_ln reused for d attn_out)
    gemm(true, false, C, C, BT, 1.0f, d_resid, C, attn_out, C, 1.0f, g(kAttnProjWeight), C);
    kh::bias_backward(d_resid, BT, C, g(kAttnProjBias));
    gemm(false, false, BT, C, C, 1.0f, d_resid, C, p(kAttnProjWeight), C, 0.0f, d_ln, C);
    kh::attention_backward(shape, d_ln, qkv, prob, d_qkv, attention_scratch_.data());
    // qkv = ln1 Wqkv^T + bqkv
    gemm(true, false, 3 * C, C, BT, 1.0f, d_qkv, 3 * C, ln1, C, 1.0f, g(kAttnQkvWeight), C);
    kh::bias_backward(d_qkv, BT, 3 * C, g(kAttnQkvBias));
    // Softmax ignores a shift of a query's scores, so the key bias has exactly zero gradient;
    // the column sums above leave rounding noise there, which Adam would turn into updates that
    // differ from one world size (summation order) to another.
    kh::set_zero(g(kAttnQkvBias) + C, C);
    gemm(false, false, BT, C, 3 * C, 1.0f, d_qkv, 3 * C, p(kAttnQkvWeight), C, 0.0f, d_ln, C);
    // ln1: d_resid becomes d(x), the previous block's output gradient
    kh::layernorm_backward(d_ln, x, p(kLn1Weight), ln1_stats, ln1_stats + BT, BT, C, d_resid,
                           g(kLn1Weight), g(kLn1Bias));
    call(hooks, &LayerHooks::after_backward, l + 1);
  }

  call(hooks, &LayerHooks::before_backward, 0);
  kh::embedding_backward(d_resid, inputs_.data(), BT, T, C, grads[ParamIndex::wte],
                         grads[ParamIndex::wpe]);
  call(hooks, &LayerHooks::after_backward, 0);
}

}  // namespace zt::model
