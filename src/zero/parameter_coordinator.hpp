// SPDX-License-Identifier: Apache-2.0
// Stage 3: parameters live partitioned (each rank holds its slice of the flat buffer). Before a
// layer runs, forward or backward, the coordinator all-gathers the layer's parameters into
// whole-tensor buffers; it prefetches the next layers' parameters up to
// stage3_prefetch_bucket_size elements ahead, never holding more than
// stage3_max_live_parameters gathered elements by prefetch; after a layer it releases what
// the step does not reuse within stage3_max_reuse_distance elements of parameters; parameters
// of at most stage3_param_persistence_threshold elements (in total at most
// stage3_model_persistence_threshold) stay gathered and are refreshed after every optimizer
// step. These are DeepSpeed's rules (deepspeed.md §5.3), applied per layer instead of per
// submodule, with the trace known in advance: forward runs layers 0..n-1, backward n-1..0.
//
// Gathered parameters are a cache: when a gather would exceed the device-memory cap, the
// coordinator first releases parameters it kept only for reuse or prefetched, so the reuse
// and prefetch settings trade communication for memory but never cause an out-of-memory.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <set>
#include <utility>
#include <vector>

#include "backend/backend.hpp"
#include "comm/communicator.hpp"
#include "memory/tracker.hpp"
#include "model/gpt.hpp"
#include "zero/flat_layout.hpp"
#include "zero/layer_map.hpp"

namespace zt::zero {

struct CoordinatorSettings {
  std::int64_t prefetch_bucket_size = 50'000'000;
  std::int64_t param_persistence_threshold = 100'000;
  std::int64_t model_persistence_threshold = INT64_MAX;
  std::int64_t max_live_parameters = 1'000'000'000;
  std::int64_t max_reuse_distance = 1'000'000'000;
  /// A slice in host memory (offload_param): each gather first copies this rank's part of the
  /// tensor into a device staging buffer of at most `staging_elements` elements, with at most
  /// `staging_buffers` of them in flight (offload_param.buffer_size and buffer_count).
  int staging_buffers = 5;
  std::int64_t staging_elements = 100'000'000;
  /// NVMe (offload_param nvme): the slice view holds only the first slice elements, the last
  /// `swapped_elements` are read by `read_swapped(begin, end, out)` (slice-relative element
  /// range, into host memory) when a gather needs them.
  std::int64_t swapped_elements = 0;
  std::function<void(std::int64_t begin, std::int64_t end, void* out)> read_swapped;
};

class ParameterCoordinator {
 public:
  /// `slice` is this rank's partition of the flat parameter buffer (layout.slice_elements()
  /// elements), on the device or (offload_param) in host memory; gathered parameters are of its
  /// dtype, at the backend's compute place.
  ParameterCoordinator(const FlatLayout& layout, const LayerMap& layers, comm::Communicator& comm,
                       backend::Backend& backend, const CoordinatorSettings& settings,
                       backend::View slice);
  ~ParameterCoordinator();
  ParameterCoordinator(const ParameterCoordinator&) = delete;
  ParameterCoordinator& operator=(const ParameterCoordinator&) = delete;

  /// Gathers the persistent parameters (again): at start and after every optimizer step.
  void refresh_persistent();
  /// Starts a forward+backward pass (a micro-step).
  void begin_pass();
  /// Makes the layer's parameters available and points their table entries at them.
  void before_layer(int layer, bool backward, model::ParamTable& table);
  void after_layer(int layer, bool backward);
  /// Releases every gathered, non-persistent parameter (end of a step).
  void release_all();
  /// Releases one cached parameter the running layer does not use (farthest next use first),
  /// for another allocation under the device-memory cap. False when there is none.
  bool release_one_cached() { return evict_for(0, position_); }

  double exposed_seconds() const { return exposed_seconds_; }
  std::int64_t persistent_parameters() const { return persistent_count_; }
  std::int64_t persistent_elements() const { return persistent_elements_; }
  /// Gathered non-persistent elements now, and the most at any time.
  std::int64_t live_elements() const { return live_elements_; }
  std::int64_t peak_live_elements() const { return peak_live_elements_; }
  /// Gathers issued since construction (on demand, and of those, by prefetch).
  std::int64_t gathers() const { return gathers_; }
  std::int64_t prefetches() const { return prefetches_; }

