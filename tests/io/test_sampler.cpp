// SPDX-License-Identifier: Apache-2.0
// The sampler: bijective epochs, world-size invariance, exact resume.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <set>
#include <vector>

#include "io/hdf5_handle.hpp"
#include "io/sampler.hpp"

namespace zt::io {
namespace {

InMemoryTokens counting_tokens(std::int32_t count) {
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(count));
  std::iota(tokens.begin(), tokens.end(), 0);
  return InMemoryTokens(std::move(tokens), 0, "counting tokens");
}

TEST(WindowPermutation, IsABijectionForManySizes) {
  for (std::int64_t size : {1, 2, 3, 4, 5, 17, 64, 1000, 4097, 100'003}) {
    const WindowPermutation permutation(size, 42);
    std::vector<char> seen(static_cast<std::size_t>(size), 0);
    for (std::int64_t i = 0; i < size; ++i) {
      const std::int64_t image = permutation(i);
      ASSERT_GE(image, 0);
      ASSERT_LT(image, size);
      ASSERT_FALSE(seen[static_cast<std::size_t>(image)]) << "size " << size << " index " << i;
      seen[static_cast<std::size_t>(image)] = 1;
    }
  }
}

TEST(WindowPermutation, IsDeterministicAndKeyed) {
  const WindowPermutation first(1000, 7), again(1000, 7), other(1000, 8);
  int moved = 0, differs = 0;
  for (std::int64_t i = 0; i < 1000; ++i) {
    EXPECT_EQ(first(i), again(i));
    moved += first(i) != i;
    differs += first(i) != other(i);
  }
  EXPECT_GT(moved, 900);
  EXPECT_GT(differs, 900);
  EXPECT_THROW(first(1000), std::out_of_range);
}

SamplerConfig config_for(int world_size, int rank, std::int64_t micro_batch, int grad_accum) {
  SamplerConfig config;
  config.seq_len = 4;
  config.train_batch_size = micro_batch * grad_accum * world_size;
  config.micro_batch = micro_batch;
  config.grad_accum = grad_accum;
  config.world_size = world_size;
  config.rank = rank;
  config.seed = 2024;
  return config;
}

// All windows of one step, from every rank and micro step, sorted.
std::vector<std::int64_t> step_windows(int world_size, std::int64_t micro_batch, int grad_accum,
                                       std::int64_t num_tokens, std::int64_t step) {
  std::vector<std::int64_t> windows;
  for (int rank = 0; rank < world_size; ++rank) {
    const Sampler sampler(config_for(world_size, rank, micro_batch, grad_accum), num_tokens);
    for (int micro = 0; micro < grad_accum; ++micro)
      for (std::int64_t row = 0; row < micro_batch; ++row)
        windows.push_back(sampler.window(step, micro, row));
  }
  std::sort(windows.begin(), windows.end());
  return windows;
}

TEST(Sampler, GlobalBatchDoesNotDependOnWorldSize) {
  // train_batch_size 8 split six ways; 1001 tokens = 250 windows, so step 31 straddles the
  // first epoch boundary and 60 steps cover almost two epochs.
  const std::int64_t num_tokens = 1001;
  const std::vector<std::tuple<int, std::int64_t, int>> layouts{{1, 8, 1}, {1, 2, 4}, {2, 4, 1},
                                                                {2, 2, 2}, {4, 2, 1}, {4, 1, 2}};
  for (std::int64_t step = 0; step < 60; ++step) {
    const auto reference = step_windows(1, 8, 1, num_tokens, step);
    EXPECT_EQ(std::set<std::int64_t>(reference.begin(), reference.end()).size(), 8u)
        << "a step repeats a window at step " << step;
    for (const auto& [world, micro, accum] : layouts)
      ASSERT_EQ(step_windows(world, micro, accum, num_tokens, step), reference)
          << "world " << world << " micro " << micro << " accum " << accum << " step " << step;
  }
}

TEST(Sampler, EachEpochVisitsEveryWindowOnceInANewOrder) {
  const Sampler sampler(config_for(1, 0, 5, 1), 1001);  // 250 windows, 50 steps per epoch
  ASSERT_EQ(sampler.num_windows(), 250);
  ASSERT_EQ(sampler.steps_per_epoch(), 50);
  std::vector<std::vector<std::int64_t>> epochs(3);
  for (std::int64_t step = 0; step < 150; ++step)
    for (std::int64_t j = 0; j < 5; ++j)
      epochs[static_cast<std::size_t>(sampler.epoch_of_step(step))].push_back(
          sampler.global_window(step, j));
  for (const auto& order : epochs) {
    std::vector<std::int64_t> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    std::vector<std::int64_t> all(250);
    std::iota(all.begin(), all.end(), 0);
    EXPECT_EQ(sorted, all);
  }
  EXPECT_NE(epochs[0], epochs[1]);
  EXPECT_NE(epochs[1], epochs[2]);
}

TEST(Sampler, FillsInputsAndShiftedTargetsFromTheWindow) {
  const InMemoryTokens tokens = counting_tokens(1001);
  const Sampler sampler(config_for(2, 1, 3, 2), tokens);
  std::vector<std::int32_t> inputs(12), targets(12);
  sampler.fill_micro_batch(tokens, 5, 1, inputs.data(), targets.data());
  for (std::int64_t row = 0; row < 3; ++row) {
    const std::int64_t first = sampler.window(5, 1, row) * 4;
    for (std::int64_t t = 0; t < 4; ++t) {
      EXPECT_EQ(inputs[static_cast<std::size_t>(row * 4 + t)], first + t);
      EXPECT_EQ(targets[static_cast<std::size_t>(row * 4 + t)], first + t + 1);
    }
  }
}

TEST(Sampler, LastWindowEndsInsideTheSource) {
  // 9 tokens at T = 4: windows [0..4] and [4..8]; a 10th token would not add a window.
  const InMemoryTokens tokens = counting_tokens(9);
  const Sampler sampler(config_for(1, 0, 2, 1), tokens);
  EXPECT_EQ(sampler.num_windows(), 2);
  std::vector<std::int32_t> inputs(8), targets(8);
  for (std::int64_t step = 0; step < 5; ++step)
    EXPECT_NO_THROW(sampler.fill_micro_batch(tokens, step, 0, inputs.data(), targets.data()));
}

TEST(Sampler, ResumesExactlyFromItsState) {
  const InMemoryTokens tokens = counting_tokens(5001);
  Sampler running(config_for(2, 1, 2, 2), tokens);
  for (int i = 0; i < 17; ++i) running.advance();
  const SamplerState saved = running.state();
  EXPECT_EQ(saved.step, 17);

  Sampler resumed(config_for(2, 1, 2, 2), tokens);
  resumed.restore(saved);
  EXPECT_EQ(resumed.step(), 17);
  std::vector<std::int32_t> a_inputs(8), a_targets(8), b_inputs(8), b_targets(8);
  for (std::int64_t step = resumed.step(); step < 40; ++step) {
    for (int micro = 0; micro < 2; ++micro) {
      running.fill_micro_batch(tokens, step, micro, a_inputs.data(), a_targets.data());
      resumed.fill_micro_batch(tokens, step, micro, b_inputs.data(), b_targets.data());
      ASSERT_EQ(a_inputs, b_inputs);
      ASSERT_EQ(a_targets, b_targets);
    }
  }

  SamplerConfig other_seed = config_for(2, 1, 2, 2);
  other_seed.seed += 1;
  Sampler mismatched(other_seed, tokens);
  EXPECT_THROW(mismatched.restore(saved), std::invalid_argument);
  Sampler other_data(config_for(2, 1, 2, 2), 4001);
  EXPECT_THROW(other_data.restore(saved), std::invalid_argument);
}

TEST(Sampler, RejectsInconsistentBatchesAndShortSources) {
  SamplerConfig config = config_for(2, 0, 2, 2);
  config.train_batch_size = 6;
  EXPECT_THROW(Sampler(config, 1000), std::invalid_argument);
  config = config_for(2, 2, 2, 2);
  EXPECT_THROW(Sampler(config, 1000), std::invalid_argument);

  const InMemoryTokens four = counting_tokens(4);  // T = 4 needs 5
  try {
    Sampler sampler(config_for(1, 0, 1, 1), four);
    FAIL() << "expected an IoError";
  } catch (const IoError& error) {
    EXPECT_NE(std::string(error.what()).find("counting tokens"), std::string::npos) << error.what();
    EXPECT_NE(std::string(error.what()).find("needs 5"), std::string::npos) << error.what();
  }
}

}  // namespace
}  // namespace zt::io
