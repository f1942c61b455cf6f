// SPDX-License-Identifier: Apache-2.0
#include "io/safetensors_writer.hpp"

#include <stdexcept>

#include <nlohmann/json.hpp>

namespace zt::io {

std::int64_t TensorDescription::numel() const {
  std::int64_t count = 1;
  for (const auto extent : shape) count *= extent;
  return count;
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
  for (const auto& tensor : tensors_) {
    const std::int64_t bytes = tensor.numel() * 4;
    header[tensor.name] = {
        {"dtype", "F32"}, {"shape", tensor.shape}, {"data_offsets", {offset, offset + bytes}}};
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
  const auto count = static_cast<std::size_t>(tensors_[next_].numel());
  // Little-endian fp32 is what this writer targets (every platform zerotrain builds on).
  static_assert(sizeof(float) == 4, "fp32");
  file_->write(values, count * sizeof(float));
  ++next_;
}

void SafetensorsWriter::finish() {
  if (next_ != tensors_.size())
    throw std::logic_error("safetensors: " + std::to_string(tensors_.size() - next_) +
                           " tensors were not written");
  file_->commit();
}

}  // namespace zt::io
