// SPDX-License-Identifier: Apache-2.0
#include <gtest/gtest.h>

#include "files/files.hpp"

#include <string>
#include <vector>

#include "model/gpt_config.hpp"

namespace {

using zt::model::ConfigError;
using zt::model::ConfigFormat;
using zt::model::GptConfig;
using zt::model::parse_gpt_config;

// Hugging Face's "gpt2" config.json, as published.
const char* kHuggingFaceGpt2 = R"({
  "activation_function": "gelu_new",
  "architectures": ["GPT2LMHeadModel"],
  "attn_pdrop": 0.1,
  "bos_token_id": 50256,
  "embd_pdrop": 0.1,
  "eos_token_id": 50256,
  "initializer_range": 0.02,
  "layer_norm_epsilon": 1e-05,
  "model_type": "gpt2",
  "n_ctx": 1024,
  "n_embd": 768,
  "n_head": 12,
  "n_layer": 12,
  "n_positions": 1024,
  "resid_pdrop": 0.1,
  "summary_activation": null,
  "summary_first_dropout": 0.1,
  "summary_proj_to_labels": true,
  "summary_type": "cls_index",
  "summary_use_proj": true,
  "task_specific_params": {"text-generation": {"do_sample": true, "max_length": 50}},
  "vocab_size": 50257
})";

std::string error_of(const std::string& text, ConfigFormat format = ConfigFormat::Yaml) {
  try {
    parse_gpt_config(text, "model.yaml", format);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(GptConfig, Gpt2SmallHasTheHuggingFaceParameterCount) {
  EXPECT_EQ(GptConfig::gpt2_small().num_parameters(), 124439808);
}

TEST(GptConfig, LoadsHuggingFaceConfigJsonAndWarnsAboutDropout) {
  std::vector<std::string> warnings;
  const GptConfig c =
      parse_gpt_config(kHuggingFaceGpt2, "config.json", ConfigFormat::HuggingFaceJson, &warnings);
  EXPECT_EQ(c.vocab_size, 50257);
  EXPECT_EQ(c.n_positions, 1024);
  EXPECT_EQ(c.n_embd, 768);
  EXPECT_EQ(c.n_layer, 12);
  EXPECT_EQ(c.n_head, 12);
  EXPECT_FLOAT_EQ(c.layer_norm_epsilon, 1e-5f);
  ASSERT_EQ(warnings.size(), 3u);  // attn, embd, resid dropout
  EXPECT_NE(warnings[0].find("without dropout"), std::string::npos) << warnings[0];
}

TEST(GptConfig, YamlWithHuggingFaceNames) {
  const GptConfig c = parse_gpt_config(
      "vocab_size: 256\nn_ctx: 128\nn_embd: 64\nn_layer: 2\nn_head: 4\nn_inner: null\n"
      "activation_function: gelu_pytorch_tanh\nresid_pdrop: 0\nlayer_norm_epsilon: 1.0e-6\n",
      "tiny.yaml", ConfigFormat::Yaml);
  EXPECT_EQ(c.vocab_size, 256);
  EXPECT_EQ(c.n_positions, 128);
  EXPECT_EQ(c.head_size(), 16);
  EXPECT_FLOAT_EQ(c.layer_norm_epsilon, 1e-6f);
}

TEST(GptConfig, UnknownFieldNamesFileAndSuggests) {
  const std::string e = error_of("n_embd: 64\nn_layers: 2\nn_head: 4\n");
  EXPECT_NE(e.find("model.yaml"), std::string::npos) << e;
  EXPECT_NE(e.find("'n_layers'"), std::string::npos) << e;
  EXPECT_NE(e.find("did you mean 'n_layer'"), std::string::npos) << e;
}

TEST(GptConfig, DropoutInYamlIsRefused) {
  const std::string e = error_of("resid_pdrop: 0.1\n");
  EXPECT_NE(e.find("not supported yet: dropout (resid_pdrop=0.1); set it to 0"), std::string::npos)
      << e;
}

TEST(GptConfig, ArchitectureChangesAreRefused) {
  EXPECT_NE(error_of("scale_attn_by_inverse_layer_idx: true\n").find("not supported"),
            std::string::npos);
  EXPECT_NE(error_of("reorder_and_upcast_attn: true\n").find("not supported"), std::string::npos);
  EXPECT_NE(error_of("add_cross_attention: true\n").find("not supported"), std::string::npos);
  EXPECT_NE(error_of("scale_attn_weights: false\n").find("not supported"), std::string::npos);
  EXPECT_NE(error_of("tie_word_embeddings: false\n").find("not supported"), std::string::npos);
  EXPECT_NE(error_of("activation_function: relu\n").find("relu"), std::string::npos);
  EXPECT_NE(error_of("n_embd: 64\nn_head: 4\nn_inner: 100\n").find("n_inner=100"),
            std::string::npos);
  EXPECT_EQ(
      error_of("n_embd: 64\nn_head: 4\nn_inner: 256\nscale_attn_by_inverse_layer_idx: false\n"),
      "");
}

TEST(GptConfig, InconsistentNumbersAreRefused) {
  EXPECT_NE(error_of("n_embd: 64\nn_head: 5\n").find("multiple of n_head"), std::string::npos);
  EXPECT_NE(error_of("n_ctx: 64\nn_positions: 128\n").find("disagree"), std::string::npos);
  EXPECT_NE(error_of("n_layer: 0\n").find("must be positive"), std::string::npos);
  EXPECT_NE(error_of("n_layer: two\n").find("not a valid number"), std::string::npos);
  EXPECT_NE(error_of("- a list\n").find("expected a mapping"), std::string::npos);
}

TEST(GptConfig, MissingFileAndWrongTypesAreClearErrors) {
  EXPECT_THROW(zt::model::load_gpt_config("/nonexistent/model.yaml"), zt::files::FileError);
  EXPECT_THROW(zt::model::load_gpt_config("/dev/zero"), zt::files::FileError);
  EXPECT_NE(error_of("activation_function: [gelu_new]\n").find("not a valid string"),
            std::string::npos);
}

}  // namespace
