// SPDX-License-Identifier: Apache-2.0
// What every rank must see alike: the inputs rank 0 reads for all, and the checks that stop a
// job whose ranks were started with different flags or read different files (one rank at
// stage 0 beside one at stage 3 would crash; two learning rates would train two models).
// Collective: every rank of `comm` calls these in the same order.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <functional>
#include <string>

namespace zt::runtime {

/// Rank 0 runs `read` and broadcasts its text; an exception there becomes the same exception
/// type's message on every rank (UserError, files::FileError as input problem, else
/// std::runtime_error), so every rank stops with rank 0's message. Files are read once, not
/// once per rank, and ranks on nodes with different copies still agree.
std::string read_on_rank_zero(MPI_Comm comm, const std::function<std::string()>& read);

/// Runs `check` on rank 0 only (a pre-flight of the outputs rank 0 writes) and makes its
/// failure every rank's failure, with rank 0's message.
void check_on_rank_zero(MPI_Comm comm, const std::function<void()>& check);

/// Throws UserError on every rank unless `value` is the same on all ranks. The message names
/// `what`, the ranks that differ from rank 0, and shows rank 0's value beside the first
/// differing rank's ("--learning_rate 0.1" vs "--learning_rate 0.2").
void require_same_on_all_ranks(MPI_Comm comm, const std::string& what, const std::string& value);

/// Every rank's verdict on something only some ranks can judge: throws UserError(message of
/// the lowest failing rank, with the ranks named) on every rank when any rank's `problem` is
/// non-empty.
void agree_on_problem(MPI_Comm comm, const std::string& problem);

/// FNV-1a, 64 bit: a stable digest of texts to compare across ranks.
std::uint64_t digest(const std::string& text);

}  // namespace zt::runtime
