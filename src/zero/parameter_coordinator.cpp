// SPDX-License-Identifier: Apache-2.0
#include "zero/parameter_coordinator.hpp"

#include <algorithm>
#include <stdexcept>

#include "runtime/error.hpp"
#include "runtime/timer.hpp"
#include "zero/range_gather.hpp"

namespace zt::zero {
namespace {
// Enough to keep the links busy (a layer has 12-16 tensors); few enough that polling them is
// cheap.
constexpr std::size_t kMaxPrefetchesInFlight = 64;
}  // namespace

ParameterCoordinator::ParameterCoordinator(const FlatLayout& layout, const LayerMap& layers,
                                           comm::Communicator& comm, backend::Backend& backend,
                                           const CoordinatorSettings& settings, backend::View slice)
    : layout_(layout),
      layers_(layers),
      comm_(comm),
      backend_(backend),
      settings_(settings),
      slice_(slice),
      slice_in_host_memory_(slice.place != backend.compute_place() ||
                            settings.swapped_elements > 0) {
  const auto& entries = layout_.entries();
  if (slice_in_host_memory_) {
    if (settings_.staging_buffers < 1)
      throw runtime::UserError(
          "zero_optimization.offload_param.buffer_count must be at least 1: parameters in host "
          "memory reach the device through staging buffers");
    for (const auto& entry : entries) {
      const FlatRange part =
          own_part_of(layout_, comm_.rank(), entry.offset, entry.offset + entry.numel);
      if (part.size() > settings_.staging_elements)
        throw runtime::UserError(runtime::concat(
            "zero_optimization.offload_param.buffer_size = ", settings_.staging_elements,
            " elements is smaller than rank ", comm_.rank(), "'s part of ", entry.name, " (",
            part.size(),
            " elements): each part reaches the device through one staging buffer "
            "(DeepSpeed asserts the same); raise buffer_size"));
    }
  }
  states_.resize(entries.size());
  for (std::size_t p = 0; p < entries.size(); ++p) {
    const std::int64_t numel = entries[p].numel;
    if (numel <= settings_.param_persistence_threshold &&
        persistent_elements_ + numel <= settings_.model_persistence_threshold) {
      states_[p].persistent = true;
      states_[p].buffer =
          backend::Buffer(slice_.dtype, numel, backend_.compute_place(), memory::Kind::Parameters);
      persistent_elements_ += numel;
      ++persistent_count_;
    }
  }
  layer_elements_.assign(static_cast<std::size_t>(layers_.num_layers()), 0);
  for (int layer = 0; layer < layers_.num_layers(); ++layer) {
    const auto& list = layers_.parameters[static_cast<std::size_t>(layer)];
    slots_ = std::max<std::int64_t>(slots_, static_cast<std::int64_t>(list.size()));
    for (const int p : list)
      layer_elements_[static_cast<std::size_t>(layer)] +=
          entries[static_cast<std::size_t>(p)].numel;
  }
  elements_before_.assign(static_cast<std::size_t>(trace_length()) + 1, 0);
  use_keys_.assign(entries.size(), {});
  for (int position = 0; position < trace_length(); ++position) {
    const int layer = layer_at(position);
    elements_before_[static_cast<std::size_t>(position) + 1] =
        elements_before_[static_cast<std::size_t>(position)] +
        layer_elements_[static_cast<std::size_t>(layer)];
    const auto& list = layers_.parameters[static_cast<std::size_t>(layer)];
    for (std::size_t j = 0; j < list.size(); ++j)
      use_keys_[static_cast<std::size_t>(list[j])].push_back(position * slots_ +
                                                             static_cast<std::int64_t>(j));
  }
  window_.resize(entries.size());
}

// --- PrefetchWindow ----------------------------------------------------------------------------

void ParameterCoordinator::PrefetchWindow::reset(std::int64_t keys) {
  tree_.assign(static_cast<std::size_t>(keys) + 1, 0);
  std::fill(key_.begin(), key_.end(), -1);
  pending_.clear();
}

void ParameterCoordinator::PrefetchWindow::insert(int parameter, std::int64_t key,
                                                  std::int64_t elements, bool gathered) {
  key_[static_cast<std::size_t>(parameter)] = key;
  for (std::size_t i = static_cast<std::size_t>(key) + 1; i < tree_.size(); i += i & (~i + 1))
    tree_[i] += elements;
  if (!gathered) pending_.insert({key, parameter});
}

void ParameterCoordinator::PrefetchWindow::erase(int parameter, std::int64_t elements) {
  const std::int64_t key = key_[static_cast<std::size_t>(parameter)];
  if (key < 0) return;
  for (std::size_t i = static_cast<std::size_t>(key) + 1; i < tree_.size(); i += i & (~i + 1))
    tree_[i] -= elements;
  pending_.erase({key, parameter});
  key_[static_cast<std::size_t>(parameter)] = -1;
}

void ParameterCoordinator::PrefetchWindow::mark_gathered(int parameter) {
  const std::int64_t key = key_[static_cast<std::size_t>(parameter)];
  if (key >= 0) pending_.erase({key, parameter});
}

void ParameterCoordinator::PrefetchWindow::mark_released(int parameter) {
  const std::int64_t key = key_[static_cast<std::size_t>(parameter)];
  if (key >= 0) pending_.insert({key, parameter});
}

std::int64_t ParameterCoordinator::PrefetchWindow::elements_before(std::int64_t key) const {
  std::int64_t sum = 0;
  for (std::size_t i = std::min(static_cast<std::size_t>(key), tree_.size() - 1); i > 0;
       i -= i & (~i + 1))
    sum += tree_[i];
  return sum;
}

ParameterCoordinator::~ParameterCoordinator() {
  for (auto& state : states_) state.gathering = comm::Handle();  // waits, before staging goes
}

int ParameterCoordinator::layer_at(int position) const {
  const int n = layers_.num_layers();
  return position < n ? position : 2 * n - 1 - position;
}

bool ParameterCoordinator::uses(int position, int parameter) const {
  const auto& list = layers_.parameters[static_cast<std::size_t>(layer_at(position))];
  return std::find(list.begin(), list.end(), parameter) != list.end();
}

std::int64_t ParameterCoordinator::next_use_key(int parameter, int after) const {
  const auto& keys = use_keys_[static_cast<std::size_t>(parameter)];
  const auto next = std::lower_bound(keys.begin(), keys.end(), (after + 1) * slots_);
  return next == keys.end() ? -1 : *next;
}

int ParameterCoordinator::next_use(int parameter, int after) const {
  const std::int64_t key = next_use_key(parameter, after);
  return key < 0 ? -1 : static_cast<int>(key / slots_);
}

std::int64_t ParameterCoordinator::distance_to(int from, int to) const {
  if (to <= from + 1) return 0;
  return elements_before_[static_cast<std::size_t>(to)] -
         elements_before_[static_cast<std::size_t>(from) + 1];
}

comm::Handle ParameterCoordinator::gather_into(int parameter, backend::View out,
                                               backend::Buffer& staging) {
  const auto& entry = layout_.entries()[static_cast<std::size_t>(parameter)];
  const std::int64_t begin = entry.offset;
  const std::int64_t end = entry.offset + entry.numel;
  if (!slice_in_host_memory_) return all_gather_range(comm_, layout_, slice_, begin, end, out);
  // A collective library reads device memory: this rank's part goes there first, through at
  // most staging_buffers buffers in flight.
  while (static_cast<int>(staged_in_flight_.size()) >= settings_.staging_buffers)
    wait_gather(staged_in_flight_.front());
  const FlatRange part = own_part_of(layout_, comm_.rank(), begin, end);
  const std::int64_t first = part.begin - layout_.slice_begin(comm_.rank());
  staging = backend::Buffer(slice_.dtype, part.size(), backend_.compute_place(),
                            memory::Kind::Parameters);
  // From host memory, and (NVMe) from the swap file for the elements beyond the host part.
  const std::int64_t in_host = std::clamp<std::int64_t>(slice_.count - first, 0, part.size());
  if (in_host > 0)
    backend_.copy_async(backend::ConstView(slice_).slice(first, in_host), staging.slice(0, in_host))
        .wait();
  if (part.size() > in_host) {
    backend::Buffer swapped(slice_.dtype, part.size() - in_host, backend::Place::Host,
                            memory::Kind::Parameters);
    settings_.read_swapped(first + in_host, first + part.size(), swapped.view().data);
    backend_.copy_async(swapped.view(), staging.slice(in_host, part.size() - in_host)).wait();
  }
  staged_in_flight_.push_back(parameter);
  return all_gather_part(comm_, layout_, staging.view(), begin, end, out);
}

void ParameterCoordinator::refresh_persistent() {
  for (std::size_t p = 0; p < states_.size(); ++p) {
    State& state = states_[p];
    if (!state.persistent || state.buffer.empty()) continue;
    state.gathering = gather_into(static_cast<int>(p), state.buffer.view(), state.staging);
  }
  for (std::size_t p = 0; p < states_.size(); ++p)
    if (states_[p].persistent) wait_gather(static_cast<int>(p));
}

void ParameterCoordinator::begin_pass() {
  position_ = -1;
  window_position_ = -2;
  prefetches_in_flight_.clear();
}

bool ParameterCoordinator::start_gather(int parameter, bool prefetch) {
  State& state = states_[static_cast<std::size_t>(parameter)];
  const auto& entry = layout_.entries()[static_cast<std::size_t>(parameter)];
  for (;;) {
    try {
      state.buffer = backend::Buffer(slice_.dtype, entry.numel, backend_.compute_place(),
                                     memory::Kind::Parameters);
      // From host memory the gather also needs a staging buffer on the device.
      state.gathering = gather_into(parameter, state.buffer.view(), state.staging);
      break;
    } catch (const memory::OutOfMemory& error) {
      state.buffer = backend::Buffer();
      // A prefetch never evicts: what it would push out is needed sooner.
      if (prefetch) return false;
      if (evict_for(entry.numel, position_)) continue;
      throw memory::OutOfMemory(runtime::concat(
          "stage 3 cannot gather ", entry.name, " (", entry.numel, " elements) for layer ",
          layer_at(position_), " even after releasing every cached parameter: ", error.what()));
    }
  }
  window_.mark_gathered(parameter);
  state.prefetched = prefetch;
  live_elements_ += entry.numel;
  peak_live_elements_ = std::max(peak_live_elements_, live_elements_);
  ++gathers_;
  if (prefetch) ++prefetches_;
  return true;
}

void ParameterCoordinator::wait_gather(int parameter) {
  State& state = states_[static_cast<std::size_t>(parameter)];
  if (state.gathering.pending()) {
    runtime::ScopedTimer timer(exposed_seconds_);
    state.gathering.wait();
  }
  // Its staging buffer (empty when this rank holds none of the tensor) is read no more.
  state.staging = backend::Buffer();
  const auto staged = std::find(staged_in_flight_.begin(), staged_in_flight_.end(), parameter);
  if (staged != staged_in_flight_.end()) staged_in_flight_.erase(staged);
}

void ParameterCoordinator::release(int parameter) {
  State& state = states_[static_cast<std::size_t>(parameter)];
  if (state.persistent || state.buffer.empty()) return;
  wait_gather(parameter);  // never free a buffer a collective still writes
  state.buffer = backend::Buffer();
  window_.mark_released(parameter);
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
    table[static_cast<std::size_t>(p)] = states_[static_cast<std::size_t>(p)].buffer.view();
  }
  prefetch_after(position_);
}

