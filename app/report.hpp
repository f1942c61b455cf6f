// SPDX-License-Identifier: Apache-2.0
// What the user sees of a run: the start-up banner, progress lines, the final summary, and
// the summary as JSON for scripts.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "comm/communicator.hpp"
#include "zero/engine.hpp"

namespace zt::app {

/// "124.44M", "1.20B", "842.50K".
std::string format_count(double count);

/// Peak bytes of every rank by place and kind, gathered on every rank. Collective.
struct RankMemory {
  int rank = 0;
  std::int64_t peak_total[3] = {0, 0, 0};  // by memory::Place
  std::int64_t peak_by_kind[3][6] = {};    // [place][kind]
  std::int64_t max_rss = 0;                // the process's peak resident set (getrusage)
};
std::vector<RankMemory> gather_memory(comm::Communicator& comm);

nlohmann::json memory_to_json(const std::vector<RankMemory>& ranks);

/// Where every rank runs: host, local rank (from MPI), threads. Collective.
struct RankPlacement {
  int rank = 0;
  int local_rank = 0;
  int local_size = 1;
  int threads = 1;
  std::string host;
};
std::vector<RankPlacement> gather_placement(comm::Communicator& comm, int local_rank,
                                            int local_size, int threads, const std::string& host);
nlohmann::json placement_to_json(const std::vector<RankPlacement>& ranks);
/// "vm: ranks 0-1 (local 0-1)" per host, hosts in rank order.
std::string describe_placement(const std::vector<RankPlacement>& ranks);
/// Human-readable table of the per-rank peaks (rank 0 prints it).
std::string format_memory_table(const std::vector<RankMemory>& ranks);

/// The ZeRO engine's report, its settings, traffic per step (every rank's mean, and this
/// rank's per step) next to the ZeRO paper's volume, and the run's phase times. Collective.
nlohmann::json zero_report_to_json(const zero::EngineReport& report,
                                   const zero::EngineSettings& settings, comm::Communicator& comm,
                                   const std::vector<std::int64_t>& bytes_sent_per_step,
                                   const std::vector<std::int64_t>& bytes_received_per_step,
                                   const zero::PhaseTimes& run_times);

/// Writes JSON to path through files::AtomicFile (readers never see half a file; a link or
/// device at the path is refused). Creates missing parent directories. Throws
/// files::FileError naming `what` and the path.
void write_json_atomically(const std::string& path, const nlohmann::json& document,
                           const std::string& what = "output");
void write_text_atomically(const std::string& path, const std::string& text,
                           const std::string& what = "output");

}  // namespace zt::app
