// SPDX-License-Identifier: Apache-2.0
// Model and micro-batch shapes past zerotrain's 32-bit limits are refused with the field and
// the numbers, before anything is allocated; counts of absurd shapes never overflow; and the
// shape the planner gets (Gpt::memory_shape) is what the full parameter registry says.
#include <gtest/gtest.h>

#include <chrono>
#include <climits>
#include <cstdint>
#include <limits>
#include <string>

#include "memory/tracker.hpp"
#include "model/gpt.hpp"
#include "model/gpt_config.hpp"
#include "model/parameters.hpp"

namespace {

using zt::model::ConfigError;
using zt::model::Gpt;
using zt::model::GptConfig;

GptConfig shape(int vocab, int positions, int embd, int layers, int heads) {
  GptConfig config;
  config.vocab_size = vocab;
  config.n_positions = positions;
  config.n_embd = embd;
  config.n_layer = layers;
  config.n_head = heads;
  return config;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(ShapeLimits, RealModelsPass) {
  EXPECT_EQ(GptConfig::gpt2_small().shape_problem(8, 1024), "");
  EXPECT_EQ(shape(50257, 2048, 12288, 96, 96).shape_problem(1, 2048), "");  // GPT-3 175B
  // The widest that fits: 4 x 23170^2 = 2147395600 elements per MLP weight.
  EXPECT_EQ(shape(50257, 2048, 23170, 2, 10).shape_problem(), "");
  // Llama-3 405B's embedding: 128256 x 16384 = 2.10e9 elements, just inside.
  EXPECT_EQ(shape(128256, 8192, 16384, 2, 128).shape_problem(), "");
}

TEST(ShapeLimits, AnMlpWeightPastInt32NamesNEmbdAndTheNumbers) {
  const std::string problem = shape(50257, 1024, 65536, 2, 16).shape_problem();
  EXPECT_TRUE(contains(problem, "n_embd 65536")) << problem;
  EXPECT_TRUE(contains(problem, "MLP weight")) << problem;
  EXPECT_TRUE(contains(problem, "17.18e9 elements")) << problem;  // 4 x 65536^2
  EXPECT_TRUE(contains(problem, "2147483647")) << problem;
  // One step past the widest that fits.
  EXPECT_NE(shape(256, 64, 23172, 2, 4).shape_problem(), "");
}

TEST(ShapeLimits, EmbeddingsPastInt32NameTheirFields) {
  // n_embd 16384 keeps the MLP (1.07e9) inside; the vocabulary makes wte 3.28e9.
  const std::string wte = shape(200000, 1024, 16384, 2, 16).shape_problem();
  EXPECT_TRUE(contains(wte, "vocab_size 200000 with n_embd 16384")) << wte;
  EXPECT_TRUE(contains(wte, "wte")) << wte;
  EXPECT_TRUE(contains(wte, "3.28e9 elements")) << wte;
  const std::string wpe = shape(256, 1 << 20, 4096, 2, 16).shape_problem();
  EXPECT_TRUE(contains(wpe, "n_positions 1048576 with n_embd 4096")) << wpe;
  EXPECT_TRUE(contains(wpe, "wpe")) << wpe;
}

TEST(ShapeLimits, TooManyLayersToNumberTheirTensors) {
  // 2 + 12 L + 2 tensors must be at most 2^31-1: L = 178956970 is the last that fits.
  EXPECT_EQ(shape(256, 64, 8, 178956970, 2).shape_problem(), "");
  const std::string problem = shape(256, 64, 8, 178956971, 2).shape_problem();
  EXPECT_TRUE(contains(problem, "n_layer 178956971")) << problem;
  EXPECT_TRUE(contains(problem, "tensors")) << problem;
  EXPECT_TRUE(contains(shape(256, 64, 8, INT_MAX, 2).shape_problem(), "n_layer")) << problem;
}

TEST(ShapeLimits, MicroBatchPastInt32Rows) {
  const auto config = shape(256, 1024, 64, 2, 4);
  // B x T = 2^31 - 1 rows is the most: 2097151 x 1024 = 2147482624 fits, 2097152 x 1024 not.
  EXPECT_EQ(config.shape_problem(2097151, 1024), "");
  const std::string problem = config.shape_problem(2097152, 1024);
  EXPECT_TRUE(contains(problem, "micro-batch 2097152 x 1024 tokens")) << problem;
  EXPECT_TRUE(contains(problem, "2.15e9 positions")) << problem;
  // B x n_head attention problems: 64 heads of size 1, one token per sequence.
  const auto heads = shape(256, 4, 64, 2, 64);
  EXPECT_TRUE(contains(heads.shape_problem(INT_MAX / 32, 1), "attention problems"));
  EXPECT_EQ(heads.shape_problem(INT_MAX / 64, 1), "");
  // A config's micro-batch past an int (train_batch_size 4e9 on one rank) is checked as it is.
  EXPECT_TRUE(contains(config.shape_problem(4000000000LL, 1), "micro-batch 4000000000 x 1"));
  // And the range checks.
  EXPECT_TRUE(contains(config.shape_problem(0, 8), "at least 1"));
  EXPECT_TRUE(contains(config.shape_problem(1, 1025), "outside 1..n_positions"));
}

TEST(ShapeLimits, CheckShapeThrowsConfigErrorNamingTheSource) {
  try {
    shape(50257, 1024, 65536, 2, 16).check_shape(1, 8, "wide.yaml");
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& error) {
    const std::string text = error.what();
    EXPECT_EQ(text.rfind("wide.yaml: n_embd 65536", 0), 0u) << text;
  }
  EXPECT_NO_THROW(GptConfig::gpt2_small().check_shape(4, 1024, "gpt2.yaml"));
  EXPECT_THROW(shape(256, 64, 8, 0, 2).check_shape("bad.yaml"), ConfigError);  // validates too
}

TEST(ShapeLimits, CountsOfAbsurdShapesSaturateInsteadOfOverflowing) {
  const auto huge = shape(INT_MAX, INT_MAX, INT_MAX, INT_MAX, 1);
  EXPECT_EQ(huge.num_parameters(), INT64_MAX);
  EXPECT_GT(huge.largest_layer_parameters(), 0);
  EXPECT_EQ(huge.largest_layer_parameters(), INT64_MAX);  // 4 C^2 does not fit
  EXPECT_EQ(huge.num_tensors(), 2 + 12 * static_cast<std::int64_t>(INT_MAX) + 2);
  // n_layer 1e6 of GPT-2 small's blocks: 7.1e12, exact.
  auto deep = GptConfig::gpt2_small();
  deep.n_layer = 1000000;
  EXPECT_EQ(deep.num_parameters(),
            1000000LL * (12LL * 768 * 768 + 13 * 768) + 50257LL * 768 + 1024LL * 768 + 2 * 768);
  // Activations in double: about 2^31 layers x 2^62 positions x 2^31 x 16 floats x 4 bytes.
  const double bytes = Gpt::activation_bytes(huge, INT_MAX, INT_MAX);
  EXPECT_TRUE(bytes > 1e39 && bytes < 2e39) << bytes;
}

TEST(ShapeLimits, ValidateRefusesNonFiniteFloats) {
  auto config = GptConfig::gpt2_small();
  config.layer_norm_epsilon = std::numeric_limits<float>::infinity();
  EXPECT_THROW(config.validate(), ConfigError);
  config = GptConfig::gpt2_small();
  config.initializer_range = std::numeric_limits<float>::infinity();
  EXPECT_THROW(config.validate(), ConfigError);
}

TEST(ShapeLimits, NInnerOfAHugeModelIsComparedWithoutOverflow) {
  // 4 x 1073741824 overflows an int; the message must say 4294967296.
  try {
    zt::model::parse_gpt_config("n_embd: 1073741824\nn_head: 1\nn_inner: 5\n", "big.yaml",
                                zt::model::ConfigFormat::Yaml);
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& error) {
    EXPECT_TRUE(contains(error.what(), "4294967296")) << error.what();
  }
}

TEST(ShapeLimits, GptRefusesBeforeAllocating) {
  auto& tracker = zt::memory::Tracker::instance();
  const auto before = tracker.total(zt::memory::Place::Device).current;
  const auto start = std::chrono::steady_clock::now();
  // n_embd 65536 would need 17e9-element weights; 178956971 layers a 2e9-entry registry.
  EXPECT_THROW(Gpt(shape(50257, 1024, 65536, 2, 16), 1, 8), ConfigError);
  EXPECT_THROW(Gpt(shape(256, 64, 8, 178956971, 2), 1, 8), ConfigError);
  EXPECT_THROW(Gpt(shape(256, 1024, 64, 2, 4), 2097152, 1024), ConfigError);
  EXPECT_EQ(tracker.total(zt::memory::Place::Device).current, before);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  // The existing argument checks keep their exception type.
  EXPECT_THROW(Gpt(shape(256, 64, 8, 2, 2), 0, 8), std::invalid_argument);
  EXPECT_THROW(Gpt(shape(256, 64, 8, 2, 2), 1, 65), std::invalid_argument);
}

// The planner's shape from a one-block registry equals the one a full registry gives (the
// rule app/plan.cpp applied before): persistent elements and each layer's gathered ones.
TEST(ShapeLimits, MemoryShapeMatchesTheFullRegistry) {
  for (const double threshold : {0.0, 100.0, 1e5, 1e9}) {
    const auto config = shape(61, 32, 48, 5, 4);
    const auto fast = Gpt::memory_shape(config, 3, 16, threshold);
    double persistent = 0, gathered_layer = 0, first = 0, last = 0;
    const auto registry = zt::model::build_parameter_registry(config);
    for (std::size_t p = 0; p < registry.size(); ++p) {
      const double numel = static_cast<double>(registry[p].numel);
      if (numel <= threshold) {
        persistent += numel;
        continue;
      }
      if (registry[p].layer == 1) gathered_layer += numel;
      if (p == 0) {
        first += numel;
        last += numel;
      } else if (registry[p].layer == 0) {
        first += numel;
      } else if (registry[p].layer == config.n_layer + 1) {
        last += numel;
      }
    }
    EXPECT_EQ(fast.persistent, persistent) << threshold;
    EXPECT_EQ(fast.gathered_layer, gathered_layer) << threshold;
    EXPECT_EQ(fast.gathered_first, first) << threshold;
    EXPECT_EQ(fast.gathered_last, last) << threshold;
    EXPECT_EQ(fast.parameters, static_cast<double>(config.num_parameters()));
    EXPECT_EQ(fast.largest_module, static_cast<double>(config.largest_layer_parameters()));
    EXPECT_EQ(fast.tensors, static_cast<double>(registry.size()));
    EXPECT_EQ(fast.tied, 61.0 * 48);
    EXPECT_EQ(fast.activation_bytes, Gpt::activation_bytes(config, 3, 16));
  }
  // Fast for any depth: it never builds the whole registry.
  const auto start = std::chrono::steady_clock::now();
  const auto deep = Gpt::memory_shape(shape(256, 64, 8, 178956970, 2), 1, 64, 1e5);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
  EXPECT_EQ(deep.persistent, deep.parameters);  // every tensor is small
}

}  // namespace
