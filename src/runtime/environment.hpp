// SPDX-License-Identifier: Apache-2.0
// The process environment: MPI and Kokkos, initialised in order and finalised in reverse.
#pragma once

#include <mpi.h>

#include <functional>
#include <string>

namespace zt::runtime {

struct ProcessInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;  // from MPI_COMM_TYPE_SHARED, not from launcher variables
  int local_size = 1;
  int host_threads = 1;  // OpenMP/Kokkos threads of this rank
  std::string hostname;
  std::string launcher;  // what started us, for the banner: "srun (Slurm job 123)", "mpirun", ...
};

/// Owns MPI_Init_thread and Kokkos::initialize. Picks the number of host threads per rank:
/// OMP_NUM_THREADS when set, else the cores this rank may run on divided among the ranks that
/// share them, so `mpirun -np 2` on 2 cores does not oversubscribe.
/// Collective: every rank constructs it.
/// 2 for problems with what the user gave (runtime::UserError, files::FileError about a path),
/// 1 for failures at run time.
int exit_code_for(const std::exception& error);

class Environment {
 public:
  Environment(int& argc, char**& argv);
  ~Environment();
  Environment(const Environment&) = delete;
  Environment& operator=(const Environment&) = delete;

  const ProcessInfo& info() const { return info_; }
  static const ProcessInfo& current();  // valid while an Environment exists

  /// Reports an exception and ends the job with a non-zero exit on every rank without
  /// hanging: if all ranks fail together, rank 0 prints each distinct message once and all
  /// finalise; if this rank fails alone it prints with its rank and calls MPI_Abort.
  /// Returns the exit code for main (when it returns at all).
  int fail(const std::exception& error);

 private:
  ProcessInfo info_;
  MPI_Comm error_comm_ = MPI_COMM_NULL;  // used only to agree on failure
  bool owns_mpi_ = false;
  bool finalized_ = false;
};

}  // namespace zt::runtime
