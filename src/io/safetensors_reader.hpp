// SPDX-License-Identifier: Apache-2.0
// Reads tensors from a safetensors file (an 8-byte little-endian header length, a JSON header
// naming each tensor's dtype, shape and byte range, then the raw data) a range of elements at a
// time, converted to fp32, so a model can be initialised from a file with memory proportional
// to the piece being filled, never the file.
//
// The header is validated as the format's reference implementation does before anything is
// read: the header lies inside the file and is a JSON object, every tensor's dtype is known and
// its byte range holds exactly shape x dtype size bytes, and the ranges tile the data area with
// no overlap and no hole (the format forbids holes, so a file cannot hide a second payload).
// Anything else is an io::IoError naming the file and the tensor. Reads use pread() on a file
// descriptor held open from the validation on: a file replaced under the same name is not
// seen, and one truncated underneath reads as an error, not as a signal (as mmap would).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace zt::io {

/// The element types the format names ("F32", "BF16", ...), in its order.
enum class SafetensorsDType {
  kBool,
  kU8,
  kI8,
  kF8E5M2,
  kF8E4M3,
  kI16,
  kU16,
  kF16,
  kBF16,
  kI32,
  kU32,
  kF32,
  kI64,
  kU64,
  kF64,
};

/// The header's name of `dtype`: "F32", "F8_E4M3", ...
const char* safetensors_dtype_name(SafetensorsDType dtype);
/// Bytes per element.
int safetensors_dtype_size(SafetensorsDType dtype);
/// The dtype a header names, or nullopt for a name the format does not define.
std::optional<SafetensorsDType> parse_safetensors_dtype(std::string_view name);
/// Whether SafetensorsReader::read converts this dtype to fp32: F32, F16, BF16 and F64 (the
/// dtypes weights come in; integer and 8-bit tensors are listed but not read).
bool reads_as_float(SafetensorsDType dtype);

struct SafetensorsTensor {
  std::string name;
  SafetensorsDType dtype = SafetensorsDType::kF32;
  std::vector<std::int64_t> shape;
  std::int64_t numel = 0;
  /// Byte range in the data area (which starts after the header), as the header's
  /// data_offsets.
  std::int64_t data_begin = 0;
  std::int64_t data_end = 0;
};

class SafetensorsReader {
 public:
  /// Opens `path` and validates its header. `what` names the file in messages
  /// ("--init-weights"). Throws IoError ("<what> '<path>': ...") for a file that is not a
  /// valid safetensors file, and for a path that is no readable regular file.
  explicit SafetensorsReader(std::string path, std::string what = "safetensors file");
  ~SafetensorsReader();
  SafetensorsReader(const SafetensorsReader&) = delete;
  SafetensorsReader& operator=(const SafetensorsReader&) = delete;

  const std::string& path() const { return path_; }
  /// How messages name the file: "<what> '<path>'".
  const std::string& label() const { return label_; }
  /// Every tensor, in the order of its data in the file.
  const std::vector<SafetensorsTensor>& tensors() const { return tensors_; }
  /// The tensor of that name, or nullptr.
  const SafetensorsTensor* find(std::string_view name) const;
  /// The header's "__metadata__" (string to string), empty without one.
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  /// The distinct dtypes of the tensors, by name and comma-separated ("F32", "BF16, F32").
  std::string dtype_summary() const;
  std::int64_t file_size() const { return file_size_; }

  /// Fills out[0 .. end-begin) with elements [begin, end) (row-major, flat) of tensors()[index]
  /// converted to fp32 (F16 and BF16 exactly, F64 rounded to nearest). Throws IoError naming
  /// the tensor for a dtype that is not read as float, and naming the file when it has become
  /// shorter since it was opened; std::out_of_range for a range outside the tensor.
  void read(std::size_t index, std::int64_t begin, std::int64_t end, float* out) const;

 private:
  void parse_header(const std::string& header);
  void read_bytes(void* target, std::int64_t bytes, std::int64_t file_offset) const;

  std::string path_;
  std::string label_;
  int fd_ = -1;
  std::int64_t file_size_ = 0;
  std::int64_t data_start_ = 0;  // file offset of the data area
  std::vector<SafetensorsTensor> tensors_;
  std::map<std::string, std::size_t, std::less<>> index_of_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace zt::io
