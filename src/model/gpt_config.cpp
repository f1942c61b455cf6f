// SPDX-License-Identifier: Apache-2.0
#include "model/gpt_config.hpp"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>
#include <type_traits>

#include "memory/saturating.hpp"

#include "files/files.hpp"
#include "yaml/single_document.hpp"

namespace zt::model {
namespace {

// GPT2Config fields that do not change the training math of the language model. They are
// accepted so a real config.json loads, and otherwise ignored.
const std::set<std::string>& ignored_fields() {
  static const std::set<std::string> names = {"architectures",
                                              "model_type",
                                              "bos_token_id",
                                              "eos_token_id",
                                              "pad_token_id",
                                              "task_specific_params",
                                              "n_special",
                                              "predict_special_tokens",
                                              "summary_activation",
                                              "summary_first_dropout",
                                              "summary_proj_to_labels",
                                              "summary_type",
                                              "summary_use_proj",
                                              "torch_dtype",
                                              "dtype",
                                              "transformers_version",
                                              "use_cache",
                                              "_name_or_path",
                                              "gradient_checkpointing",
                                              "output_past",
                                              "id2label",
                                              "label2id",
                                              "tokenizer_class",
                                              "return_dict",
                                              "output_hidden_states",
                                              "output_attentions"};
  return names;
}

const std::vector<std::string>& dropout_fields() {
  static const std::vector<std::string> names = {"resid_pdrop", "embd_pdrop", "attn_pdrop"};
  return names;
}

// Fields whose meaning zerotrain implements for one value only.
const std::vector<std::string>& architecture_fields() {
  static const std::vector<std::string> names = {"activation_function",
                                                 "n_inner",
                                                 "tie_word_embeddings",
                                                 "scale_attn_weights",
                                                 "scale_attn_by_inverse_layer_idx",
                                                 "reorder_and_upcast_attn",
                                                 "add_cross_attention"};
  return names;
}

const std::vector<std::string>& numeric_fields() {
  static const std::vector<std::string> names = {
      "vocab_size",         "n_positions",      "n_ctx", "n_embd", "n_layer", "n_head",
      "layer_norm_epsilon", "initializer_range"};
  return names;
}

std::size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

std::string did_you_mean(const std::string& name) {
  std::vector<std::string> known = numeric_fields();
  for (const auto& list : {dropout_fields(), architecture_fields()})
    known.insert(known.end(), list.begin(), list.end());
  known.insert(known.end(), ignored_fields().begin(), ignored_fields().end());
  std::string best;
  std::size_t best_distance = name.size() / 2 + 2;
  for (const auto& candidate : known) {
    const std::size_t d = edit_distance(name, candidate);
    if (d < best_distance) {
      best_distance = d;
      best = candidate;
    }
  }
  return best.empty() ? "" : " (did you mean '" + best + "'?)";
}

template <class T>
T read_scalar(const YAML::Node& node, const std::string& source, const std::string& key) {
  try {
    return node.as<T>();
  } catch (const YAML::Exception&) {
    throw ConfigError(
        source + ": field '" + key + "' has value " +
        (node.IsScalar() ? files::quote(node.Scalar()) : std::string("<not a scalar>")) +
        ", which is not a valid " +
        (std::is_same<T, bool>::value          ? "boolean"
         : std::is_same<T, std::string>::value ? "string"
                                               : "number"));
  }
}

}  // namespace

// Every field is an int, so C^2 and V*C fit in int64 but 12 C^2 or n_layer times a layer may
// not: the saturating operations keep an absurd model's count absurd instead of negative.
std::int64_t GptConfig::num_parameters() const {
  using memory::saturating_add;
  using memory::saturating_mul;
  const std::int64_t C = n_embd;
  // ln 4C, qkv 3C^2+3C, proj C^2+C, mlp 8C^2+5C
  const std::int64_t per_layer =
      saturating_add(saturating_mul(12, saturating_mul(C, C)), saturating_mul(13, C));
  std::int64_t total = saturating_mul(vocab_size, C);
  total = saturating_add(total, saturating_mul(n_positions, C));
  total = saturating_add(total, saturating_mul(n_layer, per_layer));
  return saturating_add(total, 2 * C);
}

std::int64_t GptConfig::largest_layer_parameters() const {
  using memory::saturating_add;
  using memory::saturating_mul;
  const std::int64_t C = n_embd;
  const std::int64_t C2 = saturating_mul(C, C);
  return std::max({saturating_mul(vocab_size, C), saturating_mul(n_positions, C),
                   saturating_add(saturating_mul(4, C2), 4 * C),
                   saturating_add(saturating_mul(3, C2), 3 * C)});
}

void GptConfig::validate(const std::string& source) const {
  auto require_positive = [&](const char* name, double value) {
    if (!(value > 0))
      throw ConfigError(source + ": '" + name + "' must be positive, got " + std::to_string(value));
  };
  // An infinite epsilon makes every LayerNorm output its bias, an infinite init range makes
  // every weight NaN: training would run on garbage.
  auto require_finite = [&](const char* name, double value) {
    if (!std::isfinite(value))
      throw ConfigError(source + ": '" + name + "' must be a finite number, got " +
                        std::to_string(value));
  };
  require_positive("vocab_size", vocab_size);
  require_positive("n_positions", n_positions);
  require_positive("n_embd", n_embd);
  require_positive("n_layer", n_layer);
  require_positive("n_head", n_head);
  require_positive("layer_norm_epsilon", layer_norm_epsilon);
  require_finite("layer_norm_epsilon", layer_norm_epsilon);
  require_positive("initializer_range", initializer_range);
  require_finite("initializer_range", initializer_range);
  if (n_embd % n_head != 0)
    throw ConfigError(source + ": n_embd (" + std::to_string(n_embd) +
                      ") must be a multiple of n_head (" + std::to_string(n_head) + ")");
}

namespace {

// "17.18e9": counts in the messages span 1e9 to 1e30, so a mantissa and a power of ten that is
// a multiple of 3 (e9 = billions) read best; the exact number would be noise.
std::string count_text(double count) {
  if (count < 1e6) return std::to_string(static_cast<long long>(count));
  int exponent = 0;
  while (count >= 1000.0 && exponent < 300) {
    count /= 1000.0;
    exponent += 3;
  }
  char text[32];
  std::snprintf(text, sizeof text, "%.2fe%d", count, exponent);
  return text;
}

const char* kLimitText = "2^31-1 (2147483647)";

std::string too_many_elements(const std::string& subject, const std::string& tensor,
                              double elements) {
  return subject + ": " + tensor + " would hold " + count_text(elements) +
         " elements, more than the " + kLimitText +
         " one tensor may have in zerotrain (its kernels and MPI collectives count elements with "
         "a 32-bit int)";
}

}  // namespace

std::string GptConfig::shape_problem() const {
  // In double: products of int fields reach 1e28, far past int64, and are exact enough here.
  const double C = n_embd;
  const double V = vocab_size;
  const double P = n_positions;
  const double limit = static_cast<double>(kMaxElementsPerTensor);
  // The MLP weights first: they depend on n_embd alone, so the message names one field.
  if (4 * C * C > limit)
    return too_many_elements("n_embd " + std::to_string(n_embd),
                             "each MLP weight (4 x n_embd x n_embd)", 4 * C * C);
  if (V * C > limit)
    return too_many_elements(
        "vocab_size " + std::to_string(vocab_size) + " with n_embd " + std::to_string(n_embd),
        "the token embedding wte (vocab_size x n_embd)", V * C);
  if (P * C > limit)
    return too_many_elements(
        "n_positions " + std::to_string(n_positions) + " with n_embd " + std::to_string(n_embd),
        "the position embedding wpe (n_positions x n_embd)", P * C);
  // Tensors are numbered with an int (the parameter tables, the hooks' layer numbers).
  if (static_cast<double>(num_tensors()) > limit)
    return "n_layer " + std::to_string(n_layer) + ": the model would have " +
           count_text(static_cast<double>(num_tensors())) +
           " tensors (12 per layer), more than the " + kLimitText +
           " zerotrain numbers with a 32-bit int";
  return "";
}

std::string GptConfig::shape_problem(std::int64_t micro_batch, std::int64_t seq_len) const {
  std::string problem = shape_problem();
  if (!problem.empty()) return problem;
  if (micro_batch < 1)
    return "the micro-batch must hold at least 1 sequence, got " + std::to_string(micro_batch);
  if (seq_len < 1 || seq_len > n_positions)
    return "sequence length " + std::to_string(seq_len) + " is outside 1..n_positions (" +
           std::to_string(n_positions) + ")";
  const double limit = static_cast<double>(kMaxElementsPerTensor);
  const double positions = static_cast<double>(micro_batch) * static_cast<double>(seq_len);
  if (positions > limit)
    return "micro-batch " + std::to_string(micro_batch) + " x " + std::to_string(seq_len) +
           " tokens = " + count_text(positions) + " positions, more than the " + kLimitText +
           " rows zerotrain's kernels count with a 32-bit int";
  // Attention runs one problem per (sequence, head). n_head x seq_len (the device softmax's
  // rows) needs no check: it is at most n_embd x n_positions, the size of wpe.
  const double problems = static_cast<double>(micro_batch) * n_head;
  if (problems > limit)
    return "micro-batch " + std::to_string(micro_batch) + " x n_head " + std::to_string(n_head) +
           " = " + count_text(problems) + " attention problems, more than the " + kLimitText +
           " zerotrain's attention kernels count with a 32-bit int";
  return "";
}

void GptConfig::check_shape(const std::string& source) const {
  validate(source);
  const std::string problem = shape_problem();
  if (!problem.empty()) throw ConfigError(source + ": " + problem);
}

void GptConfig::check_shape(std::int64_t micro_batch, std::int64_t seq_len,
                            const std::string& source) const {
  validate(source);
  const std::string problem = shape_problem(micro_batch, seq_len);
  if (!problem.empty()) throw ConfigError(source + ": " + problem);
}

GptConfig parse_gpt_config(const std::string& text, const std::string& source, ConfigFormat format,
                           std::vector<std::string>* warnings) {
  YAML::Node root;
  try {
    // JSON is read by the YAML parser too. Load reads the first document only: a second one
    // after "---" would be dropped without a word.
    root = YAML::Load(text);
    if (const int line = yaml::second_document_line(text))
      throw ConfigError(source + ": holds 2 YAML documents or more (the second starts at line " +
                        std::to_string(line) +
                        ", after '---' or stray text); a model description is one");
  } catch (const YAML::Exception& e) {
    throw ConfigError(source + ": cannot parse: " + files::escaped(e.what()));
  }
  if (!root.IsMap()) throw ConfigError(source + ": expected a mapping of GPT-2 config fields");

  auto warn = [&](const std::string& message) {
    if (warnings != nullptr)
      warnings->push_back(message);
    else
      std::cerr << "warning: " << message << "\n";
  };

  GptConfig config;
  bool saw_n_positions = false;
  bool saw_n_ctx = false;
  int n_ctx = 0;
  for (const auto& item : root) {
    if (!item.first.IsScalar())
      throw ConfigError(source + ": a field name must be a string, not a list or mapping");
    const std::string key = item.first.Scalar();
    const YAML::Node& value = item.second;
    if (key == "vocab_size") {
      config.vocab_size = read_scalar<int>(value, source, key);
    } else if (key == "n_positions") {
      config.n_positions = read_scalar<int>(value, source, key);
      saw_n_positions = true;
    } else if (key == "n_ctx") {
      n_ctx = read_scalar<int>(value, source, key);
      saw_n_ctx = true;
    } else if (key == "n_embd") {
      config.n_embd = read_scalar<int>(value, source, key);
    } else if (key == "n_layer") {
      config.n_layer = read_scalar<int>(value, source, key);
    } else if (key == "n_head") {
      config.n_head = read_scalar<int>(value, source, key);
    } else if (key == "layer_norm_epsilon") {
      config.layer_norm_epsilon = read_scalar<float>(value, source, key);
    } else if (key == "initializer_range") {
      config.initializer_range = read_scalar<float>(value, source, key);
    } else if (std::find(dropout_fields().begin(), dropout_fields().end(), key) !=
               dropout_fields().end()) {
      const double p = read_scalar<double>(value, source, key);
      if (p != 0.0) {
        std::ostringstream what;
        what << key << "=" << p;
        if (format == ConfigFormat::Yaml)
          throw ConfigError(source + ": not supported yet: dropout (" + what.str() +
                            "); set it to 0");
        warn(source + ": " + what.str() + " is ignored: zerotrain trains without dropout");
      }
    } else if (key == "activation_function") {
      const auto name = read_scalar<std::string>(value, source, key);
      if (name != "gelu_new" && name != "gelu_pytorch_tanh")
        throw ConfigError(source + ": activation_function '" + name +
                          "' is not supported; zerotrain implements GELU with the tanh "
                          "approximation ('gelu_new' or 'gelu_pytorch_tanh')");
    } else if (key == "n_inner") {
      // checked after the loop, once n_embd is known
    } else if (key == "tie_word_embeddings") {
      if (!read_scalar<bool>(value, source, key))
        throw ConfigError(source +
                          ": tie_word_embeddings=false is not supported; zerotrain's "
                          "output layer is the transposed token embedding");
    } else if (key == "scale_attn_weights") {
      if (!read_scalar<bool>(value, source, key))
        throw ConfigError(source +
                          ": scale_attn_weights=false is not supported; attention "
                          "scores are always scaled by 1/sqrt(head size)");
    } else if (key == "scale_attn_by_inverse_layer_idx" || key == "reorder_and_upcast_attn" ||
               key == "add_cross_attention") {
      if (read_scalar<bool>(value, source, key))
        throw ConfigError(source + ": " + key + "=true is not supported; set it to false");
    } else if (ignored_fields().count(key) != 0) {
      // no effect on the language model's math
    } else {
      throw ConfigError(source + ": unknown field " + files::quote(key) + did_you_mean(key));
    }
  }
  if (saw_n_ctx) {
    if (saw_n_positions && n_ctx != config.n_positions)
      throw ConfigError(source + ": n_ctx (" + std::to_string(n_ctx) + ") and n_positions (" +
                        std::to_string(config.n_positions) + ") disagree");
    config.n_positions = n_ctx;
  }
  if (root["n_inner"].IsDefined() && !root["n_inner"].IsNull()) {
    const int n_inner = read_scalar<int>(root["n_inner"], source, "n_inner");
    // In int64: 4 * n_embd overflows an int for n_embd above 2^29.
    const std::int64_t mlp_width = 4 * static_cast<std::int64_t>(config.n_embd);
    if (n_inner != mlp_width)
      throw ConfigError(source + ": n_inner=" + std::to_string(n_inner) +
                        " is not supported; the MLP width is 4*n_embd (" +
                        std::to_string(mlp_width) + "); use null");
  }
  config.validate(source);
  return config;
}

ConfigFormat config_format_of(const std::string& path) {
  const bool is_json = path.size() >= 5 && path.compare(path.size() - 5, 5, ".json") == 0;
  return is_json ? ConfigFormat::HuggingFaceJson : ConfigFormat::Yaml;
}

GptConfig load_gpt_config(const std::string& path, std::vector<std::string>* warnings) {
  const std::string text = files::read_input_file(path, "model description");
  return parse_gpt_config(text, files::escaped(path), config_format_of(path), warnings);
}

}  // namespace zt::model
