// SPDX-License-Identifier: Apache-2.0
// Element types of training buffers: fp32, and the two 16-bit storage formats (IEEE binary16 and
// bfloat16) that hold parameters, activations and gradients in mixed precision. 16-bit values
// are storage only: every op body loads them into float, computes in float and rounds once on
// store (round to nearest even), so host and device produce the same bits.
#pragma once

#include <cstdint>
#include <cstring>

#include "kernels/ops/host_device.hpp"

namespace zt::kernels {

enum class DType : int { F32 = 0, F16 = 1, BF16 = 2, I32 = 3 };

ZT_HOST_DEVICE constexpr int size_of(DType type) {
  return type == DType::F16 || type == DType::BF16 ? 2 : 4;
}
/// "fp32", "fp16", "bf16", "int32": the names DeepSpeed's communication_data_type uses.
inline const char* dtype_name(DType type) {
  switch (type) {
    case DType::F32:
      return "fp32";
    case DType::F16:
      return "fp16";
    case DType::BF16:
      return "bf16";
    case DType::I32:
      return "int32";
  }
  return "?";
}

namespace detail {
ZT_HOST_DEVICE inline std::uint32_t float_bits(float value) {
  std::uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
}
ZT_HOST_DEVICE inline float bits_float(std::uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}
}  // namespace detail

/// bfloat16: the upper half of an fp32. Conversion from float rounds to nearest even; NaN stays
/// NaN (quiet), +-inf stays inf, values past the largest finite bf16 round to inf.
struct bf16 {
  std::uint16_t bits = 0;
};

/// IEEE 754 binary16: 5 exponent bits, 10 mantissa bits, largest finite 65504, subnormals down
/// to 2^-24. Conversion from float rounds to nearest even; overflow gives inf.
struct fp16 {
  std::uint16_t bits = 0;
};

ZT_HOST_DEVICE inline float to_float(float value) {
  return value;
}

ZT_HOST_DEVICE inline float to_float(bf16 value) {
  return detail::bits_float(static_cast<std::uint32_t>(value.bits) << 16);
}

// The fp16 and bf16 conversions are written with selects instead of early returns: every
// candidate is computed and one chosen, so loops over them vectorise (GCC keeps loops over
// branchy conversions scalar, which made fp16 ops 5-20x slower than fp32). Unused candidates
// may wrap or be inf, harmlessly.
ZT_HOST_DEVICE inline float to_float(fp16 value) {
  const std::uint32_t h = value.bits;
  const std::uint32_t shifted = (h & 0x7fffu) << 13;  // exponent and mantissa in fp32 places
  const std::uint32_t exponent = shifted & 0x0f800000u;
  const std::uint32_t normal = shifted + ((127u - 15u) << 23);
  const std::uint32_t inf_nan = normal + ((128u - 16u) << 23);
  // subnormal (and zero): 2^-14 * (1 + m / 2^10) - 2^-14 = m * 2^-24, exact in fp32
  const float subnormal = detail::bits_float(normal + (1u << 23)) - detail::bits_float(113u << 23);
  std::uint32_t magnitude = exponent == 0x0f800000u ? inf_nan : normal;
  magnitude = exponent == 0 ? detail::float_bits(subnormal) : magnitude;
  return detail::bits_float(magnitude | ((h & 0x8000u) << 16));
}

template <class T>
ZT_HOST_DEVICE inline T from_float(float value);

template <>
ZT_HOST_DEVICE inline float from_float<float>(float value) {
  return value;
}

template <>
ZT_HOST_DEVICE inline bf16 from_float<bf16>(float value) {
  const std::uint32_t bits = detail::float_bits(value);
  const std::uint32_t quiet_nan = (bits >> 16) | 0x0040u;  // NaN stays NaN, quiet
  const std::uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
  return bf16{static_cast<std::uint16_t>((bits & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded)};
}

template <>
ZT_HOST_DEVICE inline fp16 from_float<fp16>(float value) {
  const std::uint32_t bits = detail::float_bits(value);
  const std::uint32_t sign = (bits >> 16) & 0x8000u;
  const std::uint32_t magnitude = bits & 0x7fffffffu;
  // below the smallest normal 2^-14: a subnormal (or zero), rounded to nearest even by the
  // float addition (2^-24 units land in the low mantissa bits of 0.5)
  const std::uint32_t subnormal =
      detail::float_bits(detail::bits_float(magnitude) + 0.5f) - 0x3f000000u;
  const std::uint32_t normal = (magnitude - 0x38000000u + 0xfffu + ((magnitude >> 13) & 1u)) >> 13;
  std::uint32_t result = magnitude < 0x38800000u ? subnormal : normal;
  result = magnitude >= 0x477ff000u ? 0x7c00u : result;  // overflow: inf
  result = magnitude > 0x7f800000u ? 0x7e00u : result;   // NaN
  return fp16{static_cast<std::uint16_t>(sign | result)};
}

/// The DType of a storage type, for dispatch tables and checks.
template <class T>
struct dtype_of;
template <>
struct dtype_of<float> {
  static constexpr DType value = DType::F32;
};
template <>
struct dtype_of<fp16> {
  static constexpr DType value = DType::F16;
};
template <>
struct dtype_of<bf16> {
  static constexpr DType value = DType::BF16;
};
template <>
struct dtype_of<std::int32_t> {
  static constexpr DType value = DType::I32;
};

}  // namespace zt::kernels
