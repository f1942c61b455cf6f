// SPDX-License-Identifier: Apache-2.0
#include <gtest/gtest.h>

#include "zero/flat_layout.hpp"

using zt::zero::FlatEntry;
using zt::zero::FlatLayout;

namespace {
std::vector<FlatEntry> sample_entries() {
  return {{"a", {3, 5}, 15, 0, 0}, {"b", {7}, 7, 0, 1}, {"c", {40}, 40, 0, 1}, {"d", {1}, 1, 0, 2}};
}
}  // namespace

TEST(FlatLayout, AlignsEveryEntryAndPadsToTheWorldSize) {
  for (int world : {1, 2, 3, 4, 8}) {
    FlatLayout layout(sample_entries(), world);
    EXPECT_EQ(layout.unpadded_elements(), 63);
    for (const auto& entry : layout.entries())
      EXPECT_EQ(entry.offset % FlatLayout::kElementAlignment, 0) << entry.name;
    EXPECT_EQ(layout.padded_elements() % (world * FlatLayout::kElementAlignment), 0);
    EXPECT_GE(layout.padded_elements(), layout.entries().back().offset + 1);
    EXPECT_EQ(layout.slice_end(world - 1), layout.padded_elements());
    EXPECT_EQ(layout.slice_elements() % FlatLayout::kElementAlignment, 0);
  }
  FlatLayout layout(sample_entries(), 1);
  EXPECT_EQ(layout.entries()[1].offset, 16);
  EXPECT_EQ(layout.entries()[2].offset, 32);
  EXPECT_EQ(layout.entries()[3].offset, 80);
}

TEST(FlatLayout, PiecesCoverEachSliceExactly) {
  FlatLayout layout(sample_entries(), 4);
  std::vector<std::int64_t> covered(layout.padded_elements(), 0);
  for (int rank = 0; rank < 4; ++rank) {
    for (const auto& piece : layout.pieces_in(layout.slice_begin(rank), layout.slice_end(rank))) {
      const auto& entry = layout.entries()[piece.entry];
      EXPECT_EQ(piece.global_offset, entry.offset + piece.offset_in_entry);
      EXPECT_GE(piece.global_offset, layout.slice_begin(rank));
      EXPECT_LE(piece.global_offset + piece.length, layout.slice_end(rank));
      for (std::int64_t i = 0; i < piece.length; ++i) covered[piece.global_offset + i] += 1;
    }
  }
  // Every parameter element is in exactly one slice; padding in none.
  for (const auto& entry : layout.entries())
    for (std::int64_t i = 0; i < entry.numel; ++i) EXPECT_EQ(covered[entry.offset + i], 1);
  std::int64_t total = 0;
  for (auto c : covered) total += c;
  EXPECT_EQ(total, layout.unpadded_elements());
}
