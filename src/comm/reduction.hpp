// SPDX-License-Identifier: Apache-2.0
// Internal to comm/: the host reduction loops of reduce_local, handed to MPI as user-defined
// operations for the 16-bit types that MPI has no arithmetic for.
#pragma once

#include <mpi.h>

#include "comm/communicator.hpp"

namespace zt::comm::detail {

/// The MPI_User_function that combines `type` elements with `op` as reduce_local does. Only for
/// DataType::Float16 and DataType::BFloat16 (the other types use MPI's predefined operations);
/// throws std::invalid_argument otherwise. The function ignores its datatype argument: use it
/// with a 2-byte datatype only.
MPI_User_function* mpi_user_function(DataType type, ReduceOp op);

}  // namespace zt::comm::detail
