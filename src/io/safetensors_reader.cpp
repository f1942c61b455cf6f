// SPDX-License-Identifier: Apache-2.0
#include "io/safetensors_reader.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <set>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "files/files.hpp"
#include "io/hdf5_handle.hpp"
#include "kernels/ops/dtype.hpp"

namespace zt::io {
namespace {

// The raw data is reinterpreted in place (F32 is read straight into the caller's floats).
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors data is little-endian");

// The format's own limit (the reference implementation's MAX_HEADER_SIZE): a header beyond it
// is a damaged or hostile file, and parsing it would cost a multiple of its size in memory.
constexpr std::int64_t kMaxHeaderBytes = 100'000'000;

// Elements converted per pread: bounds the staging buffer of a 16-bit or F64 read.
constexpr std::int64_t kConvertChunk = std::int64_t{1} << 16;

struct DTypeInfo {
  SafetensorsDType dtype;
  const char* name;
  int size;
};

constexpr DTypeInfo kDTypes[] = {
    {SafetensorsDType::kBool, "BOOL", 1},      {SafetensorsDType::kU8, "U8", 1},
    {SafetensorsDType::kI8, "I8", 1},          {SafetensorsDType::kF8E5M2, "F8_E5M2", 1},
    {SafetensorsDType::kF8E4M3, "F8_E4M3", 1}, {SafetensorsDType::kI16, "I16", 2},
    {SafetensorsDType::kU16, "U16", 2},        {SafetensorsDType::kF16, "F16", 2},
    {SafetensorsDType::kBF16, "BF16", 2},      {SafetensorsDType::kI32, "I32", 4},
    {SafetensorsDType::kU32, "U32", 4},        {SafetensorsDType::kF32, "F32", 4},
    {SafetensorsDType::kI64, "I64", 8},        {SafetensorsDType::kU64, "U64", 8},
    {SafetensorsDType::kF64, "F64", 8},
};

const DTypeInfo& info_of(SafetensorsDType dtype) {
  for (const auto& info : kDTypes)
    if (info.dtype == dtype) return info;
  throw std::logic_error("safetensors: unknown dtype enumerator");
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string text = "[";
  for (std::size_t i = 0; i < shape.size(); ++i)
    text += (i > 0 ? ", " : "") + std::to_string(shape[i]);
  return text + "]";
}

// A JSON value as a non-negative integer that fits int64, or nullopt (negative, fractional,
// not a number, too large).
std::optional<std::int64_t> as_count(const nlohmann::json& value) {
  if (!value.is_number_unsigned()) return std::nullopt;
  const auto number = value.get<std::uint64_t>();
  if (number > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
    return std::nullopt;
  return static_cast<std::int64_t>(number);
}

// A header value as messages show it: as dump() writes it when it is short and flat, else
// shortened, and never through dump() of a nested value. dump() recurses once per level of
// nesting, so a shape of about a hundred thousand nested brackets (well within kMaxHeaderBytes)
// overflowed the stack while its error was being worded (tests/fuzz/regressions/
// fuzz_safetensors). Elements that are arrays or objects show as [...] or {...};
// after about kMaxShown characters the rest shows as "...".
std::string brief_json(const nlohmann::json& value) {
  constexpr std::size_t kMaxShown = 100;
  const auto scalar = [](const nlohmann::json& v) {
    std::string text = v.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    return text.size() > kMaxShown ? text.substr(0, kMaxShown) + "..." : text;
  };
  if (!value.is_structured()) return scalar(value);
  std::string text = value.is_array() ? "[" : "{";
  for (auto it = value.begin(); it != value.end(); ++it) {
    if (it != value.begin()) text += ",";
    if (text.size() > kMaxShown) {
      text += "...";
      break;
    }
    if (value.is_object()) text += scalar(nlohmann::json(it.key())) + ":";
    text += it->is_array() ? "[...]" : it->is_object() ? "{...}" : scalar(*it);
  }
  return text + (value.is_array() ? "]" : "}");
}

bool multiply_overflows(std::int64_t a, std::int64_t b, std::int64_t& product) {
  return __builtin_mul_overflow(a, b, &product);
}

}  // namespace

const char* safetensors_dtype_name(SafetensorsDType dtype) {
  return info_of(dtype).name;
}

int safetensors_dtype_size(SafetensorsDType dtype) {
  return info_of(dtype).size;
}

std::optional<SafetensorsDType> parse_safetensors_dtype(std::string_view name) {
  for (const auto& info : kDTypes)
    if (name == info.name) return info.dtype;
  return std::nullopt;
}

bool reads_as_float(SafetensorsDType dtype) {
  return dtype == SafetensorsDType::kF32 || dtype == SafetensorsDType::kF16 ||
         dtype == SafetensorsDType::kBF16 || dtype == SafetensorsDType::kF64;
}

SafetensorsReader::SafetensorsReader(std::string path, std::string what)
    : path_(std::move(path)), label_(what + " " + files::quote(path_)) {
  // A FIFO would block the open and a device could act on it: refused before opening, and
  // the descriptor is checked again (O_NONBLOCK: the path may have changed in between).
  try {
    files::check_input_file(path_, what);
  } catch (const files::FileError& error) {
    throw IoError(error.what());
  }
  fd_ = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd_ < 0) throw IoError(label_ + ": cannot open: " + std::strerror(errno));
  try {
    struct stat status {};
    if (::fstat(fd_, &status) != 0)
      throw IoError(label_ + ": cannot stat: " + std::strerror(errno));
    if (!S_ISREG(status.st_mode))
      throw IoError(label_ + " is " + files::describe_file_type(status.st_mode) +
                    ", not a regular file");
    file_size_ = static_cast<std::int64_t>(status.st_size);
    if (file_size_ < 8)
      throw IoError(label_ + ": " + std::to_string(file_size_) +
                    " bytes is too short for a safetensors file (it starts with an 8-byte "
                    "header length)");
    unsigned char length_bytes[8];
    read_bytes(length_bytes, 8, 0);
    std::uint64_t header_length = 0;
    for (int i = 7; i >= 0; --i) header_length = (header_length << 8) | length_bytes[i];
    if (header_length > static_cast<std::uint64_t>(file_size_ - 8))
      throw IoError(label_ + ": the header length " + std::to_string(header_length) +
                    " runs past the end of the file (" + std::to_string(file_size_) +
                    " bytes): truncated, or not a safetensors file");
    if (header_length > static_cast<std::uint64_t>(kMaxHeaderBytes))
      throw IoError(label_ + ": a header of " + std::to_string(header_length) +
                    " bytes is beyond the format's limit of " + std::to_string(kMaxHeaderBytes));
    std::string header(static_cast<std::size_t>(header_length), '\0');
    read_bytes(header.data(), static_cast<std::int64_t>(header_length), 8);
    data_start_ = 8 + static_cast<std::int64_t>(header_length);
    parse_header(header);
  } catch (...) {
    ::close(fd_);
    throw;
  }
}

SafetensorsReader::~SafetensorsReader() {
  if (fd_ >= 0) ::close(fd_);
}

void SafetensorsReader::parse_header(const std::string& header) {
  if (header.empty() || header.front() != '{')
    throw IoError(label_ + ": the header does not start with '{' (not a safetensors file)");
  // nlohmann keeps the last of two equal keys without a word; a name listed twice would let
  // two readers of the file see different tensors under it.
  std::set<std::string> seen;
  std::string duplicate;
  const auto on_event = [&](int depth, nlohmann::json::parse_event_t event,
                            nlohmann::json& parsed) {
    if (event == nlohmann::json::parse_event_t::key && depth == 1 && parsed.is_string() &&
        !seen.insert(parsed.get<std::string>()).second && duplicate.empty())
      duplicate = parsed.get<std::string>();
    return true;
  };
  nlohmann::json root;
  try {
    root = nlohmann::json::parse(header, on_event);
  } catch (const nlohmann::json::exception& error) {
    throw IoError(label_ + ": the header is not valid JSON: " + files::escaped(error.what()));
  }
  if (!root.is_object()) throw IoError(label_ + ": the header is not a JSON object");
  if (!duplicate.empty())
    throw IoError(label_ + ": the header names " + files::quote(duplicate) + " twice");

  const std::int64_t data_size = file_size_ - data_start_;
  for (const auto& [name, entry] : root.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object())
        throw IoError(label_ + ": __metadata__ is not a JSON object of strings");
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string())
          throw IoError(label_ + ": __metadata__ entry " + files::quote(key) + " is not a string");
        metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    const std::string tensor = label_ + ": tensor " + files::quote(name);
    if (!entry.is_object()) throw IoError(tensor + ": its header entry is not a JSON object");
    SafetensorsTensor t;
    t.name = name;
    const auto dtype_it = entry.find("dtype");
    if (dtype_it == entry.end() || !dtype_it->is_string())
      throw IoError(tensor + ": no dtype (a string such as \"F32\")");
    const auto dtype = parse_safetensors_dtype(dtype_it->get<std::string>());
    if (!dtype)
      throw IoError(tensor + ": unknown dtype " + files::quote(dtype_it->get<std::string>()));
    t.dtype = *dtype;
    const auto shape_it = entry.find("shape");
    if (shape_it == entry.end() || !shape_it->is_array())
      throw IoError(tensor + ": no shape (a list of non-negative integers)");
    t.numel = 1;
    for (const auto& extent : *shape_it) {
      const auto value = as_count(extent);
      if (!value)
        throw IoError(tensor + ": shape " + files::escaped(brief_json(*shape_it)) +
                      " is not a list of non-negative integers");
      t.shape.push_back(*value);
      if (multiply_overflows(t.numel, *value, t.numel))
        throw IoError(tensor + ": shape " + shape_text(t.shape) + " has more than 2^63 elements");
    }
    const auto offsets_it = entry.find("data_offsets");
    std::optional<std::int64_t> begin, end;
    if (offsets_it != entry.end() && offsets_it->is_array() && offsets_it->size() == 2) {
      begin = as_count((*offsets_it)[0]);
      end = as_count((*offsets_it)[1]);
    }
    if (!begin || !end || *end < *begin)
      throw IoError(tensor + ": data_offsets " +
                    (offsets_it == entry.end() ? std::string("missing")
                                               : files::escaped(brief_json(*offsets_it))) +
                    " is not a pair [begin, end] of byte offsets with begin <= end");
    t.data_begin = *begin;
    t.data_end = *end;
    std::int64_t bytes = 0;
    const bool too_many = multiply_overflows(t.numel, safetensors_dtype_size(t.dtype), bytes);
    if (too_many || bytes != t.data_end - t.data_begin)
      throw IoError(
          tensor + ": shape " + shape_text(t.shape) + " of " + safetensors_dtype_name(t.dtype) +
          " needs " + (too_many ? std::string("more than 2^63") : std::to_string(bytes)) +
          " bytes, but data_offsets [" + std::to_string(t.data_begin) + ", " +
          std::to_string(t.data_end) + "] hold " + std::to_string(t.data_end - t.data_begin));
    if (t.data_end > data_size)
      throw IoError(tensor + ": data_offsets [" + std::to_string(t.data_begin) + ", " +
                    std::to_string(t.data_end) + "] run past the end of the data area (" +
                    std::to_string(data_size) +
                    " bytes after the header): the file is truncated or damaged");
    tensors_.push_back(std::move(t));
  }

  std::stable_sort(tensors_.begin(), tensors_.end(), [](const auto& a, const auto& b) {
    return a.data_begin != b.data_begin ? a.data_begin < b.data_begin : a.data_end < b.data_end;
  });
  std::int64_t covered = 0;
  for (std::size_t i = 0; i < tensors_.size(); ++i) {
    const auto& t = tensors_[i];
    const auto range = [](const SafetensorsTensor& x) {
      return " (bytes " + std::to_string(x.data_begin) + " to " + std::to_string(x.data_end) + ")";
    };
    if (t.data_begin < covered)
      throw IoError(label_ + ": tensors " + files::quote(tensors_[i - 1].name) +
                    range(tensors_[i - 1]) + " and " + files::quote(t.name) + range(t) +
                    " overlap");
    if (t.data_begin > covered)
      throw IoError(label_ + ": bytes " + std::to_string(covered) + " to " +
                    std::to_string(t.data_begin) +
                    " of the data area belong to no tensor (the format allows no holes)");
    covered = t.data_end;
    index_of_.emplace(t.name, i);
  }
  if (covered != data_size)
    throw IoError(label_ + ": " + std::to_string(data_size - covered) +
                  " bytes after the last tensor's data belong to no tensor (the format allows "
                  "no trailing data)");
}

