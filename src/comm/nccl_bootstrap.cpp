// SPDX-License-Identifier: Apache-2.0
#include "comm/nccl_bootstrap.hpp"

namespace zt::comm {

namespace {
int world_rank() {
  int rank = -1;
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}
}  // namespace

std::string cuda_error_message(cudaError_t code, const char* call, const char* file, int line) {
  return runtime::concat("CUDA call ", call, " failed on rank ", world_rank(), ": ",
                         cudaGetErrorString(code), " (", file, ":", line, ")");
}

std::string nccl_error_message(ncclResult_t code, const char* call, const char* file, int line) {
  return runtime::concat("NCCL call ", call, " failed on rank ", world_rank(), ": ",
                         ncclGetErrorString(code), " (", file, ":", line, ")");
}

int visible_cuda_devices() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return 0;
  }
  return count;
}

CudaStream::CudaStream() { ZT_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking)); }

CudaStream::~CudaStream() {
  if (stream_ != nullptr) cudaStreamDestroy(stream_);
}

NcclCommunicatorHandle::NcclCommunicatorHandle(MPI_Comm mpi_comm, int device) {
  int rank = 0;
  int size = 1;
  ZT_MPI_CHECK(MPI_Comm_rank(mpi_comm, &rank));
  ZT_MPI_CHECK(MPI_Comm_size(mpi_comm, &size));
  ZT_CUDA_CHECK(cudaSetDevice(device));
  ncclUniqueId id{};
  if (rank == 0) ZT_NCCL_CHECK(ncclGetUniqueId(&id));
  ZT_MPI_CHECK(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, mpi_comm));
  ZT_NCCL_CHECK(ncclCommInitRank(&comm_, size, id, rank));
}

NcclCommunicatorHandle::~NcclCommunicatorHandle() {
  if (comm_ != nullptr) ncclCommDestroy(comm_);
}

void NcclCommunicatorHandle::abort() {
  if (comm_ != nullptr) ncclCommAbort(comm_);
  comm_ = nullptr;
}

std::string nccl_version() {
  int version = 0;
  if (ncclGetVersion(&version) != ncclSuccess) return "unknown";
  // NCCL >= 2.9 encodes major*10000 + minor*100 + patch.
  return runtime::concat(version / 10000, ".", (version / 100) % 100, ".", version % 100);
}

}  // namespace zt::comm
