// SPDX-License-Identifier: Apache-2.0
#include "model/hf_gpt2.hpp"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>

#include <nlohmann/json.hpp>

#include "files/files.hpp"

namespace zt::model {
namespace {

// Rows and columns of a Conv1D weight: zerotrain (rows = out, cols = in), transformers the
// transpose.
struct Matrix {
  std::int64_t rows;
  std::int64_t cols;
};

Matrix zerotrain_matrix(const ParamInfo& info) {
  return {info.shape.at(0), info.shape.at(1)};
}

// Tiled, so neither side is walked with a stride of a whole row for long.
void transpose(const float* in, std::int64_t rows, std::int64_t cols, float* out) {
  constexpr std::int64_t kTile = 32;
  for (std::int64_t r0 = 0; r0 < rows; r0 += kTile)
    for (std::int64_t c0 = 0; c0 < cols; c0 += kTile) {
      const std::int64_t r1 = std::min(rows, r0 + kTile);
      const std::int64_t c1 = std::min(cols, c0 + kTile);
      for (std::int64_t r = r0; r < r1; ++r)
        for (std::int64_t c = c0; c < c1; ++c) out[c * rows + r] = in[r * cols + c];
    }
}

// The shortest decimal that reads back as `value` in fp32, as a double: JSON then shows what
// the config said (1e-05) rather than the float's binary expansion.
double shortest_decimal(float value) {
  char text[32];
  for (int digits = 1; digits <= 9; ++digits) {
    std::snprintf(text, sizeof text, "%.*g", digits, static_cast<double>(value));
    if (std::strtof(text, nullptr) == value) return std::strtod(text, nullptr);
  }
  return static_cast<double>(value);
}

bool is_buffer_name(std::string_view name) {
  // h.<digits>.attn.bias or h.<digits>.attn.masked_bias
  if (name.substr(0, 2) != "h.") return false;
  std::size_t at = 2;
  while (at < name.size() && std::isdigit(static_cast<unsigned char>(name[at]))) ++at;
  if (at == 2) return false;
  const std::string_view rest = name.substr(at);
  return rest == ".attn.bias" || rest == ".attn.masked_bias";
}

bool reads_as_float(const std::string& dtype) {
  return dtype == "F32" || dtype == "F16" || dtype == "BF16" || dtype == "F64";
}

}  // namespace

std::string hf_saved_name(const ParamInfo& info) {
  return std::string(kHfPrefix) + info.name;
}

std::vector<std::pair<std::string, std::string>> hf_safetensors_metadata() {
  return {{"format", "pt"}};
}

std::vector<std::int64_t> hf_shape(const ParamInfo& info) {
  std::vector<std::int64_t> shape = info.shape;
  if (is_conv1d_weight(info)) std::reverse(shape.begin(), shape.end());
  return shape;
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string text = "[";
  for (std::size_t i = 0; i < shape.size(); ++i)
    text += (i > 0 ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

void to_hf_layout(const ParamInfo& info, const float* zerotrain_values, float* hf_values) {
  if (!is_conv1d_weight(info)) {
    std::copy(zerotrain_values, zerotrain_values + info.numel, hf_values);
    return;
  }
  const Matrix m = zerotrain_matrix(info);
  transpose(zerotrain_values, m.rows, m.cols, hf_values);
}

void from_hf_layout(const ParamInfo& info, const float* hf_values, float* zerotrain_values) {
  if (!is_conv1d_weight(info)) {
    std::copy(hf_values, hf_values + info.numel, zerotrain_values);
    return;
  }
  const Matrix m = zerotrain_matrix(info);
  transpose(hf_values, m.cols, m.rows, zerotrain_values);
}

void fill_from_hf(const ParamInfo& info, std::int64_t begin, std::int64_t end,
                  const HfRangeReader& read, float* out) {
  if (begin < 0 || end < begin || end > info.numel)
    throw std::out_of_range("fill_from_hf: [" + std::to_string(begin) + ", " + std::to_string(end) +
                            ") is outside " + info.name + " (" + std::to_string(info.numel) +
                            " elements)");
  if (begin == end) return;
  if (!is_conv1d_weight(info)) {
    read(begin, end, out);
    return;
  }
  // zerotrain element (r, k) is r * K + k; transformers holds it at k * R + r. The piece
  // covers zerotrain rows [r_first, r_last): columns of the transformers tensor, each read
  // over all K of its rows.
  const auto [R, K] = zerotrain_matrix(info);
  const std::int64_t r_first = begin / K;
  const std::int64_t r_last = (end + K - 1) / K;
  std::vector<float> staged;
  for (std::int64_t c0 = r_first; c0 < r_last; c0 += kHfReadPiece) {
    const std::int64_t c1 = std::min(r_last, c0 + kHfReadPiece);
    const std::int64_t width = c1 - c0;
    // A wide column block is read as whole runs of rows (one read per block, skipping little);
    // a narrow one, a rank's few rows at stage 3, as one short read per row.
    const bool runs = 2 * width >= R;
    const std::int64_t stride = runs ? R : width;
    const std::int64_t rows_per_block = std::max<std::int64_t>(1, kHfReadPiece / stride);
    for (std::int64_t k0 = 0; k0 < K; k0 += rows_per_block) {
      const std::int64_t k1 = std::min(K, k0 + rows_per_block);
      staged.resize(static_cast<std::size_t>((k1 - k0 - 1) * stride + width));
      if (runs) {
        read(k0 * R + c0, (k1 - 1) * R + c1, staged.data());
      } else {
        for (std::int64_t k = k0; k < k1; ++k)
          read(k * R + c0, k * R + c1, staged.data() + (k - k0) * stride);
      }
      for (std::int64_t r = c0; r < c1; ++r) {
        const std::int64_t k_from = std::max(k0, begin - r * K);
        const std::int64_t k_to = std::min(k1, end - r * K);
        for (std::int64_t k = k_from; k < k_to; ++k)
          out[r * K + k - begin] = staged[static_cast<std::size_t>((k - k0) * stride + (r - c0))];
      }
    }
  }
}

void fill_from_hf(const ParamInfo& info, std::int64_t begin, std::int64_t end,
                  const float* hf_values, float* out) {
  fill_from_hf(
      info, begin, end,
      [hf_values](std::int64_t from, std::int64_t to, float* target) {
        std::copy(hf_values + from, hf_values + to, target);
      },
      out);
}

std::string hf_config_json(const GptConfig& config, const HfConfigOptions& options) {
  // GPT2Config's fields, in its order, with the values zerotrain computes; the fields of
  // GPT2DoubleHeadsModel's summary head are left to their defaults.
  nlohmann::ordered_json json;
  json["model_type"] = "gpt2";
  json["architectures"] = {"GPT2LMHeadModel"};
  json["vocab_size"] = config.vocab_size;
  json["n_positions"] = config.n_positions;
  // Older transformers and tools read n_ctx; parse_gpt_config requires it equal n_positions.
  json["n_ctx"] = config.n_positions;
  json["n_embd"] = config.n_embd;
  json["n_layer"] = config.n_layer;
  json["n_head"] = config.n_head;
  json["n_inner"] = nullptr;  // 4 * n_embd, the only width zerotrain implements
  json["activation_function"] = "gelu_new";
  json["resid_pdrop"] = 0.0;
  json["embd_pdrop"] = 0.0;
  json["attn_pdrop"] = 0.0;
  json["layer_norm_epsilon"] = shortest_decimal(config.layer_norm_epsilon);
  json["initializer_range"] = shortest_decimal(config.initializer_range);
  json["scale_attn_weights"] = true;
  json["scale_attn_by_inverse_layer_idx"] = false;
  json["reorder_and_upcast_attn"] = false;
  json["add_cross_attention"] = false;
  json["use_cache"] = true;
  const auto token_id = [&](const char* key, const std::optional<int>& id) {
    if (id)
      json[key] = *id;
    else if (config.vocab_size <= 50256)
      json[key] = nullptr;
  };
  token_id("bos_token_id", options.bos_token_id);
  token_id("eos_token_id", options.eos_token_id);
  json["tie_word_embeddings"] = true;
  json["dtype"] = options.dtype;
  return json.dump(2) + "\n";
}

void write_hf_config_json(const std::string& path, const GptConfig& config,
                          const HfConfigOptions& options, const std::string& what) {
  files::write_file_atomically(path, hf_config_json(config, options), what);
}

std::string normalise_hf_name(std::string_view name) {
  if (name.substr(0, kHfPrefix.size()) == kHfPrefix) name.remove_prefix(kHfPrefix.size());
  return std::string(name);
}

HfTensorRole hf_tensor_role(std::string_view normalised, const std::vector<ParamInfo>& params) {
  if (normalised == "lm_head.weight") return HfTensorRole::kTiedHead;
  if (is_buffer_name(normalised)) return HfTensorRole::kBuffer;
  for (const auto& info : params)
    if (info.name == normalised) return HfTensorRole::kParameter;
  return HfTensorRole::kUnknown;
}

HfImport::HfImport(const std::vector<ParamInfo>& params, const std::vector<HfFileTensor>& tensors,
                   HfTensorReader read, std::string source)
    : params_(params), read_(std::move(read)) {
  std::map<std::string, std::size_t> param_of_name;
  for (std::size_t p = 0; p < params_.size(); ++p) param_of_name.emplace(params_[p].name, p);
  constexpr std::size_t kNone = static_cast<std::size_t>(-1);
  tensor_of_param_.assign(params_.size(), kNone);
  std::size_t head = kNone;
  std::vector<std::string> problems;
  const auto quoted = [](const std::string& name) { return files::quote(name); };

  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const HfFileTensor& tensor = tensors[i];
    const std::string name = normalise_hf_name(tensor.name);
    switch (hf_tensor_role(name, params_)) {
      case HfTensorRole::kBuffer:
        ignored_.push_back(tensor.name);
        continue;
      case HfTensorRole::kTiedHead:
        if (head != kNone) {
          problems.push_back("tensors " + quoted(tensors[head].name) + " and " +
                             quoted(tensor.name) + " are both the output layer");
          continue;
        }
        head = i;
        ignored_.push_back(tensor.name);
        continue;
      case HfTensorRole::kUnknown: {
        std::string problem = "unexpected tensor " + quoted(tensor.name) + " (shape " +
                              shape_text(tensor.shape) + "): not a parameter of this GPT-2";
        if (name.substr(0, 2) == "h.") {
          const int block = std::atoi(name.c_str() + 2);
          const int n_layer = static_cast<int>((params_.size() - 4) / kParamsPerBlock);
          if (block >= n_layer)
            problem += " (the model has n_layer " + std::to_string(n_layer) + ")";
        }
        problems.push_back(problem);
        continue;
      }
      case HfTensorRole::kParameter:
        break;
    }
    const std::size_t p = param_of_name.at(name);
    if (tensor_of_param_[p] != kNone) {
      problems.push_back("tensors " + quoted(tensors[tensor_of_param_[p]].name) + " and " +
                         quoted(tensor.name) + " are both " + quoted(name));
      continue;
    }
    tensor_of_param_[p] = i;
    const auto expected = hf_shape(params_[p]);
    if (tensor.shape != expected)
      problems.push_back(
          "tensor " + quoted(tensor.name) + " has shape " + shape_text(tensor.shape) +
          ", expected " + shape_text(expected) +
          (is_conv1d_weight(params_[p]) ? " (transformers' Conv1D layout, in x out)" : ""));
    else if (!reads_as_float(tensor.dtype))
      problems.push_back("tensor " + quoted(tensor.name) + " holds " + tensor.dtype +
                         " values; weights are read from F32, F16, BF16 or F64");
  }
  for (std::size_t p = 0; p < params_.size(); ++p)
    if (tensor_of_param_[p] == kNone)
      problems.push_back("missing tensor " + quoted(params_[p].name) + " (expected shape " +
                         shape_text(hf_shape(params_[p])) + ")");

  const std::size_t wte = tensor_of_param_[ParamIndex::wte];
  if (head != kNone && problems.empty()) {
    const HfFileTensor& tensor = tensors[head];
    const auto expected = hf_shape(params_[ParamIndex::wte]);
    if (tensor.shape != expected) {
      problems.push_back("tensor " + quoted(tensor.name) + " has shape " +
                         shape_text(tensor.shape) + ", expected " + shape_text(expected) +
                         " (the output layer is tied to wte.weight)");
    } else if (!reads_as_float(tensor.dtype)) {
      problems.push_back("tensor " + quoted(tensor.name) + " holds " + tensor.dtype +
                         " values; weights are read from F32, F16, BF16 or F64");
    } else {
      // Bit for bit: a head that is a rounded copy of the embedding is still another model.
      const std::int64_t numel = params_[ParamIndex::wte].numel;
      const std::int64_t cols = params_[ParamIndex::wte].shape.at(1);
      std::vector<float> head_values, wte_values;
      for (std::int64_t at = 0; at < numel && problems.empty(); at += kHfReadPiece) {
        const std::int64_t to = std::min(numel, at + kHfReadPiece);
        head_values.resize(static_cast<std::size_t>(to - at));
        wte_values.resize(head_values.size());
        read_(head, at, to, head_values.data());
        read_(wte, at, to, wte_values.data());
        for (std::int64_t i = 0; i < to - at; ++i) {
          if (std::memcmp(&head_values[i], &wte_values[i], sizeof(float)) == 0) continue;
          const std::int64_t element = at + i;
          char values[96];
          std::snprintf(values, sizeof values, "%.9g against %.9g",
                        static_cast<double>(head_values[i]), static_cast<double>(wte_values[i]));
          problems.push_back("tensor " + quoted(tensor.name) + " differs from " +
                             quoted(tensors[wte].name) + " at [" + std::to_string(element / cols) +
                             ", " + std::to_string(element % cols) + "] (" + values +
                             "): zerotrain ties the output layer to the token embedding "
                             "(tie_word_embeddings) and cannot load a separate head");
          break;
        }
      }
    }
  }

  if (problems.empty()) return;
  constexpr std::size_t kShown = 12;
  std::string message = source + (problems.size() == 1 ? ": " : " does not fit the model: ");
  if (problems.size() == 1) {
    message += problems.front();
  } else {
    message += std::to_string(problems.size()) + " problems:";
    for (std::size_t i = 0; i < std::min(problems.size(), kShown); ++i)
      message += "\n  - " + problems[i];
    if (problems.size() > kShown)
      message += "\n  - and " + std::to_string(problems.size() - kShown) + " more";
  }
  throw WeightsError(message);
}

void HfImport::fill(int param, std::int64_t begin, std::int64_t end, float* out) const {
  const std::size_t tensor = tensor_of_param_.at(static_cast<std::size_t>(param));
  fill_from_hf(
      params_[static_cast<std::size_t>(param)], begin, end,
      [&](std::int64_t from, std::int64_t to, float* target) { read_(tensor, from, to, target); },
      out);
}

}  // namespace zt::model
