// SPDX-License-Identifier: Apache-2.0
// All-gather of a contiguous range of a flat buffer that the ranks hold in slices (FlatLayout):
// the range falls across the slices unevenly, so it is an uneven all-gather (all_gather_v).
// Stage 3 gathers tensors from the parameter slices with it; stages 1-2 share updated slices of
// the full parameters in place (slice pointing into the full buffer, out at `begin` of it).
#pragma once

#include <algorithm>
#include <cstdint>

#include "comm/communicator.hpp"
#include "zero/flat_layout.hpp"

namespace zt::zero {

/// Starts gathering flat elements [begin, end) into `out` (end - begin floats). `slice` is this
/// rank's slice (layout.slice_elements() floats); its part of the range is sent from there.
inline comm::Handle all_gather_range(comm::Communicator& comm, const FlatLayout& layout,
                                     const float* slice, std::int64_t begin, std::int64_t end,
                                     float* out) {
  const std::int64_t slice_begin = layout.slice_begin(comm.rank());
  const std::int64_t mine = std::clamp(begin, slice_begin, layout.slice_end(comm.rank()));
  return comm.all_gather_v_async(
      slice + (mine - slice_begin), out,
      comm::split_range_by_rank(begin, end, layout.slice_elements(), comm.size()),
      comm::DataType::Float32);
}

}  // namespace zt::zero
