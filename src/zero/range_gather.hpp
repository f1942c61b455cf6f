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

/// Starts gathering flat elements [begin, end) into `out` (at least end - begin elements of the
/// slice's dtype). `slice` is this rank's slice (layout.slice_elements() elements); its part of
/// the range is sent from there. Parameters travel in their own dtype.
inline comm::Handle all_gather_range(comm::Communicator& comm, const FlatLayout& layout,
                                     backend::ConstView slice, std::int64_t begin, std::int64_t end,
                                     backend::View out) {
  if (out.dtype != slice.dtype || out.count < end - begin)
    throw std::logic_error("all_gather_range: the output does not fit the gathered range");
  const std::int64_t slice_begin = layout.slice_begin(comm.rank());
  const std::int64_t mine = std::clamp(begin, slice_begin, layout.slice_end(comm.rank()));
  const auto* send = static_cast<const std::byte*>(slice.data) +
                     (mine - slice_begin) * kernels::size_of(slice.dtype);
  return comm.all_gather_v_async(
      send, out.data, comm::split_range_by_rank(begin, end, layout.slice_elements(), comm.size()),
      comm_type(slice.dtype));
}

}  // namespace zt::zero