const SafetensorsTensor* SafetensorsReader::find(std::string_view name) const {
  const auto it = index_of_.find(name);
  return it == index_of_.end() ? nullptr : &tensors_[it->second];
}

std::string SafetensorsReader::dtype_summary() const {
  std::set<std::string> names;
  for (const auto& tensor : tensors_) names.insert(safetensors_dtype_name(tensor.dtype));
  std::string text;
  for (const auto& name : names) text += (text.empty() ? "" : ", ") + name;
  return text.empty() ? "no tensors" : text;
}

void SafetensorsReader::read_bytes(void* target, std::int64_t bytes,
                                   std::int64_t file_offset) const {
  auto* at = static_cast<unsigned char*>(target);
  while (bytes > 0) {
    const std::size_t ask = static_cast<std::size_t>(std::min<std::int64_t>(bytes, 1 << 30));
    const ssize_t got = ::pread(fd_, at, ask, static_cast<off_t>(file_offset));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0)
      throw IoError(label_ + ": read failed at byte " + std::to_string(file_offset) + ": " +
                    std::strerror(errno));
    if (got == 0)
      throw IoError(label_ + ": the file ends at byte " + std::to_string(file_offset) + ", " +
                    std::to_string(file_size_ - file_offset) +
                    " bytes short of the size it had when opened (truncated while in use?)");
    at += got;
    bytes -= got;
    file_offset += got;
  }
}

