// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <chrono>

namespace zt::runtime {

/// Wall-clock stopwatch on the monotonic clock.
class Stopwatch {
 public:
  Stopwatch() : start_(Clock::now()) {}
  void restart() { start_ = Clock::now(); }
  double seconds() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }

 private:
  using Clock = std::chrono::steady_clock;
  Clock::time_point start_;
};

/// Adds the lifetime of the object to an accumulator (phase timers for wall_clock_breakdown).
class ScopedTimer {
 public:
  explicit ScopedTimer(double& accumulator) : accumulator_(accumulator) {}
  ~ScopedTimer() { accumulator_ += watch_.seconds(); }
  ScopedTimer(const ScopedTimer&) = delete;
  ScopedTimer& operator=(const ScopedTimer&) = delete;

 private:
  double& accumulator_;
  Stopwatch watch_;
};

}  // namespace zt::runtime