void ParameterCoordinator::move_window_to(int position) {
  const auto& entries = layout_.entries();
  auto numel = [&](int p) { return entries[static_cast<std::size_t>(p)].numel; };
  auto gathered = [&](int p) { return !states_[static_cast<std::size_t>(p)].buffer.empty(); };
  if (window_position_ >= 0 && position == window_position_ + 1) {
    // One step along the trace: the layer that ran rejoins at its next use, the one that
    // runs now leaves.
    for (const int p : layers_.parameters[static_cast<std::size_t>(layer_at(window_position_))]) {
      if (states_[static_cast<std::size_t>(p)].persistent || uses(position, p)) continue;
      const std::int64_t key = next_use_key(p, position);
      if (key >= 0) window_.insert(p, key, numel(p), gathered(p));
    }
    for (const int p : layers_.parameters[static_cast<std::size_t>(layer_at(position))])
      window_.erase(p, numel(p));
  } else {
    window_.reset(static_cast<std::int64_t>(trace_length()) * slots_);
    for (std::size_t p = 0; p < states_.size(); ++p) {
      const int parameter = static_cast<int>(p);
      if (states_[p].persistent || uses(position, parameter)) continue;
      const std::int64_t key = next_use_key(parameter, position);
      if (key >= 0) window_.insert(parameter, key, numel(parameter), gathered(parameter));
    }
  }
  window_position_ = position;
}

