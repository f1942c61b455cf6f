// SPDX-License-Identifier: Apache-2.0
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "memory/tracker.hpp"
#include "model/gpt.hpp"
#include "tests/kernels/gradient_check.hpp"

namespace {

using zt::model::Gpt;
using zt::model::GptConfig;
using zt::model::GradTable;
using zt::model::ParamInfo;
using zt::model::ParamTable;
using Options = zt::testing::GradientCheckOptions;

#include "tests/model/reference_gpt_values.inc"

GptConfig tiny_config() {
  GptConfig c;
  c.vocab_size = 11;
  c.n_positions = 8;
  c.n_embd = 8;
  c.n_layer = 2;
  c.n_head = 2;
  return c;
}
constexpr int kB = 2, kT = 5;

// Owns parameter and gradient storage the way the ZeRO engine would (one vector per tensor).
struct Weights {
  std::vector<std::vector<float>> values, grads;
  // The engine's buffers are at the compute place; so are these (the host backend's "device").
  ParamTable params() const {
    ParamTable t;
    for (const auto& v : values)
      t.emplace_back(v.data(), static_cast<std::int64_t>(v.size()), zt::backend::DType::F32,
                     zt::memory::Place::Device);
    return t;
  }
  GradTable grad_table() {
    GradTable t;
    for (auto& g : grads)
      t.push_back(zt::backend::View{g.data(), static_cast<std::int64_t>(g.size()),
                                    zt::backend::DType::F32, zt::memory::Place::Device});
    return t;
  }
  void zero_grads() {
    for (auto& g : grads) std::fill(g.begin(), g.end(), 0.0f);
  }
};

bool is_layernorm_weight(const std::string& name) {
  return name.find("ln_") != std::string::npos && name.size() > 7 &&
         name.compare(name.size() - 7, 7, ".weight") == 0;
}

// The closed formula of tests/model/reference_gpt.py: amplitude * sin(0.7 k + 1.3 p) (+1 for
// LayerNorm weights).
Weights formula_weights(const std::vector<ParamInfo>& registry, double amplitude = 0.1) {
  Weights w;
  for (std::size_t p = 0; p < registry.size(); ++p) {
    std::vector<float> v(registry[p].numel);
    for (std::int64_t k = 0; k < registry[p].numel; ++k)
      v[k] = static_cast<float>(amplitude * std::sin(0.7 * k + 1.3 * p) +
                                (is_layernorm_weight(registry[p].name) ? 1.0 : 0.0));
    w.values.push_back(v);
    w.grads.emplace_back(registry[p].numel, 0.0f);
  }
  return w;
}

void reference_tokens(std::vector<std::int32_t>& inputs, std::vector<std::int32_t>& targets) {
  inputs.resize(kB * kT);
  targets.resize(kB * kT);
  for (int i = 0; i < kB * kT; ++i) {
    inputs[i] = (3 * i + 1) % 11;
    targets[i] = (5 * i + 2) % 11;
  }
}

TEST(Gpt, RegistryNamesShapesAndLayers) {
  const GptConfig config = GptConfig::gpt2_small();
  Gpt model(config, 1, 4);
  const auto& r = model.parameters();
  ASSERT_EQ(r.size(), 2u + 12u * 12u + 2u);
  EXPECT_EQ(r[0].name, "wte.weight");
  EXPECT_EQ(r[0].shape, (std::vector<std::int64_t>{50257, 768}));
  EXPECT_EQ(r[1].name, "wpe.weight");
  EXPECT_EQ(r[4].name, "h.0.attn.c_attn.weight");
  EXPECT_EQ(r[4].shape, (std::vector<std::int64_t>{2304, 768}));
  EXPECT_TRUE(r[4].transposed_vs_hf);
  EXPECT_FALSE(r[5].transposed_vs_hf);
  EXPECT_EQ(r[12].name, "h.0.mlp.c_proj.weight");
  EXPECT_EQ(r[12].shape, (std::vector<std::int64_t>{768, 3072}));
  EXPECT_NEAR(r[12].init_std, 0.02 / std::sqrt(24.0), 1e-9);
  EXPECT_NEAR(r[6].init_std, 0.02 / std::sqrt(24.0), 1e-9);  // attn.c_proj
  EXPECT_EQ(r[2 + 12 * 11 + 11].name, "h.11.mlp.c_proj.bias");
  EXPECT_EQ(r.back().name, "ln_f.bias");
  EXPECT_EQ(r.back().layer, 13);
  std::int64_t total = 0;
  for (const auto& p : r) total += p.numel;
  EXPECT_EQ(total, config.num_parameters());
  EXPECT_EQ(model.parameters_of_layer(0), (std::vector<int>{0, 1}));
  EXPECT_EQ(model.parameters_of_layer(13), (std::vector<int>{2 + 144, 2 + 145, 0}));
  const auto block3 = model.parameters_of_layer(3);
  ASSERT_EQ(block3.size(), 12u);
  for (int i : block3) EXPECT_EQ(r[i].layer, 3);
}

TEST(Gpt, InitDependsOnlyOnSeedParameterAndElement) {
  const GptConfig config = tiny_config();
  const auto registry = zt::model::build_parameter_registry(config);
  for (int p : {0, 4, 12}) {
    const ParamInfo& info = registry[p];
    std::vector<float> full(info.numel);
    zt::model::init_parameter_range(info, p, 42, 0, info.numel, full.data());
    for (auto [begin, end] :
         {std::pair<std::int64_t, std::int64_t>{0, 1}, {3, 17}, {info.numel - 5, info.numel}}) {
      std::vector<float> part(end - begin);
      zt::model::init_parameter_range(info, p, 42, begin, end, part.data());
      for (std::int64_t i = begin; i < end; ++i) ASSERT_EQ(part[i - begin], full[i]) << info.name;
    }
    std::vector<float> other_seed(info.numel);
    zt::model::init_parameter_range(info, p, 43, 0, info.numel, other_seed.data());
    EXPECT_NE(other_seed, full);
  }
  // Biases 0, LayerNorm weights 1.
  std::vector<float> v(8);
  zt::model::init_parameter_range(registry[2], 2, 1, 0, 8, v.data());
  EXPECT_EQ(v, std::vector<float>(8, 1.0f));
  zt::model::init_parameter_range(registry[3], 3, 1, 0, 8, v.data());
  EXPECT_EQ(v, std::vector<float>(8, 0.0f));
}

TEST(Gpt, InitIsNormalWithTheRequestedStd) {
  GptConfig config = GptConfig::gpt2_small();
  const auto registry = zt::model::build_parameter_registry(config);
  const ParamInfo& proj = registry[6];  // h.0.attn.c_proj.weight: 0.02 / sqrt(24)
  std::vector<float> v(proj.numel);
  zt::model::init_parameter_range(proj, 6, 7, 0, proj.numel, v.data());
  double sum = 0, sum_sq = 0;
  for (float x : v) {
    sum += x;
    sum_sq += static_cast<double>(x) * x;
  }
  const double mean = sum / v.size(), std = std::sqrt(sum_sq / v.size() - mean * mean);
  EXPECT_NEAR(mean, 0.0, 1e-5);
  EXPECT_NEAR(std / proj.init_std, 1.0, 5e-3);
}

TEST(Gpt, MatchesNumpyReferenceLossLogitsAndGradients) {
  Gpt model(tiny_config(), kB, kT);
  Weights w = formula_weights(model.parameters());
  std::vector<std::int32_t> inputs, targets;
  reference_tokens(inputs, targets);
  const float loss = model.forward(w.params(), inputs.data(), targets.data(), kB, kT);
  EXPECT_NEAR(loss, kReferenceLoss, 1e-5 * kReferenceLoss);
  const int n_logits = kB * kT * 11;
  double max_logit = 0;
  for (double v : kReferenceLogits) max_logit = std::max(max_logit, std::abs(v));
  for (int i = 0; i < n_logits; ++i)
    ASSERT_NEAR(model.logits().as<float>()[i], kReferenceLogits[i],
                1e-5 * std::max(std::abs(kReferenceLogits[i]), max_logit))
        << "logit " << i;
  model.backward(w.params(), w.grad_table(), 1.0f);
  auto compare = [](const std::vector<float>& got, const double* expected, const char* name) {
    double scale = 0;
    for (std::size_t i = 0; i < got.size(); ++i) scale = std::max(scale, std::abs(expected[i]));
    for (std::size_t i = 0; i < got.size(); ++i)
      ASSERT_NEAR(got[i], expected[i], 1e-4 * scale) << name << "[" << i << "]";
  };
  compare(w.grads[0], kReferenceGradWte, "wte");
  compare(w.grads[4], kReferenceGradQkvWeight0, "h.0.attn.c_attn.weight");
}

TEST(Gpt, FiniteDifferenceGradientOfEveryParameter) {
  Gpt model(tiny_config(), kB, kT);
  // Larger weights than GPT-2's init, so every tensor's gradient stands above fp32 noise.
  Weights w = formula_weights(model.parameters(), 0.4);
  std::vector<std::int32_t> inputs, targets;
  reference_tokens(inputs, targets);
  const ParamTable params = w.params();  // points into w.values, which the check perturbs
  model.forward(params, inputs.data(), targets.data(), kB, kT);
  model.backward(params, w.grad_table(), 1.0f);
  std::vector<zt::testing::CheckedTensor> tensors;
  for (std::size_t p = 0; p < w.values.size(); ++p)
    tensors.push_back({model.parameters()[p].name, &w.values[p], &w.grads[p]});
  const int checked = zt::testing::check_gradients(
      tensors,
      [&] {
        return static_cast<double>(model.forward(params, inputs.data(), targets.data(), kB, kT));
      },
      Options().with_step(2e-3f).with_tolerances(2e-2, 2e-4).with_samples(48));
  EXPECT_GT(checked, 500);
}

TEST(Gpt, BackwardAccumulatesScaledGradients) {
  Gpt model(tiny_config(), kB, kT);
  Weights once = formula_weights(model.parameters());
  Weights twice = formula_weights(model.parameters());
  std::vector<std::int32_t> inputs, targets;
  reference_tokens(inputs, targets);
  model.forward(once.params(), inputs.data(), targets.data(), kB, kT);
  model.backward(once.params(), once.grad_table(), 1.0f);
  for (int i = 0; i < 2; ++i) {
    model.forward(twice.params(), inputs.data(), targets.data(), kB, kT);
    model.backward(twice.params(), twice.grad_table(), 0.5f);
  }
  for (std::size_t p = 0; p < once.grads.size(); ++p) {
    double scale = 1e-30;
    for (float g : once.grads[p]) scale = std::max(scale, static_cast<double>(std::abs(g)));
    for (std::size_t i = 0; i < once.grads[p].size(); ++i)
      ASSERT_NEAR(twice.grads[p][i], once.grads[p][i], 1e-5 * scale)
          << model.parameters()[p].name << "[" << i << "]";
  }
  EXPECT_THROW(model.backward(once.params(), once.grad_table(), 1.0f), std::logic_error);
}

TEST(Gpt, SmallerMicroBatchThanAllocatedGivesTheSameResult) {
  Gpt exact(tiny_config(), 1, 3);
  Gpt roomy(tiny_config(), 2, 5);
  Weights a = formula_weights(exact.parameters());
  Weights b = formula_weights(roomy.parameters());
  const std::vector<std::int32_t> inputs = {1, 4, 7}, targets = {4, 7, 10};
  EXPECT_EQ(exact.forward(a.params(), inputs.data(), targets.data(), 1, 3),
            roomy.forward(b.params(), inputs.data(), targets.data(), 1, 3));
  exact.backward(a.params(), a.grad_table(), 1.0f);
  roomy.backward(b.params(), b.grad_table(), 1.0f);
  for (std::size_t p = 0; p < a.grads.size(); ++p) EXPECT_EQ(a.grads[p], b.grads[p]);
  EXPECT_THROW(roomy.forward(b.params(), inputs.data(), targets.data(), 3, 1),
               std::invalid_argument);
  const std::vector<std::int32_t> bad = {1, 11, 2};
  EXPECT_THROW(roomy.forward(b.params(), bad.data(), targets.data(), 1, 3), std::out_of_range);
}

struct RecordingHooks : zt::model::LayerHooks {
  std::vector<std::string> events;
  void before_forward(int l) override { events.push_back("F" + std::to_string(l)); }
  void after_forward(int l) override { events.push_back("f" + std::to_string(l)); }
  void before_backward(int l) override { events.push_back("B" + std::to_string(l)); }
  void after_backward(int l) override { events.push_back("b" + std::to_string(l)); }
};

TEST(Gpt, HooksFireLayerByLayer) {
  Gpt model(tiny_config(), kB, kT);
  Weights w = formula_weights(model.parameters());
  std::vector<std::int32_t> inputs, targets;
  reference_tokens(inputs, targets);
  RecordingHooks hooks;
  model.forward(w.params(), inputs.data(), targets.data(), kB, kT, &hooks);
  model.backward(w.params(), w.grad_table(), 1.0f, &hooks);
  EXPECT_EQ(hooks.events,
            (std::vector<std::string>{"F0", "f0", "F1", "f1", "F2", "f2", "F3", "f3", "B3", "b3",
                                      "B2", "b2", "B1", "b1", "B0", "b0"}));
}

// A hook may swap a layer's parameter pointer just before the layer runs (stage 3 gathers).
struct GatheringHooks : zt::model::LayerHooks {
  ParamTable* table;
  const Gpt* model;
  std::vector<std::vector<float>> gathered;
  const std::vector<std::vector<float>>* source;
  void before_forward(int layer) override {
    for (int p : model->parameters_of_layer(layer))
      (*table)[p] =
          zt::backend::ConstView{gathered[p].data(), static_cast<std::int64_t>(gathered[p].size()),
                                 zt::backend::DType::F32, zt::memory::Place::Device};
  }
  void after_forward(int layer) override {
    for (int p : model->parameters_of_layer(layer))
      if (p != 0) (*table)[p] = {};  // released (wte is shared by layers 0 and L+1)
  }
};

TEST(Gpt, ParametersAreReadOnlyAfterTheLayersHook) {
  Gpt model(tiny_config(), kB, kT);
  Weights w = formula_weights(model.parameters());
  std::vector<std::int32_t> inputs, targets;
  reference_tokens(inputs, targets);
  const float expected = model.forward(w.params(), inputs.data(), targets.data(), kB, kT);
  ParamTable table(w.values.size());
  GatheringHooks hooks;
  hooks.table = &table;
  hooks.model = &model;
  hooks.gathered = w.values;
  EXPECT_EQ(model.forward(table, inputs.data(), targets.data(), kB, kT, &hooks), expected);
}

TEST(Gpt, FlopsPerTokenMatchesTheLlmcCount) {
  Gpt model(GptConfig::gpt2_small(), 1, 64);
  // machine.md: 190.7 GFLOP per step of B=4, T=64 (V padded to 50304 there, 0.06 GFLOP more)
  EXPECT_NEAR(model.flops_per_token_training(64) * 256 * 1e-9, 190.7, 0.2);
}

}  // namespace

TEST(Gpt, ActivationBytesIsWhatTheModelAllocates) {
  // The planner predicts activation memory with Gpt::activation_bytes; it must equal what the
  // tracker counts when the model is built.
  auto& tracker = zt::memory::Tracker::instance();
  for (const auto dtype :
       {zt::backend::DType::F32, zt::backend::DType::BF16, zt::backend::DType::F16})
    for (const auto& [B, T] : {std::pair<int, int>{1, 8}, {3, 16}, {2, 5}}) {
      zt::model::GptConfig config;
      config.vocab_size = 29;
      config.n_positions = 16;
      config.n_embd = 24;
      config.n_layer = 3;
      config.n_head = 3;
      const auto before =
          tracker.usage(zt::memory::Place::Device, zt::memory::Kind::Activations).current;
      zt::model::Gpt model(config, B, T, dtype);
      const auto allocated =
          tracker.usage(zt::memory::Place::Device, zt::memory::Kind::Activations).current - before;
      EXPECT_EQ(static_cast<double>(allocated),
                zt::model::Gpt::activation_bytes(config, B, T, dtype))
          << B << " x " << T << " in " << zt::kernels::dtype_name(dtype);
    }
}
