// SPDX-License-Identifier: Apache-2.0
// NCCL bootstrap over MPI (DESIGN §3): rank 0 makes the unique id, MPI_Bcast spreads it, every
// rank joins with ncclCommInitRank on its device (local rank mod visible devices).
// Only built with ZT_HAVE_NCCL.
#pragma once

#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include <string>

#include "runtime/error.hpp"

namespace zt::comm {

std::string cuda_error_message(cudaError_t code, const char* call, const char* file, int line);
std::string nccl_error_message(ncclResult_t code, const char* call, const char* file, int line);

}  // namespace zt::comm

#define ZT_CUDA_CHECK(call)                                                                    \
  do {                                                                                         \
    const cudaError_t zt_cuda_code_ = (call);                                                  \
    if (zt_cuda_code_ != cudaSuccess)                                                          \
      throw std::runtime_error(                                                                \
          ::zt::comm::cuda_error_message(zt_cuda_code_, #call, __FILE__, __LINE__));           \
  } while (0)

#define ZT_NCCL_CHECK(call)                                                                    \
  do {                                                                                         \
    const ncclResult_t zt_nccl_code_ = (call);                                                 \
    if (zt_nccl_code_ != ncclSuccess)                                                          \
      throw std::runtime_error(                                                                \
          ::zt::comm::nccl_error_message(zt_nccl_code_, #call, __FILE__, __LINE__));           \
  } while (0)

namespace zt::comm {

/// Number of CUDA devices this process sees (0 when there is no driver or no GPU).
int visible_cuda_devices();

/// Owns a CUDA stream (non-blocking, so it does not serialise with the legacy default stream).
class CudaStream {
 public:
  CudaStream();
  ~CudaStream();
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;
  cudaStream_t get() const { return stream_; }

 private:
  cudaStream_t stream_ = nullptr;
};

/// Owns an ncclComm_t spanning the ranks of `mpi_comm`, on device `device`.
/// Collective: every rank of mpi_comm constructs it at the same time.
class NcclCommunicatorHandle {
 public:
  NcclCommunicatorHandle(MPI_Comm mpi_comm, int device);
  ~NcclCommunicatorHandle();
  NcclCommunicatorHandle(const NcclCommunicatorHandle&) = delete;
  NcclCommunicatorHandle& operator=(const NcclCommunicatorHandle&) = delete;
  ncclComm_t get() const { return comm_; }
  /// Aborts outstanding operations (a failing rank must not leave the others hanging).
  void abort();

 private:
  ncclComm_t comm_ = nullptr;
};

/// "2.28.9".
std::string nccl_version();

}  // namespace zt::comm
