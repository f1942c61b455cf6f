// SPDX-License-Identifier: Apache-2.0
#include "app/report.hpp"

#include <sys/resource.h>

#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "files/files.hpp"
#include "memory/format.hpp"
#include "memory/tracker.hpp"

namespace zt::app {

std::string format_count(double count) {
  char text[32];
  if (count >= 1e9)
    std::snprintf(text, sizeof text, "%.2fB", count / 1e9);
  else if (count >= 1e6)
    std::snprintf(text, sizeof text, "%.2fM", count / 1e6);
  else if (count >= 1e3)
    std::snprintf(text, sizeof text, "%.2fK", count / 1e3);
  else
    std::snprintf(text, sizeof text, "%.0f", count);
  return text;
}

std::vector<RankMemory> gather_memory(comm::Communicator& comm) {
  using memory::Kind;
  using memory::Place;
  auto& tracker = memory::Tracker::instance();
  constexpr int kFields = 1 + 3 + 3 * 6 + 1;
  std::vector<std::int64_t> mine(kFields, 0);
  mine[0] = comm.rank();
  for (int p = 0; p < memory::kNumPlaces; ++p) {
    mine[1 + p] = tracker.total(static_cast<Place>(p)).peak;
    for (int k = 0; k < memory::kNumKinds; ++k)
      mine[4 + p * 6 + k] = tracker.usage(static_cast<Place>(p), static_cast<Kind>(k)).peak;
  }
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  mine[kFields - 1] = static_cast<std::int64_t>(usage.ru_maxrss) * 1024;  // Linux: KiB
  std::vector<std::int64_t> all(static_cast<std::size_t>(kFields) * comm.size());
  comm.all_gather(mine.data(), all.data(), kFields, comm::DataType::Int64);
  std::vector<RankMemory> ranks(comm.size());
  for (int r = 0; r < comm.size(); ++r) {
    const std::int64_t* fields = all.data() + static_cast<std::size_t>(r) * kFields;
    ranks[r].rank = static_cast<int>(fields[0]);
    for (int p = 0; p < 3; ++p) {
      ranks[r].peak_total[p] = fields[1 + p];
      for (int k = 0; k < 6; ++k) ranks[r].peak_by_kind[p][k] = fields[4 + p * 6 + k];
    }
    ranks[r].max_rss = fields[kFields - 1];
  }
  return ranks;
}

nlohmann::json memory_to_json(const std::vector<RankMemory>& ranks) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& rank : ranks) {
    nlohmann::json entry;
    entry["rank"] = rank.rank;
    for (int p = 0; p < 3; ++p) {
      nlohmann::json place;
      place["total"] = rank.peak_total[p];
      for (int k = 0; k < 6; ++k)
        place[memory::kind_name(static_cast<memory::Kind>(k))] = rank.peak_by_kind[p][k];
      entry[memory::place_name(static_cast<memory::Place>(p))] = place;
    }
    entry["process_max_rss"] = rank.max_rss;
    list.push_back(entry);
  }
  return list;
}

std::vector<RankPlacement> gather_placement(comm::Communicator& comm, int local_rank,
                                            int local_size, int threads, const std::string& host) {
  // Fixed-size records: four integers and up to 63 bytes of host name.
  constexpr int kNameWords = 8;
  constexpr int kFields = 4 + kNameWords;
  std::vector<std::int64_t> mine(kFields, 0);
  mine[0] = comm.rank();
  mine[1] = local_rank;
  mine[2] = local_size;
  mine[3] = threads;
  char name[kNameWords * 8] = {0};
  std::strncpy(name, host.c_str(), sizeof name - 1);
  std::memcpy(mine.data() + 4, name, sizeof name);
  std::vector<std::int64_t> all(static_cast<std::size_t>(kFields) * comm.size());
  comm.all_gather(mine.data(), all.data(), kFields, comm::DataType::Int64);
  std::vector<RankPlacement> ranks(static_cast<std::size_t>(comm.size()));
  for (int r = 0; r < comm.size(); ++r) {
    const std::int64_t* fields = all.data() + static_cast<std::size_t>(r) * kFields;
    auto& placement = ranks[static_cast<std::size_t>(r)];
    placement.rank = static_cast<int>(fields[0]);
    placement.local_rank = static_cast<int>(fields[1]);
    placement.local_size = static_cast<int>(fields[2]);
    placement.threads = static_cast<int>(fields[3]);
    char text[kNameWords * 8];
    std::memcpy(text, fields + 4, sizeof text);
    text[sizeof text - 1] = '\0';
    placement.host = text;
  }
  return ranks;
}

nlohmann::json placement_to_json(const std::vector<RankPlacement>& ranks) {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& rank : ranks)
    list.push_back({{"rank", rank.rank},
                    {"local_rank", rank.local_rank},
                    {"local_size", rank.local_size},
                    {"threads", rank.threads},
                    {"host", rank.host}});
  return list;
}

std::string describe_placement(const std::vector<RankPlacement>& ranks) {
  std::vector<std::string> hosts;
  for (const auto& rank : ranks)
    if (std::find(hosts.begin(), hosts.end(), rank.host) == hosts.end()) hosts.push_back(rank.host);
  std::ostringstream out;
  for (std::size_t h = 0; h < hosts.size(); ++h) {
    if (h > 0) out << "; ";
    out << hosts[h] << ": ranks";
    std::string locals;
    bool first = true;
    for (const auto& rank : ranks) {
      if (rank.host != hosts[h]) continue;
      out << (first ? " " : ",") << rank.rank;
      locals += (first ? "" : ",") + std::to_string(rank.local_rank);
      first = false;
    }
    out << " (local " << locals << ")";
  }
  return out.str();
}

