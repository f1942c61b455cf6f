// SPDX-License-Identifier: Apache-2.0
// Writes tensors in the safetensors format (an 8-byte little-endian header length, a JSON
// header naming each tensor's dtype, shape and byte range, then the raw data), one tensor at a
// time, so a caller can gather and write a model with memory proportional to its largest
// tensor. Values come in as fp32 and are stored as F32, or rounded to F16 / BF16 (to nearest
// even, as training rounds: kernels/ops/dtype.hpp). The file appears under its name only when
// complete (files::AtomicFile: a temporary file no one can redirect, every write checked, fsync,
// rename). Written by hand: the format is one JSON header, and no C++ safetensors library is
// packaged.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "files/files.hpp"
#include "kernels/ops/dtype.hpp"

namespace zt::io {

struct TensorDescription {
  std::string name;
  std::vector<std::int64_t> shape;
  /// How the tensor is stored: F32, F16 or BF16.
  kernels::DType dtype = kernels::DType::F32;
  std::int64_t numel() const;
};

/// The safetensors dtype name of a storable dtype ("F32", "F16", "BF16"); throws
/// std::invalid_argument for the others.
const char* safetensors_name(kernels::DType dtype);

class SafetensorsWriter {
 public:
  /// Opens `path`'s temporary file and writes the header. Throws files::FileError naming the
  /// path (and `what`, e.g. "--save-weights") when it cannot, std::invalid_argument for two
  /// tensors of one name, the reserved name "__metadata__" or a dtype other than F32, F16 and
  /// BF16.
  SafetensorsWriter(std::string path, std::vector<TensorDescription> tensors,
                    const std::vector<std::pair<std::string, std::string>>& metadata = {},
                    const std::string& what = "safetensors file");
  ~SafetensorsWriter();  // removes the temporary file unless finish() succeeded
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  /// The next tensor's values (numel fp32 values, rounded to its dtype), in the order given
  /// to the constructor.
  void write_next(const float* values);
  /// Flushes, fsyncs and renames the file into place.
  void finish();

 private:
  std::vector<TensorDescription> tensors_;
  std::size_t next_ = 0;
  std::unique_ptr<files::AtomicFile> file_;
};

}  // namespace zt::io