void SafetensorsReader::read(std::size_t index, std::int64_t begin, std::int64_t end,
                             float* out) const {
  const SafetensorsTensor& t = tensors_.at(index);
  if (begin < 0 || end < begin || end > t.numel)
    throw std::out_of_range("safetensors read: [" + std::to_string(begin) + ", " +
                            std::to_string(end) + ") is outside " + t.name + " (" +
                            std::to_string(t.numel) + " elements)");
  if (!reads_as_float(t.dtype))
    throw IoError(label_ + ": tensor " + files::quote(t.name) + " holds " +
                  safetensors_dtype_name(t.dtype) +
                  " values; only F32, F16, BF16 and F64 tensors are read as weights");
  const int size = safetensors_dtype_size(t.dtype);
  const std::int64_t first_byte = data_start_ + t.data_begin + begin * size;
  if (t.dtype == SafetensorsDType::kF32) {
    read_bytes(out, (end - begin) * size, first_byte);
    return;
  }
  std::vector<unsigned char> staged(
      static_cast<std::size_t>(std::min(end - begin, kConvertChunk) * size));
  for (std::int64_t at = begin; at < end; at += kConvertChunk) {
    const std::int64_t count = std::min(kConvertChunk, end - at);
    read_bytes(staged.data(), count * size, first_byte + (at - begin) * size);
    float* target = out + (at - begin);
    const unsigned char* source = staged.data();
    switch (t.dtype) {
      case SafetensorsDType::kF16:
        for (std::int64_t i = 0; i < count; ++i) {
          kernels::fp16 value;
          std::memcpy(&value.bits, source + 2 * i, 2);
          target[i] = kernels::to_float(value);
        }
        break;
      case SafetensorsDType::kBF16:
        for (std::int64_t i = 0; i < count; ++i) {
          kernels::bf16 value;
          std::memcpy(&value.bits, source + 2 * i, 2);
          target[i] = kernels::to_float(value);
        }
        break;
      case SafetensorsDType::kF64:
        for (std::int64_t i = 0; i < count; ++i) {
          double value;
          std::memcpy(&value, source + 8 * i, 8);
          target[i] = static_cast<float>(value);
        }
        break;
      default:
        throw std::logic_error("safetensors read: unhandled dtype");
    }
  }
}

}  // namespace zt::io
