// SPDX-License-Identifier: Apache-2.0
// A read-only, random-access stream of integer tokens: what the sampler cuts windows from.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace zt::io {

class TokenSource {
 public:
  virtual ~TokenSource() = default;

  /// Number of tokens.
  virtual std::int64_t size() const = 0;

  /// Copies tokens [offset, offset + count) to out; throws IoError when the range is outside
  /// [0, size()).
  virtual void read(std::int64_t offset, std::int64_t count, std::int32_t* out) const = 0;

  /// One line for logs and error messages ("HDF5 'data.h5':/tokens (1234 uint16 tokens)").
  virtual std::string describe() const = 0;

  /// The vocabulary size the data was made for, or 0 when the source does not know.
  virtual int vocab_size_hint() const = 0;

  /// Scans every token and throws IoError naming the first offset whose value is outside
  /// [0, vocab_size), with its value. Reads in chunks, so it works on sources larger than memory.
  void validate(int vocab_size) const { validate(vocab_size, 0, size()); }
  /// The same for tokens [begin, end) only: ranks split the scan of a large file.
  virtual void validate(int vocab_size, std::int64_t begin, std::int64_t end) const;

  /// Throws IoError if the data changed since it was opened (a file truncated, rewritten or
  /// replaced during training), so that a run stops instead of training on what is there now.
  /// Cheap enough to call after every read (a stat of the file).
  virtual void check_unchanged() const {}

 protected:
  /// Throws IoError unless 0 <= offset, 0 <= count and offset + count <= size().
  void check_range(std::int64_t offset, std::int64_t count) const;
};

/// Tokens held in a vector: for tests and for data made in memory.
class InMemoryTokens final : public TokenSource {
 public:
  explicit InMemoryTokens(std::vector<std::int32_t> tokens, int vocab_size_hint = 0,
                          std::string name = "in-memory tokens");

  std::int64_t size() const override { return static_cast<std::int64_t>(tokens_.size()); }
  void read(std::int64_t offset, std::int64_t count, std::int32_t* out) const override;
  std::string describe() const override;
  int vocab_size_hint() const override { return vocab_size_hint_; }

  const std::vector<std::int32_t>& tokens() const { return tokens_; }

 private:
  std::vector<std::int32_t> tokens_;
  int vocab_size_hint_;
  std::string name_;
};

}  // namespace zt::io
