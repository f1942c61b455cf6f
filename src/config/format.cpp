// SPDX-License-Identifier: Apache-2.0
// The start-up print of the effective config: one block per section, columns aligned.
#include <algorithm>
#include <map>
#include <sstream>
#include <vector>

#include "config/config.hpp"

namespace zt::config {
namespace {

// Display width of UTF-8 text (the source names contain an arrow).
std::size_t display_width(const std::string& text) {
  std::size_t width = 0;
  for (unsigned char c : text) {
    if ((c & 0xC0) != 0x80) ++width;
  }
  return width;
}

std::string pad(const std::string& text, std::size_t width) {
  const std::size_t shown = display_width(text);
  return text + std::string(width > shown ? width - shown : 0, ' ');
}

}  // namespace

std::string format_effective_config(const ResolvedConfig& config) {
  // Group by the parent path, keeping the order of first appearance (schema order).
  std::vector<std::string> order;
  std::map<std::string, std::vector<const Entry*>> groups;
  for (const Entry& entry : config.entries) {
    const std::size_t dot = entry.path.rfind('.');
    const std::string section = dot == std::string::npos ? "" : entry.path.substr(0, dot);
    if (!groups.count(section)) order.push_back(section);
    groups[section].push_back(&entry);
  }
  std::size_t key_width = 0, value_width = 0;
  for (const Entry& entry : config.entries) {
    const std::size_t dot = entry.path.rfind('.');
    key_width = std::max(key_width, entry.path.size() - (dot == std::string::npos ? 0 : dot + 1));
    value_width = std::max(value_width, std::min<std::size_t>(display_width(entry.value_text), 40));
  }
  std::ostringstream out;
  out << "effective config (" << config.source_name << ", world size " << config.world_size
      << ")\n";
  for (const std::string& section : order) {
    out << "  [" << (section.empty() ? "top level" : section) << "]\n";
    for (const Entry* entry : groups[section]) {
      const std::size_t dot = entry->path.rfind('.');
      const std::string key = dot == std::string::npos ? entry->path : entry->path.substr(dot + 1);
      std::string source = source_name(entry->source);
      if (!entry->detail.empty()) source += " (" + entry->detail + ")";
      out << "    " << pad(key, key_width) << "  " << pad(entry->value_text, value_width) << "  "
          << source << "\n";
    }
  }
  return out.str();
}

}  // namespace zt::config
