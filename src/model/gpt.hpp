// SPDX-License-Identifier: Apache-2.0
// GPT-2 (pre-LayerNorm, learned positions, GELU tanh, tied embeddings) with hand-written
// forward and backward passes. The model owns only its activations: parameters and
// gradients are tables of typed views into buffers the ZeRO engine owns, so the same code runs
// unsharded, with partitioned gradients (stage 2) or gathered-per-layer parameters (stage 3).
// Every op, GEMM and copy runs through a backend::Backend, in the model's dtype (fp32, fp16 or
// bf16 storage; fp32 arithmetic, LayerNorm statistics and loss).
#pragma once

#include <cstdint>
#include <vector>

#include "backend/backend.hpp"
#include "memory/planner.hpp"
#include "memory/tracker.hpp"
#include "model/gpt_config.hpp"
#include "model/parameters.hpp"

namespace zt::model {

/// By registry index; each entry views numel elements of the model's dtype at the compute place.
using ParamTable = std::vector<backend::ConstView>;
using GradTable = std::vector<backend::View>;

/// Called around each layer: layer 0 = embeddings, 1..n_layer = blocks, n_layer+1 = final
/// LayerNorm + tied output projection + loss. Forward runs 0 .. n_layer+1, backward
/// n_layer+1 .. 0. The model reads a layer's entries of the ParamTable / GradTable only after
/// before_forward / before_backward of that layer returned, so a hook may point them at freshly
/// gathered buffers (stage 3) or at a gradient bucket (stage 2). wte belongs to layers 0 and
/// n_layer+1: its gradient is complete only after layer 0's backward.
struct LayerHooks {
  virtual ~LayerHooks() = default;
  virtual void before_forward(int /*layer*/) {}
  virtual void after_forward(int /*layer*/) {}
  virtual void before_backward(int /*layer*/) {}
  virtual void after_backward(int /*layer*/) {}
};

class Gpt {
 public:
  /// Allocates every activation for micro-batches up to max_micro_batch x max_seq_len once
  /// (tracked as Kind::Activations on Place::Device); forward/backward never allocate. Checks
  /// the shape first (GptConfig::check_shape): a model or micro-batch past zerotrain's limits
  /// is a ConfigError, before anything is allocated.
  /// Ops run on `backend` (the process's host backend when null), activations are stored in
  /// `dtype` (F32, F16 or BF16), and the parameter and gradient tables must be of that dtype.
  Gpt(const GptConfig& config, int max_micro_batch, int max_seq_len,
      backend::DType dtype = backend::DType::F32, backend::Backend* backend = nullptr);

  /// Bytes of activations and work space the constructor allocates for these sizes (what the
  /// memory tracker will count as activations). In double so that any shape, even one the
  /// constructor refuses, gives a number instead of an overflow; exact below 2^53 bytes (8 PiB).
  static double activation_bytes(const GptConfig& config, std::int64_t max_micro_batch,
                                 std::int64_t max_seq_len,
                                 backend::DType dtype = backend::DType::F32);

  /// What the planner and the run-footprint estimate (memory/planner.hpp, memory/footprint.hpp)
  /// need to know of this model for a micro-batch of micro_batch x seq_len tokens, with
  /// tensors of at most persistence_threshold elements staying gathered at stage 3. Exact
  /// (from the parameter registry of one block, scaled by n_layer: it never builds the whole
  /// registry, so it is fast for any n_layer).
  static memory::ModelShape memory_shape(const GptConfig& config, std::int64_t micro_batch,
                                         std::int64_t seq_len, double persistence_threshold,
                                         backend::DType dtype = backend::DType::F32);

  const GptConfig& config() const { return config_; }
  backend::DType dtype() const { return dtype_; }
  backend::Backend& backend() { return backend_; }
  /// Fixed registration order: wte, wpe, h.0.* ... h.{L-1}.*, ln_f.*
  const std::vector<ParamInfo>& parameters() const { return registry_; }
  /// Registry indices of a layer's parameters (the head layer n_layer+1 lists the tied wte).
  std::vector<int> parameters_of_layer(int layer) const;
  int num_layers_with_hooks() const { return config_.n_layer + 2; }

  /// Mean cross-entropy over the B*T positions. inputs/targets: B*T token ids in
  /// [0, vocab_size) in host memory (checked, then copied to the compute place). Keeps the
  /// activations (and a copy of the tokens) for backward().
  float forward(const ParamTable& params, const std::int32_t* inputs, const std::int32_t* targets,
                int B, int T, LayerHooks* hooks = nullptr);

  /// grads += loss_scale * d(mean loss)/d(theta) for the last forward. Accumulates, so
  /// gradient accumulation over micro-batches is repeated forward/backward.
  void backward(const ParamTable& params, const GradTable& grads, float loss_scale,
                LayerHooks* hooks = nullptr);

  /// (B, T, vocab_size) logits of the last forward. Valid until backward(), which turns this
  /// buffer into the logits' gradient in place (it is the largest activation).
  backend::ConstView logits() const { return logits_.view(); }
  float last_loss() const { return last_loss_; }

  /// Training FLOPs per token (forward + backward = 3 x forward): the matmuls plus causal
  /// attention (Q·K^T and P·V over on average (T+1)/2 keys), at sequence length T.
  double flops_per_token_training(int seq_len) const;
  /// The same at the sequence length of the last forward (max_seq_len before any).
  double flops_per_token_training() const { return flops_per_token_training(last_T_); }

 private:
  struct LayerActivations;
  void check_tables(const ParamTable& params, const GradTable* grads) const;

  GptConfig config_;
  backend::DType dtype_;
  backend::Backend& backend_;
  std::vector<ParamInfo> registry_;
  ParamIndex index_;
  int max_B_;
  int max_T_;
  int B_ = 0;
  int T_ = 0;
  int last_T_;
  bool have_forward_ = false;
  float last_loss_ = 0.0f;

  // Kept for backward, one slice per block (sized for max_B_ x max_T_), in the model's dtype;
  // the *_stats_, losses_ and log_sum_exp_ are fp32.
  backend::Buffer ln1_, ln1_stats_, qkv_, prob_, attn_out_, resid_mid_, ln2_, ln2_stats_, fc_pre_,
      fc_act_, resid_out_;
  backend::Buffer embedded_, lnf_, lnf_stats_, logits_, losses_, log_sum_exp_;
  backend::Buffer inputs_, targets_;  // int32, at the compute place
  // Gradient work space, reused by every layer; the attention scratch is fp32.
  backend::Buffer d_resid_, d_ln_, d_qkv_, d_fc_, attention_scratch_;
};

}  // namespace zt::model
