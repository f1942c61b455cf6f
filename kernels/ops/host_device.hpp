// SPDX-License-Identifier: Apache-2.0
// ZT_HOST_DEVICE marks an op body that compiles for the host (Kokkos launchers) and, under
// nvcc, for the device (CUDA launchers): every op is written once and launched both ways.
#pragma once

#ifndef ZT_HOST_DEVICE
#if defined(__CUDACC__)
#define ZT_HOST_DEVICE __host__ __device__
#else
#define ZT_HOST_DEVICE
#endif
#endif

#if defined(__CUDACC__)
#include <math.h>
#else
#include <cmath>
#endif
