// SPDX-License-Identifier: Apache-2.0
// Measures the machine's fp32 FMA peak with the widest FMA this CPU has, on a given number of
// threads, so the benchmarks can report GEMM and training rates as fractions of it.
#pragma once

#include <string>

namespace zt::bench {

struct FmaPeak {
  double gflops = 0;         // fp32 FLOP/s / 1e9, 2 FLOP per FMA lane
  std::string instruction;   // "AVX-512 (zmm)", "AVX2 (ymm)", "scalar"
  int threads = 1;
};

/// Runs independent FMA chains (enough accumulators to cover latency x ports) on `threads`
/// OpenMP threads for about `seconds`, best of `repetitions`.
FmaPeak measure_fma_peak(int threads, double seconds = 0.2, int repetitions = 5);

}  // namespace zt::bench
