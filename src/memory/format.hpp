// SPDX-License-Identifier: Apache-2.0
// Byte sizes as people write them: "64MiB", "1.5GB", "4096".
#pragma once

#include <cstdint>
#include <string>

namespace zt::memory {

/// Parses "123", "64KiB", "64MiB", "2GiB", "1.5GB", "10kB" (case-insensitive units; KB/MB/GB
/// are powers of 1000, KiB/MiB/GiB of 1024). Throws std::invalid_argument naming the text,
/// also when the size does not fit in int64 (8 EiB) rather than wrapping.
std::int64_t parse_bytes(const std::string& text);

/// "1.50 GiB", "12.00 MiB", "512 B" (units up to EiB: int64 ends at 8 EiB).
std::string format_bytes(std::int64_t bytes);

/// The same for a size computed in double, which may exceed int64: "1.50 GiB", "512 B",
/// "8.00 EiB", "1.2e+06 EiB"; "infinite" and "not a number" for what is not finite.
std::string format_size(double bytes);

}  // namespace zt::memory
