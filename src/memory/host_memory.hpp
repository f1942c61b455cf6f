// SPDX-License-Identifier: Apache-2.0
// How much host memory this process can still get: the kernel's MemAvailable, bounded by the
// memory limit of the process's cgroup (v2, or v1's memory controller) where one is set, as
// under Slurm, Kubernetes or Docker. The parsers take the files' text, so they are tested on
// samples; available_host_memory() reads the real files.
#pragma once

#include <functional>
#include <optional>
#include <string>

namespace zt::memory {

/// How much memory this machine can still give, and where the number came from.
struct AvailableMemory {
  double bytes = -1;   // < 0: unknown
  std::string source;  // "MemAvailable", "cgroup /slurm/uid_1/job_7 memory.max 8.00 GiB"
  bool known() const { return bytes >= 0; }
};

/// MemAvailable from /proc/meminfo ("MemAvailable:  22876108 kB"), in bytes; nullopt when
/// the line is missing (kernels before 3.14) or unreadable.
std::optional<double> parse_meminfo_available(const std::string& meminfo);

/// A cgroup limit file (v2 memory.max, v1 memory.limit_in_bytes), in bytes; nullopt for no
/// limit: v2's "max", or v1's "unlimited" (a number of 2^62 or more), or text that is not one.
std::optional<double> parse_cgroup_limit(const std::string& text);

/// A cgroup usage file (v2 memory.current, v1 memory.usage_in_bytes), in bytes.
std::optional<double> parse_cgroup_usage(const std::string& text);

/// The page cache the kernel reclaims before it fails an allocation in the cgroup: memory.stat's
/// "inactive_file" (v2) or "total_inactive_file" (v1), in bytes; 0 when absent.
double parse_inactive_file(const std::string& memory_stat);

/// The process's cgroups, from /proc/self/cgroup: the v2 path ("0::/user.slice/x") and the
/// path of v1's memory controller ("7:memory:/slurm/uid_1" or "4:cpu,memory:/docker/ab").
struct CgroupMembership {
  std::optional<std::string> v2;
  std::optional<std::string> v1_memory;
};
CgroupMembership parse_proc_self_cgroup(const std::string& text);

/// The whole text of a file, or nullopt when it cannot be read.
using FileReader = std::function<std::optional<std::string>(const std::string& path)>;

/// MemAvailable, bounded by limit - (usage - inactive page cache) of the process's cgroup and
/// of each ancestor that sets a limit (the tightest wins). Unknown when neither can be read.
/// `read` gives the files' contents (tests pass samples).
AvailableMemory available_host_memory(const FileReader& read);
/// The same from /proc and /sys/fs/cgroup.
AvailableMemory available_host_memory();

}  // namespace zt::memory
