// SPDX-License-Identifier: Apache-2.0
// Fuzz target: the model description reader (model::parse_gpt_config) in both formats, and the
// sizes computed from what it accepted (the estimator and the planner use them). Without a
// trailer (fuzz_input.hpp) the format follows the text, as load_gpt_config follows the file
// name: '{' first means a Hugging Face config.json. A model::ConfigError is the expected answer
// to a bad description; anything else is a finding.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "model/gpt_config.hpp"
#include "tests/fuzz/fuzz_input.hpp"

namespace {

using zt::fuzz::FuzzInput;
using zt::fuzz::invariant_failed;
using zt::model::ConfigFormat;

bool looks_like_json(const std::string& text) {
  const std::size_t first = text.find_first_not_of(" \t\r\n");
  return first != std::string::npos && text[first] == '{';
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzInput input(data, size);
  ConfigFormat format =
      looks_like_json(input.document()) ? ConfigFormat::HuggingFaceJson : ConfigFormat::Yaml;
  if (input.has_trailer())
    format = input.byte() % 2 ? ConfigFormat::HuggingFaceJson : ConfigFormat::Yaml;

  std::vector<std::string> warnings;
  zt::model::GptConfig config;
  try {
    config = zt::model::parse_gpt_config(input.document(), "fuzz.yaml", format, &warnings);
  } catch (const zt::model::ConfigError&) {
    return 0;
  }
  if (format == ConfigFormat::Yaml && !warnings.empty())
    invariant_failed("a YAML description warned (dropout is an error there)");
  if (config.vocab_size <= 0 || config.n_positions <= 0 || config.n_embd <= 0 ||
      config.n_layer <= 0 || config.n_head <= 0 || config.n_embd % config.n_head != 0)
    invariant_failed("accepted a model that validate() should refuse");
  if (config.head_size() <= 0) invariant_failed("head size <= 0");
  if (config.num_parameters() <= 0 || config.largest_layer_parameters() <= 0 ||
      config.largest_layer_parameters() > config.num_parameters())
    invariant_failed("parameter counts out of order");
  return 0;
}
