// SPDX-License-Identifier: Apache-2.0
// The 64-bit checksum of checkpoint files and tensors: Fletcher sums over 32-bit little-endian
// words (a: the sum of the words, b: the sum of the running a's, both mod 2^64), mixed with
// the length. It catches every single-bit flip, truncation and reordering of words, streams
// at several GB/s, and is easy to recompute outside zerotrain (tests/checkpoint/checksum.py).
// Not cryptographic: it guards against accidents, not against an adversary.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace zt::checkpoint {

class Checksum {
 public:
  void update(const void* data, std::size_t bytes);
  /// The checksum of everything given so far (a partial last word counts as zero-padded).
  std::uint64_t value() const;

 private:
  void add_word(std::uint32_t word) {
    a_ += word;
    b_ += a_;
  }
  std::uint64_t a_ = 0;
  std::uint64_t b_ = 0;
  std::uint64_t length_ = 0;
  unsigned char pending_[4] = {};
  int pending_count_ = 0;
};

std::uint64_t checksum_of(const void* data, std::size_t bytes);
/// 16 lower-case hex digits.
std::string checksum_text(std::uint64_t value);

}  // namespace zt::checkpoint
