// SPDX-License-Identifier: Apache-2.0
// Which training windows each rank reads at each step: seeded, resumable, rank-aware.
//
// A source of N tokens holds W = (N - 1) / T windows; window w is tokens [w*T, w*T + T]
// (T + 1 tokens: inputs are the first T, targets the last T). Each epoch visits every window
// once in an order given by a keyed bijection of [0, W) (a Feistel network with cycle walking),
// so any step's windows are computed directly, without O(W) memory or replaying earlier steps.
//
// Global sample j (0 <= j < train_batch_size) of step s is number g = s * train_batch_size + j
// of the run: epoch g / W, window permutation_{seed, epoch}(g mod W). Rank r reads, at micro
// step a, rows j = (a * world_size + r) * micro_batch + b, b < micro_batch. The set of windows
// of a step therefore depends on train_batch_size only, not on how it is split over ranks and
// accumulation steps, which is what keeps loss curves equal for np = 1, 2, 4.
#pragma once

#include <cstdint>
#include <string>

#include "io/token_source.hpp"

namespace zt::io {

/// A pseudo-random permutation of [0, size) keyed by a 64-bit key: Feistel rounds on the
/// smallest even number of bits covering size, re-applied while the result falls outside.
class WindowPermutation {
 public:
  WindowPermutation(std::int64_t size, std::uint64_t key);
  std::int64_t operator()(std::int64_t index) const;
  std::int64_t size() const { return size_; }

 private:
  std::uint64_t encrypt(std::uint64_t value) const;

  std::int64_t size_;
  int half_bits_ = 1;
  std::uint64_t half_mask_ = 1;
  std::uint64_t round_keys_[4] = {};
};

struct SamplerConfig {
  std::int64_t seq_len = 0;           ///< T: targets per window
  std::int64_t train_batch_size = 0;  ///< windows per optimizer step, all ranks together
  std::int64_t micro_batch = 0;       ///< windows per rank per micro step
  int grad_accum = 1;                 ///< micro steps per optimizer step
  int world_size = 1;
  int rank = 0;
  std::uint64_t seed = 0;
};

/// What a checkpoint stores. step is all the sampler needs to continue; the rest detects a
/// resume with different data or batch settings, which would not continue the same sequence.
struct SamplerState {
  std::int64_t step = 0;
  std::uint64_t seed = 0;
  std::int64_t num_windows = 0;
  std::int64_t seq_len = 0;
  std::int64_t train_batch_size = 0;
};

class Sampler {
 public:
  /// Throws std::invalid_argument when train_batch_size != micro_batch * grad_accum *
  /// world_size, a size is not positive, or rank is outside [0, world_size); IoError when the
  /// source (num_tokens long, named `source_name` in the message) has no full window.
  Sampler(const SamplerConfig& config, std::int64_t num_tokens,
          const std::string& source_name = "token source");
  /// Same, with the size and name taken from the source.
  Sampler(const SamplerConfig& config, const TokenSource& source);

  const SamplerConfig& config() const { return config_; }
  std::int64_t num_windows() const { return num_windows_; }
  /// Optimizer steps per pass over the data (fractional epochs round up).
  std::int64_t steps_per_epoch() const;
  /// The epoch the first sample of `step` falls in.
  std::int64_t epoch_of_step(std::int64_t step) const;

  /// Window read by global sample j of `step` (0 <= j < train_batch_size).
  std::int64_t global_window(std::int64_t step, std::int64_t sample) const;
  /// Window read by this rank at (step, micro_step) in row `row` of its micro batch.
  std::int64_t window(std::int64_t step, int micro_step, std::int64_t row) const;

  /// Fills this rank's micro batch: inputs and targets are micro_batch x seq_len, row-major;
  /// targets are the inputs shifted by one token. A pure function of its arguments.
  void fill_micro_batch(const TokenSource& source, std::int64_t step, int micro_step,
                        std::int32_t* inputs, std::int32_t* targets) const;

  /// The step the training loop is at; fill_micro_batch does not depend on it, the checkpoint
  /// does. The loop calls advance() after each optimizer step.
  std::int64_t step() const { return step_; }
  void advance() { ++step_; }
  SamplerState state() const;
  /// Continues from a checkpoint; throws std::invalid_argument when its seed, window count,
  /// seq_len or train_batch_size differ from this sampler's.
  void restore(const SamplerState& state);

 private:
  SamplerConfig config_;
  std::int64_t num_windows_ = 0;
  std::int64_t step_ = 0;
};

}  // namespace zt::io
