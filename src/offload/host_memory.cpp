// SPDX-License-Identifier: Apache-2.0
#include "offload/host_memory.hpp"

#include <cstring>
#include <new>

#include "memory/tracker.hpp"

#if defined(ZT_OFFLOAD_CUDA)
#include <cuda_runtime.h>
#endif

namespace zt::offload {
namespace {

#if defined(ZT_OFFLOAD_CUDA)
void* pinned_zeroed_alloc(std::size_t bytes) {
  const std::size_t rounded =
      (bytes + memory::kBufferAlignment - 1) / memory::kBufferAlignment * memory::kBufferAlignment;
  void* pointer = nullptr;
  // cudaHostAlloc returns page-aligned memory, which satisfies kBufferAlignment.
  if (cudaHostAlloc(&pointer, rounded, cudaHostAllocDefault) != cudaSuccess || pointer == nullptr)
    throw std::bad_alloc();
  std::memset(pointer, 0, rounded);
  return pointer;
}

void pinned_free(void* pointer) {
  cudaFreeHost(pointer);
}

const memory::HostAllocator kPinnedAllocator{pinned_zeroed_alloc, pinned_free,
                                             "pinned host memory (cudaHostAlloc)"};

bool rank_sees_a_gpu() {
  int devices = 0;
  return cudaGetDeviceCount(&devices) == cudaSuccess && devices > 0;
}
#endif

}  // namespace

HostMemoryChoice configure_host_memory(bool pin_memory) {
  HostMemoryChoice choice;
  if (!pin_memory) {
    memory::set_host_allocator(nullptr);
    choice.description = "pageable: pin_memory is false";
    return choice;
  }
#if defined(ZT_OFFLOAD_CUDA)
  if (rank_sees_a_gpu()) {
    memory::set_host_allocator(&kPinnedAllocator);
    choice.pinned = true;
    choice.description = "pinned (cudaHostAlloc)";
    return choice;
  }
  memory::set_host_allocator(nullptr);
  choice.description = "pageable: no GPU on this rank (pinning only matters for device copies)";
#else
  memory::set_host_allocator(nullptr);
  choice.description = "pageable: built without CUDA (pinning only matters for device copies)";
#endif
  return choice;
}

}  // namespace zt::offload
