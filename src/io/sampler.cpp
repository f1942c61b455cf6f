// SPDX-License-Identifier: Apache-2.0
#include "io/sampler.hpp"

#include <algorithm>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "io/hdf5_handle.hpp"
#include "io/random.hpp"

namespace zt::io {
namespace {

// Keys the permutation of one epoch of one run; mixing twice keeps (seed, epoch) and
// (seed', epoch') with seed ^ epoch == seed' ^ epoch' apart.
std::uint64_t epoch_key(std::uint64_t seed, std::int64_t epoch) {
  return mix64(mix64(seed ^ 0xA5A5'5A5A'0F0F'F0F0ULL) + static_cast<std::uint64_t>(epoch));
}

}  // namespace

WindowPermutation::WindowPermutation(std::int64_t size, std::uint64_t key) : size_(size) {
  if (size < 1)
    throw std::invalid_argument("WindowPermutation: size must be >= 1, got " +
                                std::to_string(size));
  if (size > (std::int64_t{1} << 62))
    throw std::invalid_argument("WindowPermutation: size " + std::to_string(size) +
                                " is beyond the supported 2^62");
  // The Feistel domain is 2^(2 * half_bits) >= size, so it is less than 4 * size and cycle
  // walking takes fewer than 4 rounds trips on average.
  while ((std::uint64_t{1} << (2 * half_bits_)) < static_cast<std::uint64_t>(size)) ++half_bits_;
  half_mask_ = (std::uint64_t{1} << half_bits_) - 1;
  SplitMix64 keys(key);
  for (std::uint64_t& round_key : round_keys_) round_key = keys.next();
}

std::uint64_t WindowPermutation::encrypt(std::uint64_t value) const {
  // Balanced Feistel: each round is invertible whatever the round function, so the whole is a
  // bijection of the 2^(2 * half_bits) domain.
  std::uint64_t left = value >> half_bits_;
  std::uint64_t right = value & half_mask_;
  for (std::uint64_t round_key : round_keys_) {
    const std::uint64_t mixed = left ^ (mix64(right ^ round_key) & half_mask_);
    left = right;
    right = mixed;
  }
  return (left << half_bits_) | right;
}

std::int64_t WindowPermutation::operator()(std::int64_t index) const {
  if (index < 0 || index >= size_)
    throw std::out_of_range("WindowPermutation: index " + std::to_string(index) + " outside [0, " +
                            std::to_string(size_) + ")");
  // Cycle walking: following the bijection from an index inside [0, size) must come back inside
  // before it returns to the start, so the restriction is a bijection of [0, size).
  std::uint64_t value = static_cast<std::uint64_t>(index);
  do {
    value = encrypt(value);
  } while (value >= static_cast<std::uint64_t>(size_));
  return static_cast<std::int64_t>(value);
}

Sampler::Sampler(const SamplerConfig& config, std::int64_t num_tokens,
                 const std::string& source_name)
    : config_(config) {
  auto require_positive = [](std::int64_t value, const char* name) {
    if (value < 1)
      throw std::invalid_argument(std::string("sampler: ") + name + " must be >= 1, got " +
                                  std::to_string(value));
  };
  require_positive(config.seq_len, "seq_len");
  require_positive(config.train_batch_size, "train_batch_size");
  require_positive(config.micro_batch, "micro_batch");
  require_positive(config.grad_accum, "grad_accum");
  require_positive(config.world_size, "world_size");
  if (config.rank < 0 || config.rank >= config.world_size)
    throw std::invalid_argument("sampler: rank " + std::to_string(config.rank) +
                                " outside [0, world_size=" + std::to_string(config.world_size) +
                                ")");
  if (config.train_batch_size != config.micro_batch * config.grad_accum * config.world_size) {
    std::ostringstream message;
    message << "sampler: train_batch_size " << config.train_batch_size << " != micro_batch "
            << config.micro_batch << " x grad_accum " << config.grad_accum << " x world_size "
            << config.world_size;
    throw std::invalid_argument(message.str());
  }
  num_windows_ = num_tokens > 0 ? (num_tokens - 1) / config.seq_len : 0;
  if (num_windows_ < 1) {
    std::ostringstream message;
    message << source_name << " has " << num_tokens << " tokens; one training window of seq_len "
            << config.seq_len << " needs " << config.seq_len + 1;
    throw IoError(message.str());
  }
}

Sampler::Sampler(const SamplerConfig& config, const TokenSource& source)
    : Sampler(config, source.size(), source.describe()) {}

std::int64_t Sampler::steps_per_epoch() const {
  return (num_windows_ + config_.train_batch_size - 1) / config_.train_batch_size;
}

std::int64_t Sampler::epoch_of_step(std::int64_t step) const {
  return step * config_.train_batch_size / num_windows_;
}

std::int64_t Sampler::global_window(std::int64_t step, std::int64_t sample) const {
  if (step < 0 || sample < 0 || sample >= config_.train_batch_size)
    throw std::out_of_range("sampler: step " + std::to_string(step) + ", sample " +
                            std::to_string(sample) + " outside the run");
  const std::int64_t global = step * config_.train_batch_size + sample;
  const std::int64_t epoch = global / num_windows_;
  // Built per call: four hashes, cheaper than the hyperslab read that follows.
  const WindowPermutation permutation(num_windows_, epoch_key(config_.seed, epoch));
  return permutation(global % num_windows_);
}

std::int64_t Sampler::window(std::int64_t step, int micro_step, std::int64_t row) const {
  if (micro_step < 0 || micro_step >= config_.grad_accum || row < 0 || row >= config_.micro_batch)
    throw std::out_of_range("sampler: micro step " + std::to_string(micro_step) + ", row " +
                            std::to_string(row) + " outside grad_accum " +
                            std::to_string(config_.grad_accum) + " x micro_batch " +
                            std::to_string(config_.micro_batch));
  const std::int64_t sample =
      (static_cast<std::int64_t>(micro_step) * config_.world_size + config_.rank) *
          config_.micro_batch +
      row;
  return global_window(step, sample);
}

void Sampler::fill_micro_batch(const TokenSource& source, std::int64_t step, int micro_step,
                               std::int32_t* inputs, std::int32_t* targets) const {
  if ((source.size() - 1) / config_.seq_len != num_windows_)
    throw std::invalid_argument("sampler was built for " + std::to_string(num_windows_) +
                                " windows but " + source.describe() + " has " +
                                std::to_string((source.size() - 1) / config_.seq_len));
  const std::int64_t length = config_.seq_len;
  std::vector<std::int32_t> window_tokens(static_cast<std::size_t>(length + 1));
  for (std::int64_t row = 0; row < config_.micro_batch; ++row) {
    const std::int64_t w = window(step, micro_step, row);
    source.read(w * length, length + 1, window_tokens.data());
    std::copy(window_tokens.begin(), window_tokens.end() - 1, inputs + row * length);
    std::copy(window_tokens.begin() + 1, window_tokens.end(), targets + row * length);
  }
  // After the reads: a file cut short before them reads as zeros, which only its size betrays.
  source.check_unchanged();
}

SamplerState Sampler::state() const {
  return {step_, config_.seed, num_windows_, config_.seq_len, config_.train_batch_size};
}

void Sampler::restore(const SamplerState& state) {
  auto mismatch = [](const char* what, auto saved, auto now) {
    std::ostringstream message;
    message << "sampler checkpoint was written with " << what << " " << saved
            << " but this run has " << now << "; resuming would not continue the same data order";
    throw std::invalid_argument(message.str());
  };
  if (state.seed != config_.seed) mismatch("seed", state.seed, config_.seed);
  if (state.num_windows != num_windows_) mismatch("windows", state.num_windows, num_windows_);
  if (state.seq_len != config_.seq_len) mismatch("seq_len", state.seq_len, config_.seq_len);
  if (state.train_batch_size != config_.train_batch_size)
    mismatch("train_batch_size", state.train_batch_size, config_.train_batch_size);
  if (state.step < 0) throw std::invalid_argument("sampler checkpoint has a negative step");
  step_ = state.step;
}

}  // namespace zt::io
