// SPDX-License-Identifier: Apache-2.0
#include "io/safetensors_writer.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace zt::io {

std::int64_t TensorDescription::numel() const {
  std::int64_t count = 1;
  for (const auto extent : shape) count *= extent;
  return count;
}

namespace {
std::runtime_error file_error(const std::string& what, const std::string& path) {
  return std::runtime_error(what + " " + path + ": " + std::strerror(errno));
}
}  // namespace

SafetensorsWriter::SafetensorsWriter(
    std::string path, std::vector<TensorDescription> tensors,
    const std::vector<std::pair<std::string, std::string>>& metadata)
    : path_(std::move(path)), tensors_(std::move(tensors)) {
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

  namespace fs = std::filesystem;
  const fs::path target(path_);
  std::error_code error;
  if (target.has_parent_path()) fs::create_directories(target.parent_path(), error);
  temporary_ = path_ + ".tmp." + std::to_string(getpid());
  file_ = std::fopen(temporary_.c_str(), "wb");
  if (file_ == nullptr) throw file_error("cannot write", temporary_);
  unsigned char length[8];
  const auto size = static_cast<std::uint64_t>(text.size());
  for (int i = 0; i < 8; ++i) length[i] = static_cast<unsigned char>(size >> (8 * i));
  if (std::fwrite(length, 1, 8, file_) != 8 ||
      std::fwrite(text.data(), 1, text.size(), file_) != text.size())
    throw file_error("cannot write", temporary_);
}

SafetensorsWriter::~SafetensorsWriter() {
  if (file_ != nullptr) std::fclose(file_);
  if (!finished_ && !temporary_.empty()) std::remove(temporary_.c_str());
}

void SafetensorsWriter::write_next(const float* values) {
  if (next_ >= tensors_.size()) throw std::logic_error("safetensors: more tensors than declared");
  const auto count = static_cast<std::size_t>(tensors_[next_].numel());
  // Little-endian fp32 is what this writer targets (every platform zerotrain builds on).
  static_assert(sizeof(float) == 4, "fp32");
  if (std::fwrite(values, sizeof(float), count, file_) != count)
    throw file_error("cannot write", temporary_);
  ++next_;
}

void SafetensorsWriter::finish() {
  if (next_ != tensors_.size())
    throw std::logic_error("safetensors: " + std::to_string(tensors_.size() - next_) +
                           " tensors were not written");
  if (std::fflush(file_) != 0 || fsync(fileno(file_)) != 0)
    throw file_error("cannot write", temporary_);
  std::fclose(file_);
  file_ = nullptr;
  std::error_code error;
  std::filesystem::rename(temporary_, path_, error);
  if (error)
    throw std::runtime_error("cannot rename " + temporary_ + " to " + path_ + ": " +
                             error.message());
  finished_ = true;
}

}  // namespace zt::io
