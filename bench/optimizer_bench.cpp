// SPDX-License-Identifier: Apache-2.0
// The CPU optimizer step of ZeRO-Offload (src/optim/host_kernels.hpp) against the memory
// bandwidth of the same threads, measured by this binary: the step moves ~28 bytes per
// parameter for a few flops, so memory speed is the only fair yardstick.
//
//   optimizer_bench [--threads=N] [--elements=N] [--triad-reps=N] [benchmark flags]
//
// Before the benchmarks run, main measures a STREAM triad a = b + s*c over fp32 arrays of
// --elements (default 2^25, far beyond the last-level cache) with the kernels' own tiling and
// threads: best of --triad-reps, counted as STREAM counts it (12 bytes per element, no
// write-allocate traffic). Every benchmark reports bytes_per_second over the bytes its kernel
// must read and write once (see kBytes*) and ratio_to_triad, that rate over the triad's.
// The optimizer writes only to lines it has read, so it pays no write-allocate and can pass 1.
//
// Threads: the host execution space's, fixed when Kokkos starts: --threads=N (or Kokkos's own
// flag, or OMP_NUM_THREADS). bench/optimizer_bench.sh runs 1 thread and all cores and tabulates.
#include <benchmark/benchmark.h>

#include <Kokkos_Core.hpp>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "kernels/ops/dtype.hpp"
#include "kernels/ops/optimizer_ops.hpp"
#include "optim/host_kernels.hpp"

// As in src/optim/host_kernels.cpp, so the triad's inner loop is compiled like the kernels'.
#if defined(_OPENMP)
#define ZT_SIMD_LOOP _Pragma("omp simd")
#elif defined(__GNUC__)
#define ZT_SIMD_LOOP _Pragma("GCC ivdep")
#else
#define ZT_SIMD_LOOP
#endif

