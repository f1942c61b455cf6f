// SPDX-License-Identifier: Apache-2.0
#include "zero/flat_layout.hpp"

#include <algorithm>
#include <stdexcept>

namespace zt::zero {

namespace {
std::int64_t round_up(std::int64_t value, std::int64_t multiple) {
  return (value + multiple - 1) / multiple * multiple;
}
}  // namespace

FlatLayout::FlatLayout(std::vector<FlatEntry> entries, int world_size)
    : entries_(std::move(entries)), world_size_(world_size) {
  if (world_size < 1) throw std::invalid_argument("FlatLayout: world size must be at least 1");
  std::int64_t cursor = 0;
  for (auto& entry : entries_) {
    cursor = round_up(cursor, kElementAlignment);
    entry.offset = cursor;
    cursor += entry.numel;
    unpadded_ += entry.numel;
  }
  padded_ = round_up(std::max<std::int64_t>(cursor, 1), kElementAlignment * world_size);
}

std::int64_t FlatLayout::range_end_of(int entry) const {
  return entries_[entry].offset + entries_[entry].numel;
}

std::vector<FlatLayout::Piece> FlatLayout::pieces_in(std::int64_t begin, std::int64_t end) const {
  std::vector<Piece> pieces;
  // Entries are sorted by offset: find the first that ends after `begin`.
  auto it = std::lower_bound(entries_.begin(), entries_.end(), begin,
                             [](const FlatEntry& entry, std::int64_t position) {
                               return entry.offset + entry.numel <= position;
                             });
  for (; it != entries_.end() && it->offset < end; ++it) {
    const std::int64_t first = std::max(begin, it->offset);
    const std::int64_t last = std::min(end, it->offset + it->numel);
    if (first >= last) continue;
    pieces.push_back(
        Piece{static_cast<int>(it - entries_.begin()), first - it->offset, last - first, first});
  }
  return pieces;
}

}  // namespace zt::zero
