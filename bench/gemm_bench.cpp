// SPDX-License-Identifier: Apache-2.0
// Host GEMM rates at GPT-2 small's layer shapes, as src/model/gpt.cpp calls them, in fp32
// (dnnl_sgemm, the oneDNN matmul primitive on plain strided layouts, the matmul with weights
// reordered into its preferred layout, and zt::kernels::gemm's choice), bf16 and fp16, against the
// FMA peak of the same threads measured in the same run.
//
//   gemm_bench [--threads N] [--rows 256,4096] [--min-time S] [--routes]
//
// Per shape and pass: the median time of repeated calls, all variants interleaved (at least 3
// rounds after one untimed call each, until --min-time seconds have been spent), as GFLOP/s (2MNK /
// time) and % of the fp32 FMA peak. bf16 is also given as % of the bf16 dot-product peak where the
// CPU has one (vdpbf16ps: two products per fp32 lane, so twice the FMA peak).
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <oneapi/dnnl/dnnl.hpp>

#include "bench/common/fma_peak.hpp"
#include "kernels/gemm.hpp"

namespace {

using zt::kernels::bf16;
using zt::kernels::DType;
using zt::kernels::fp16;

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Seconds per call of each of `calls`, per round: one untimed round (primitive creation, first
// touch), then rounds that time one call of each in turn, until min_time has passed and at least
// three rounds were made. Interleaving puts every variant under the same background load (the
// machine is shared), so the ratios between them are fairer than their absolute rates.
std::vector<std::vector<double>> time_calls(const std::vector<std::function<void()>>& calls,
                                            double min_time) {
  std::vector<std::vector<double>> times(calls.size());
  auto run_round = [&]() {
    for (std::size_t i = 0; i < calls.size(); ++i) {
      const auto start = std::chrono::steady_clock::now();
      calls[i]();
      times[i].push_back(seconds_since(start));
    }
  };
  const auto begin = std::chrono::steady_clock::now();
  run_round();
  // A warm-up round longer than a second (GPT-2's lm_head at 4096 rows) is kept as a sample:
  // primitive creation is then under 1% of it, and the median of three drops it anyway.
  if (seconds_since(begin) < 1.0)
    for (auto& t : times) t.clear();
  while (times[0].size() < 3 || (seconds_since(begin) < min_time && times[0].size() < 50))
    run_round();
  return times;
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

// Median over rounds of numerator[i] / denominator[i]: a speed ratio measured in the same round.
double median_ratio(const std::vector<double>& numerator, const std::vector<double>& denominator) {
  std::vector<double> ratios;
  for (std::size_t i = 0; i < numerator.size() && i < denominator.size(); ++i)
    ratios.push_back(numerator[i] / denominator[i]);
  return median(ratios);
}

// The bf16 dot-product peak: independent vdpbf16ps chains (each: 16 lanes x 2 products x 2 FLOP).
constexpr int kChains = 16;
__attribute__((target("avx512f,avx512bf16"))) float dpbf16_chains(long iterations, float seed) {
  __m512 acc[kChains];
  const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80);  // bf16 1.0
  const __m512bh b = (__m512bh)_mm512_set1_epi16(0x3380);  // bf16 ~6e-8
  for (int c = 0; c < kChains; ++c) acc[c] = _mm512_set1_ps(seed + c);
  for (long i = 0; i < iterations; ++i)
#pragma GCC unroll 16
    for (int c = 0; c < kChains; ++c) acc[c] = _mm512_dpbf16_ps(acc[c], a, b);
  alignas(64) float lanes[16];
  __m512 sum = acc[0];
  for (int c = 1; c < kChains; ++c) sum = _mm512_add_ps(sum, acc[c]);
  _mm512_store_ps(lanes, sum);
  float total = 0;
  for (float lane : lanes) total += lane;
  return total;
}

double bf16_dot_peak(int threads) {
  if (!__builtin_cpu_supports("avx512bf16")) return 0.0;
  const long iterations = 2000000;
  std::vector<float> sinks(threads);
  double best = 0.0;
  for (int r = 0; r < 5; ++r) {
    const auto start = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(threads)
    { sinks[omp_get_thread_num()] = dpbf16_chains(iterations, 1.0f + omp_get_thread_num()); }
    const double elapsed = seconds_since(start);
    best = std::max(best,
                    4.0 * 16 * kChains * static_cast<double>(iterations) * threads / elapsed / 1e9);
  }
  return best;
}

// Buffers for one dtype, sized for the largest GEMM of each role.
template <class T>
struct Buffers {
  std::vector<T> x, w, y, dx, dw;  // activations in, weights, activations out, and gradients
  Buffers(std::size_t rows, std::size_t max_in, std::size_t max_weights, std::size_t max_out) {
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    auto fill = [&](std::vector<T>& v, std::size_t n) {
      v.resize(n);
      for (T& e : v) e = zt::kernels::from_float<T>(uniform(rng));
    };
    fill(x, rows * max_in);
    fill(w, max_weights);
    fill(y, rows * max_out);
    fill(dx, rows * max_in);
    fill(dw, max_weights);
  }
};

struct Layer {
  const char* name;
  int n_out, n_in;
  float forward_beta;  // as gpt.cpp: 1 where a bias was written into the output first
};

std::vector<int> parse_list(const char* text) {
  std::vector<int> values;
  for (const char* p = text; *p;) {
    values.push_back(std::atoi(p));
    while (*p && *p != ',') ++p;
    if (*p == ',') ++p;
  }
  return values;
}

}  // namespace

int main(int argc, char** argv) {
  int threads = omp_get_max_threads();
  std::vector<int> row_counts = {256, 4096};  // B*T = 4*64 and 4*1024
  double min_time = 0.5;
  bool compare_routes = false;  // also bf16 by the matmul and packed routes
  for (int i = 1; i < argc; i += 2) {
    if (!std::strcmp(argv[i], "--routes")) {
      compare_routes = true;
      --i;
    } else if (i + 1 >= argc) {
      std::fprintf(stderr, "%s: %s needs a value\n", argv[0], argv[i]);
      return 2;
    } else if (!std::strcmp(argv[i], "--threads"))
      threads = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--rows"))
      row_counts = parse_list(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--min-time"))
      min_time = std::atof(argv[i + 1]);
    else {
      std::fprintf(stderr, "usage: %s [--threads N] [--rows 256,4096] [--min-time S] [--routes]\n",
                   argv[0]);
      return 2;
    }
  }
  omp_set_num_threads(threads);
  const auto total_start = std::chrono::steady_clock::now();

  const zt::bench::FmaPeak peak = zt::bench::measure_fma_peak(threads);
  const double bf16_peak = bf16_dot_peak(threads);
  std::printf("gemm_bench: %d threads, %s, ISA %s\n", threads, zt::kernels::gemm_library().c_str(),
              zt::kernels::gemm_instruction_set().c_str());
  std::printf("fp32 FMA peak (%s, %d threads): %.1f GFLOP/s; bf16 dot peak (vdpbf16ps): %.1f\n",
              peak.instruction.c_str(), threads, peak.gflops, bf16_peak);
  for (DType t : {DType::F32, DType::BF16, DType::F16})
    std::printf("path %-4s: %s\n", zt::kernels::dtype_name(t), zt::kernels::gemm_path(t).c_str());
  std::printf("self check: %.2e\n\n", zt::kernels::gemm_self_check());

  const int C = 768;
  const Layer layers[] = {{"qkv", 3 * C, C, 1.0f},
                          {"attproj", C, C, 1.0f},
                          {"fc", 4 * C, C, 0.0f},
                          {"fcproj", C, 4 * C, 1.0f},
                          {"lm_head", 50257, C, 0.0f}};
  std::size_t max_in = 0, max_out = 0, max_weights = 0;
  for (const Layer& l : layers) {
    max_in = std::max<std::size_t>(max_in, l.n_in);
    max_out = std::max<std::size_t>(max_out, l.n_out);
    max_weights = std::max<std::size_t>(max_weights, static_cast<std::size_t>(l.n_out) * l.n_in);
  }

  std::printf(
      "GFLOP/s (%% of the fp32 FMA peak). fp32 by route: sgemm = dnnl_sgemm; matmul = oneDNN\n"
      "matmul on the plain strided layouts; packed = matmul with B reordered into its preferred\n"
      "layout on every call (forward and dX, where B is a weight: the optimizer changes it every\n"
      "step, so the reorder is counted); gemm = zt::kernels::gemm's choice. bf16, fp16:\n"
      "gemm(DType, ...). Rates from median times; bf16/32 and fp16/32: speed against fp32\n"
      "'gemm', the median over rounds of the ratio within each round.\n");
  std::printf("%-5s %-8s %-4s %5s %5s %5s | %13s %13s %13s %13s | %13s %13s | %7s %7s%s\n", "rows",
              "layer", "pass", "M", "N", "K", "sgemm", "matmul", "packed", "gemm", "bf16", "fp16",
              "bf16/32", "fp16/32", compare_routes ? " |   bf16 matmul   bf16 packed" : "");
  std::vector<double> bf16_ratios, fp16_ratios;
  for (int rows : row_counts) {
    Buffers<float> f32(rows, max_in, max_weights, max_out);
    Buffers<bf16> b16(rows, max_in, max_weights, max_out);
    Buffers<fp16> h16(rows, max_in, max_weights, max_out);
    for (const Layer& l : layers)
      for (int pass = 0; pass < 3; ++pass) {
        // forward NT: out(rows x n_out) = in(rows x n_in) W^T; backward dX NN: d_in = d_out W;
        // backward dW TN: dW(n_out x n_in) += d_out^T in. Same FLOP count each.
        struct Problem {
          bool ta, tb;
          int M, N, K, lda, ldb, ldc;
          float beta;
        };
        const Problem p =
            pass == 0 ? Problem{false,  true,   rows,    l.n_out,       l.n_in,
                                l.n_in, l.n_in, l.n_out, l.forward_beta}
            : pass == 1
                ? Problem{false, false, rows, l.n_in, l.n_out, l.n_out, l.n_in, l.n_in, 0.0f}
                : Problem{true, false, l.n_out, l.n_in, rows, l.n_out, l.n_in, l.n_in, 1.0f};
        // Operands per pass, in gpt.cpp's roles.
        auto operands = [&](auto& buf) {
          using V = typename std::decay_t<decltype(buf.x)>::value_type;
          struct Ops {
            const V *a, *b;
            V* c;
          };
          if (pass == 0) return Ops{buf.x.data(), buf.w.data(), buf.y.data()};
          if (pass == 1) return Ops{buf.y.data(), buf.w.data(), buf.dx.data()};
          return Ops{buf.y.data(), buf.x.data(), buf.dw.data()};
        };
        const double flop = 2.0 * p.M * p.N * p.K;
        auto rate = [&](double seconds) { return flop / seconds / 1e9; };
        const auto o32 = operands(f32);
        const auto ob = operands(b16);
        const auto oh = operands(h16);
        using zt::kernels::detail::GemmRoute;
        auto route_call = [&](GemmRoute route, DType type, const auto& o) {
          return [&p, route, type, o] {
            zt::kernels::detail::gemm_by_route(route, type, p.ta, p.tb, p.M, p.N, p.K, 1.0f, o.a,
                                               p.lda, o.b, p.ldb, p.beta, o.c, p.ldc);
          };
        };
        auto gemm_call = [&](DType type, const auto& o) {
          return [&p, type, o] {
            zt::kernels::gemm(type, p.ta, p.tb, p.M, p.N, p.K, 1.0f, o.a, p.lda, o.b, p.ldb, p.beta,
                              o.c, p.ldc);
          };
        };
        // packed only where B is a weight (forward and dX): its reorder then stands for the one
        // per step that a layout cached across the step's GEMMs would cost.
        const bool weights_b = pass != 2;
        std::vector<std::function<void()>> calls = {
            route_call(GemmRoute::sgemm, DType::F32, o32),
            route_call(GemmRoute::matmul, DType::F32, o32), gemm_call(DType::F32, o32),
            gemm_call(DType::BF16, ob), gemm_call(DType::F16, oh)};
        if (weights_b) calls.push_back(route_call(GemmRoute::packed, DType::F32, o32));
        if (compare_routes) {
          calls.push_back(route_call(GemmRoute::matmul, DType::BF16, ob));
          calls.push_back(route_call(GemmRoute::packed, DType::BF16, ob));
        }
        const std::vector<std::vector<double>> samples = time_calls(calls, min_time);
        std::vector<double> t;
        for (const auto& series : samples) t.push_back(median(series));
        const double t_sgemm = t[0], t_matmul = t[1], t_gemm = t[2], t_bf16 = t[3], t_fp16 = t[4];
        const double t_packed = weights_b ? t[5] : 0.0;
        const double bf16_speedup = median_ratio(samples[2], samples[3]);
        const double fp16_speedup = median_ratio(samples[2], samples[4]);
        const std::size_t routes_at = weights_b ? 6 : 5;
        auto cell = [&](double seconds) {
          char text[32];
          std::snprintf(text, sizeof text, "%6.1f (%3.0f%%)", rate(seconds),
                        100.0 * rate(seconds) / peak.gflops);
          return std::string(text);
        };
        std::printf("%-5d %-8s %-4s %5d %5d %5d | %s %s %s %s | %s %s | %7.2f %7.2f", rows, l.name,
                    pass == 0   ? "fwd"
                    : pass == 1 ? "dX"
                                : "dW",
                    p.M, p.N, p.K, cell(t_sgemm).c_str(), cell(t_matmul).c_str(),
                    weights_b ? cell(t_packed).c_str() : "            -", cell(t_gemm).c_str(),
                    cell(t_bf16).c_str(), cell(t_fp16).c_str(), bf16_speedup, fp16_speedup);
        if (compare_routes)
          std::printf(" | %s %s", cell(t[routes_at]).c_str(), cell(t[routes_at + 1]).c_str());
        std::printf("\n");
        std::fflush(stdout);
        bf16_ratios.push_back(bf16_speedup);
        fp16_ratios.push_back(fp16_speedup);
      }
  }
  for (auto* ratios : {&bf16_ratios, &fp16_ratios}) std::sort(ratios->begin(), ratios->end());
  std::printf(
      "\nspeed against fp32 over all shapes: bf16 median %.2f (%.2f-%.2f), fp16 median %.2f "
      "(%.2f-%.2f)\n",
      median(bf16_ratios), bf16_ratios.front(), bf16_ratios.back(), median(fp16_ratios),
      fp16_ratios.front(), fp16_ratios.back());
  for (DType t : {DType::F32, DType::BF16})
    std::printf("impl %-4s fwd qkv 256: %s\n", zt::kernels::dtype_name(t),
                zt::kernels::detail::gemm_impl(t, false, true, 256, 2304, 768, 768, 768, 2304, 1.0f)
                    .c_str());
  std::printf("total %.1f s\n", seconds_since(total_start));
  return 0;
}
