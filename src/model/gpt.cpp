// SPDX-License-Identifier: Apache-2.0
#include "model/gpt.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "kernels/host/attention.hpp"

namespace zt::model {
namespace {

using backend::Buffer;
using backend::ConstView;
using backend::DType;
using backend::View;
using memory::Kind;
using memory::Place;

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

DType checked_dtype(DType dtype) {
  if (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16)
    throw std::invalid_argument(std::string("Gpt: activations cannot be ") +
                                kernels::dtype_name(dtype));
  return dtype;
}

// Elements of the attention backward scratch: one T x T fp32 block per worker thread.
std::int64_t attention_scratch_elements(backend::Backend& backend, int seq_len) {
  return backend.attention_backward_scratch(seq_len);
}

}  // namespace

Gpt::Gpt(const GptConfig& config, int max_micro_batch, int max_seq_len, backend::DType dtype,
         backend::Backend* backend)
    : config_(checked_config(config, max_micro_batch, max_seq_len)),
      dtype_(checked_dtype(dtype)),
      backend_(backend != nullptr ? *backend : backend::host_backend()),
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
  const Place place = backend_.compute_place();
  auto activations = [&](std::int64_t count) {
    return Buffer(dtype_, count, place, Kind::Activations);
  };
  auto statistics = [&](std::int64_t count) {
    return Buffer(DType::F32, count, place, Kind::Activations);
  };
  ln1_ = activations(L * BT * C);
  ln1_stats_ = statistics(L * 2 * BT);
  qkv_ = activations(L * BT * 3 * C);
  prob_ = activations(L * probs);
  attn_out_ = activations(L * BT * C);
  resid_mid_ = activations(L * BT * C);
  ln2_ = activations(L * BT * C);
  ln2_stats_ = statistics(L * 2 * BT);
  fc_pre_ = activations(L * BT * 4 * C);
  fc_act_ = activations(L * BT * 4 * C);
  resid_out_ = activations(L * BT * C);
  embedded_ = activations(BT * C);
  lnf_ = activations(BT * C);
  lnf_stats_ = statistics(2 * BT);
  logits_ = activations(BT * V);
  losses_ = statistics(BT);
  log_sum_exp_ = statistics(BT);
  inputs_ = Buffer(DType::I32, BT, place, Kind::Activations);
  targets_ = Buffer(DType::I32, BT, place, Kind::Activations);
  d_resid_ = activations(BT * C);
  d_ln_ = activations(BT * C);
  d_qkv_ = activations(BT * 3 * C);
  d_fc_ = activations(BT * 4 * C);
  attention_scratch_ = statistics(attention_scratch_elements(backend_, max_T_));
}

double Gpt::activation_bytes(const GptConfig& config, std::int64_t max_micro_batch,
                             std::int64_t max_seq_len, backend::DType dtype) {
  // Mirrors the constructor's allocations, buffer by buffer. Every term is an integer, so the
  // sum is exact while it stays below 2^53.
  const double L = config.n_layer;
  const double B = static_cast<double>(max_micro_batch);
  const double T = static_cast<double>(max_seq_len);
  const double BT = B * T;
  const double C = config.n_embd;
  const double V = config.vocab_size;
  const double probs = B * config.n_head * T * T;
  const double element = kernels::size_of(dtype);
  // ln1 qkv attn mid ln2 fc act out, and the attention probabilities: the model's dtype
  const double per_layer = (BT * C * 16 + probs) * element + 2 * 2 * BT * 4;  // + LN statistics
  const double modelled = L * per_layer +
                          (BT * C * 2 + BT * V) * element +  // embedded, lnf, logits
                          (2 * BT + 2 * BT) * 4 +            // lnf statistics, losses, log_sum_exp
                          BT * C * 9 * element;              // d_resid, d_ln, d_qkv, d_fc
  // one T x T fp32 block per worker thread, multiplied here: in size_t it could wrap
  const double scratch =
      static_cast<double>(kernels::host::attention_backward_scratch_floats(1)) * T * T * 4;
  return modelled + scratch + 2 * BT * 4;  // + inputs and targets (int32)
}

