// SPDX-License-Identifier: Apache-2.0
// Printing from an MPI job: progress from rank 0 only, warnings with the rank that saw them.
#pragma once

#include <string>

#include "runtime/error.hpp"

namespace zt::runtime {

/// Rank 0 prints to stdout (flushed, so batch-job logs stay in order).
void print(const std::string& line);
/// Any rank prints "zerotrain: warning (rank R): ..." to stderr.
void warn(const std::string& line);
/// Rank 0 prints "zerotrain: warning: ..." to stderr, for warnings every rank would give.
void warn_once(const std::string& line);

template <class... Parts>
void printf_line(const Parts&... parts) {
  print(concat(parts...));
}

/// Seconds as "1h02m", "3m05s", "12.3s".
std::string format_duration(double seconds);

}  // namespace zt::runtime
