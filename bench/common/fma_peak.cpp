// SPDX-License-Identifier: Apache-2.0
#include "bench/common/fma_peak.hpp"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <vector>

namespace zt::bench {

namespace {

// Independent accumulators to cover FMA latency (4-5 cycles) x 2 FMA ports, while leaving
// registers for the constants: 16 of 32 zmm registers, 12 of 16 ymm registers (more would
// spill). The loop count is a runtime value and the result is stored, so nothing folds.
constexpr int kChains = 16;
constexpr int kChainsYmm = 12;

__attribute__((target("avx512f"))) float fma_chains_avx512(long iterations, float seed) {
  __m512 acc[kChains];
  const __m512 a = _mm512_set1_ps(0.999999f);
  const __m512 b = _mm512_set1_ps(1e-7f);
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(seed + c);
  for (long i = 0; i < iterations; ++i)
#pragma GCC unroll 16
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_fmadd_ps(acc[c], a, b);
  __m512 sum = acc[0];
  for (int c = 1; c < kChains; ++c) sum = _mm512_add_ps(sum, acc[c]);
  // Not _mm512_reduce_add_ps: GCC 12's header for it warns about an uninitialised variable.
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, sum);
  float total = 0;
  for (float lane : lanes) total += lane;
  return total;
}

__attribute__((target("avx2,fma"))) float fma_chains_avx2(long iterations, float seed) {
  __m256 acc[kChainsYmm];
  const __m256 a = _mm256_set1_ps(0.999999f);
  const __m256 b = _mm256_set1_ps(1e-7f);
  for (int c = 0; c < kChainsYmm; ++c) acc[c] = _mm256_set1_ps(seed + c);
  for (long i = 0; i < iterations; ++i)
#pragma GCC unroll 16
    for (int c = 0; c < kChainsYmm; ++c) acc[c] = _mm256_fmadd_ps(acc[c], a, b);
  __m256 sum = acc[0];
  for (int c = 1; c < kChainsYmm; ++c) sum = _mm256_add_ps(sum, acc[c]);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, sum);
  float total = 0;
  for (float lane : lanes) total += lane;
  return total;
}

}  // namespace

FmaPeak measure_fma_peak(int threads, double seconds, int repetitions) {
  FmaPeak peak;
  peak.threads = threads;
  int lanes = 0;
  int chains = 0;
  float (*kernel)(long, float) = nullptr;
  if (__builtin_cpu_supports("avx512f")) {
    kernel = fma_chains_avx512;
    lanes = 16;
    chains = kChains;
    peak.instruction = "AVX-512 (zmm)";
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    kernel = fma_chains_avx2;
    lanes = 8;
    chains = kChainsYmm;
    peak.instruction = "AVX2 (ymm)";
  } else {
    peak.instruction = "none (no FMA)";
    return peak;
  }
  // Calibrate the iteration count on one thread.
  long iterations = 1 << 16;
  for (;;) {
    const auto start = std::chrono::steady_clock::now();
    volatile float sink = kernel(iterations, 1.0f);
    (void)sink;
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (elapsed > seconds / 4 || iterations > (1L << 34)) {
      iterations = static_cast<long>(iterations * seconds / std::max(elapsed, 1e-6));
      break;
    }
    iterations *= 4;
  }
  std::vector<float> sinks(threads);
  for (int r = 0; r < repetitions; ++r) {
    const auto start = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads)
    { sinks[omp_get_thread_num()] = kernel(iterations, 1.0f + omp_get_thread_num()); }
    const double elapsed =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double flops = 2.0 * lanes * chains * static_cast<double>(iterations) * threads;
    peak.gflops = std::max(peak.gflops, flops / elapsed / 1e9);
  }
  return peak;
}

}  // namespace zt::bench
