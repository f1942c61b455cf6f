// SPDX-License-Identifier: Apache-2.0
// Host reduction loops. For the 16-bit types they are what NCCL does per hop of a reduction:
// widen both operands to float, combine, round once to the 16-bit type (nearest even). They sit
// on the gradient path of the MPI backend (every hop of a reduce-scatter runs one), so each
// loop is written to vectorise: no branches, only selects.
#include "comm/reduction.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <type_traits>

#include "kernels/ops/dtype.hpp"
#include "runtime/error.hpp"

#if defined(__F16C__)
#include <immintrin.h>
#endif

namespace zt::comm {
namespace {

using kernels::bf16;
using kernels::fp16;

inline float bits_float(std::uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

inline std::uint32_t float_bits(float value) {
  std::uint32_t bits;
  std::memcpy(&bits, &value, sizeof bits);
  return bits;
}

template <class T>
struct Format;
template <>
struct Format<fp16> {
  static constexpr std::uint16_t infinity = 0x7c00;  // magnitudes above it are NaN
  static constexpr std::uint16_t quiet_nan = 0x7e00;
};
template <>
struct Format<bf16> {
  static constexpr std::uint16_t infinity = 0x7f80;
  static constexpr std::uint16_t quiet_nan = 0x7fc0;
};

// dtype.hpp's conversions are branch-free, so the portable loops over them vectorise.
inline float widen(fp16 value) {
  return kernels::to_float(value);
}

inline float widen(bf16 value) {
  return kernels::to_float(value);
}

/// The vector body of sum16 with x86 intrinsics where the compiler may use them; returns how
/// many leading elements it summed (a multiple of 8), the rest is the portable loop's. GCC
/// vectorises that loop, but the integer widening and rounding cost tens of operations per
/// vector: fp16 ran at a sixth, bf16 at about two thirds of memory speed on one core. Same bits
/// (the tests compare every input with dtype.hpp, and the portable loop is built and tested
/// with -mno-f16c -mno-avx2 too).
template <class T>
std::int64_t sum16_vector(const T* __restrict in, T* __restrict inout, std::int64_t count) {
  std::int64_t i = 0;
#if defined(__F16C__)
  if constexpr (std::is_same_v<T, fp16>) {
    // vcvtph2ps is exact; vcvtps2ph rounds to nearest even with overflow to inf; NaN is made
    // the canonical one first, which it narrows to 0x7e00.
    const __m256 quiet_nan = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fc00000));
    for (; i + 8 <= count; i += 8) {
      const __m256 a = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(in + i)));
      const __m256 b =
          _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(inout + i)));
      __m256 sum = _mm256_add_ps(a, b);
      sum = _mm256_blendv_ps(sum, quiet_nan, _mm256_cmp_ps(sum, sum, _CMP_UNORD_Q));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(inout + i),
                       _mm256_cvtps_ph(sum, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
  }
#endif
#if defined(__AVX2__)
  if constexpr (std::is_same_v<T, bf16>) {
    // from_float<bf16> on 8 lanes: add 0x7fff plus the lowest kept bit, keep the upper half.
    const __m256i quiet_nan = _mm256_set1_epi32(Format<bf16>::quiet_nan);
    const __m256i half = _mm256_set1_epi32(0x7fff);
    const __m256i one = _mm256_set1_epi32(1);
    auto widen8 = [](const bf16* from) {
      const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(from));
      return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
    };
    for (; i + 8 <= count; i += 8) {
      const __m256 sum = _mm256_add_ps(widen8(in + i), widen8(inout + i));
      const __m256i bits = _mm256_castps_si256(sum);
      const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(bits, 16), one);
      const __m256i rounded =
          _mm256_srli_epi32(_mm256_add_epi32(bits, _mm256_add_epi32(half, odd)), 16);
      const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(sum, sum, _CMP_UNORD_Q));
      const __m256i result = _mm256_blendv_epi8(rounded, quiet_nan, nan);
      // Narrow 32 to 16 bits (no saturation: every lane is below 2^16); packus works within
      // 128-bit halves, the permute joins them.
      const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(result, result), 0x08);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(inout + i), _mm256_castsi256_si128(packed));
    }
  }
#endif
  static_cast<void>(in);  // unused where neither path is compiled
  static_cast<void>(inout);
  static_cast<void>(count);
  return i;
}

// Rounding fp32 to 16 bits after an fp32 addition is the correctly rounded 16-bit sum: double
// rounding is innocuous when the wider format has at least 2p+2 significand bits (24 >= 2*11+2
// for fp16, 24 >= 2*8+2 for bf16). NaN has many encodings, and x86 returns the first operand's
// payload and sign, which would make a + b and b + a differ in bits; one quiet NaN keeps the
// sum exactly commutative, so all ranks of an all-reduce get the same bits whatever the order.
template <class T>
void sum16(const T* __restrict in, T* __restrict inout, std::int64_t count) {
  for (std::int64_t i = sum16_vector(in, inout, count); i < count; ++i) {
    const std::uint16_t bits = kernels::from_float<T>(widen(in[i]) + widen(inout[i])).bits;
    inout[i].bits = (bits & 0x7fffu) > Format<T>::infinity ? Format<T>::quiet_nan : bits;
  }
}