memory::ModelShape Gpt::memory_shape(const GptConfig& config, std::int64_t micro_batch,
                                     std::int64_t seq_len, double persistence_threshold,
                                     backend::DType dtype) {
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
  shape.activation_bytes = activation_bytes(config, micro_batch, seq_len, dtype);
  // With activation checkpointing (Megatron's estimate): every block keeps its input, one block
  // at a time is recomputed in full.
  const double inputs = kernels::size_of(dtype) * static_cast<double>(micro_batch) *
                        static_cast<double>(seq_len) * C * L;
  shape.activation_bytes_checkpointed =
      inputs + activation_bytes(one_block, micro_batch, seq_len, dtype);
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
  auto check = [&](const char* table, std::size_t p, DType dtype, std::int64_t count) {
    if (dtype != dtype_ || count < registry_[p].numel)
      throw std::invalid_argument(
          std::string("Gpt: the ") + table + " table's " + registry_[p].name + " views " +
          std::to_string(count) + " " + kernels::dtype_name(dtype) + " elements, the model needs " +
          std::to_string(registry_[p].numel) + " " + kernels::dtype_name(dtype_));
  };
  for (std::size_t p = 0; p < expected; ++p) {
    if (params[p].data != nullptr) check("parameter", p, params[p].dtype, params[p].count);
    if (grads != nullptr && (*grads)[p].data != nullptr)
      check("gradient", p, (*grads)[p].dtype, (*grads)[p].count);
  }
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
  }
  // The tokens come from the data loader in host memory; the ops read them at the compute place.
  auto copy_inputs =
      backend_.copy_async(ConstView{inputs, BT, DType::I32, Place::Host}, inputs_.slice(0, BT));
  auto copy_targets =
      backend_.copy_async(ConstView{targets, BT, DType::I32, Place::Host}, targets_.slice(0, BT));
  copy_inputs.wait();
  copy_targets.wait();
  B_ = B;
  T_ = T;
  last_T_ = T;
  // Per-block slices are laid out for the maximal shape; a smaller micro-batch uses the front.
  const std::int64_t slice = static_cast<std::int64_t>(max_B_) * max_T_ * C;
  const std::int64_t stats = 2 * static_cast<std::int64_t>(max_B_) * max_T_;
  const std::int64_t prob_slice =
      static_cast<std::int64_t>(max_B_) * config_.n_head * max_T_ * max_T_;
  const std::int64_t rows_C = static_cast<std::int64_t>(BT) * C;
  const backend::AttentionShape shape{B, T, config_.n_head, C};
  auto& be = backend_;
  // Layer l's part of a per-block activation: `count` elements of block l's slice.
  auto at = [](Buffer& buffer, std::int64_t per_layer, int l, std::int64_t count) {
    return buffer.slice(per_layer * l, count);
  };

  call(hooks, &LayerHooks::before_forward, 0);
  be.embedding_forward(params[ParamIndex::wte], params[ParamIndex::wpe], inputs_.view(), BT, T, C,
                       embedded_.slice(0, rows_C));
  call(hooks, &LayerHooks::after_forward, 0);

  for (int l = 0; l < L; ++l) {
    call(hooks, &LayerHooks::before_forward, l + 1);
    auto p = [&](BlockParam which) { return params[index_.block(l, which)]; };
    const ConstView x = l == 0 ? embedded_.slice(0, rows_C) : at(resid_out_, slice, l - 1, rows_C);
    const View ln1 = at(ln1_, slice, l, rows_C);
    const View ln1_stats = at(ln1_stats_, stats, l, 2 * BT);
    const View qkv = at(qkv_, 3 * slice, l, 3 * rows_C);
    const View prob = prob_.slice(prob_slice * l, prob_slice);
    const View attn_out = at(attn_out_, slice, l, rows_C);
    const View mid = at(resid_mid_, slice, l, rows_C);
    const View ln2 = at(ln2_, slice, l, rows_C);
    const View ln2_stats = at(ln2_stats_, stats, l, 2 * BT);
    const View fc_pre = at(fc_pre_, 4 * slice, l, 4 * rows_C);
    const View fc_act = at(fc_act_, 4 * slice, l, 4 * rows_C);
    const View out = at(resid_out_, slice, l, rows_C);

    be.layernorm_forward(x, p(kLn1Weight), p(kLn1Bias), BT, C, eps, ln1, ln1_stats.slice(0, BT),
                         ln1_stats.slice(BT, BT));
    // qkv = ln1 W^T + b: the bias is written first and the GEMM accumulates onto it.
    be.bias_fill(p(kAttnQkvBias), BT, 3 * C, qkv);
    be.gemm(false, true, BT, 3 * C, C, 1.0f, ln1, C, p(kAttnQkvWeight), C, 1.0f, qkv, 3 * C);
    be.attention_forward(shape, qkv, prob, attn_out);
    // mid = x + attn_out W^T + b (residual and bias written first, GEMM accumulates)
    be.residual_bias_fill(x, p(kAttnProjBias), BT, C, mid);
    be.gemm(false, true, BT, C, C, 1.0f, attn_out, C, p(kAttnProjWeight), C, 1.0f, mid, C);
    be.layernorm_forward(mid, p(kLn2Weight), p(kLn2Bias), BT, C, eps, ln2, ln2_stats.slice(0, BT),
                         ln2_stats.slice(BT, BT));
    be.gemm(false, true, BT, 4 * C, C, 1.0f, ln2, C, p(kMlpFcWeight), C, 0.0f, fc_pre, 4 * C);
    be.bias_gelu_forward(p(kMlpFcBias), BT, 4 * C, fc_pre, fc_act);
    be.residual_bias_fill(mid, p(kMlpProjBias), BT, C, out);
    be.gemm(false, true, BT, C, 4 * C, 1.0f, fc_act, 4 * C, p(kMlpProjWeight), 4 * C, 1.0f, out, C);
    call(hooks, &LayerHooks::after_forward, l + 1);
  }

  call(hooks, &LayerHooks::before_forward, L + 1);
  const ConstView last = L == 0 ? embedded_.slice(0, rows_C) : at(resid_out_, slice, L - 1, rows_C);
  const View lnf = lnf_.slice(0, rows_C);
  be.layernorm_forward(last, params[index_.ln_f_weight()], params[index_.ln_f_bias()], BT, C, eps,
                       lnf, lnf_stats_.slice(0, BT), lnf_stats_.slice(BT, BT));
  // Tied output layer: logits = lnf wte^T (no bias).
  const View logits = logits_.slice(0, static_cast<std::int64_t>(BT) * V);
  be.gemm(false, true, BT, V, C, 1.0f, lnf, C, params[ParamIndex::wte], C, 0.0f, logits, V);
  const double loss = be.cross_entropy_forward(logits, targets_.view(), BT, V, losses_.slice(0, BT),
                                               log_sum_exp_.slice(0, BT));
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
  const std::int64_t rows_C = static_cast<std::int64_t>(BT) * C;
  const backend::AttentionShape shape{B, T, config_.n_head, C};
  auto& be = backend_;
  auto at = [](Buffer& buffer, std::int64_t per_layer, int l, std::int64_t count) {
    return buffer.slice(per_layer * l, count);
  };
  const View d_resid = d_resid_.slice(0, rows_C);
  const View d_ln = d_ln_.slice(0, rows_C);
  const View d_qkv = d_qkv_.slice(0, 3 * rows_C);
  const View d_fc = d_fc_.slice(0, 4 * rows_C);

  // ---- head: loss, tied projection, final LayerNorm
  call(hooks, &LayerHooks::before_backward, L + 1);
  const View d_logits = logits_.slice(0, static_cast<std::int64_t>(BT) * V);
  be.cross_entropy_backward(targets_.slice(0, BT), log_sum_exp_.slice(0, BT), BT, V,
                            loss_scale / static_cast<float>(BT), d_logits);
  be.gemm(false, false, BT, C, V, 1.0f, d_logits, V, params[ParamIndex::wte], C, 0.0f, d_ln, C);
  be.gemm(true, false, V, C, BT, 1.0f, d_logits, V, lnf_.slice(0, rows_C), C, 1.0f,
          grads[ParamIndex::wte], C);
  const ConstView last = L == 0 ? embedded_.slice(0, rows_C) : at(resid_out_, slice, L - 1, rows_C);
  be.set_zero(d_resid);
  be.layernorm_backward(d_ln, last, params[index_.ln_f_weight()], lnf_stats_.slice(0, BT),
                        lnf_stats_.slice(BT, BT), BT, C, d_resid, grads[index_.ln_f_weight()],
                        grads[index_.ln_f_bias()]);
  call(hooks, &LayerHooks::after_backward, L + 1);

  // ---- blocks, last to first; d_resid holds d(loss)/d(block output) on entry
  for (int l = L - 1; l >= 0; --l) {
    call(hooks, &LayerHooks::before_backward, l + 1);
    auto p = [&](BlockParam which) { return params[index_.block(l, which)]; };
    auto g = [&](BlockParam which) { return grads[index_.block(l, which)]; };
    const ConstView x = l == 0 ? embedded_.slice(0, rows_C) : at(resid_out_, slice, l - 1, rows_C);
    const ConstView ln1 = at(ln1_, slice, l, rows_C);
    const ConstView ln1_stats = at(ln1_stats_, stats, l, 2 * BT);
    const ConstView qkv = at(qkv_, 3 * slice, l, 3 * rows_C);
    const ConstView prob = prob_.slice(prob_slice * l, prob_slice);
    const ConstView attn_out = at(attn_out_, slice, l, rows_C);
    const ConstView mid = at(resid_mid_, slice, l, rows_C);
    const ConstView ln2 = at(ln2_, slice, l, rows_C);
    const ConstView ln2_stats = at(ln2_stats_, stats, l, 2 * BT);
    const ConstView fc_pre = at(fc_pre_, 4 * slice, l, 4 * rows_C);
    const ConstView fc_act = at(fc_act_, 4 * slice, l, 4 * rows_C);

    // MLP output projection: out = mid + fc_act Wp^T + bp
    be.gemm(true, false, C, 4 * C, BT, 1.0f, d_resid, C, fc_act, 4 * C, 1.0f, g(kMlpProjWeight),
            4 * C);
    be.bias_backward(d_resid, BT, C, g(kMlpProjBias));
    be.gemm(false, false, BT, 4 * C, C, 1.0f, d_resid, C, p(kMlpProjWeight), 4 * C, 0.0f, d_fc,
            4 * C);
    be.gelu_backward(fc_pre, BT, 4 * C, d_fc);
    // MLP input projection: fc_pre = ln2 Wfc^T + bfc
    be.gemm(true, false, 4 * C, C, BT, 1.0f, d_fc, 4 * C, ln2, C, 1.0f, g(kMlpFcWeight), C);
    be.bias_backward(d_fc, BT, 4 * C, g(kMlpFcBias));
    be.gemm(false, false, BT, C, 4 * C, 1.0f, d_fc, 4 * C, p(kMlpFcWeight), C, 0.0f, d_ln, C);
    // ln2; its input gradient adds onto the residual stream's: d_resid becomes d(mid)
    be.layernorm_backward(d_ln, mid, p(kLn2Weight), ln2_stats.slice(0, BT), ln2_stats.slice(BT, BT),
                          BT, C, d_resid, g(kLn2Weight), g(kLn2Bias));
    // attention output projection: mid = x + attn_out Wo^T + bo (d_ln reused for d attn_out)
    be.gemm(true, false, C, C, BT, 1.0f, d_resid, C, attn_out, C, 1.0f, g(kAttnProjWeight), C);
    be.bias_backward(d_resid, BT, C, g(kAttnProjBias));
    be.gemm(false, false, BT, C, C, 1.0f, d_resid, C, p(kAttnProjWeight), C, 0.0f, d_ln, C);
    be.attention_backward(shape, d_ln, qkv, prob, d_qkv, attention_scratch_.view());
    // qkv = ln1 Wqkv^T + bqkv
    be.gemm(true, false, 3 * C, C, BT, 1.0f, d_qkv, 3 * C, ln1, C, 1.0f, g(kAttnQkvWeight), C);
    be.bias_backward(d_qkv, BT, 3 * C, g(kAttnQkvBias));
    // Softmax ignores a shift of a query's scores, so the key bias has exactly zero gradient;
    // the column sums above leave rounding noise there, which Adam would turn into updates that
    // differ from one world size (summation order) to another.
    be.set_zero(g(kAttnQkvBias).slice(C, C));
    be.gemm(false, false, BT, C, 3 * C, 1.0f, d_qkv, 3 * C, p(kAttnQkvWeight), C, 0.0f, d_ln, C);
    // ln1: d_resid becomes d(x), the previous block's output gradient
    be.layernorm_backward(d_ln, x, p(kLn1Weight), ln1_stats.slice(0, BT), ln1_stats.slice(BT, BT),
                          BT, C, d_resid, g(kLn1Weight), g(kLn1Bias));
    call(hooks, &LayerHooks::after_backward, l + 1);
  }

  call(hooks, &LayerHooks::before_backward, 0);
  be.embedding_backward(d_resid, inputs_.slice(0, BT), BT, T, C, grads[ParamIndex::wte],
                        grads[ParamIndex::wpe]);
  call(hooks, &LayerHooks::after_backward, 0);
}

}  // namespace zt::model
