// SPDX-License-Identifier: Apache-2.0
// Drives Environment::fail for the ctest cases in this folder:
//   fail_modes together  every rank fails with the same input error: one message, exit 2
//   fail_modes alone     rank 1 fails while the others wait in a collective: it names itself
//                        and takes the job down (no hang)
#include <mpi.h>

#include <cstring>
#include <stdexcept>

#include "runtime/environment.hpp"
#include "runtime/error.hpp"

int main(int argc, char** argv) {
  zt::runtime::Environment environment(argc, argv);
  const bool alone = argc > 1 && std::strcmp(argv[1], "alone") == 0;
  try {
    if (!alone) throw zt::runtime::UserError("bad key 'stgae' in test.json");
    if (environment.info().rank == 1) throw std::runtime_error("disk full writing shard 1");
    MPI_Barrier(MPI_COMM_WORLD);  // the healthy ranks wait here for rank 1, which never comes
    return 0;
  } catch (const std::exception& error) {
    return environment.fail(error);
  }
}
