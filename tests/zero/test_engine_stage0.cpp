// SPDX-License-Identifier: Apache-2.0
// Stage 0 data parallelism: for the same global batch and seed, any world size trains the
// same model as one rank alone (losses and final weights within 1e-5 relative in fp32).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "comm/communicator.hpp"
#include "io/sampler.hpp"
#include "io/token_source.hpp"
#include "memory/tracker.hpp"
#include "model/gpt.hpp"
#include "zero/engine.hpp"

namespace {

zt::model::GptConfig tiny_model() {
  zt::model::GptConfig config;
  config.vocab_size = 13;
  config.n_positions = 16;
  config.n_embd = 16;
  config.n_layer = 2;
  config.n_head = 2;
  return config;
}

zt::io::InMemoryTokens random_tokens(int vocab) {
  std::mt19937 generator(11);
  std::uniform_int_distribution<int> token(0, vocab - 1);
  std::vector<std::int32_t> tokens(20000);
  // A learnable pattern (token depends on the two before) plus noise.
  tokens[0] = 1;
  tokens[1] = 2;
  for (std::size_t i = 2; i < tokens.size(); ++i)
    tokens[i] = (generator() % 4 == 0) ? token(generator) : (tokens[i - 1] * 3 + tokens[i - 2]) % vocab;
  return zt::io::InMemoryTokens(tokens, vocab);
}

struct RunResult {
  std::vector<double> losses;
  // Adam and Lamb hardly see the gradients' scale; the norm does (a sum where a mean belongs).
  std::vector<double> grad_norms;
  std::vector<float> weights;
};

RunResult train(zt::comm::Communicator& comm, int train_batch, int accumulation, int steps,
                zt::optim::OptimizerType optimizer) {
  const auto config = tiny_model();
  const int T = 12;
  const int micro = train_batch / (accumulation * comm.size());
  const auto tokens = random_tokens(config.vocab_size);
  zt::model::Gpt model(config, micro, T);
  zt::zero::EngineSettings settings;
  settings.micro_batch = micro;
  settings.gradient_accumulation_steps = accumulation;
  settings.seq_len = T;
  settings.gradient_clipping = 0.5;
  settings.optimizer.type = optimizer;
  settings.optimizer.lr = 3e-3;
  settings.optimizer.weight_decay = 0.01;
  settings.schedule.type = zt::optim::ScheduleType::WarmupLR;
  settings.schedule.warmup_num_steps = 5;
  settings.schedule.warmup_type = zt::optim::WarmupType::Linear;
  settings.seed = 99;
  settings.reduce_bucket_size = 1000;  // several buckets
  zt::zero::Engine engine(model, comm, settings);

  zt::io::SamplerConfig sampler_config{T, train_batch, micro, accumulation, comm.size(),
                                       comm.rank(), 5};
  zt::io::Sampler sampler(sampler_config, tokens);
  RunResult result;
  for (int step = 0; step < steps; ++step) {
    const auto outcome = engine.train_step([&](int m, std::int32_t* in, std::int32_t* out) {
      sampler.fill_micro_batch(tokens, step, m, in, out);
    });
    result.losses.push_back(outcome.loss);
    result.grad_norms.push_back(outcome.grad_norm);
  }
  // Parameters only, not the padding between them.
  for (const auto& entry : engine.layout().entries())
    result.weights.insert(result.weights.end(), engine.parameters() + entry.offset,
                          engine.parameters() + entry.offset + entry.numel);
  return result;
}

void expect_close(const RunResult& reference, const RunResult& distributed) {
  ASSERT_EQ(reference.losses.size(), distributed.losses.size());
  for (std::size_t s = 0; s < reference.losses.size(); ++s)
    EXPECT_NEAR(distributed.losses[s], reference.losses[s], 1e-5 * std::fabs(reference.losses[s]))
        << "step " << s + 1;
  for (std::size_t s = 0; s < reference.grad_norms.size(); ++s)
    EXPECT_NEAR(distributed.grad_norms[s], reference.grad_norms[s],
                1e-5 * std::fabs(reference.grad_norms[s]))
        << "gradient norm, step " << s + 1;
  ASSERT_EQ(reference.weights.size(), distributed.weights.size());
  double max_error = 0, max_weight = 0;
  for (std::size_t i = 0; i < reference.weights.size(); ++i) {
    max_error = std::max(max_error, static_cast<double>(std::fabs(reference.weights[i] -
                                                                  distributed.weights[i])));
    max_weight = std::max(max_weight, static_cast<double>(std::fabs(reference.weights[i])));
  }
  EXPECT_LE(max_error, 1e-5 * max_weight);
}

class Stage0 : public ::testing::TestWithParam<std::tuple<int, zt::optim::OptimizerType>> {};

TEST_P(Stage0, MatchesTheSingleRankRun) {
  const auto [accumulation, optimizer] = GetParam();
  auto world = zt::comm::make_mpi_communicator(MPI_COMM_WORLD);
  auto alone = zt::comm::make_mpi_communicator(MPI_COMM_SELF);
  const int train_batch = 8;
  const int steps = 15;
  const auto reference = train(*alone, train_batch, 1, steps, optimizer);
  const auto distributed = train(*world, train_batch, accumulation, steps, optimizer);
  expect_close(reference, distributed);
  EXPECT_LT(reference.losses.back(), reference.losses.front());
}

INSTANTIATE_TEST_SUITE_P(AccumulationAndOptimizer, Stage0,
                         ::testing::Combine(::testing::Values(1, 2),
                                            ::testing::Values(zt::optim::OptimizerType::Adam,
                                                              zt::optim::OptimizerType::Lamb)));

TEST(Stage0Memory, EveryRankHoldsTheWholeModelItsGradientsAndStates) {
  auto world = zt::comm::make_mpi_communicator(MPI_COMM_WORLD);
  auto& tracker = zt::memory::Tracker::instance();
  const auto before_params = tracker.usage(zt::memory::Place::Device, zt::memory::Kind::Parameters).current;
  const auto before_states = tracker.usage(zt::memory::Place::Device, zt::memory::Kind::OptimizerStates).current;
  zt::model::Gpt model(tiny_model(), 2, 8);
  zt::zero::EngineSettings settings;
  settings.micro_batch = 2;
  settings.seq_len = 8;
  zt::zero::Engine engine(model, *world, settings);
  const std::int64_t padded = engine.layout().padded_elements();
  EXPECT_EQ(tracker.usage(zt::memory::Place::Device, zt::memory::Kind::Parameters).current - before_params,
            padded * 4);
  EXPECT_EQ(tracker.usage(zt::memory::Place::Device, zt::memory::Kind::OptimizerStates).current - before_states,
            2 * padded * 4);
}

}  // namespace
