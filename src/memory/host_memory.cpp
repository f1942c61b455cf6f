// SPDX-License-Identifier: Apache-2.0
#include "memory/host_memory.hpp"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

#include "memory/format.hpp"

namespace zt::memory {
namespace {

// v1 reports "no limit" as the largest page-aligned int64 (9223372036854771712); anything
// from 2^62 on is no limit any machine has.
constexpr double kUnlimited = 4611686018427387904.0;  // 2^62

std::string trim(const std::string& text) {
  const auto begin = text.find_first_not_of(" \t\r\n");
  if (begin == std::string::npos) return "";
  const auto end = text.find_last_not_of(" \t\r\n");
  return text.substr(begin, end - begin + 1);
}

// A whole non-negative decimal number, or nullopt.
std::optional<double> parse_number(const std::string& text) {
  const std::string value = trim(text);
  if (value.empty() || value.find_first_not_of("0123456789") != std::string::npos)
    return std::nullopt;
  return std::strtod(value.c_str(), nullptr);
}

// "/a/b/c" -> "/a/b/c", "/a/b", "/a", "" : the cgroup and its ancestors, nearest first.
std::vector<std::string> self_and_ancestors(std::string path) {
  std::vector<std::string> paths;
  while (!path.empty() && path.back() == '/') path.pop_back();
  for (;;) {
    paths.push_back(path);
    const auto slash = path.rfind('/');
    if (slash == std::string::npos || path.empty()) break;
    path.erase(slash);
  }
  if (paths.back() != "") paths.push_back("");
  return paths;
}

struct CgroupFiles {
  const char* mount;  // where the hierarchy is mounted
  const char* limit;
  const char* usage;
  const char* limit_name;  // for the description
};

constexpr CgroupFiles kV2{"/sys/fs/cgroup", "memory.max", "memory.current", "memory.max"};
constexpr CgroupFiles kV1{"/sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes",
                          "memory.limit_in_bytes"};

// The tightest free room among the cgroup and its ancestors. A path from /proc/self/cgroup
// may not exist in this mount namespace (a container without its own cgroup namespace sees
// the host's path but has its cgroup mounted at the root): its directories just do not read,
// and the mount's root is always tried.
void tighten(const FileReader& read, const CgroupFiles& files, const std::string& path,
             AvailableMemory& best) {
  for (const auto& directory : self_and_ancestors(path)) {
    const std::string base = std::string(files.mount) + directory + "/";
    const auto limit_text = read(base + files.limit);
    if (!limit_text) continue;
    const auto limit = parse_cgroup_limit(*limit_text);
    if (!limit) continue;
    const auto usage_text = read(base + files.usage);
    const auto usage = usage_text ? parse_cgroup_usage(*usage_text) : std::nullopt;
    const auto stat = read(base + "memory.stat");
    // Page cache the kernel drops before it refuses an allocation counts as free.
    const double used =
        std::max(0.0, usage.value_or(0.0) - (stat ? parse_inactive_file(*stat) : 0.0));
    const double room = std::max(0.0, *limit - used);
    if (!best.known() || room < best.bytes) {
      best.bytes = room;
      best.source = "cgroup " + (directory.empty() ? std::string("/") : directory) + " " +
                    files.limit_name + " " + format_size(*limit);
    }
  }
}

}  // namespace

std::optional<double> parse_meminfo_available(const std::string& meminfo) {
  std::istringstream lines(meminfo);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind("MemAvailable:", 0) != 0) continue;
    std::istringstream fields(line.substr(13));
    double value = 0;
    std::string unit;
    if (!(fields >> value) || !(value >= 0)) return std::nullopt;
    fields >> unit;
    // /proc/meminfo says "kB" and means KiB.
    return unit == "kB" ? value * 1024 : value;
  }
  return std::nullopt;
}

std::optional<double> parse_cgroup_limit(const std::string& text) {
  const auto value = parse_number(text);
  if (!value || *value >= kUnlimited) return std::nullopt;  // also "max"
  return value;
}

std::optional<double> parse_cgroup_usage(const std::string& text) {
  return parse_number(text);
}

double parse_inactive_file(const std::string& memory_stat) {
  std::istringstream lines(memory_stat);
  std::string key;
  double value = 0;
  double v2 = -1, v1 = -1;
  while (lines >> key >> value) {
    if (key == "inactive_file") v2 = value;
    if (key == "total_inactive_file") v1 = value;  // v1: this cgroup and its children
  }
  if (v1 >= 0) return v1;
  return std::max(v2, 0.0);
}

CgroupMembership parse_proc_self_cgroup(const std::string& text) {
  CgroupMembership membership;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    // hierarchy-ID:controller-list:path; the path may itself contain ':'.
    const auto first = line.find(':');
    if (first == std::string::npos) continue;
    const auto second = line.find(':', first + 1);
    if (second == std::string::npos) continue;
    const std::string id = line.substr(0, first);
    const std::string controllers = line.substr(first + 1, second - first - 1);
    const std::string path = trim(line.substr(second + 1));
    if (id == "0" && controllers.empty()) {
      membership.v2 = path;
      continue;
    }
    std::istringstream names(controllers);
    std::string name;
    while (std::getline(names, name, ','))
      if (name == "memory") membership.v1_memory = path;
  }
  return membership;
}

AvailableMemory available_host_memory(const FileReader& read) {
  AvailableMemory best;
  if (const auto meminfo = read("/proc/meminfo")) {
    if (const auto bytes = parse_meminfo_available(*meminfo)) {
      best.bytes = *bytes;
      best.source = "MemAvailable";
    }
  }
  const auto cgroup = read("/proc/self/cgroup");
  const CgroupMembership membership = cgroup ? parse_proc_self_cgroup(*cgroup) : CgroupMembership{};
  // A v1 memory controller, when mounted, is the one that limits (hybrid setups also list a
  // v2 path, without the memory controller).
  if (membership.v1_memory)
    tighten(read, kV1, *membership.v1_memory, best);
  else
    tighten(read, kV2, membership.v2.value_or(""), best);
  return best;
}

AvailableMemory available_host_memory() {
  return available_host_memory([](const std::string& path) -> std::optional<std::string> {
    std::ifstream file(path);
    if (!file) return std::nullopt;
    std::ostringstream text;
    text << file.rdbuf();
    if (file.bad()) return std::nullopt;
    return text.str();
  });
}

}  // namespace zt::memory
