// SPDX-License-Identifier: Apache-2.0
#include "runtime/environment.hpp"

#include <sched.h>
#include <unistd.h>
#include <Kokkos_Core.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <thread>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "files/files.hpp"
#include "runtime/error.hpp"

namespace zt::runtime {

namespace {

const ProcessInfo* g_current = nullptr;

int cores_this_rank_may_use() {
#ifdef _OPENMP
  // The OpenMP runtime counted the CPUs this process was allowed at start-up, before
  // OMP_PROC_BIND pinned the initial thread to one of them (after which the affinity mask
  // shows a single CPU).
  return omp_get_max_threads();
#else
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
  return 1;
#endif
}

int choose_host_threads(int local_size) {
  if (const char* requested = std::getenv("OMP_NUM_THREADS")) {
    const int n = std::atoi(requested);
    if (n > 0) return n;
  }
  const int allowed = cores_this_rank_may_use();
  const long online = sysconf(_SC_NPROCESSORS_ONLN);
  // A launcher that binds each rank (mpirun's default for few ranks, srun --cpu-bind) leaves
  // fewer allowed cores than are online: use them all. Unbound ranks share the node's cores.
  if (online > 0 && allowed < online) return allowed;
  return std::max(1, allowed / std::max(1, local_size));
}

std::string describe_launcher() {
  if (const char* job = std::getenv("SLURM_JOB_ID")) {
    if (std::getenv("SLURM_STEP_ID") != nullptr) return concat("srun (Slurm job ", job, ")");
    return concat("inside Slurm job ", job, ", not by srun");
  }
  if (std::getenv("OMPI_COMM_WORLD_SIZE") != nullptr) return "mpirun (Open MPI)";
  if (std::getenv("PMI_RANK") != nullptr || std::getenv("PMIX_RANK") != nullptr)
    return "mpiexec (PMI)";
  return "singleton (no launcher)";
}

}  // namespace

std::string mpi_error_message(int code, const char* call, const char* file, int line) {
  char text[MPI_MAX_ERROR_STRING] = {0};
  int length = 0;
  MPI_Error_string(code, text, &length);
  int rank = -1;
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (initialized) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return concat("MPI call ", call, " failed on rank ", rank, ": ", text, " (", file, ":", line,
                ")");
}

Environment::Environment(int& argc, char**& argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  // A file size limit (ulimit -f) makes writes fail with EFBIG, reported with the file's name,
  // instead of killing the process with SIGXFSZ.
  std::signal(SIGXFSZ, SIG_IGN);
  if (!initialized) {
    int provided = 0;
    ZT_MPI_CHECK(MPI_Init_thread(&argc, &argv, MPI_THREAD_MULTIPLE, &provided));
    owns_mpi_ = true;
  }
  // Errors from MPI come back as codes we turn into messages, rather than aborting inside MPI.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  ZT_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &info_.rank));
  ZT_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &info_.world_size));
  ZT_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &error_comm_));

  MPI_Comm node_comm = MPI_COMM_NULL;
  ZT_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, info_.rank, MPI_INFO_NULL,
                                   &node_comm));
  ZT_MPI_CHECK(MPI_Comm_rank(node_comm, &info_.local_rank));
  ZT_MPI_CHECK(MPI_Comm_size(node_comm, &info_.local_size));
  MPI_Comm_free(&node_comm);

  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  info_.hostname = host;
  info_.launcher = describe_launcher();
  info_.host_threads = choose_host_threads(info_.local_size);

#ifdef _OPENMP
  omp_set_num_threads(info_.host_threads);
#endif
  // Kokkos warns unless OMP_PROC_BIND is set; binding is the launcher's job here (mpirun binds
  // ranks to cores, srun --cpu-bind), so say that we leave it alone.
  setenv("OMP_PROC_BIND", "false", /*overwrite=*/0);
  if (!Kokkos::is_initialized()) Kokkos::initialize(argc, argv);
  g_current = &info_;
}

Environment::~Environment() {
  g_current = nullptr;
  if (Kokkos::is_initialized()) Kokkos::finalize();
  if (error_comm_ != MPI_COMM_NULL) MPI_Comm_free(&error_comm_);
  if (owns_mpi_) MPI_Finalize();
}

const ProcessInfo& Environment::current() {
  static const ProcessInfo serial{};
  return g_current != nullptr ? *g_current : serial;
}

int exit_code_for(const std::exception& error) {
  if (dynamic_cast<const UserError*>(&error) != nullptr) return 2;
  if (const auto* file = dynamic_cast<const files::FileError*>(&error))
    return file->is_input_problem() ? 2 : 1;
  return 1;
}

int Environment::fail(const std::exception& error) {
  const int exit_code = exit_code_for(error);
  // Names and keys in messages come from files and flags: nothing in them may act on a terminal.
  const std::string message = files::escaped(error.what(), /*keep_newlines=*/true);

  // Did every rank fail? Give the others a moment to reach this point too.
  MPI_Request request = MPI_REQUEST_NULL;
  int everyone_failed = 0;
  if (MPI_Ibarrier(error_comm_, &request) == MPI_SUCCESS) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
    while (!everyone_failed && std::chrono::steady_clock::now() < deadline) {
      MPI_Test(&request, &everyone_failed, MPI_STATUS_IGNORE);
      if (!everyone_failed) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  if (!everyone_failed) {
    std::fprintf(stderr, "zerotrain: error on rank %d (%s): %s\n", info_.rank,
                 info_.hostname.c_str(), message.c_str());
    std::fprintf(stderr, "zerotrain: rank %d is aborting the job\n", info_.rank);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, exit_code);
    return exit_code;
  }

  // All ranks failed: rank 0 prints each distinct message once, with the ranks that hit it.
  int length = static_cast<int>(message.size());
  std::vector<int> lengths(info_.rank == 0 ? info_.world_size : 0);
  MPI_Gather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, 0, error_comm_);
  std::vector<int> offsets(lengths.size(), 0);
  int total = 0;
  for (std::size_t r = 0; r < lengths.size(); ++r) {
    offsets[r] = total;
    total += lengths[r];
  }
  std::vector<char> all(static_cast<std::size_t>(total) + 1);
  MPI_Gatherv(message.data(), length, MPI_CHAR, all.data(), lengths.data(), offsets.data(),
              MPI_CHAR, 0, error_comm_);
  if (info_.rank == 0) {
    std::map<std::string, std::vector<int>> ranks_by_message;
    for (int r = 0; r < info_.world_size; ++r)
      ranks_by_message[std::string(all.data() + offsets[r], lengths[r])].push_back(r);
    for (const auto& [text, ranks] : ranks_by_message) {
      if (ranks_by_message.size() == 1) {
        std::fprintf(stderr, "zerotrain: error: %s\n", text.c_str());
      } else {
        std::string list;
        for (int r : ranks) list += (list.empty() ? "" : ",") + std::to_string(r);
        std::fprintf(stderr, "zerotrain: error on rank%s %s: %s\n", ranks.size() > 1 ? "s" : "",
                     list.c_str(), text.c_str());
      }
    }
    std::fflush(stderr);
  }
  // Nobody leaves before rank 0's message is out: a launcher that sees one rank exit non-zero
  // kills the others, rank 0 included, and the message would be lost.
  MPI_Barrier(error_comm_);
  return exit_code;
}

}  // namespace zt::runtime
