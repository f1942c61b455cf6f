// SPDX-License-Identifier: Apache-2.0
// Running a helper process: for work that may crash inside a library we do not control
// (libhdf5 on a damaged file), so that a crash becomes a message instead of the job's death.
#pragma once

#include <string>
#include <vector>

namespace zt::runtime {

struct ProcessResult {
  bool finished = false;     // false: killed after the timeout
  int exit_code = -1;        // when it exited
  int signal = 0;            // when a signal ended it (SIGSEGV, SIGKILL by the OOM killer, ...)
  std::string error_output;  // what it wrote to stderr (the last 64 KiB)
};

/// Runs `arguments` (arguments[0] is the executable's path) with this process's environment
/// minus the launcher's variables (OMPI_*, PMIX_*, PMI_*, SLURM_*: the helper is no MPI rank),
/// stdin and stdout on /dev/null and stderr captured; waits at most `timeout_seconds`, then
/// kills it. posix_spawn, not fork: an MPI process must not duplicate itself.
ProcessResult run_helper_process(const std::vector<std::string>& arguments, double timeout_seconds);

/// This executable's path (/proc/self/exe), to start a helper of ourselves.
std::string own_executable();

}  // namespace zt::runtime