std::string format_memory_table(const std::vector<RankMemory>& ranks) {
  std::ostringstream out;
  char line[256];
  std::snprintf(line, sizeof line, "  %-5s %-7s %11s %11s %11s %11s %11s %11s\n", "rank", "place",
                "total", "params", "grads", "optim", "activ", "comm");
  out << line;
  for (const auto& rank : ranks) {
    for (int p = 0; p < 3; ++p) {
      if (rank.peak_total[p] == 0 && p != 0) continue;
      const auto* kinds = rank.peak_by_kind[p];
      std::snprintf(line, sizeof line, "  %-5d %-7s %11s %11s %11s %11s %11s %11s\n", rank.rank,
                    memory::place_name(static_cast<memory::Place>(p)),
                    memory::format_bytes(rank.peak_total[p]).c_str(),
                    memory::format_bytes(kinds[0]).c_str(), memory::format_bytes(kinds[1]).c_str(),
                    memory::format_bytes(kinds[2]).c_str(), memory::format_bytes(kinds[3]).c_str(),
                    memory::format_bytes(kinds[4]).c_str());
      out << line;
    }
    std::snprintf(line, sizeof line, "  %-5d %-7s %11s  (peak resident set of the process)\n",
                  rank.rank, "rss", memory::format_bytes(rank.max_rss).c_str());
    out << line;
  }
  return out.str();
}

nlohmann::json zero_report_to_json(const zero::EngineReport& report,
                                   const zero::EngineSettings& settings, comm::Communicator& comm,
                                   const std::vector<std::int64_t>& bytes_sent_per_step,
                                   const std::vector<std::int64_t>& bytes_received_per_step,
                                   const zero::PhaseTimes& run_times) {
  nlohmann::json zero;
  zero["stage"] = report.stage;
  zero["parameters"] = report.parameters;
  zero["padded_elements"] = report.padded_elements;
  zero["slice_elements"] = report.slice_elements;
  zero["landing_elements"] = report.landing_elements;
  zero["window_elements"] = report.window_elements;
  zero["persistent_parameters"] = report.persistent_parameters;
  zero["persistent_elements"] = report.persistent_elements;
  zero["peak_live_elements"] = report.peak_live_elements;
  zero["gathers"] = report.gathers;
  zero["prefetches"] = report.prefetches;
  zero["sub_groups"] = report.sub_groups;
  zero["optimizer_state_bytes"] = report.optimizer_state_bytes;
  zero["reduce_bucket_size"] = settings.reduce_bucket_size;
  zero["allgather_bucket_size"] = settings.allgather_bucket_size;
  zero["overlap_comm"] = settings.overlap_comm;
  zero["contiguous_gradients"] = settings.contiguous_gradients;
  zero["reduce_scatter"] = settings.reduce_scatter;
  zero["communication_backend"] = comm.backend_name();
  zero["progress_thread"] = comm.progresses_asynchronously();

  // Traffic: this rank's per step, and every rank's mean per step (elements of 4 bytes).
  zero["bytes_sent_per_step"] = bytes_sent_per_step;
  zero["bytes_received_per_step"] = bytes_received_per_step;
  const double steps = static_cast<double>(std::max<std::size_t>(1, bytes_sent_per_step.size()));
  double mine[2] = {0, 0};
  for (const auto bytes : bytes_sent_per_step) mine[0] += static_cast<double>(bytes);
  for (const auto bytes : bytes_received_per_step) mine[1] += static_cast<double>(bytes);
  mine[0] /= steps;
  mine[1] /= steps;
  std::vector<double> all(2 * static_cast<std::size_t>(comm.size()));
  comm.all_gather(mine, all.data(), 2, comm::DataType::Float64);
  nlohmann::json per_rank = nlohmann::json::array();
  for (int r = 0; r < comm.size(); ++r)
    per_rank.push_back(
        {{"rank", r},
         {"mean_bytes_sent_per_step", all[2 * static_cast<std::size_t>(r)]},
         {"mean_bytes_received_per_step", all[2 * static_cast<std::size_t>(r) + 1]}});
  zero["traffic_per_rank"] = per_rank;
  const double ranks = comm.size();
  const double factor = report.stage == 3 ? 3.0 : 2.0;
  zero["paper_volume_elements_per_step"] =
      factor * static_cast<double>(report.parameters) * (ranks - 1) / ranks;

  zero["seconds"] = {{"forward", run_times.forward},
                     {"backward", run_times.backward},
                     {"reduction", run_times.reduction},
                     {"optimizer", run_times.optimizer},
                     {"gather", run_times.gather},
                     {"communication", run_times.communication},
                     {"exposed_communication", run_times.exposed},
                     {"total", run_times.total}};
  zero["exposed_share_of_communication"] =
      run_times.communication > 0 ? run_times.exposed / run_times.communication : 0.0;
  zero["exposed_share_of_step"] = run_times.total > 0 ? run_times.exposed / run_times.total : 0.0;
  return zero;
}

void write_text_atomically(const std::string& path, const std::string& text,
                           const std::string& what) {
  files::write_file_atomically(path, text, what);
}

void write_json_atomically(const std::string& path, const nlohmann::json& document,
                           const std::string& what) {
  write_text_atomically(path, document.dump(2) + "\n", what);
}

}  // namespace zt::app
