// SPDX-License-Identifier: Apache-2.0
// Needs a GPU: skipped (not failed) where none is visible, run by the GPU script.
#include <gtest/gtest.h>

#include <vector>

#include "comm/nccl_bootstrap.hpp"
#include "runtime/environment.hpp"

TEST(NcclBootstrap, AllReduceAcrossRanks) {
  const int devices = zt::comm::visible_cuda_devices();
  int any_without = devices == 0 ? 1 : 0;
  MPI_Allreduce(MPI_IN_PLACE, &any_without, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (any_without) GTEST_SKIP() << "no CUDA device visible";
  const auto& info = zt::runtime::Environment::current();
  zt::comm::NcclCommunicatorHandle nccl(MPI_COMM_WORLD, info.local_rank % devices);
  zt::comm::CudaStream stream;
  const int n = 1 << 20;
  std::vector<float> host(n, static_cast<float>(info.rank + 1));
  float* device = nullptr;
  ZT_CUDA_CHECK(cudaMalloc(&device, n * sizeof(float)));
  ZT_CUDA_CHECK(cudaMemcpy(device, host.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  ZT_NCCL_CHECK(ncclAllReduce(device, device, n, ncclFloat, ncclSum, nccl.get(), stream.get()));
  ZT_CUDA_CHECK(cudaStreamSynchronize(stream.get()));
  ZT_CUDA_CHECK(cudaMemcpy(host.data(), device, n * sizeof(float), cudaMemcpyDeviceToHost));
  cudaFree(device);
  const float expected = info.world_size * (info.world_size + 1) / 2.0f;
  EXPECT_FLOAT_EQ(host[0], expected);
  EXPECT_FLOAT_EQ(host[n - 1], expected);
  std::printf("NCCL %s all-reduce over %d ranks ok\n", zt::comm::nccl_version().c_str(),
              info.world_size);
}