namespace {

using zt::kernels::DType;
using zt::optim::host::kTileElements;
using HostRange =
    Kokkos::RangePolicy<Kokkos::DefaultHostExecutionSpace, Kokkos::IndexType<std::int64_t>>;

// Bytes each kernel must move per element, read + written (STREAM counting).
constexpr double kBytesTriad = 4 + 4 + 4;                     // read b, c; write a
constexpr double kBytesAdamF32 = 4 * 4 + 3 * 4;               // read g, p, m, v; write p, m, v
constexpr double kBytesAdam16 = 2 + 3 * 4 + 3 * 4 + 2;        // 16-bit g in, 16-bit copy out
constexpr double kBytesLamb = (4 * 4 + 2 * 4) + (3 * 4 + 4);  // phase 1 + phase 2, fp32
constexpr double kBytesSumF32 = 4;
constexpr double kBytesSum16 = 2;

std::int64_t g_elements = std::int64_t{1} << 25;
double g_triad_bytes_per_second = 0;

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using Memory = std::unique_ptr<void, FreeDeleter>;

// 64-byte aligned, first touched by the threads that will stream it (one NUMA node here, but a
// bigger machine would care).
Memory allocate(std::int64_t bytes) {
  const auto rounded = static_cast<std::size_t>((bytes + 63) / 64 * 64);
  void* p = std::aligned_alloc(64, rounded);
  if (p == nullptr) {
    std::fprintf(stderr, "optimizer_bench: cannot allocate %zu bytes\n", rounded);
    std::exit(2);
  }
  return Memory(p);
}

// A cheap deterministic value in [-1, 1) per index.
KOKKOS_INLINE_FUNCTION float hash_value(std::int64_t i, std::uint32_t seed) {
  std::uint32_t x = static_cast<std::uint32_t>(i) * 2654435761u ^ seed;
  x ^= x >> 15;
  x *= 2246822519u;
  x ^= x >> 13;
  return static_cast<float>(x >> 8) * (2.0f / 16777216.0f) - 1.0f;
}

template <class Body>
void parallel_tiles(const char* label, std::int64_t n, const Body& body) {
  const std::int64_t tiles = (n + kTileElements - 1) / kTileElements;
  Kokkos::parallel_for(label, HostRange(0, tiles), [=](std::int64_t t) {
    const std::int64_t begin = t * kTileElements;
    body(begin, std::min(begin + kTileElements, n));
  });
  Kokkos::fence();
}

struct Arrays {
  std::int64_t n = 0;
  Memory master, exp_avg, exp_avg_sq, grads32, grads16, params16, a, b, c;
  float* f(const Memory& m) const { return static_cast<float*>(m.get()); }
  std::uint16_t* h(const Memory& m) const { return static_cast<std::uint16_t*>(m.get()); }
};

Arrays& arrays() {
  static Arrays all;
  return all;
}

void init_arrays(std::int64_t n) {
  Arrays& x = arrays();
  x.n = n;
  for (Memory* m : {&x.master, &x.exp_avg, &x.exp_avg_sq, &x.grads32, &x.a, &x.b, &x.c})
    *m = allocate(n * 4);
  x.grads16 = allocate(n * 2);
  x.params16 = allocate(n * 2);
  float *p = x.f(x.master), *m = x.f(x.exp_avg), *v = x.f(x.exp_avg_sq), *g = x.f(x.grads32);
  float *a = x.f(x.a), *b = x.f(x.b), *c = x.f(x.c);
  std::uint16_t *g16 = x.h(x.grads16), *p16 = x.h(x.params16);
  parallel_tiles("optimizer_bench::init", n, [=](std::int64_t begin, std::int64_t end) {
    for (std::int64_t i = begin; i < end; ++i) {
      p[i] = hash_value(i, 1);
      g[i] = 0.01f * hash_value(i, 2);
      m[i] = 0.1f * g[i];
      v[i] = 0.001f * g[i] * g[i];
      // bf16 bits (a valid fp16 too: both are small normal numbers' patterns)
      g16[i] = zt::kernels::from_float<zt::kernels::bf16>(g[i]).bits;
      p16[i] = 0;
      a[i] = 0.0f;
      b[i] = hash_value(i, 3);
      c[i] = hash_value(i, 4);
    }
  });
}

// A free function of pointer arguments, as the kernels' tile loops are (a lambda's captured
// pointers vectorise to gathers).
void triad_tile(float* a, const float* b, const float* c, float s, std::int64_t begin,
                std::int64_t end) {
  ZT_SIMD_LOOP
  for (std::int64_t i = begin; i < end; ++i) a[i] = b[i] + s * c[i];
}

void triad(float* a, const float* b, const float* c, float s, std::int64_t n) {
  parallel_tiles("optimizer_bench::triad", n,
                 [=](std::int64_t begin, std::int64_t end) { triad_tile(a, b, c, s, begin, end); });
}

double measure_triad(int repetitions) {
  const Arrays& x = arrays();
  double best = 1e30;
  for (int r = 0; r < repetitions + 2; ++r) {  // two warm-ups
    const auto start = std::chrono::steady_clock::now();
    triad(x.f(x.a), x.f(x.b), x.f(x.c), 3.0f, x.n);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (r >= 2) best = std::min(best, seconds);
  }
  return kBytesTriad * static_cast<double>(x.n) / best;
}

void report(benchmark::State& state, double bytes_per_element) {
  const double bytes =
      bytes_per_element * static_cast<double>(arrays().n) * static_cast<double>(state.iterations());
  state.SetBytesProcessed(static_cast<std::int64_t>(bytes));
  state.counters["ratio_to_triad"] =
      benchmark::Counter(bytes / g_triad_bytes_per_second, benchmark::Counter::kIsRate);
}

zt::kernels::AdamElementConstants adam_constants() {
  return zt::kernels::make_adam_constants(1e-3, 0.9, 0.999, 1e-8, 0.01, true, true, 10);
}

void BM_Triad(benchmark::State& state) {
  const Arrays& x = arrays();
  for (auto _ : state) triad(x.f(x.a), x.f(x.b), x.f(x.c), 3.0f, x.n);
  report(state, kBytesTriad);
}

void BM_AdamF32(benchmark::State& state) {
  const Arrays& x = arrays();
  const auto c = adam_constants();
  for (auto _ : state)
    zt::optim::host::adam_step(x.f(x.master), x.f(x.grads32), DType::F32, 1.0f, x.f(x.exp_avg),
                               x.f(x.exp_avg_sq), x.n, c, nullptr, DType::F32);
  report(state, kBytesAdamF32);
}

// 16-bit gradients in, with the unscale multiplier, and the 16-bit parameter copy out.
void BM_Adam16(benchmark::State& state, DType dtype) {
  const Arrays& x = arrays();
  const auto c = adam_constants();
  for (auto _ : state)
    zt::optim::host::adam_step(x.f(x.master), x.h(x.grads16), dtype, 0.5f, x.f(x.exp_avg),
                               x.f(x.exp_avg_sq), x.n, c, x.h(x.params16), dtype);
  report(state, kBytesAdam16);
}

void BM_LambF32(benchmark::State& state) {
  const Arrays& x = arrays();
  const auto c = zt::kernels::make_lamb_constants(1e-3, 0.9, 0.999, 1e-6, 0.01, false, true, 10);
  for (auto _ : state) {
    const auto sums = zt::optim::host::lamb_update_moments(
        x.f(x.master), x.f(x.grads32), DType::F32, 1.0f, x.f(x.exp_avg), x.f(x.exp_avg_sq), x.n, c);
    const float ratio = zt::kernels::lamb_trust_ratio(sums.weight, sums.update, 0.01f, 10.0f);
    zt::optim::host::lamb_apply(x.f(x.master), x.f(x.exp_avg), x.f(x.exp_avg_sq), x.n, ratio, c,
                                nullptr, DType::F32);
  }
  report(state, kBytesLamb);
}

void BM_SumOfSquares(benchmark::State& state, DType dtype) {
  const Arrays& x = arrays();
  const void* values = dtype == DType::F32 ? static_cast<const void*>(x.f(x.grads32))
                                           : static_cast<const void*>(x.h(x.grads16));
  for (auto _ : state) {
    const auto result = zt::optim::host::sum_of_squares(values, dtype, x.n);
    benchmark::DoNotOptimize(result);
  }
  report(state, dtype == DType::F32 ? kBytesSumF32 : kBytesSum16);
}

void register_benchmarks() {
  auto configure = [](benchmark::internal::Benchmark* b) {
    b->UseRealTime()->Unit(benchmark::kMillisecond);
  };
  configure(benchmark::RegisterBenchmark("triad_f32", BM_Triad));
  configure(benchmark::RegisterBenchmark("adam_f32", BM_AdamF32));
  configure(benchmark::RegisterBenchmark("adam_bf16_grads_bf16_params", BM_Adam16, DType::BF16));
  configure(benchmark::RegisterBenchmark("adam_fp16_grads_fp16_params", BM_Adam16, DType::F16));
  configure(benchmark::RegisterBenchmark("lamb_f32", BM_LambF32));
  configure(benchmark::RegisterBenchmark("sum_of_squares_f32", BM_SumOfSquares, DType::F32));
  configure(benchmark::RegisterBenchmark("sum_of_squares_bf16", BM_SumOfSquares, DType::BF16));
}

bool take_value(const char* arg, const char* flag, std::string& value) {
  const std::size_t length = std::strlen(flag);
  if (std::strncmp(arg, flag, length) != 0 || arg[length] != '=') return false;
  value = arg + length + 1;
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  // Our flags out of argv; --threads=N becomes the flag this Kokkos version reads.
  std::vector<std::string> kokkos_flags;
  int triad_repetitions = 10;
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    std::string value;
    if (take_value(argv[i], "--threads", value)) {
#if KOKKOS_VERSION >= 30700
      kokkos_flags.push_back("--kokkos-num-threads=" + value);
#else
      kokkos_flags.push_back("--kokkos-threads=" + value);
#endif
    } else if (take_value(argv[i], "--elements", value)) {
      g_elements = std::strtoll(value.c_str(), nullptr, 10);
    } else if (take_value(argv[i], "--triad-reps", value)) {
      triad_repetitions = std::max(1, std::atoi(value.c_str()));
    } else {
      argv[kept++] = argv[i];
    }
  }
  if (g_elements <= 0) {
    std::fprintf(stderr, "optimizer_bench: --elements must be positive\n");
    return 2;
  }
  std::vector<char*> kokkos_argv(argv, argv + kept);
  for (std::string& flag : kokkos_flags) kokkos_argv.push_back(flag.data());
  int kokkos_argc = static_cast<int>(kokkos_argv.size());
  kokkos_argv.push_back(nullptr);
  Kokkos::initialize(kokkos_argc, kokkos_argv.data());
  int status = 0;
  {
    benchmark::Initialize(&kokkos_argc, kokkos_argv.data());
    if (benchmark::ReportUnrecognizedArguments(kokkos_argc, kokkos_argv.data())) {
      status = 2;
    } else {
      const int threads = Kokkos::DefaultHostExecutionSpace::concurrency();
      init_arrays(g_elements);
      g_triad_bytes_per_second = measure_triad(triad_repetitions);
      std::printf(
          "optimizer_bench: %d threads, %lld elements per array, triad best of %d: %.2f GB/s\n",
          threads, static_cast<long long>(g_elements), triad_repetitions,
          g_triad_bytes_per_second / 1e9);
      std::fflush(stdout);
      benchmark::AddCustomContext("threads", std::to_string(threads));
      benchmark::AddCustomContext("elements", std::to_string(g_elements));
      benchmark::AddCustomContext("triad_GBps", std::to_string(g_triad_bytes_per_second / 1e9));
      register_benchmarks();
      benchmark::RunSpecifiedBenchmarks();
      benchmark::Shutdown();
      arrays() = Arrays{};
    }
  }
  Kokkos::finalize();
  return status;
}
