// SPDX-License-Identifier: Apache-2.0
// Error types and the check macro for MPI calls.
#pragma once

#include <mpi.h>

#include <sstream>
#include <stdexcept>
#include <string>

namespace zt::runtime {

/// A problem with what the user gave us (a flag, a config key, a file), detected the same way
/// on every rank: reported once, exit code 2.
struct UserError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// Builds a string from anything with operator<<.
template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream stream;
  (stream << ... << parts);
  return stream.str();
}

/// Message of a failed MPI call: the call, its error string, where.
std::string mpi_error_message(int code, const char* call, const char* file, int line);

}  // namespace zt::runtime

/// Checks the result of an MPI call; on failure throws std::runtime_error naming the call,
/// MPI's error string, the rank, the source file and line.
#define ZT_MPI_CHECK(call)                                                                     \
  do {                                                                                         \
    const int zt_mpi_code_ = (call);                                                           \
    if (zt_mpi_code_ != MPI_SUCCESS)                                                           \
      throw std::runtime_error(::zt::runtime::mpi_error_message(zt_mpi_code_, #call, __FILE__, \
                                                                __LINE__));                    \
  } while (0)
