// SPDX-License-Identifier: Apache-2.0
#include "checkpoint/checksum.hpp"

#include <cstdio>
#include <cstring>

namespace zt::checkpoint {
namespace {

std::uint32_t load_le32(const unsigned char* bytes) {
  return static_cast<std::uint32_t>(bytes[0]) | static_cast<std::uint32_t>(bytes[1]) << 8 |
         static_cast<std::uint32_t>(bytes[2]) << 16 | static_cast<std::uint32_t>(bytes[3]) << 24;
}

}  // namespace

void Checksum::update(const void* data, std::size_t bytes) {
  const auto* in = static_cast<const unsigned char*>(data);
  length_ += bytes;
  while (pending_count_ > 0 && pending_count_ < 4 && bytes > 0) {
    pending_[pending_count_++] = *in++;
    --bytes;
  }
  if (pending_count_ == 4) {
    add_word(load_le32(pending_));
    pending_count_ = 0;
  }
  // Two independent word streams per iteration would be faster still; one is already well
  // beyond the disk.
  std::uint64_t a = a_;
  std::uint64_t b = b_;
  std::size_t i = 0;
  for (; i + 4 <= bytes; i += 4) {
    a += load_le32(in + i);
    b += a;
  }
  a_ = a;
  b_ = b;
  for (; i < bytes; ++i) pending_[pending_count_++] = in[i];
}

std::uint64_t Checksum::value() const {
  std::uint64_t a = a_;
  std::uint64_t b = b_;
  if (pending_count_ > 0) {
    unsigned char last[4] = {};
    std::memcpy(last, pending_, static_cast<std::size_t>(pending_count_));
    a += load_le32(last);
    b += a;
  }
  // Fold the two sums and the length into one word (splitmix64's finaliser).
  std::uint64_t x = a ^ (b * 0x9E3779B97F4A7C15ull) ^ (length_ * 0xBF58476D1CE4E5B9ull);
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 31;
  return x;
}

std::uint64_t checksum_of(const void* data, std::size_t bytes) {
  Checksum sum;
  sum.update(data, bytes);
  return sum.value();
}

std::string checksum_text(std::uint64_t value) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(value));
  return text;
}

}  // namespace zt::checkpoint
