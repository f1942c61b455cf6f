// SPDX-License-Identifier: Apache-2.0
// int64 arithmetic for sizes computed from user input (model shapes, batch sizes, token counts):
// a result that does not fit stops at the int64 limit instead of wrapping to a small or
// negative number, so "too big" stays too big and is refused rather than allocated.
#pragma once

#include <cstdint>
#include <limits>

namespace zt::memory {

inline constexpr std::int64_t kSaturatedInt64 = std::numeric_limits<std::int64_t>::max();

/// a * b, or the int64 limit of the result's sign when it does not fit.
inline std::int64_t saturating_mul(std::int64_t a, std::int64_t b) {
  std::int64_t product = 0;
  if (!__builtin_mul_overflow(a, b, &product)) return product;
  return (a < 0) != (b < 0) ? std::numeric_limits<std::int64_t>::min() : kSaturatedInt64;
}

/// a + b, or the int64 limit of the result's sign when it does not fit.
inline std::int64_t saturating_add(std::int64_t a, std::int64_t b) {
  std::int64_t sum = 0;
  if (!__builtin_add_overflow(a, b, &sum)) return sum;
  return a < 0 ? std::numeric_limits<std::int64_t>::min() : kSaturatedInt64;
}

}  // namespace zt::memory
