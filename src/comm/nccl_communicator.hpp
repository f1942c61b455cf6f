// SPDX-License-Identifier: Apache-2.0
// NCCL backend of the Communicator (DESIGN §3): collectives on device buffers, run on a
// dedicated communication stream so they overlap the compute on the default stream.
// Only built with ZT_HAVE_NCCL.
#pragma once

#include <cuda_runtime.h>
#include <mpi.h>

#include <cstddef>
#include <memory>

#include "comm/communicator.hpp"
#include "comm/nccl_bootstrap.hpp"

namespace zt::comm {

/// Owns a CUDA event of the current device. Completion events need no timestamps
/// (cudaEventDisableTiming makes recording and querying cheaper); pass 0 for an event that
/// cudaEventElapsedTime may read.
class CudaEvent {
 public:
  explicit CudaEvent(unsigned flags = cudaEventDisableTiming);
  ~CudaEvent();
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

/// Owns `bytes` of memory on the current device (none for 0 bytes).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(std::size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& other) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return data_; }
  template <class T>
  T* as() const { return static_cast<T*>(data_); }
  std::size_t bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  std::size_t bytes_ = 0;
};

/// NCCL backend over the ranks of `parent`, on CUDA device `device` (one rank per GPU: NCCL
/// refuses two ranks of a communicator on one device). Collective: every rank of `parent`
/// calls it at the same time.
///
/// Buffers are device memory. A collective starts after all work issued so far to the legacy
/// default stream (and the blocking streams it synchronises with), so a producer kernel
/// launched there needs no extra synchronisation; work on non-blocking streams must be
/// synchronised by the caller first. Its result may be used once the handle was waited for
/// (or tested true). Host buffers are accepted too, for the few small host-side reductions
/// (loss, run report): they are staged through device memory and complete before the call
/// returns.
///
/// A failure of NCCL (a peer that died, a network error) or of CUDA while a handle is waited
/// for aborts the NCCL communicator, so no rank hangs in a later collective, and throws
/// naming the rank and the operation; every later call throws as well.
std::unique_ptr<Communicator> make_nccl_communicator(MPI_Comm parent, int device);

}  // namespace zt::comm
