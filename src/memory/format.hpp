// SPDX-License-Identifier: Apache-2.0
// Byte sizes as people write them: "64MiB", "1.5GB", "4096".
#pragma once

#include <cstdint>
#include <string>

namespace zt::memory {

/// Parses "123", "64KiB", "64MiB", "2GiB", "1.5GB", "10kB" (case-insensitive units; KB/MB/GB
/// are powers of 1000, KiB/MiB/GiB of 1024). Throws std::invalid_argument naming the text.
std::int64_t parse_bytes(const std::string& text);

/// "1.50 GiB", "12.0 MiB", "512 B".
std::string format_bytes(std::int64_t bytes);

}  // namespace zt::memory
