// SPDX-License-Identifier: Apache-2.0
// Offload (DESIGN §5): where offloaded model states live off the device. This part chooses the
// host memory of offloaded buffers: page-locked (pinned) when this build has CUDA and the rank
// sees a GPU, since only pinned memory lets device copies run asynchronously; plain aligned
// memory otherwise (a CPU-only run, or offload's pin_memory false). The aio engine and the NVMe
// swapper (issue 12) will live beside it.
#pragma once

#include <string>

namespace zt::offload {

struct HostMemoryChoice {
  bool pinned = false;
  /// For the banner: "pinned (cudaHostAlloc)", "pageable: pin_memory is false", "pageable: no
  /// GPU on this rank (pinning only matters for device copies)".
  std::string description;
};

/// Installs the allocator of this process's Place::Host buffers (memory::set_host_allocator)
/// for offload's pin_memory setting, and says what it chose. Call before the engine allocates.
HostMemoryChoice configure_host_memory(bool pin_memory);

}  // namespace zt::offload
