// SPDX-License-Identifier: Apache-2.0
#include "io/token_source.hpp"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "io/hdf5_handle.hpp"

namespace zt::io {

void TokenSource::check_range(std::int64_t offset, std::int64_t count) const {
  if (offset < 0 || count < 0 || offset > size() - count) {
    std::ostringstream message;
    message << describe() << ": read of tokens [" << offset << ", " << offset + count
            << ") is outside [0, " << size() << ")";
    throw IoError(message.str());
  }
}

void TokenSource::validate(int vocab_size, std::int64_t begin, std::int64_t end) const {
  check_range(begin, end - begin);
  constexpr std::int64_t kChunk = std::int64_t{1} << 20;
  std::vector<std::int32_t> buffer(static_cast<std::size_t>(std::min(kChunk, end - begin)));
  for (std::int64_t start = begin; start < end; start += kChunk) {
    const std::int64_t count = std::min(kChunk, end - start);
    read(start, count, buffer.data());
    for (std::int64_t i = 0; i < count; ++i) {
      const std::int32_t token = buffer[static_cast<std::size_t>(i)];
      if (token < 0 || token >= vocab_size) {
        std::ostringstream message;
        message << describe() << ": token at offset " << start + i << " is " << token
                << ", outside the model's vocabulary [0, " << vocab_size << ")";
        throw IoError(message.str());
      }
    }
  }
}

InMemoryTokens::InMemoryTokens(std::vector<std::int32_t> tokens, int vocab_size_hint,
                               std::string name)
    : tokens_(std::move(tokens)), vocab_size_hint_(vocab_size_hint), name_(std::move(name)) {}

void InMemoryTokens::read(std::int64_t offset, std::int64_t count, std::int32_t* out) const {
  check_range(offset, count);
  if (count > 0)
    std::memcpy(out, tokens_.data() + offset, static_cast<std::size_t>(count) * sizeof(*out));
}

std::string InMemoryTokens::describe() const {
  std::ostringstream text;
  text << name_ << " (" << tokens_.size() << " tokens)";
  return text.str();
}

}  // namespace zt::io
