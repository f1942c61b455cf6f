// SPDX-License-Identifier: Apache-2.0
// All-gather of a contiguous range of a flat buffer that the ranks hold in slices (FlatLayout):
// the range falls across the slices unevenly, so it is an uneven all-gather (all_gather_v).
// Stage 3 gathers tensors from the parameter slices with it; stages 1-2 share updated slices of
// the full parameters in place (slice pointing into the full buffer, out at `begin` of it).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <stdexcept>

#include "backend/backend.hpp"
#include "comm/communicator.hpp"
#include "zero/flat_layout.hpp"
#include "zero/gradient_reducer.hpp"

namespace zt::zero {

/// This rank's part of flat elements [begin, end): [first, last) in flat addresses, empty when
/// the range misses the rank's slice.
inline FlatRange own_part_of(const FlatLayout& layout, int rank, std::int64_t begin,
                             std::int64_t end) {
  const std::int64_t first = std::clamp(begin, layout.slice_begin(rank), layout.slice_end(rank));
  const std::int64_t last = std::clamp(end, layout.slice_begin(rank), layout.slice_end(rank));
  return FlatRange{first, std::max(first, last)};
}

/// Starts gathering flat elements [begin, end) into `out` (at least end - begin elements of
/// part's dtype), sending `part`: exactly this rank's elements of the range (own_part_of), from
/// wherever the caller staged them. Parameters travel in their own dtype.
inline comm::Handle all_gather_part(comm::Communicator& comm, const FlatLayout& layout,
                                    backend::ConstView part, std::int64_t begin, std::int64_t end,
                                    backend::View out) {
  if (out.dtype != part.dtype || out.count < end - begin)
    throw std::logic_error("all_gather_part: the output does not fit the gathered range");
  if (part.count != own_part_of(layout, comm.rank(), begin, end).size())
    throw std::logic_error("all_gather_part: the part is not this rank's share of the range");
  return comm.all_gather_v_async(
      part.data, out.data,
      comm::split_range_by_rank(begin, end, layout.slice_elements(), comm.size()),
      comm_type(part.dtype));
}

/// Starts gathering flat elements [begin, end) into `out` (at least end - begin elements of the
/// slice's dtype). `slice` is this rank's slice (layout.slice_elements() elements); its part of
/// the range is sent from there.
inline comm::Handle all_gather_range(comm::Communicator& comm, const FlatLayout& layout,
                                     backend::ConstView slice, std::int64_t begin, std::int64_t end,
                                     backend::View out) {
  const FlatRange mine = own_part_of(layout, comm.rank(), begin, end);
  return all_gather_part(comm, layout,
                         slice.slice(mine.begin - layout.slice_begin(comm.rank()), mine.size()),
                         begin, end, out);
}

}  // namespace zt::zero
