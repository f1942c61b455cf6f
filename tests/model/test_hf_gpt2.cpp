// SPDX-License-Identifier: Apache-2.0
// The mapping to transformers' GPT-2: shapes, the Conv1D transpose (whole and by range), the
// import's name matching and its messages, config.json.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/gpt_config.hpp"
#include "model/hf_gpt2.hpp"
#include "model/parameters.hpp"

namespace zt::model {
namespace {

GptConfig tiny() {
  GptConfig config;
  config.vocab_size = 256;
  config.n_positions = 16;
  config.n_embd = 8;
  config.n_layer = 2;
  config.n_head = 2;
  return config;
}

ParamInfo matrix(std::string name, std::int64_t rows, std::int64_t cols, bool conv1d) {
  ParamInfo info;
  info.name = std::move(name);
  info.shape = {rows, cols};
  info.numel = rows * cols;
  info.transposed_vs_hf = conv1d;
  return info;
}

std::vector<float> iota_values(std::int64_t count) {
  std::vector<float> values(static_cast<std::size_t>(count));
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i);
  return values;
}

template <class Callable>
std::string weights_error(Callable&& callable) {
  try {
    callable();
  } catch (const WeightsError& error) {
    return error.what();
  }
  ADD_FAILURE() << "expected a WeightsError";
  return "";
}

TEST(HfGpt2, ShapesAreTransformersShapes) {
  const auto registry = build_parameter_registry(tiny());
  std::map<std::string, std::vector<std::int64_t>> shapes;
  for (const auto& info : registry) shapes[info.name] = hf_shape(info);
  EXPECT_EQ(shapes["wte.weight"], (std::vector<std::int64_t>{256, 8}));
  EXPECT_EQ(shapes["wpe.weight"], (std::vector<std::int64_t>{16, 8}));
  EXPECT_EQ(shapes["h.1.attn.c_attn.weight"], (std::vector<std::int64_t>{8, 24}));
  EXPECT_EQ(shapes["h.1.attn.c_attn.bias"], (std::vector<std::int64_t>{24}));
  EXPECT_EQ(shapes["h.0.attn.c_proj.weight"], (std::vector<std::int64_t>{8, 8}));
  EXPECT_EQ(shapes["h.0.mlp.c_fc.weight"], (std::vector<std::int64_t>{8, 32}));
  EXPECT_EQ(shapes["h.0.mlp.c_proj.weight"], (std::vector<std::int64_t>{32, 8}));
  EXPECT_EQ(shapes["ln_f.bias"], (std::vector<std::int64_t>{8}));
  int conv1d = 0;
  for (const auto& info : registry) conv1d += is_conv1d_weight(info) ? 1 : 0;
  EXPECT_EQ(conv1d, 4 * 2);
  EXPECT_EQ(shape_text({8, 24}), "[8, 24]");
}

TEST(HfGpt2, TransposesConv1DWeightsAndCopiesTheRest) {
  const ParamInfo qkv = matrix("h.0.attn.c_attn.weight", 6, 4, true);  // zerotrain (3C, C)
  const auto values = iota_values(qkv.numel);
  std::vector<float> hf(values.size()), back(values.size());
  to_hf_layout(qkv, values.data(), hf.data());
  // transformers' (C, 3C): element [k][r] is zerotrain's [r][k].
  for (int k = 0; k < 4; ++k)
    for (int r = 0; r < 6; ++r) EXPECT_EQ(hf[k * 6 + r], values[r * 4 + k]);
  from_hf_layout(qkv, hf.data(), back.data());
  EXPECT_EQ(back, values);

  const ParamInfo wte = matrix("wte.weight", 5, 3, false);
  const auto embedding = iota_values(wte.numel);
  std::vector<float> copy(embedding.size());
  to_hf_layout(wte, embedding.data(), copy.data());
  EXPECT_EQ(copy, embedding);
}

// Every range of a tensor filled from the transformers layout equals the same range of the
// whole-tensor conversion, through both overloads; the reader is never asked for more than a
// piece at once for a Conv1D weight.
void check_ranges(const ParamInfo& info, int ranges, unsigned seed) {
  std::mt19937_64 generator(seed);
  std::uniform_real_distribution<float> uniform(-1, 1);
  std::vector<float> zerotrain(static_cast<std::size_t>(info.numel));
  for (auto& value : zerotrain) value = uniform(generator);
  std::vector<float> hf(zerotrain.size());
  to_hf_layout(info, zerotrain.data(), hf.data());
  std::uniform_int_distribution<std::int64_t> position(0, info.numel);
  std::int64_t largest_read = 0;
  const HfRangeReader reader = [&](std::int64_t from, std::int64_t to, float* out) {
    ASSERT_LE(0, from);
    ASSERT_LE(from, to);
    ASSERT_LE(to, info.numel);
    largest_read = std::max(largest_read, to - from);
    std::copy(hf.begin() + from, hf.begin() + to, out);
  };
  for (int i = 0; i < ranges; ++i) {
    std::int64_t begin = position(generator);
    std::int64_t end = position(generator);
    if (i == 0) begin = 0, end = info.numel;
    if (i == 1) begin = info.shape[1] - 1, end = begin + 2;  // across one row boundary
    if (begin > end) std::swap(begin, end);
    std::vector<float> out(static_cast<std::size_t>(end - begin), -99.0f);
    fill_from_hf(info, begin, end, reader, out.data());
    ASSERT_TRUE(std::equal(out.begin(), out.end(), zerotrain.begin() + begin))
        << info.name << " [" << begin << ", " << end << ")";
    std::fill(out.begin(), out.end(), -99.0f);
    fill_from_hf(info, begin, end, hf.data(), out.data());
    ASSERT_TRUE(std::equal(out.begin(), out.end(), zerotrain.begin() + begin))
        << info.name << " [" << begin << ", " << end << ")";
  }
  if (is_conv1d_weight(info)) {
    EXPECT_LE(largest_read, kHfReadPiece) << info.name;
  }
  EXPECT_THROW(fill_from_hf(info, 0, info.numel + 1, hf.data(), zerotrain.data()),
               std::out_of_range);
}

TEST(HfGpt2, RangesMatchTheWholeTensorMapping) {
  check_ranges(matrix("h.0.attn.c_attn.weight", 24, 8, true), 200, 1);
  check_ranges(matrix("h.0.mlp.c_proj.weight", 8, 32, true), 200, 2);
  check_ranges(matrix("wte.weight", 50, 8, false), 50, 3);
  // Beyond one read piece: several row blocks (wide pieces), per-row reads (narrow pieces).
  check_ranges(matrix("h.0.mlp.c_fc.weight", 2560, 640, true), 12, 4);
  // More rows than one piece holds columns: the columns are split too.
  check_ranges(matrix("h.0.mlp.c_fc.weight", kHfReadPiece + 5, 2, true), 6, 5);
}

TEST(HfGpt2, NormalisesNames) {
  const auto registry = build_parameter_registry(tiny());
  EXPECT_EQ(normalise_hf_name("transformer.h.0.ln_1.weight"), "h.0.ln_1.weight");
  EXPECT_EQ(normalise_hf_name("h.0.ln_1.weight"), "h.0.ln_1.weight");
  EXPECT_EQ(normalise_hf_name("lm_head.weight"), "lm_head.weight");
  EXPECT_EQ(hf_tensor_role("h.1.attn.c_attn.bias", registry), HfTensorRole::kParameter);
  EXPECT_EQ(hf_tensor_role("h.1.attn.bias", registry), HfTensorRole::kBuffer);
  EXPECT_EQ(hf_tensor_role("h.11.attn.masked_bias", registry), HfTensorRole::kBuffer);
  EXPECT_EQ(hf_tensor_role("h.x.attn.bias", registry), HfTensorRole::kUnknown);
  EXPECT_EQ(hf_tensor_role("lm_head.weight", registry), HfTensorRole::kTiedHead);
  EXPECT_EQ(hf_tensor_role("h.2.ln_1.weight", registry), HfTensorRole::kUnknown);
  EXPECT_EQ(hf_tensor_role("wte", registry), HfTensorRole::kUnknown);
}

// An in-memory "file" of transformers tensors: the model's, with values, in HF layout.
struct FakeFile {
  std::vector<HfFileTensor> tensors;
  std::vector<std::vector<float>> values;

