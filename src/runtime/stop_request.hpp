// SPDX-License-Identifier: Apache-2.0
// A request to stop at the next step boundary: Slurm's warning before the time limit
// (--signal=USR1@600), scancel's SIGTERM, mpirun's forwarded SIGUSR1.
//
// The signals are blocked in every thread and taken synchronously (sigtimedwait) at each step
// boundary, never by a handler: a handler runs on whatever stack the interrupted thread has,
// and oneDNN 2.6's JIT sgemm points the stack pointer into the heap, so a signal delivered
// during a GEMM writes its frame over heap memory (uxlfoundation/oneDNN#4845). Blocking must
// happen before MPI, Kokkos or OpenMP start their threads, which inherit the mask.
#pragma once

#include <string>

namespace zt::runtime {

class StopRequest {
 public:
  /// Blocks SIGUSR1 and SIGTERM in the calling thread and every thread started after it.
  /// Call first thing, before anything starts threads.
  static void block_stop_signals();
  /// Requires block_stop_signals() to have run.
  StopRequest();
  StopRequest(const StopRequest&) = delete;
  StopRequest& operator=(const StopRequest&) = delete;

  /// The first stop signal this process received (taking any that are pending), 0 if none.
  int poll();
  /// "SIGUSR1", "SIGTERM".
  static std::string signal_name(int signal_number);

 private:
  int received_ = 0;
};

}  // namespace zt::runtime