void ParameterCoordinator::prefetch_after(int position) {
  if (settings_.prefetch_bucket_size <= 0) return;
  move_window_to(position);
  // DeepSpeed's walk: along the trace, each parameter once, until the parameters passed hold
  // prefetch_bucket_size elements (gathered ones count too); start what is not gathered yet,
  // within stage3_max_live_parameters. Only the ones not gathered are visited.
  const auto& pending = window_.pending();
  for (auto next = pending.begin(); next != pending.end();) {
    const auto [key, p] = *next;
    ++next;  // start_gather takes p out of the set
    if (window_.elements_before(key) >= settings_.prefetch_bucket_size) return;
    const std::int64_t numel = layout_.entries()[static_cast<std::size_t>(p)].numel;
    if (live_elements_ + numel > settings_.max_live_parameters) return;
    while (!prefetches_in_flight_.empty()) {
      State& oldest = states_[static_cast<std::size_t>(prefetches_in_flight_.front())];
      if (oldest.gathering.pending() && !oldest.gathering.test()) break;
      prefetches_in_flight_.pop_front();
    }
    if (prefetches_in_flight_.size() >= kMaxPrefetchesInFlight)
      return;  // more after the next layer
    if (!start_gather(p, true)) return;
    prefetches_in_flight_.push_back(p);
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
