// SPDX-License-Identifier: Apache-2.0
// A small deterministic random generator for data generation and sampling. The standard
// library's distributions are not specified bit-for-bit, so a stream drawn through them could
// differ between compilers; everything here is fixed integer arithmetic, identical everywhere.
#pragma once

#include <cmath>
#include <cstdint>

namespace zt::io {

/// SplitMix64's output function: a bijective 64-bit mixer with good avalanche. Used both as a
/// hash (keys, Feistel rounds) and, on a counter, as the generator below.
constexpr std::uint64_t mix64(std::uint64_t value) {
  value = (value ^ (value >> 30)) * 0xBF58476D1CE4E5B9ULL;
  value = (value ^ (value >> 27)) * 0x94D049BB133111EBULL;
  return value ^ (value >> 31);
}

class SplitMix64 {
 public:
  explicit SplitMix64(std::uint64_t seed) : state_(seed) {}

  std::uint64_t next() {
    state_ += 0x9E3779B97F4A7C15ULL;
    return mix64(state_);
  }
  /// Uniform in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  /// Uniform integer in [0, bound); bound > 0. Rejection keeps it exactly uniform.
  std::uint64_t below(std::uint64_t bound) {
    const std::uint64_t limit = ~std::uint64_t{0} - (~std::uint64_t{0} % bound);
    std::uint64_t value = next();
    while (value >= limit) value = next();
    return value % bound;
  }
  /// Exponential with mean 1.
  double exponential() { return -std::log1p(-uniform()); }

 private:
  std::uint64_t state_;
};

}  // namespace zt::io