 private:
  struct State {
    bool persistent = false;
    backend::Buffer buffer;   // gathered values (empty when released)
    backend::Buffer staging;  // this rank's part on the device, while a gather from host reads it
    comm::Handle gathering;   // pending all-gather into buffer
    bool prefetched = false;  // gathered ahead of its use, not used since
  };

  // The prefetch window, kept from layer to layer instead of rescanned, so that a step costs
  // O(tensors log tensors) however many layers there are (a rescan per layer made deep models
  // quadratic). It holds every non-persistent parameter used after `position` but not at it,
  // keyed by its next use (trace position x slots + its place in the layer's list): the order
  // in which DeepSpeed's prefetch walks the trace. Sums of sizes by key are a Fenwick tree;
  // the parameters not gathered yet are in a set, in the same order.
  class PrefetchWindow {
   public:
    void reset(std::int64_t keys);
    void insert(int parameter, std::int64_t key, std::int64_t elements, bool gathered);
    void erase(int parameter, std::int64_t elements);
    void mark_gathered(int parameter);
    void mark_released(int parameter);
    std::int64_t key_of(int parameter) const { return key_[static_cast<std::size_t>(parameter)]; }
    /// Elements of the window's parameters with keys below `key`.
    std::int64_t elements_before(std::int64_t key) const;
    /// The window's parameters not gathered yet, in key order.
    const std::set<std::pair<std::int64_t, int>>& pending() const { return pending_; }
    void resize(std::size_t parameters) { key_.assign(parameters, -1); }

   private:
    std::vector<std::int64_t> tree_;  // Fenwick tree of elements by key
    std::vector<std::int64_t> key_;   // by parameter; -1 when not in the window
    std::set<std::pair<std::int64_t, int>> pending_;
  };

  int trace_length() const { return 2 * layers_.num_layers(); }
  int layer_at(int position) const;
  bool uses(int position, int parameter) const;
  int next_use(int parameter, int after) const;  // trace position, or -1
  /// Key of the parameter's next use after `after` (see PrefetchWindow), or -1.
  std::int64_t next_use_key(int parameter, int after) const;
  std::int64_t distance_to(int from, int to) const;  // parameter elements used in (from, to)
  bool start_gather(int parameter, bool prefetch);
  /// Starts gathering parameter p into `out`; from a slice in host memory through a staging
  /// buffer (kept in `staging` until the gather completed).
  comm::Handle gather_into(int parameter, backend::View out, backend::Buffer& staging);
  void wait_gather(int parameter);
  void release(int parameter);
  bool evict_for(std::int64_t elements, int keep_position);
  void prefetch_after(int position);
  void move_window_to(int position);

  const FlatLayout& layout_;
  const LayerMap& layers_;
  comm::Communicator& comm_;
  backend::Backend& backend_;
  CoordinatorSettings settings_;
  backend::View slice_;
  bool slice_in_host_memory_;
  std::deque<int> staged_in_flight_;  // gathers from host memory whose staging is still read
  std::vector<State> states_;
  std::vector<std::int64_t> layer_elements_;  // parameter elements each layer reads
  // Trace position p's layer reads elements_before_[p + 1] - elements_before_[p] elements.
  std::vector<std::int64_t> elements_before_;
  // Keys (trace position x slots_ + place in the layer's list) of every use, by parameter.
  std::vector<std::vector<std::int64_t>> use_keys_;
  std::int64_t slots_ = 1;  // the most parameters one layer reads
  PrefetchWindow window_;
  int window_position_ = -2;  // the trace position the window is for (-2: none)
  // Prefetches started and not seen complete, oldest first. A model of many small tensors
  // would otherwise put its whole prefetch bucket in flight at once, tens of thousands of
  // collectives that the MPI library and the progress thread each scan on every poll.
  std::deque<int> prefetches_in_flight_;
  int position_ = -1;  // trace position of the running layer
  std::int64_t persistent_count_ = 0;
  std::int64_t persistent_elements_ = 0;
  std::int64_t live_elements_ = 0;
  std::int64_t peak_live_elements_ = 0;
  std::int64_t gathers_ = 0;
  std::int64_t prefetches_ = 0;
  double exposed_seconds_ = 0;
};

}  // namespace zt::zero