/// A total order of 16-bit float bits: sign-magnitude made two's complement (so -0 < +0), NaN
/// above every number for Max and below for Min (a NaN anywhere wins), NaNs ordered by bits.
/// Distinct inputs never tie, so Max and Min are exactly commutative, and need no conversion:
/// the result is one of the inputs.
template <class T, bool kMax>
inline std::int32_t order_key(std::uint16_t bits) {
  const std::int32_t magnitude = bits & 0x7fff;
  const std::int32_t number = (bits & 0x8000) != 0 ? -1 - magnitude : magnitude;
  const std::int32_t nan = kMax ? 0x10000 + bits : -0x20000 + bits;
  return magnitude > Format<T>::infinity ? nan : number;
}

template <class T, bool kMax>
void select16(const T* __restrict in, T* __restrict inout, std::int64_t count) {
  for (std::int64_t i = 0; i < count; ++i) {
    const std::uint16_t a = in[i].bits;
    const std::uint16_t b = inout[i].bits;
    const std::int32_t key_a = order_key<T, kMax>(a);
    const std::int32_t key_b = order_key<T, kMax>(b);
    inout[i].bits = (kMax ? key_a > key_b : key_a < key_b) ? a : b;
  }
}

template <class T>
void reduce16(const void* in, void* inout, std::int64_t count, ReduceOp op) {
  const T* source = static_cast<const T*>(in);
  T* target = static_cast<T*>(inout);
  switch (op) {
    case ReduceOp::Sum:
      return sum16(source, target, count);
    case ReduceOp::Max:
      return select16<T, true>(source, target, count);
    case ReduceOp::Min:
      return select16<T, false>(source, target, count);
  }
}

/// The wider types, as MPI's predefined operations combine them (the MPI backend uses those).
template <class T>
void reduce_wide(const void* in, void* inout, std::int64_t count, ReduceOp op) {
  const T* __restrict source = static_cast<const T*>(in);
  T* __restrict target = static_cast<T*>(inout);
  switch (op) {
    case ReduceOp::Sum:
      for (std::int64_t i = 0; i < count; ++i) target[i] += source[i];
      return;
    case ReduceOp::Max:
      for (std::int64_t i = 0; i < count; ++i) target[i] = std::max(target[i], source[i]);
      return;
    case ReduceOp::Min:
      for (std::int64_t i = 0; i < count; ++i) target[i] = std::min(target[i], source[i]);
      return;
  }
}

// MPI calls these from C: they must not throw, so the type and op are template arguments
// checked when the MPI_Op is made, not here.
template <class T, ReduceOp kOp>
void mpi_reduce16(void* in, void* inout, int* length, MPI_Datatype* /*datatype*/) {
  reduce16<T>(in, inout, *length, kOp);
}

template <class T>
MPI_User_function* mpi_function(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum:
      return &mpi_reduce16<T, ReduceOp::Sum>;
    case ReduceOp::Max:
      return &mpi_reduce16<T, ReduceOp::Max>;
    case ReduceOp::Min:
      return &mpi_reduce16<T, ReduceOp::Min>;
  }
  throw std::invalid_argument("unknown reduction");
}

}  // namespace

void reduce_local(const void* in, void* inout, std::int64_t count, DataType type, ReduceOp op) {
  if (count < 0)
    throw std::invalid_argument(runtime::concat("reduce_local: negative count ", count));
  switch (type) {
    case DataType::Float16:
      return reduce16<fp16>(in, inout, count, op);
    case DataType::BFloat16:
      return reduce16<bf16>(in, inout, count, op);
    case DataType::Float32:
      return reduce_wide<float>(in, inout, count, op);
    case DataType::Float64:
      return reduce_wide<double>(in, inout, count, op);
    case DataType::Int32:
      return reduce_wide<std::int32_t>(in, inout, count, op);
    case DataType::Int64:
      return reduce_wide<std::int64_t>(in, inout, count, op);
  }
  throw std::invalid_argument("reduce_local: unknown data type");
}

namespace detail {

MPI_User_function* mpi_user_function(DataType type, ReduceOp op) {
  switch (type) {
    case DataType::Float16:
      return mpi_function<fp16>(op);
    case DataType::BFloat16:
      return mpi_function<bf16>(op);
    default:
      throw std::invalid_argument(
          runtime::concat("no user-defined MPI operation for ", data_type_name(type)));
  }
}

}  // namespace detail
}  // namespace zt::comm
