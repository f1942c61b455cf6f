// SPDX-License-Identifier: Apache-2.0
#include "io/safetensors_writer.hpp"

#include <algorithm>
#include <set>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace zt::io {

std::int64_t TensorDescription::numel() const {
  std::int64_t count = 1;
  for (const auto extent : shape) count *= extent;
  return count;
}

const char* safetensors_name(kernels::DType dtype) {
  switch (dtype) {
    case kernels::DType::F32:
      return "F32";
    case kernels::DType::F16:
      return "F16";
    case kernels::DType::BF16:
      return "BF16";
    default:
      break;
  }
  throw std::invalid_argument(std::string("safetensors: cannot store ") +
                              kernels::dtype_name(dtype) + " weights");
}

SafetensorsWriter::SafetensorsWriter(
    std::string path, std::vector<TensorDescription> tensors,
    const std::vector<std::pair<std::string, std::string>>& metadata, const std::string& what)
    : tensors_(std::move(tensors)) {
  nlohmann::ordered_json header;
  if (!metadata.empty()) {
    nlohmann::ordered_json meta;
    for (const auto& [key, value] : metadata) meta[key] = value;
    header["__metadata__"] = meta;
  }
  std::int64_t offset = 0;
  std::set<std::string> names;
  for (const auto& tensor : tensors_) {
    // ordered_json would keep the second of two equal names and drop the first's offsets.
    if (tensor.name == "__metadata__" || !names.insert(tensor.name).second)
      throw std::invalid_argument("safetensors: tensor name '" + tensor.name +
                                  "' is reserved or given twice");
    const std::int64_t bytes = tensor.numel() * kernels::size_of(tensor.dtype);
    header[tensor.name] = {{"dtype", safetensors_name(tensor.dtype)},
                           {"shape", tensor.shape},
                           {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  // The format lets the header be padded with spaces; 8-byte alignment keeps the data aligned.
  while ((text.size() + 8) % 8 != 0) text.push_back(' ');

  file_ = std::make_unique<files::AtomicFile>(std::move(path), what);
  unsigned char length[8];
  const auto size = static_cast<std::uint64_t>(text.size());
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(size >> (8 * i));
  file_->write(length, 8);
  file_->write(text);
}

SafetensorsWriter::~SafetensorsWriter() = default;

void SafetensorsWriter::write_next(const float* values) {
  if (next_ >= tensors_.size()) throw std::logic_error("safetensors: more tensors than declared");
  const TensorDescription& tensor = tensors_[next_];
  const std::int64_t count = tensor.numel();
  // Little-endian is what this writer targets (every platform zerotrain builds on).
  static_assert(sizeof(float) == 4, "fp32");
  static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors data is little-endian");
  if (tensor.dtype == kernels::DType::F32) {
    file_->write(values, static_cast<std::size_t>(count) * sizeof(float));
  } else {
    // Rounded a bounded piece at a time: no second copy of the tensor.
    constexpr std::int64_t kPiece = std::int64_t{1} << 16;
    std::vector<std::uint16_t> rounded(static_cast<std::size_t>(std::min(count, kPiece)));
    for (std::int64_t at = 0; at < count; at += kPiece) {
      const std::int64_t n = std::min(kPiece, count - at);
      if (tensor.dtype == kernels::DType::F16)
        for (std::int64_t i = 0; i < n; ++i)
          rounded[i] = kernels::from_float<kernels::fp16>(values[at + i]).bits;
      else
        for (std::int64_t i = 0; i < n; ++i)
          rounded[i] = kernels::from_float<kernels::bf16>(values[at + i]).bits;
      file_->write(rounded.data(), static_cast<std::size_t>(n) * sizeof(std::uint16_t));
    }
  }
  ++next_;
}

void SafetensorsWriter::finish() {
  if (next_ != tensors_.size())
    throw std::logic_error("safetensors: " + std::to_string(tensors_.size() - next_) +
                           " tensors were not written");
  file_->commit();
}

}  // namespace zt::io
