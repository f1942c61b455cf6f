// SPDX-License-Identifier: Apache-2.0
// GPT-2 architecture, described with the field names of Hugging Face's GPT2Config
// (config.json). Loads a YAML file with those names or a config.json itself.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace zt::model {

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
  /// Trainable parameters (wte counted once: it is tied to the output layer).
  std::int64_t num_parameters() const;
  /// The most parameters one module holds directly, as DeepSpeed's estimator counts a Hugging
  /// Face GPT-2 (largest_layer_params): wte / the tied lm_head (vocab x n_embd), wpe, or an
  /// MLP projection (4 n_embd^2 + 4 n_embd).
  std::int64_t largest_layer_parameters() const;
  /// Throws ConfigError if the numbers cannot describe a model (e.g. n_embd % n_head != 0).
  void validate(const std::string& source = "model config") const;

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

}  // namespace zt::model
