// SPDX-License-Identifier: Apache-2.0
#include "app/report.hpp"

#include <sys/resource.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <unistd.h>

#include "memory/format.hpp"
#include "memory/tracker.hpp"

namespace zt::app {

std::string format_count(double count) {
  char text[32];
  if (count >= 1e9) std::snprintf(text, sizeof text, "%.2fB", count / 1e9);
  else if (count >= 1e6) std::snprintf(text, sizeof text, "%.2fM", count / 1e6);
  else if (count >= 1e3) std::snprintf(text, sizeof text, "%.2fK", count / 1e3);
  else std::snprintf(text, sizeof text, "%.0f", count);
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

void write_text_atomically(const std::string& path, const std::string& text) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  std::error_code error;
  if (target.has_parent_path()) fs::create_directories(target.parent_path(), error);
  if (error)
    throw std::runtime_error("cannot create the directory " + target.parent_path().string() +
                             ": " + error.message());
  const std::string temporary = path + ".tmp." + std::to_string(getpid());
  FILE* file = std::fopen(temporary.c_str(), "w");
  if (file == nullptr)
    throw std::runtime_error("cannot write " + temporary + ": " + std::strerror(errno));
  const bool written = std::fwrite(text.data(), 1, text.size(), file) == text.size();
  const bool flushed = std::fflush(file) == 0 && fsync(fileno(file)) == 0;
  std::fclose(file);
  if (!written || !flushed) {
    std::remove(temporary.c_str());
    throw std::runtime_error("cannot write " + path + ": " + std::strerror(errno));
  }
  fs::rename(temporary, target, error);
  if (error) {
    std::remove(temporary.c_str());
    throw std::runtime_error("cannot rename " + temporary + " to " + path + ": " + error.message());
  }
}

void write_json_atomically(const std::string& path, const nlohmann::json& document) {
  write_text_atomically(path, document.dump(2) + "\n");
}

}  // namespace zt::app
