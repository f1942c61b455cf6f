// SPDX-License-Identifier: Apache-2.0
// Fuzz target: the safetensors reader (io::SafetensorsReader) on arbitrary file bytes, used the
// way `zerotrain train --init-weights` uses it: open and validate the header, then read every
// tensor's first and last elements as fp32. The input is the whole file; it is written to a
// private temporary directory (in /dev/shm when there is one: the reader opens by name).
// The reader's documented answers to a bad file or read are io::IoError (a file that is no
// valid safetensors file, a tensor whose dtype is not read as float) and std::out_of_range (a
// range outside the tensor); any other exception, a sanitizer report, or a broken promise of
// the header's validation (tensors that do not tile the data area exactly, a size that does
// not match shape x dtype, values that read differently alone and in a range, F32/BF16 values
// that differ from the file's bytes) is a finding.
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "io/hdf5_handle.hpp"  // io::IoError
#include "io/safetensors_reader.hpp"
#include "tests/fuzz/fuzz_input.hpp"
#include "tests/fuzz/scratch_file.hpp"

namespace {

using zt::fuzz::invariant_failed;
using zt::fuzz::ScratchFile;
using zt::io::IoError;
using zt::io::SafetensorsDType;
using zt::io::SafetensorsReader;
using zt::io::SafetensorsTensor;

// Elements read at each end of a tensor besides the single first and last ones.
constexpr std::int64_t kEnd = 4;

std::vector<float> read_range(const SafetensorsReader& reader, std::size_t index,
                              std::int64_t begin, std::int64_t end) {
  // One spare element, so a read that writes past `end` shows as a changed guard value.
  std::vector<float> out(static_cast<std::size_t>(end - begin) + 1, 0.0f);
  constexpr std::uint32_t kGuard = 0x7FC0DEADu;
  std::memcpy(&out.back(), &kGuard, 4);
  reader.read(index, begin, end, out.data());
  if (std::memcmp(&out.back(), &kGuard, 4) != 0) invariant_failed("a read wrote past its end");
  out.pop_back();
  return out;
}

bool same_bits(const float* a, const float* b, std::size_t count) {
  return std::memcmp(a, b, count * sizeof(float)) == 0;
}

// The value the file holds for element `element` of `t`, for the dtypes whose conversion is a
// bit copy (F32, BF16); false for the others.
bool expected_bits(const std::uint8_t* data, std::int64_t data_start, const SafetensorsTensor& t,
                   std::int64_t element, std::uint32_t& bits) {
  const std::uint8_t* at = data + data_start + t.data_begin;
  if (t.dtype == SafetensorsDType::kF32) {
    std::memcpy(&bits, at + 4 * element, 4);
    return true;
  }
  if (t.dtype == SafetensorsDType::kBF16) {
    std::uint16_t half;
    std::memcpy(&half, at + 2 * element, 2);
    bits = std::uint32_t{half} << 16;
    return true;
  }
  return false;
}

void check_header(const SafetensorsReader& reader, std::size_t size, std::int64_t data_start) {
  if (reader.file_size() != static_cast<std::int64_t>(size))
    invariant_failed("file_size differs from the input's size");
  if (reader.label().empty() || reader.dtype_summary().empty()) invariant_failed("empty label");
  // The tensors tile the data area, in order, each holding exactly shape x dtype size bytes.
  std::int64_t covered = 0;
  const auto& tensors = reader.tensors();
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const SafetensorsTensor& t = tensors[i];
    if (t.data_begin != covered) invariant_failed("tensors do not tile the data area");
    std::int64_t numel = 1;
    for (const std::int64_t extent : t.shape) {
      if (extent < 0) invariant_failed("a negative extent was accepted");
      if (__builtin_mul_overflow(numel, extent, &numel))
        invariant_failed("a shape of more than 2^63 elements was accepted");
    }
    if (numel != t.numel) invariant_failed("numel is not the product of the shape");
    std::int64_t bytes = 0;
    if (__builtin_mul_overflow(numel, zt::io::safetensors_dtype_size(t.dtype), &bytes) ||
        bytes != t.data_end - t.data_begin)
      invariant_failed("a tensor's byte range does not hold shape x dtype size");
    if (reader.find(t.name) != &t) invariant_failed("find does not return the tensor");
    if (zt::io::parse_safetensors_dtype(zt::io::safetensors_dtype_name(t.dtype)) != t.dtype)
      invariant_failed("a dtype's name does not parse back");
    covered = t.data_end;
  }
  if (data_start + covered != static_cast<std::int64_t>(size))
    invariant_failed("the tensors do not cover the data area up to the end of the file");
  if (reader.find("__metadata__") != nullptr) invariant_failed("__metadata__ read as a tensor");
}

void exercise(const std::string& path, const std::uint8_t* data, std::size_t size) {
  const SafetensorsReader reader(path, "--init-weights");
  // The header validated, the file is at least 8 bytes and its first 8 are the header length.
  if (size < 8) invariant_failed("a file of fewer than 8 bytes was accepted");
  std::uint64_t header_length = 0;
  for (int i = 7; i >= 0; --i) header_length = (header_length << 8) | data[i];
  if (header_length > size - 8) invariant_failed("a header past the end was accepted");
  const auto data_start = static_cast<std::int64_t>(8 + header_length);
  check_header(reader, size, data_start);

  const auto& tensors = reader.tensors();
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const SafetensorsTensor& t = tensors[i];
    const std::int64_t n = t.numel;
    if (!zt::io::reads_as_float(t.dtype)) {
      try {
        read_range(reader, i, 0, std::min<std::int64_t>(n, 1));
      } catch (const IoError&) {
        continue;  // listed, but not read as weights: refused by name
      }
      invariant_failed("a tensor that is not read as float was read");
    }
    read_range(reader, i, 0, 0);
    read_range(reader, i, n, n);
    try {
      read_range(reader, i, n, n + 1);
      invariant_failed("a read past the end of a tensor was not refused");
    } catch (const std::out_of_range&) {
    }
    if (n == 0) continue;
    const std::vector<float> first = read_range(reader, i, 0, 1);
    const std::vector<float> last = read_range(reader, i, n - 1, n);
    const std::int64_t count = std::min(n, kEnd);
    const std::vector<float> head = read_range(reader, i, 0, count);
    const std::vector<float> tail = read_range(reader, i, n - count, n);
    if (!same_bits(first.data(), head.data(), 1) || !same_bits(last.data(), &tail.back(), 1))
      invariant_failed("an element reads differently alone and in a range");
    for (const std::int64_t element : {std::int64_t{0}, n - 1}) {
      std::uint32_t bits = 0;
      if (!expected_bits(data, data_start, t, element, bits)) continue;
      const float& got = element == 0 ? first.front() : last.front();
      if (std::memcmp(&got, &bits, 4) != 0)
        invariant_failed("an F32 or BF16 element differs from the file's bytes");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static ScratchFile scratch("safetensors", "model.safetensors");
  const std::string& path = scratch.write(data, size);
  try {
    exercise(path, data, size);
  } catch (const IoError&) {
    // the expected answer to a malformed file
  }
  return 0;
}
