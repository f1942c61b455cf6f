// SPDX-License-Identifier: Apache-2.0
#include "memory/format.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

namespace zt::memory {

std::int64_t parse_bytes(const std::string& text) {
  std::size_t used = 0;
  double number = 0;
  try {
    number = std::stod(text, &used);
  } catch (const std::exception&) {
    throw std::invalid_argument("not a size: '" + text + "' (expected e.g. 64MiB, 2GiB, 4096)");
  }
  std::string unit = text.substr(used);
  unit.erase(
      std::remove_if(unit.begin(), unit.end(), [](unsigned char c) { return std::isspace(c); }),
      unit.end());
  std::transform(unit.begin(), unit.end(), unit.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  double scale = 0;
  if (unit.empty() || unit == "b")
    scale = 1;
  else if (unit == "k" || unit == "kib")
    scale = 1024.0;
  else if (unit == "m" || unit == "mib")
    scale = 1024.0 * 1024;
  else if (unit == "g" || unit == "gib")
    scale = 1024.0 * 1024 * 1024;
  else if (unit == "t" || unit == "tib")
    scale = 1024.0 * 1024 * 1024 * 1024;
  else if (unit == "kb")
    scale = 1e3;
  else if (unit == "mb")
    scale = 1e6;
  else if (unit == "gb")
    scale = 1e9;
  else if (unit == "tb")
    scale = 1e12;
  else
    throw std::invalid_argument("unknown size unit in '" + text +
                                "' (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)");
  if (!(number >= 0) || !std::isfinite(number))
    throw std::invalid_argument("size must be a non-negative number: '" + text + "'");
  // 2^63 is exact in double; at or past it llround has no int64 to return.
  const double bytes = number * scale;
  if (!(bytes < 9223372036854775808.0))
    throw std::invalid_argument("size too large: '" + text + "' is more than 8 EiB");
  return static_cast<std::int64_t>(std::llround(bytes));
}

namespace {

const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
constexpr int kLargestUnit = 6;

}  // namespace

std::string format_bytes(std::int64_t bytes) {
  if (std::llabs(bytes) < 1024 && bytes != INT64_MIN) {
    char text[32];
    std::snprintf(text, sizeof text, "%lld B", static_cast<long long>(bytes));
    return text;
  }
  return format_size(static_cast<double>(bytes));
}

std::string format_size(double bytes) {
  if (std::isnan(bytes)) return "not a number";
  if (std::isinf(bytes)) return bytes > 0 ? "infinite" : "-infinite";
  double value = bytes;
  int unit = 0;
  while (std::fabs(value) >= 1024.0 && unit < kLargestUnit) {
    value /= 1024.0;
    ++unit;
  }
  char text[48];
  if (unit == 0)
    std::snprintf(text, sizeof text, "%.0f B", value);
  else if (std::fabs(value) < 1e4)
    std::snprintf(text, sizeof text, "%.2f %s", value, kUnits[unit]);
  else  // past 10^4 EiB: an exponent reads better than a row of digits
    std::snprintf(text, sizeof text, "%.2g %s", value, kUnits[unit]);
  return text;
}

}  // namespace zt::memory
