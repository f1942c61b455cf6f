// SPDX-License-Identifier: Apache-2.0
// The checkpoint checksum: the same value however the bytes are streamed, and a different one
// for every single-bit flip, a truncation or an appended zero.
#include <gtest/gtest.h>

#include <random>
#include <set>
#include <vector>

#include "checkpoint/checksum.hpp"

namespace {

using zt::checkpoint::Checksum;
using zt::checkpoint::checksum_of;

std::vector<unsigned char> random_bytes(std::size_t count, unsigned seed) {
  std::mt19937 generator(seed);
  std::vector<unsigned char> bytes(count);
  for (auto& byte : bytes) byte = static_cast<unsigned char>(generator());
  return bytes;
}

TEST(Checksum, DoesNotDependOnHowTheBytesAreStreamed) {
  const auto bytes = random_bytes(1031, 1);
  const auto whole = checksum_of(bytes.data(), bytes.size());
  std::mt19937 generator(2);
  for (int trial = 0; trial < 50; ++trial) {
    Checksum sum;
    std::size_t done = 0;
    while (done < bytes.size()) {
      const std::size_t piece = std::min<std::size_t>(bytes.size() - done, generator() % 13);
      sum.update(bytes.data() + done, piece);
      done += piece;
    }
    EXPECT_EQ(sum.value(), whole);
  }
}

TEST(Checksum, SeesEverySingleBitFlip) {
  auto bytes = random_bytes(257, 3);
  const auto original = checksum_of(bytes.data(), bytes.size());
  std::set<std::uint64_t> seen{original};
  for (std::size_t i = 0; i < bytes.size(); ++i)
    for (int bit = 0; bit < 8; ++bit) {
      bytes[i] ^= static_cast<unsigned char>(1u << bit);
      const auto flipped = checksum_of(bytes.data(), bytes.size());
      EXPECT_NE(flipped, original) << "byte " << i << " bit " << bit;
      seen.insert(flipped);
      bytes[i] ^= static_cast<unsigned char>(1u << bit);
    }
  EXPECT_EQ(seen.size(), 1 + bytes.size() * 8);  // and no two flips collide
}

TEST(Checksum, SeesTruncationAppendedZerosAndSwappedWords) {
  auto bytes = random_bytes(64, 4);
  const auto original = checksum_of(bytes.data(), bytes.size());
  EXPECT_NE(checksum_of(bytes.data(), bytes.size() - 1), original);
  bytes.push_back(0);
  EXPECT_NE(checksum_of(bytes.data(), bytes.size()), original);
  bytes.pop_back();
  std::swap_ranges(bytes.begin(), bytes.begin() + 4, bytes.begin() + 4);
  EXPECT_NE(checksum_of(bytes.data(), bytes.size()), original);
  const std::vector<unsigned char> zeros(16, 0);
  EXPECT_NE(checksum_of(zeros.data(), 8), checksum_of(zeros.data(), 16));
}

}  // namespace