  FakeFile(const std::vector<ParamInfo>& registry, const std::string& prefix) {
    unsigned seed = 1;
    for (const auto& info : registry) {
      std::vector<float> zerotrain(static_cast<std::size_t>(info.numel));
      std::mt19937 generator(seed++);
      std::normal_distribution<float> normal;
      for (auto& value : zerotrain) value = normal(generator);
      std::vector<float> hf(zerotrain.size());
      to_hf_layout(info, zerotrain.data(), hf.data());
      add(prefix + info.name, hf_shape(info), hf);
    }
  }
  void add(const std::string& name, std::vector<std::int64_t> shape, std::vector<float> data,
           std::string dtype = "F32") {
    tensors.push_back({name, std::move(shape), std::move(dtype)});
    values.push_back(std::move(data));
  }
  std::size_t index(const std::string& name) const {
    for (std::size_t i = 0; i < tensors.size(); ++i)
      if (tensors[i].name == name) return i;
    throw std::out_of_range(name);
  }
  HfTensorReader reader() const {
    return [this](std::size_t t, std::int64_t begin, std::int64_t end, float* out) {
      std::copy(values[t].begin() + begin, values[t].begin() + end, out);
    };
  }
};

TEST(HfGpt2, ImportsWithAndWithoutThePrefix) {
  const auto registry = build_parameter_registry(tiny());
  for (const std::string prefix : {"", "transformer."}) {
    FakeFile file(registry, prefix);
    file.add(prefix + "h.0.attn.bias", {1, 1, 16, 16}, std::vector<float>(256, 1.0f));
    file.add(prefix + "h.1.attn.masked_bias", {}, {-1e4f});
    file.add("lm_head.weight", {256, 8}, file.values[file.index(prefix + "wte.weight")]);
    const HfImport import(registry, file.tensors, file.reader(), "--init-weights 'w'");
    EXPECT_EQ(import.ignored(),
              (std::vector<std::string>{prefix + "h.0.attn.bias", prefix + "h.1.attn.masked_bias",
                                        "lm_head.weight"}));
    for (std::size_t p = 0; p < registry.size(); ++p) {
      const auto& info = registry[p];
      const auto& hf = file.values[file.index(prefix + info.name)];
      std::vector<float> expected(hf.size()), got(hf.size());
      from_hf_layout(info, hf.data(), expected.data());
      import.fill(static_cast<int>(p), 0, info.numel, got.data());
      EXPECT_EQ(got, expected) << info.name;
      if (info.numel > 3) {
        std::vector<float> piece(2);
        import.fill(static_cast<int>(p), 1, 3, piece.data());
        EXPECT_EQ(piece[0], expected[1]);
        EXPECT_EQ(piece[1], expected[2]);
      }
    }
  }
}

TEST(HfGpt2, NamesEveryMismatchWithBothShapes) {
  const auto registry = build_parameter_registry(tiny());
  FakeFile file(registry, "");
  // zerotrain's own layout under the HF name: what --save-weights used to write.
  file.tensors[file.index("h.0.attn.c_attn.weight")].shape = {24, 8};
  file.tensors.erase(file.tensors.begin() + static_cast<std::ptrdiff_t>(file.index("ln_f.bias")));
  file.values.pop_back();
  file.add("h.2.ln_1.weight", {8}, std::vector<float>(8));
  const std::string message =
      weights_error([&] { HfImport(registry, file.tensors, file.reader(), "--init-weights 'w'"); });
  EXPECT_NE(message.find("--init-weights 'w' does not fit the model: 3 problems:"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("tensor 'h.0.attn.c_attn.weight' has shape [24, 8], expected [8, 24]"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("missing tensor 'ln_f.bias' (expected shape [8])"), std::string::npos)
      << message;
  EXPECT_NE(message.find("unexpected tensor 'h.2.ln_1.weight' (shape [8])"), std::string::npos)
      << message;
  EXPECT_NE(message.find("(the model has n_layer 2)"), std::string::npos) << message;
}

TEST(HfGpt2, RefusesOneTensorTwiceAndIntegerTensors) {
  const auto registry = build_parameter_registry(tiny());
  FakeFile file(registry, "");
  file.add("transformer.wpe.weight", {16, 8}, file.values[file.index("wpe.weight")]);
  std::string message =
      weights_error([&] { HfImport(registry, file.tensors, file.reader(), "'w'"); });
  EXPECT_EQ(message,
            "'w': tensors 'wpe.weight' and 'transformer.wpe.weight' are both 'wpe.weight'");

  FakeFile integers(registry, "");
  integers.tensors[integers.index("ln_f.weight")].dtype = "I64";
  message = weights_error([&] { HfImport(registry, integers.tensors, integers.reader(), "'w'"); });
  EXPECT_NE(message.find("tensor 'ln_f.weight' holds I64 values"), std::string::npos) << message;
}

TEST(HfGpt2, RefusesAnUntiedHead) {
  const auto registry = build_parameter_registry(tiny());
  FakeFile file(registry, "transformer.");
  auto head = file.values[file.index("transformer.wte.weight")];
  head[8 * 3 + 5] += 1.0f;
  file.add("lm_head.weight", {256, 8}, head);
  std::string message =
      weights_error([&] { HfImport(registry, file.tensors, file.reader(), "'w'"); });
  EXPECT_NE(message.find("tensor 'lm_head.weight' differs from 'transformer.wte.weight' at [3, 5]"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("tie_word_embeddings"), std::string::npos) << message;

  FakeFile misshapen(registry, "");
  misshapen.add("lm_head.weight", {255, 8}, std::vector<float>(255 * 8));
  message =
      weights_error([&] { HfImport(registry, misshapen.tensors, misshapen.reader(), "'w'"); });
  EXPECT_NE(message.find("tensor 'lm_head.weight' has shape [255, 8], expected [256, 8]"),
            std::string::npos)
      << message;
}

TEST(HfGpt2, ConfigJsonIsTransformersGpt2ConfigAndReadsBack) {
  GptConfig config = tiny();
  config.layer_norm_epsilon = 1e-5f;
  config.initializer_range = 0.02f;
  const std::string text = hf_config_json(config);
  const auto json = nlohmann::json::parse(text);
  EXPECT_EQ(json["model_type"], "gpt2");
  EXPECT_EQ(json["architectures"], nlohmann::json::array({"GPT2LMHeadModel"}));
  EXPECT_EQ(json["n_embd"], 8);
  EXPECT_EQ(json["n_ctx"], 16);
  EXPECT_TRUE(json["n_inner"].is_null());
  EXPECT_EQ(json["activation_function"], "gelu_new");
  EXPECT_EQ(json["resid_pdrop"], 0.0);
  EXPECT_EQ(json["tie_word_embeddings"], true);
  EXPECT_EQ(json["dtype"], "float32");
  EXPECT_NE(text.find("\"layer_norm_epsilon\": 1e-05"), std::string::npos) << text;
  EXPECT_NE(text.find("\"initializer_range\": 0.02"), std::string::npos) << text;
  // 50256 is outside a 256-token vocabulary.
  EXPECT_TRUE(json["bos_token_id"].is_null());
  EXPECT_TRUE(json["eos_token_id"].is_null());

  std::vector<std::string> warnings;
  const GptConfig back =
      parse_gpt_config(text, "config.json", ConfigFormat::HuggingFaceJson, &warnings);
  EXPECT_TRUE(warnings.empty());
  EXPECT_EQ(back.vocab_size, config.vocab_size);
  EXPECT_EQ(back.n_positions, config.n_positions);
  EXPECT_EQ(back.n_embd, config.n_embd);
  EXPECT_EQ(back.n_layer, config.n_layer);
  EXPECT_EQ(back.n_head, config.n_head);
  EXPECT_EQ(back.layer_norm_epsilon, config.layer_norm_epsilon);
  EXPECT_EQ(back.initializer_range, config.initializer_range);

  const auto gpt2 =
      nlohmann::json::parse(hf_config_json(GptConfig::gpt2_small(), {"bfloat16", 7, {}}));
  EXPECT_EQ(gpt2["bos_token_id"], 7);
  EXPECT_FALSE(gpt2.contains("eos_token_id"));  // GPT2Config's default, 50256, fits
  EXPECT_EQ(gpt2["dtype"], "bfloat16");
}

}  // namespace
}  // namespace zt::model
