// SPDX-License-Identifier: Apache-2.0
// Splits a fuzz input into the document and a trailer of parameter bytes.
//
// Text inputs are "<document>\0<parameter bytes>": everything after the first NUL picks the
// call's other arguments (world size, flags, format); a config or model file has no NUL of its
// own. A seed without a NUL is a real file read with default arguments, so configs copied from
// inputs/ are good seeds as they are, and mutations that add a NUL explore the arguments
// without breaking the document in front.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

namespace zt::fuzz {

class FuzzInput {
 public:
  FuzzInput(const std::uint8_t* data, std::size_t size) {
    const char* text = reinterpret_cast<const char*>(data);
    std::size_t split = 0;
    while (split < size && data[split] != 0) ++split;
    document_.assign(text, split);
    if (split < size) {
      trailer_ = data + split + 1;
      trailer_size_ = size - split - 1;
      has_trailer_ = true;
    }
  }

  const std::string& document() const { return document_; }
  bool has_trailer() const { return has_trailer_; }

  /// The next trailer byte, 0 once it is used up (so short trailers mean "defaults").
  std::uint8_t byte() { return position_ < trailer_size_ ? trailer_[position_++] : 0; }

  /// An unsigned integer from the next `bytes` trailer bytes (little-endian).
  std::uint64_t unsigned_bytes(int bytes) {
    std::uint64_t value = 0;
    for (int i = 0; i < bytes; ++i) value |= std::uint64_t{byte()} << (8 * i);
    return value;
  }

  /// One of `values`, chosen by the next byte.
  template <class T, std::size_t N>
  T pick(const T (&values)[N]) {
    return values[byte() % N];
  }

 private:
  std::string document_;
  const std::uint8_t* trailer_ = nullptr;
  std::size_t trailer_size_ = 0;
  std::size_t position_ = 0;
  bool has_trailer_ = false;
};

/// Stops the run with a message: for broken invariants, which no exception may hide.
[[noreturn]] inline void invariant_failed(const char* what) {
  std::fputs("fuzz invariant broken: ", stderr);
  std::fputs(what, stderr);
  std::fputc('\n', stderr);
  __builtin_trap();
}

}  // namespace zt::fuzz
