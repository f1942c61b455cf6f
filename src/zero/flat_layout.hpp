// SPDX-License-Identifier: Apache-2.0
// The parameter registry: every parameter's place in one flat buffer, padded so the buffer
// divides evenly among the ranks and each rank's slice stays aligned.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace zt::zero {

struct FlatEntry {
  std::string name;
  std::vector<std::int64_t> shape;
  std::int64_t numel = 0;
  std::int64_t offset = 0;  // global offset in the flat buffer
  int layer = 0;
};

/// Parameters laid out back to back in registration order (layer by layer), each starting at
/// a multiple of `kElementAlignment` elements; the total is padded to a multiple of
/// world_size * kElementAlignment so every rank owns a slice of the same, aligned length.
class FlatLayout {
 public:
  /// 16 fp32 elements = 64 bytes: one cache line and one AVX-512 vector. Slices are multiples
  /// of it; 4 KiB alignment for O_DIRECT is the offload buffers' business.
  static constexpr std::int64_t kElementAlignment = 16;

  FlatLayout() = default;
  FlatLayout(std::vector<FlatEntry> entries, int world_size);

  const std::vector<FlatEntry>& entries() const { return entries_; }
  std::int64_t unpadded_elements() const { return unpadded_; }  // sum of numel
  std::int64_t padded_elements() const { return padded_; }
  int world_size() const { return world_size_; }
  std::int64_t slice_elements() const { return padded_ / world_size_; }
  std::int64_t slice_begin(int rank) const { return rank * slice_elements(); }
  std::int64_t slice_end(int rank) const { return (rank + 1) * slice_elements(); }

  /// The parts of parameters that fall in [begin, end): (entry index, offset in the entry,
  /// length), in order.
  struct Piece {
    int entry = 0;
    std::int64_t offset_in_entry = 0;
    std::int64_t length = 0;
    std::int64_t global_offset = 0;
  };
  std::vector<Piece> pieces_in(std::int64_t begin, std::int64_t end) const;

  /// [first, last) global range covered by the given entries (contiguous in registration order).
  std::int64_t range_begin_of(int entry) const { return entries_[entry].offset; }
  std::int64_t range_end_of(int entry) const;

 private:
  std::vector<FlatEntry> entries_;
  std::int64_t unpadded_ = 0;
  std::int64_t padded_ = 0;
  int world_size_ = 1;
};

}  // namespace zt::zero
