// SPDX-License-Identifier: Apache-2.0
#include "runtime/agreement.hpp"

#include <sstream>
#include <vector>

#include "files/files.hpp"
#include "runtime/error.hpp"

namespace zt::runtime {
namespace {

// How rank 0's failure travels, so every rank rethrows the same kind (and exit status).
enum Outcome : std::int64_t { kOk = 0, kUserError, kBadPath, kIoFailure, kFailure };

void broadcast_text(MPI_Comm comm, int root, std::string* text) {
  std::int64_t length = static_cast<std::int64_t>(text->size());
  ZT_MPI_CHECK(MPI_Bcast(&length, 1, MPI_INT64_T, root, comm));
  text->resize(static_cast<std::size_t>(length));
  // MPI counts are int: large texts go in pieces.
  constexpr std::int64_t kPiece = std::int64_t{1} << 30;
  for (std::int64_t offset = 0; offset < length; offset += kPiece) {
    const int count = static_cast<int>(std::min(kPiece, length - offset));
    ZT_MPI_CHECK(
        MPI_Bcast(&(*text)[static_cast<std::size_t>(offset)], count, MPI_CHAR, root, comm));
  }
}

[[noreturn]] void rethrow(Outcome outcome, const std::string& message) {
  switch (outcome) {
    case kUserError:
      throw UserError(message);
    case kBadPath:
      throw files::FileError(files::FileError::Cause::kBadPath, message);
    case kIoFailure:
      throw files::FileError(files::FileError::Cause::kIoFailure, message);
    default:
      throw std::runtime_error(message);
  }
}

// Runs `action` on rank 0 and shares its result or its failure with every rank.
std::string run_on_rank_zero(MPI_Comm comm, const std::function<std::string()>& action) {
  int rank = 0;
  ZT_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  std::int64_t outcome = kOk;
  std::string text;
  if (rank == 0) {
    try {
      text = action();
    } catch (const UserError& error) {
      outcome = kUserError;
      text = error.what();
    } catch (const files::FileError& error) {
      outcome = error.is_input_problem() ? kBadPath : kIoFailure;
      text = error.what();
    } catch (const std::exception& error) {
      outcome = kFailure;
      text = error.what();
    }
  }
  ZT_MPI_CHECK(MPI_Bcast(&outcome, 1, MPI_INT64_T, 0, comm));
  broadcast_text(comm, 0, &text);
  if (outcome != kOk) rethrow(static_cast<Outcome>(outcome), text);
  return text;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream stream(text);
  for (std::string line; std::getline(stream, line);) lines.push_back(line);
  return lines;
}

std::string rank_list(const std::vector<int>& ranks) {
  std::string list;
  for (std::size_t i = 0; i < ranks.size(); ++i) {
    if (i == 8 && ranks.size() > 10) {
      list += ", ... (" + std::to_string(ranks.size()) + " in all)";
      break;
    }
    list += (list.empty() ? "" : ",") + std::to_string(ranks[i]);
  }
  return (ranks.size() == 1 ? "rank " : "ranks ") + list;
}

}  // namespace

std::uint64_t digest(const std::string& text) {
  std::uint64_t hash = 14695981039346656037ull;
  for (const unsigned char c : text) {
    hash ^= c;
    hash *= 1099511628211ull;
  }
  return hash;
}

std::string read_on_rank_zero(MPI_Comm comm, const std::function<std::string()>& read) {
  return run_on_rank_zero(comm, read);
}

void check_on_rank_zero(MPI_Comm comm, const std::function<void()>& check) {
  run_on_rank_zero(comm, [&] {
    check();
    return std::string();
  });
}

void require_same_on_all_ranks(MPI_Comm comm, const std::string& what, const std::string& value) {
  int size = 1;
  ZT_MPI_CHECK(MPI_Comm_size(comm, &size));
  const std::uint64_t mine = digest(value);
  std::vector<std::uint64_t> all(static_cast<std::size_t>(size));
  ZT_MPI_CHECK(MPI_Allgather(&mine, 1, MPI_UINT64_T, all.data(), 1, MPI_UINT64_T, comm));
  std::vector<int> differing;
  for (int r = 1; r < size; ++r)
    if (all[static_cast<std::size_t>(r)] != all[0]) differing.push_back(r);
  if (differing.empty()) return;

  // Every rank learns rank 0's and the first differing rank's value, so every rank throws the
  // same message.
  std::string reference = value;
  std::string other = value;
  broadcast_text(comm, 0, &reference);
  broadcast_text(comm, differing.front(), &other);
  const auto reference_lines = lines_of(reference);
  const auto other_lines = lines_of(other);
  std::size_t line = 0;
  while (line < reference_lines.size() && line < other_lines.size() &&
         reference_lines[line] == other_lines[line])
    ++line;
  // The differing line with the one before it: an option's value shows with its flag.
  auto shown = [&](const std::vector<std::string>& lines) {
    if (line >= lines.size()) return std::string("nothing more");
    const bool context = line > 0 && line - 1 < lines.size() && !lines[line - 1].empty() &&
                         lines[line - 1][0] == '-' &&
                         (lines[line].empty() || lines[line][0] != '-');
    return files::quote(context ? lines[line - 1] + " " + lines[line] : lines[line]);
  };
  throw UserError(concat("the ranks disagree on ", what, ": ", rank_list(differing),
                         differing.size() == 1 ? " differs" : " differ",
                         " from rank 0 (rank 0 has ", shown(reference_lines), ", rank ",
                         differing.front(), " has ", shown(other_lines),
                         "); every rank must be started with the same arguments and see the "
                         "same files"));
}

void agree_on_problem(MPI_Comm comm, const std::string& problem) {
  int size = 1;
  ZT_MPI_CHECK(MPI_Comm_size(comm, &size));
  const int mine = problem.empty() ? 0 : 1;
  std::vector<int> all(static_cast<std::size_t>(size));
  ZT_MPI_CHECK(MPI_Allgather(&mine, 1, MPI_INT, all.data(), 1, MPI_INT, comm));
  std::vector<int> failing;
  for (int r = 0; r < size; ++r)
    if (all[static_cast<std::size_t>(r)] != 0) failing.push_back(r);
  if (failing.empty()) return;
  std::string message = problem;
  broadcast_text(comm, failing.front(), &message);
  if (static_cast<int>(failing.size()) == size) throw UserError(message);
  throw UserError(concat(message, " (on ", rank_list(failing), ")"));
}

}  // namespace zt::runtime
