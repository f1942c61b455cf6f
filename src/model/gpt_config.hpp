// SPDX-License-Identifier: Apache-2.0
// GPT-2 architecture, described with the field names of Hugging Face's GPT2Config
// (config.json). Loads a YAML file with those names or a config.json itself.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace zt::model {

/// The most elements one tensor, and the most rows (positions) one micro-batch, may have:
/// zerotrain's kernels and its MPI collectives count them with a 32-bit int.
inline constexpr std::int64_t kMaxElementsPerTensor = 2147483647;  // 2^31 - 1

/// A config file the model cannot honour: names the file and the field.
struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct GptConfig {
  int vocab_size = 50257;
  int n_positions = 1024;  // config.json may call it n_ctx
  int n_embd = 768;
  int n_layer = 12;
  int n_head = 12;
  float layer_norm_epsilon = 1e-5f;
  float initializer_range = 0.02f;

  int head_size() const { return n_embd / n_head; }
  /// Trainable parameters (wte counted once: it is tied to the output layer). Exact for every
  /// model check_shape() accepts; for larger field values it stops at INT64_MAX instead of
  /// overflowing.
  std::int64_t num_parameters() const;
  /// The most parameters one module holds directly, as DeepSpeed's estimator counts a Hugging
  /// Face GPT-2 (largest_layer_params): wte / the tied lm_head (vocab x n_embd), wpe, or an
  /// MLP projection (4 n_embd^2 + 4 n_embd). Saturates like num_parameters().
  std::int64_t largest_layer_parameters() const;
  /// Registered tensors: wte, wpe, 12 per block, ln_f weight and bias (exact in int64).
  std::int64_t num_tensors() const { return 2 + 12 * static_cast<std::int64_t>(n_layer) + 2; }
  /// Throws ConfigError if the numbers cannot describe a model (e.g. n_embd % n_head != 0, a
  /// non-finite layer_norm_epsilon).
  void validate(const std::string& source = "model config") const;

  /// The first of zerotrain's size limits this model breaks, as a sentence that names the
  /// field and the numbers, or "" when it breaks none. The limits come from 32-bit indexing:
  /// every tensor must have at most kMaxElementsPerTensor elements (stage 3 all-gathers whole
  /// tensors, and MPI counts and displacements are int) and the registry numbers tensors with
  /// an int. Computed in double: no field value makes the check itself overflow.
  std::string shape_problem() const;
  /// The same, and the limits of one micro-batch of micro_batch sequences of seq_len tokens:
  /// the kernels run over micro_batch x seq_len rows (positions) and micro_batch x n_head
  /// attention problems with int counters; seq_len must be in 1..n_positions. int64, so a
  /// config's micro-batch is checked before anything narrows it to the int the model takes.
  std::string shape_problem(std::int64_t micro_batch, std::int64_t seq_len) const;
  /// Throws ConfigError("<source>: <shape_problem()>") when the model breaks a limit (and
  /// validates it first).
  void check_shape(const std::string& source = "model config") const;
  void check_shape(std::int64_t micro_batch, std::int64_t seq_len,
                   const std::string& source = "model config") const;

  /// GPT-2 small (124M), the Hugging Face "gpt2" defaults.
  static GptConfig gpt2_small() { return GptConfig{}; }
};

enum class ConfigFormat {
  /// A zerotrain YAML model description: GPT2Config field names, strict (non-zero dropout is
  /// an error, since zerotrain trains without dropout).
  Yaml,
  /// A Hugging Face config.json: dropout probabilities are accepted with a warning, and the
  /// fields that do not change the math (architectures, task_specific_params, ...) are ignored.
  HuggingFaceJson,
};

/// Parses a model description. Unknown fields are an error naming the source and the field,
/// with a did-you-mean suggestion; fields that would change the architecture away from what
/// zerotrain computes (scale_attn_by_inverse_layer_idx, add_cross_attention, ...) are errors.
/// Warnings (ignored dropout) go to `warnings` when given, else to stderr.
GptConfig parse_gpt_config(const std::string& text, const std::string& source_name,
                           ConfigFormat format, std::vector<std::string>* warnings = nullptr);

/// Loads a file: a name ending in ".json" is read as a Hugging Face config.json, anything else
/// as YAML.
GptConfig load_gpt_config(const std::string& path, std::vector<std::string>* warnings = nullptr);

/// How load_gpt_config reads a file of this name: ".json" is a Hugging Face config.json.
ConfigFormat config_format_of(const std::string& path);

}  // namespace zt::model
