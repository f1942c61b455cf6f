// SPDX-License-Identifier: Apache-2.0
#include "runtime/device.hpp"

#ifdef ZT_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

#include "runtime/error.hpp"

namespace zt::runtime {

DeviceChoice select_device(int local_rank) {
  DeviceChoice choice;
#ifdef ZT_HAVE_CUDA
  int count = 0;
  const cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess || count == 0) {
    cudaGetLastError();  // clear the sticky error of a machine without a driver or GPU
    choice.description = concat("none visible (", cudaGetErrorString(status), ")");
    return choice;
  }
  choice.visible_devices = count;
  choice.device = local_rank % count;
  cudaDeviceProp properties{};
  if (cudaSetDevice(choice.device) != cudaSuccess ||
      cudaGetDeviceProperties(&properties, choice.device) != cudaSuccess) {
    cudaGetLastError();
    choice.description = concat("GPU ", choice.device, " of ", count, " (could not be opened)");
    choice.device = -1;
    return choice;
  }
  choice.description = concat("GPU ", choice.device, " of ", count, " (", properties.name, ")");
#else
  (void)local_rank;
  choice.description = "none (built without CUDA)";
#endif
  return choice;
}

}  // namespace zt::runtime
