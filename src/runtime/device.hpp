// SPDX-License-Identifier: Apache-2.0
// Which GPU a rank uses: local rank mod visible devices (DESIGN §3), so one rank per GPU
// works whether the launcher shows each task all of its node's GPUs or only one.
#pragma once

#include <string>

namespace zt::runtime {

struct DeviceChoice {
  int device = -1;          // -1: no CUDA device (CPU run, or a build without CUDA)
  int visible_devices = 0;
  std::string description;  // "GPU 1 of 4 (NVIDIA H100 80GB HBM3)" or why there is none
};

/// Picks and makes current (cudaSetDevice) this rank's device. Never fails: without a driver,
/// a device or CUDA in the build it says so in the description.
DeviceChoice select_device(int local_rank);

}  // namespace zt::runtime
