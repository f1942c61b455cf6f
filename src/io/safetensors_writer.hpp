// SPDX-License-Identifier: Apache-2.0
// Writes fp32 tensors in the safetensors format (an 8-byte little-endian header length, a JSON
// header naming each tensor's dtype, shape and byte range, then the raw data), one tensor at a
// time, so a caller can gather and write a model with memory proportional to its largest
// tensor. The file appears under its name only when complete (temporary file, fsync, rename).
// Written by hand: the format is one JSON header, and no C++ safetensors library is packaged.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace zt::io {

struct TensorDescription {
  std::string name;
  std::vector<std::int64_t> shape;
  std::int64_t numel() const;
};

class SafetensorsWriter {
 public:
  /// Opens `path`'s temporary file and writes the header. Throws std::runtime_error naming the
  /// path when it cannot.
  SafetensorsWriter(std::string path, std::vector<TensorDescription> tensors,
                    const std::vector<std::pair<std::string, std::string>>& metadata = {});
  ~SafetensorsWriter();  // removes the temporary file unless finish() succeeded
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  /// The next tensor's values, in the order given to the constructor.
  void write_next(const float* values);
  /// Flushes, fsyncs and renames the file into place.
  void finish();

 private:
  std::string path_;
  std::string temporary_;
  std::vector<TensorDescription> tensors_;
  std::size_t next_ = 0;
  std::FILE* file_ = nullptr;
  bool finished_ = false;
};

}  // namespace zt::io
