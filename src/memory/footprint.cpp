// SPDX-License-Identifier: Apache-2.0
#include "memory/footprint.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <utility>
#include <vector>

#include "memory/format.hpp"

namespace zt::memory {

double RunFootprint::host() const {
  double on_host = offloaded + data + bookkeeping + other;
  if (device_is_host) on_host += device_limit > 0 ? std::min(device(), device_limit) : device();
  return on_host;
}

RunFootprint run_footprint(const RunDescription& run) {
  const ModelStates states = model_states(run.model, run.placement, run.ranks, run.settings);
  RunFootprint footprint;
  footprint.parameters = states.parameters;
  footprint.gradients = states.gradients;
  footprint.optimizer_states = states.optimizer_states;
  footprint.comm_buffers = states.comm_buffers;
  footprint.activations = run.model.activation_bytes;
  footprint.offloaded = states.host();
  footprint.nvme = states.nvme;
  footprint.data = run.data_bytes;
  // The engine's host copies of one micro-batch's inputs and targets (int32).
  const double token_buffers = 2 * 4 * run.micro_batch * run.seq_len;
  footprint.bookkeeping = kBookkeepingBytesPerTensor * run.model.tensors + token_buffers;
  footprint.other = run.other_host_bytes;
  footprint.micro_batch = run.micro_batch;
  footprint.seq_len = run.seq_len;
  footprint.device_is_host = run.device_is_host;
  footprint.device_limit = run.device_limit;
  return footprint;
}

namespace {

std::string count_text(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.0f", value);
  return text;
}

}  // namespace

std::string describe_footprint(const RunFootprint& footprint) {
  std::vector<std::pair<double, std::string>> parts;
  if (footprint.device_is_host) {
    const bool capped = footprint.device_limit > 0 && footprint.device() > footprint.device_limit;
    if (capped) {
      parts.emplace_back(footprint.device_limit,
                         "device arena " + format_size(footprint.device_limit) +
                             " (the device-memory limit; model states and activations would "
                             "need " +
                             format_size(footprint.device()) + ")");
    } else {
      parts.emplace_back(footprint.activations,
                         "activations " + format_size(footprint.activations) + " for micro-batch " +
                             count_text(footprint.micro_batch) + " x " +
                             count_text(footprint.seq_len) + " tokens");
      parts.emplace_back(footprint.model_states(),
                         "model states " + format_size(footprint.model_states()));
    }
  }
  parts.emplace_back(footprint.offloaded, "offloaded states " + format_size(footprint.offloaded));
  parts.emplace_back(footprint.data, "data " + format_size(footprint.data));
  parts.emplace_back(footprint.bookkeeping, "bookkeeping " + format_size(footprint.bookkeeping));
  parts.emplace_back(footprint.other, "other " + format_size(footprint.other));
  // Largest first: the reader looks for what to shrink. NaN sorts as "large" (never hidden).
  std::stable_sort(parts.begin(), parts.end(), [](const auto& a, const auto& b) {
    return a.first > b.first || (std::isnan(a.first) && !std::isnan(b.first));
  });
  std::string text;
  for (const auto& [bytes, description] : parts) {
    if (bytes == 0) continue;
    if (!text.empty()) text += ", ";
    text += description;
  }
  return text.empty() ? "nothing" : text;
}

MemoryVerdict check_host_memory(const RunFootprint& per_rank, int ranks_on_node,
                                const AvailableMemory& available) {
  MemoryVerdict verdict;
  const int ranks = std::max(ranks_on_node, 1);
  verdict.needed_per_rank = per_rank.host();
  verdict.needed_on_node = verdict.needed_per_rank * ranks;
  verdict.available = available.bytes;
  verdict.message = "this run needs " + format_size(verdict.needed_per_rank) + " per rank (" +
                    describe_footprint(per_rank) + ")";
  if (ranks > 1)
    verdict.message += ", " + format_size(verdict.needed_on_node) + " for the " +
                       std::to_string(ranks) + " ranks on this node";
  if (!available.known()) {
    verdict.fits = true;
    verdict.message += "; the memory available could not be read";
    return verdict;
  }
  // Written so that NaN (a footprint from an unchecked shape) does not fit.
  verdict.fits = verdict.needed_on_node <= available.bytes;
  verdict.message +=
      "; " + format_size(available.bytes) + " is available (" + available.source + ")";
  return verdict;
}

}  // namespace zt::memory
