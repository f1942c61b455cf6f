// SPDX-License-Identifier: Apache-2.0
#include "optim/host_kernels.hpp"

#include <Kokkos_Core.hpp>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "kernels/ops/layer_ops.hpp"

// Asks the compiler to vectorise the loop that follows: the arrays of one call never overlap,
// which it cannot prove, and the element bodies are branch-free. Kokkos's OpenMP backend
// compiles with -fopenmp, which honours `omp simd`; without it GCC takes `ivdep`.
#if defined(_OPENMP)
#define ZT_SIMD_LOOP _Pragma("omp simd")
#elif defined(__clang__)
#define ZT_SIMD_LOOP _Pragma("clang loop vectorize(enable)")
#elif defined(__GNUC__)
#define ZT_SIMD_LOOP _Pragma("GCC ivdep")
#else
#define ZT_SIMD_LOOP
#endif

namespace zt::optim::host {
namespace {

using kernels::DType;
using HostRange =
    Kokkos::RangePolicy<Kokkos::DefaultHostExecutionSpace, Kokkos::IndexType<std::int64_t>>;

std::int64_t tile_count(std::int64_t n) {
  return (n + kTileElements - 1) / kTileElements;
}

// Runs tile(begin, end) over [0, n) cut at multiples of kTileElements. A single tile runs on the
// calling thread: LAMB calls this per tensor, and a fork/join per bias vector would cost more
// than the bias.
template <class Tile>
void for_each_tile(const char* label, std::int64_t n, const Tile& tile) {
  const std::int64_t tiles = tile_count(n);
  if (tiles <= 0) return;
  if (tiles == 1) {
    tile(0, n);
    return;
  }
  Kokkos::parallel_for(label, HostRange(0, tiles), [=](const std::int64_t t) {
    const std::int64_t begin = t * kTileElements;
    tile(begin, begin + kTileElements < n ? begin + kTileElements : n);
  });
  Kokkos::fence();
}

// Sum of tile(begin, end) over the tiles of [0, n), added in tile order whatever the threads.
template <class Result, class Tile>
Result sum_over_tiles(const char* label, std::int64_t n, const Tile& tile) {
  const std::int64_t tiles = tile_count(n);
  if (tiles <= 0) return Result{};
  if (tiles == 1) return tile(0, n);
  std::vector<Result> partials(static_cast<std::size_t>(tiles));
  Result* out = partials.data();
  for_each_tile(label, n, [=](std::int64_t begin, std::int64_t end) {
    out[begin / kTileElements] = tile(begin, end);
  });
  Result total{};
  for (const Result& partial : partials) total += partial;
  return total;
}

// Storage types by DType, for the dispatch below; void stands for "no parameter copy".
template <class T>
struct Type {
  using type = T;
};

template <class Visit>
void visit_storage_type(DType dtype, const char* what, Visit&& visit) {
  switch (dtype) {
    case DType::F32:
      visit(Type<float>{});
      return;
    case DType::F16:
      visit(Type<kernels::fp16>{});
      return;
    case DType::BF16:
      visit(Type<kernels::bf16>{});
      return;
    case DType::I32:
      break;
  }
  throw std::invalid_argument(std::string("optimizer kernels take fp32, fp16 or bf16 ") + what +
                              ", not " + kernels::dtype_name(dtype));
}

template <class Visit>
void visit_output_type(const void* out, DType dtype, Visit&& visit) {
  if (out == nullptr) {
    visit(Type<void>{});
    return;
  }
  visit_storage_type(dtype, "parameter copies", visit);
}

template <class P>
inline void store_copy(P* out, std::int64_t i, float value) {
  if constexpr (!std::is_void_v<P>) out[i] = kernels::from_float<P>(value);
}

// --- Adam -------------------------------------------------------------------------------------

// The tile loops are free functions of plain pointer arguments, not lambda bodies: in a lambda
// the pointers are members of the closure, which GCC reloads per element (the stores might
// change them) and so vectorises with gathers and scatters, at a tenth of the speed.
template <class G, class P>
void adam_loop(float* master, const G* grads, float multiplier, float* exp_avg, float* exp_avg_sq,
               P* out, std::int64_t begin, std::int64_t end,
               const kernels::AdamElementConstants c) {
  ZT_SIMD_LOOP
  for (std::int64_t i = begin; i < end; ++i) {
    float param = master[i];
    float m = exp_avg[i];
    float v = exp_avg_sq[i];
    kernels::adam_update_element(param, kernels::to_float(grads[i]) * multiplier, m, v, c);
    master[i] = param;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    store_copy(out, i, param);
  }
}

// fp16 gradients go through fp32 chunks on the stack, widened by F16C (kernels::ops::load_n,
// the same bits as to_float): the branch-free software conversion vectorises but costs ~20
// instructions per vector, which made the fp16 step compute bound (1 thread, in cache: half the
// rate of the bf16 step). A chunk stays in L1. The fp16 copy is still rounded in the loop
// (from_float): storing it from the chunk in a second pass as well (store_n) measured 20% slower
// at memory scale on one core than either pass alone (2^25 elements, Zen 4).
constexpr int kHalfChunk = 512;

template <class T>
constexpr bool kIsHalf = std::is_same_v<T, kernels::fp16>;

template <class G, class P>
void adam_tile(float* master, const G* grads, float multiplier, float* exp_avg, float* exp_avg_sq,
               P* out, std::int64_t begin, std::int64_t end,
               const kernels::AdamElementConstants c) {
  if constexpr (!kIsHalf<G>) {
    adam_loop(master, grads, multiplier, exp_avg, exp_avg_sq, out, begin, end, c);
  } else {
    float widened[kHalfChunk];
    for (std::int64_t i = begin; i < end; i += kHalfChunk) {
      const int count = static_cast<int>(end - i < kHalfChunk ? end - i : kHalfChunk);
      P* chunk_out = nullptr;
      if constexpr (!std::is_void_v<P>) chunk_out = out + i;
      kernels::ops::load_n(grads + i, count, widened);
      adam_loop(master + i, widened, multiplier, exp_avg + i, exp_avg_sq + i, chunk_out, 0, count,
                c);
    }
  }
}

template <class G, class P>
void adam_tiles(float* master, const G* grads, float multiplier, float* exp_avg, float* exp_avg_sq,
                std::int64_t n, const kernels::AdamElementConstants& constants, P* out) {
  for_each_tile("zt::optim::adam_step", n, [=](std::int64_t begin, std::int64_t end) {
    adam_tile(master, grads, multiplier, exp_avg, exp_avg_sq, out, begin, end, constants);
  });
}

// --- LAMB -------------------------------------------------------------------------------------

// Double lanes per sum in a tile: a few vectors' worth, so the adds overlap their latency.
constexpr int kLambLanes = 16;

struct LambSums {
  double weight = 0.0;
  double update = 0.0;
  LambSums& operator+=(const LambSums& other) {
    weight += other.weight;
    update += other.update;
    return *this;
  }
};

// Adds lanes[0..width) pairwise, in a fixed order.
template <int Width>
double add_lanes(double (&lanes)[Width]) {
  for (int half = Width / 2; half > 0; half /= 2)
    for (int j = 0; j < half; ++j) lanes[j] += lanes[j + half];
  return lanes[0];
}

// Phase 1 of element i, its squares added to the lanes given.
template <class G>
inline void lamb_moments_element(const float* master, const G* grads, float multiplier,
                                 float* exp_avg, float* exp_avg_sq, std::int64_t i,
                                 const kernels::LambElementConstants& c, double& weight,
                                 double& update) {
  const float param = master[i];
  float m = exp_avg[i];
  float v = exp_avg_sq[i];
  const float direction = kernels::lamb_update_moments_element(
      param, kernels::to_float(grads[i]) * multiplier, m, v, c);
  exp_avg[i] = m;
  exp_avg_sq[i] = v;
  weight += static_cast<double>(param) * param;
  update += static_cast<double>(direction) * direction;
}

template <class G>
void lamb_moments_loop(const float* master, const G* grads, float multiplier, float* exp_avg,
                       float* exp_avg_sq, std::int64_t begin, std::int64_t end,
                       const kernels::LambElementConstants c, double (&weight)[kLambLanes],
                       double (&update)[kLambLanes]) {
  std::int64_t i = begin;
  for (; i + kLambLanes <= end; i += kLambLanes) {
    ZT_SIMD_LOOP
    for (int lane = 0; lane < kLambLanes; ++lane)
      lamb_moments_element(master, grads, multiplier, exp_avg, exp_avg_sq, i + lane, c,
                           weight[lane], update[lane]);
  }
  for (int lane = 0; i < end; ++i, ++lane)
    lamb_moments_element(master, grads, multiplier, exp_avg, exp_avg_sq, i, c, weight[lane],
                         update[lane]);
}

template <class G>
LambSums lamb_moments_tile(const float* master, const G* grads, float multiplier, float* exp_avg,
                           float* exp_avg_sq, std::int64_t begin, std::int64_t end,
                           const kernels::LambElementConstants c) {
  double weight[kLambLanes] = {};
  double update[kLambLanes] = {};
  if constexpr (!kIsHalf<G>) {
    lamb_moments_loop(master, grads, multiplier, exp_avg, exp_avg_sq, begin, end, c, weight,
                      update);
  } else {
    // chunks of whole lane groups, so every element lands in the lane it would unchunked
    static_assert(kHalfChunk % kLambLanes == 0, "chunks of whole lane groups");
    float widened[kHalfChunk];
    for (std::int64_t i = begin; i < end; i += kHalfChunk) {
      const int count = static_cast<int>(end - i < kHalfChunk ? end - i : kHalfChunk);
      kernels::ops::load_n(grads + i, count, widened);
      lamb_moments_loop(master + i, widened, multiplier, exp_avg + i, exp_avg_sq + i, 0, count, c,
                        weight, update);
    }
  }
  return {add_lanes(weight), add_lanes(update)};
}

template <class P>
void lamb_apply_loop(float* master, const float* exp_avg, const float* exp_avg_sq,
                     float trust_ratio, P* out, std::int64_t begin, std::int64_t end,
                     const kernels::LambElementConstants c) {
  ZT_SIMD_LOOP
  for (std::int64_t i = begin; i < end; ++i) {
    float param = master[i];
    kernels::lamb_apply_element(param, exp_avg[i], exp_avg_sq[i], trust_ratio, c);
    master[i] = param;
    store_copy(out, i, param);
  }
}

// --- Conversion, scaling -------------------------------------------------------------------

template <class P>
void convert_tile(const float* values, P* out, std::int64_t begin, std::int64_t end) {
  if constexpr (kIsHalf<P>) {
    kernels::ops::store_n(values + begin, static_cast<int>(end - begin), out + begin);
  } else {
    ZT_SIMD_LOOP
    for (std::int64_t i = begin; i < end; ++i) out[i] = kernels::from_float<P>(values[i]);
  }
}

void scale_tile(float* values, float factor, std::int64_t begin, std::int64_t end) {
  ZT_SIMD_LOOP
  for (std::int64_t i = begin; i < end; ++i) values[i] *= factor;
}

// --- Sum of squares ---------------------------------------------------------------------------

// fp32 values: every square is exact in double and summed in double lanes, four AVX-512
// vectors (eight AVX2 ones) of independent adds to hide their latency. At 4 bytes per element
// this keeps up with memory on one core.
constexpr int kSumLanes = 32;

template <class T>
void sum_of_squares_loop(const T* values, std::int64_t begin, std::int64_t end,
                         double (&lanes)[kSumLanes]) {
  std::int64_t i = begin;
  for (; i + kSumLanes <= end; i += kSumLanes) {
    ZT_SIMD_LOOP
    for (int lane = 0; lane < kSumLanes; ++lane) {
      const double value = kernels::to_float(values[i + lane]);
      lanes[lane] += value * value;
    }
  }
  for (int lane = 0; i < end; ++i, ++lane) {
    const double value = kernels::to_float(values[i]);
    lanes[lane] += value * value;
  }
}

// The double-lane sum of a tile of any dtype (fp16 widened by F16C in chunks).
template <class T>
double exact_sum_of_squares_tile(const T* values, std::int64_t begin, std::int64_t end) {
  double lanes[kSumLanes] = {};
  if constexpr (!kIsHalf<T>) {
    sum_of_squares_loop(values, begin, end, lanes);
  } else {
    float widened[kHalfChunk];
    for (std::int64_t i = begin; i < end; i += kHalfChunk) {
      const int count = static_cast<int>(end - i < kHalfChunk ? end - i : kHalfChunk);
      kernels::ops::load_n(values + i, count, widened);
      sum_of_squares_loop(widened, 0, count, lanes);
    }
  }
  return add_lanes(lanes);
}

// 16-bit values move half the bytes, and there widening every element to double (cross-lane
// shuffles, the bottleneck on Zen 4) capped bf16 at 0.7 of the triad on one core. But the square
// of a bf16 (8 significant bits) or fp16 (11) value is exact in float, so squares are summed
// in float lanes and the lanes moved into double after every block of kHalfLanes * 8 elements:
// a float partial of 8 exact squares has a relative error below 7 * 2^-24 (4.2e-7), and so has
// the sum. bf16 leaves float's exact range past |x| >= 2^64 (the square overflows: the tile is
// then summed again in double, so only a real inf/NaN makes the sum non-finite) and below
// 2^-63 (the square loses bits: under 2^-126 per element, absolute).
constexpr int kHalfLanes = 64;
constexpr int kHalfBlock = 8 * kHalfLanes;
static_assert(kHalfBlock <= kHalfChunk, "a block of fp16 is widened in one chunk");

template <class T>
void float_square_block(const T* values, int count, float (&partial)[kHalfLanes]) {
  int i = 0;
  for (; i + kHalfLanes <= count; i += kHalfLanes) {
    ZT_SIMD_LOOP
    for (int lane = 0; lane < kHalfLanes; ++lane) {
      const float value = kernels::to_float(values[i + lane]);
      partial[lane] += value * value;
    }
  }
  for (int lane = 0; i < count; ++i, ++lane) {
    const float value = kernels::to_float(values[i]);
    partial[lane] += value * value;
  }
}

// bf16 in pairs: a 32-bit word holds two, which as floats are word << 16 and word & 0xffff0000,
// both operations within the lane, where widening 16-bit lanes to 32 (vpmovzxwd) crosses lanes
// and left the loop too little ahead of memory on one core. Each element still lands in one
// float lane (lane k: even element in partial[k], odd in partial[k + kHalfLanes / 2]).
void float_square_block(const kernels::bf16* values, int count, float (&partial)[kHalfLanes]) {
  constexpr int kPairs = kHalfLanes / 2;
  int i = 0;
  for (; i + kHalfLanes <= count; i += kHalfLanes) {
    ZT_SIMD_LOOP
    for (int pair = 0; pair < kPairs; ++pair) {
      std::uint32_t word;
      std::memcpy(&word, values + i + 2 * pair, sizeof(word));
      const float even = kernels::detail::bits_float(word << 16);
      const float odd = kernels::detail::bits_float(word & 0xffff0000u);
      partial[pair] += even * even;
      partial[pair + kPairs] += odd * odd;
    }
  }
  for (int lane = 0; i < count; ++i, ++lane) {
    const float value = kernels::to_float(values[i]);
    partial[lane] += value * value;
  }
}

template <class T>
double sum_of_squares_tile(const T* values, std::int64_t begin, std::int64_t end) {
  if constexpr (std::is_same_v<T, float>) {
    return exact_sum_of_squares_tile(values, begin, end);
  } else {
    double lanes[kHalfLanes] = {};
    float widened[kHalfBlock];
    for (std::int64_t i = begin; i < end; i += kHalfBlock) {
      const int count = static_cast<int>(end - i < kHalfBlock ? end - i : kHalfBlock);
      float partial[kHalfLanes] = {};
      if constexpr (kIsHalf<T>) {
        kernels::ops::load_n(values + i, count, widened);
        float_square_block(widened, count, partial);
      } else {
        float_square_block(values + i, count, partial);
      }
      ZT_SIMD_LOOP
      for (int lane = 0; lane < kHalfLanes; ++lane) lanes[lane] += partial[lane];
    }
    const double sum = add_lanes(lanes);
    return std::isfinite(sum) ? sum : exact_sum_of_squares_tile(values, begin, end);
  }
}

}  // namespace

void adam_step(float* master, const void* grads, DType grad_dtype, float grad_multiplier,
               float* exp_avg, float* exp_avg_sq, std::int64_t n,
               const kernels::AdamElementConstants& constants, void* param_out, DType param_dtype) {
  visit_storage_type(grad_dtype, "gradients", [&](auto grad_type) {
    using G = typename decltype(grad_type)::type;
    visit_output_type(param_out, param_dtype, [&](auto out_type) {
      using P = typename decltype(out_type)::type;
      adam_tiles(master, static_cast<const G*>(grads), grad_multiplier, exp_avg, exp_avg_sq, n,
                 constants, static_cast<P*>(param_out));
    });
  });
}

void adam_update(float* params, const float* grads, float* exp_avg, float* exp_avg_sq,
                 std::int64_t n, const kernels::AdamElementConstants& constants) {
  adam_step(params, grads, DType::F32, 1.0f, exp_avg, exp_avg_sq, n, constants, nullptr,
            DType::F32);
}

LambSquareSums lamb_update_moments(const float* master, const void* grads, DType grad_dtype,
                                   float grad_multiplier, float* exp_avg, float* exp_avg_sq,
                                   std::int64_t n, const kernels::LambElementConstants& constants) {
  LambSums sums;
  visit_storage_type(grad_dtype, "gradients", [&](auto grad_type) {
    using G = typename decltype(grad_type)::type;
    const G* typed = static_cast<const G*>(grads);
    sums = sum_over_tiles<LambSums>(
        "zt::optim::lamb_update_moments", n, [=](std::int64_t begin, std::int64_t end) {
          return lamb_moments_tile(master, typed, grad_multiplier, exp_avg, exp_avg_sq, begin, end,
                                   constants);
        });
  });
  return {sums.weight, sums.update};
}

LambSquareSums lamb_update_moments(const float* params, const float* grads, float* exp_avg,
                                   float* exp_avg_sq, std::int64_t n,
                                   const kernels::LambElementConstants& constants) {
  return lamb_update_moments(params, grads, DType::F32, 1.0f, exp_avg, exp_avg_sq, n, constants);
}

void lamb_apply(float* master, const float* exp_avg, const float* exp_avg_sq, std::int64_t n,
                float trust_ratio, const kernels::LambElementConstants& constants, void* param_out,
                DType param_dtype) {
  visit_output_type(param_out, param_dtype, [&](auto out_type) {
    using P = typename decltype(out_type)::type;
    P* out = static_cast<P*>(param_out);
    for_each_tile("zt::optim::lamb_apply", n, [=](std::int64_t begin, std::int64_t end) {
      lamb_apply_loop(master, exp_avg, exp_avg_sq, trust_ratio, out, begin, end, constants);
    });
  });
}

void lamb_apply(float* params, const float* exp_avg, const float* exp_avg_sq, std::int64_t n,
                float trust_ratio, const kernels::LambElementConstants& constants) {
  lamb_apply(params, exp_avg, exp_avg_sq, n, trust_ratio, constants, nullptr, DType::F32);
}

void convert_from_float(const float* values, std::int64_t n, void* out, DType out_dtype) {
  visit_output_type(out, out_dtype, [&](auto out_type) {
    using P = typename decltype(out_type)::type;
    if constexpr (!std::is_void_v<P>) {
      P* typed = static_cast<P*>(out);
      for_each_tile("zt::optim::convert_from_float", n, [=](std::int64_t begin, std::int64_t end) {
        convert_tile(values, typed, begin, end);
      });
    }
  });
}

SquareSum sum_of_squares(const void* values, DType dtype, std::int64_t n) {
  SquareSum result;
  visit_storage_type(dtype, "values", [&](auto value_type) {
    using T = typename decltype(value_type)::type;
    const T* typed = static_cast<const T*>(values);
    result.sum_of_squares = sum_over_tiles<double>("zt::optim::sum_of_squares", n,
                                                   [=](std::int64_t begin, std::int64_t end) {
                                                     return sum_of_squares_tile(typed, begin, end);
                                                   });
  });
  result.finite = std::isfinite(result.sum_of_squares);
  return result;
}

void scale(float* values, std::int64_t n, float factor) {
  for_each_tile("zt::optim::scale", n, [=](std::int64_t begin, std::int64_t end) {
    scale_tile(values, factor, begin, end);
  });
}

}  // namespace zt::optim::host
