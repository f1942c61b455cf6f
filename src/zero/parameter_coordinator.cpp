// SPDX-License-Identifier: Apache-2.0
#include "zero/parameter_coordinator.hpp"

#include <algorithm>
#include <stdexcept>

#include "runtime/error.hpp"
#include "runtime/timer.hpp"
#include "zero/range_gather.hpp"

namespace zt::zero {

ParameterCoordinator::ParameterCoordinator(const FlatLayout& layout, const LayerMap& layers,
                                           comm::Communicator& comm,
                                           const CoordinatorSettings& settings, const float* slice)
    : layout_(layout), layers_(layers), comm_(comm), settings_(settings), slice_(slice) {
  const auto& entries = layout_.entries();
  states_.resize(entries.size());
  for (std::size_t p = 0; p < entries.size(); ++p) {
    const std::int64_t numel = entries[p].numel;
    if (numel <= settings_.param_persistence_threshold &&
        persistent_elements_ + numel <= settings_.model_persistence_threshold) {
      states_[p].persistent = true;
      states_[p].buffer = memory::TrackedBuffer<float>(
          static_cast<std::size_t>(numel), memory::Place::Device, memory::Kind::Parameters);
      persistent_elements_ += numel;
      ++persistent_count_;
    }
  }
  layer_elements_.assign(static_cast<std::size_t>(layers_.num_layers()), 0);
  for (int layer = 0; layer < layers_.num_layers(); ++layer)
    for (const int p : layers_.parameters[static_cast<std::size_t>(layer)])
      layer_elements_[static_cast<std::size_t>(layer)] +=
          entries[static_cast<std::size_t>(p)].numel;
}

ParameterCoordinator::~ParameterCoordinator() {
  for (auto& state : states_) state.gathering = comm::Handle();  // waits
}

int ParameterCoordinator::layer_at(int position) const {
  const int n = layers_.num_layers();
  return position < n ? position : 2 * n - 1 - position;
}

bool ParameterCoordinator::uses(int position, int parameter) const {
  const auto& list = layers_.parameters[static_cast<std::size_t>(layer_at(position))];
  return std::find(list.begin(), list.end(), parameter) != list.end();
}

int ParameterCoordinator::next_use(int parameter, int after) const {
  for (int position = after + 1; position < trace_length(); ++position)
    if (uses(position, parameter)) return position;
  return -1;
}

std::int64_t ParameterCoordinator::distance_to(int from, int to) const {
  std::int64_t elements = 0;
  for (int position = from + 1; position < to; ++position)
    elements += layer_elements_[static_cast<std::size_t>(layer_at(position))];
  return elements;
}

void ParameterCoordinator::refresh_persistent() {
  std::vector<comm::Handle> handles;
  for (std::size_t p = 0; p < states_.size(); ++p) {
    if (!states_[p].persistent || states_[p].buffer.empty()) continue;
    const auto& entry = layout_.entries()[p];
    handles.push_back(all_gather_range(comm_, layout_, slice_, entry.offset,
                                       entry.offset + entry.numel, states_[p].buffer.data()));
  }
  runtime::ScopedTimer timer(exposed_seconds_);
  for (auto& handle : handles) handle.wait();
}

void ParameterCoordinator::begin_pass() {
  position_ = -1;
}

bool ParameterCoordinator::start_gather(int parameter, bool prefetch) {
  State& state = states_[static_cast<std::size_t>(parameter)];
  const auto& entry = layout_.entries()[static_cast<std::size_t>(parameter)];
  for (;;) {
    try {
      state.buffer = memory::TrackedBuffer<float>(static_cast<std::size_t>(entry.numel),
                                                  memory::Place::Device, memory::Kind::Parameters);
      break;
    } catch (const memory::OutOfMemory& error) {
      // A prefetch never evicts: what it would push out is needed sooner.
      if (prefetch) return false;
      if (evict_for(entry.numel, position_)) continue;
      throw memory::OutOfMemory(runtime::concat(
          "stage 3 cannot gather ", entry.name, " (", entry.numel, " elements) for layer ",
          layer_at(position_), " even after releasing every cached parameter: ", error.what()));
    }
  }
  state.gathering = all_gather_range(comm_, layout_, slice_, entry.offset,
                                     entry.offset + entry.numel, state.buffer.data());
  state.prefetched = prefetch;
  live_elements_ += entry.numel;
  peak_live_elements_ = std::max(peak_live_elements_, live_elements_);
  ++gathers_;
  if (prefetch) ++prefetches_;
  return true;
}

void ParameterCoordinator::wait_gather(int parameter) {
  State& state = states_[static_cast<std::size_t>(parameter)];
  if (!state.gathering.pending()) return;
  runtime::ScopedTimer timer(exposed_seconds_);
  state.gathering.wait();
}

void ParameterCoordinator::release(int parameter) {
  State& state = states_[static_cast<std::size_t>(parameter)];
  if (state.persistent || state.buffer.empty()) return;
  wait_gather(parameter);  // never free a buffer a collective still writes
  state.buffer.release();
  state.prefetched = false;
  live_elements_ -= layout_.entries()[static_cast<std::size_t>(parameter)].numel;
}

bool ParameterCoordinator::evict_for(std::int64_t /*elements*/, int keep_position) {
  // Release the cached parameter whose next use is farthest away (never used again first),
  // other than those of the running layer.
  int victim = -1;
  int victim_next = -2;
  for (std::size_t p = 0; p < states_.size(); ++p) {
    const State& state = states_[p];
    if (state.persistent || state.buffer.empty()) continue;
    const int parameter = static_cast<int>(p);
    if (keep_position >= 0 && uses(keep_position, parameter)) continue;
    int next = next_use(parameter, keep_position);
    if (next < 0) next = trace_length();  // never again this pass: the best victim
    if (next > victim_next) {
      victim = parameter;
      victim_next = next;
    }
  }
  if (victim < 0) return false;
  release(victim);
  return true;
}

void ParameterCoordinator::before_layer(int layer, bool backward, model::ParamTable& table) {
  const int n = layers_.num_layers();
  position_ = backward ? 2 * n - 1 - layer : layer;
  const auto& parameters = layers_.parameters[static_cast<std::size_t>(layer)];
  for (const int p : parameters) {
    State& state = states_[static_cast<std::size_t>(p)];
    if (!state.persistent && state.buffer.empty()) start_gather(p, false);
  }
  for (const int p : parameters) {
    wait_gather(p);
    states_[static_cast<std::size_t>(p)].prefetched = false;
    table[static_cast<std::size_t>(p)] = states_[static_cast<std::size_t>(p)].buffer.data();
  }
  prefetch_after(position_);
}

void ParameterCoordinator::prefetch_after(int position) {
  if (settings_.prefetch_bucket_size <= 0) return;
  std::int64_t ahead = 0;
  std::vector<bool> counted(states_.size(), false);
  for (int q = position + 1; q < trace_length(); ++q) {
    for (const int p : layers_.parameters[static_cast<std::size_t>(layer_at(q))]) {
      State& state = states_[static_cast<std::size_t>(p)];
      if (state.persistent || counted[static_cast<std::size_t>(p)]) continue;
      if (uses(position, p)) continue;  // the running layer's own: already here
      counted[static_cast<std::size_t>(p)] = true;
      if (ahead >= settings_.prefetch_bucket_size) return;
      const std::int64_t numel = layout_.entries()[static_cast<std::size_t>(p)].numel;
      ahead += numel;
      if (!state.buffer.empty()) continue;  // gathered or in flight
      if (live_elements_ + numel > settings_.max_live_parameters) return;
      if (!start_gather(p, true)) return;
    }
  }
}

void ParameterCoordinator::after_layer(int layer, bool backward) {
  const int n = layers_.num_layers();
  const int position = backward ? 2 * n - 1 - layer : layer;
  for (const int p : layers_.parameters[static_cast<std::size_t>(layer)]) {
    if (states_[static_cast<std::size_t>(p)].persistent) continue;
    const int next = next_use(p, position);
    const bool reused = next >= 0 && settings_.max_reuse_distance > 0 &&
                        distance_to(position, next) < settings_.max_reuse_distance;
    if (!reused) release(p);
  }
}

void ParameterCoordinator::release_all() {
  for (std::size_t p = 0; p < states_.size(); ++p) release(static_cast<int>(p));
  position_ = -1;
}

}  // namespace zt::zero
