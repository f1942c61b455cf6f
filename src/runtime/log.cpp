// SPDX-License-Identifier: Apache-2.0
#include "runtime/log.hpp"

#include <cmath>
#include <cstdio>

#include "files/files.hpp"
#include "runtime/environment.hpp"

namespace zt::runtime {

void print(const std::string& raw_line) {
  if (Environment::current().rank != 0) return;
  // Paths and names from files and flags end up in these lines: nothing may act on a terminal.
  const std::string line = files::escaped(raw_line, /*keep_newlines=*/true);
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

void warn(const std::string& line) {
  std::fprintf(stderr, "zerotrain: warning (rank %d): %s\n", Environment::current().rank,
               files::escaped(line, true).c_str());
  std::fflush(stderr);
}

void warn_once(const std::string& line) {
  if (Environment::current().rank != 0) return;
  std::fprintf(stderr, "zerotrain: warning: %s\n", files::escaped(line, true).c_str());
  std::fflush(stderr);
}

std::string format_duration(double seconds) {
  char text[32];
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  if (seconds < 60) {
    std::snprintf(text, sizeof text, "%.1fs", seconds);
  } else if (seconds < 3600) {
    const int s = static_cast<int>(std::lround(seconds));
    std::snprintf(text, sizeof text, "%dm%02ds", s / 60, s % 60);
  } else {
    const int m = static_cast<int>(std::lround(seconds / 60));
    std::snprintf(text, sizeof text, "%dh%02dm", m / 60, m % 60);
  }
  return text;
}

}  // namespace zt::runtime
