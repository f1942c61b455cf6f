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
#include <vector>

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
};

class ParameterCoordinator {
 public:
  /// `slice` is this rank's partition of the flat parameter buffer (layout.slice_elements()).
  ParameterCoordinator(const FlatLayout& layout, const LayerMap& layers, comm::Communicator& comm,
                       const CoordinatorSettings& settings, const float* slice);
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
    memory::TrackedBuffer<float> buffer;  // gathered values (empty when released)
    comm::Handle gathering;               // pending all-gather into buffer
    bool prefetched = false;              // gathered ahead of its use, not used since
  };

  int trace_length() const { return 2 * layers_.num_layers(); }
  int layer_at(int position) const;
  bool uses(int position, int parameter) const;
  int next_use(int parameter, int after) const;      // trace position, or -1
  std::int64_t distance_to(int from, int to) const;  // parameter elements used in (from, to)
  bool start_gather(int parameter, bool prefetch);
  void wait_gather(int parameter);
  void release(int parameter);
  bool evict_for(std::int64_t elements, int keep_position);
  void prefetch_after(int position);

  const FlatLayout& layout_;
  const LayerMap& layers_;
  comm::Communicator& comm_;
  CoordinatorSettings settings_;
  const float* slice_;
  std::vector<State> states_;
  std::vector<std::int64_t> layer_elements_;  // non-persistent elements each layer reads
  int position_ = -1;                         // trace position of the running layer
  std::int64_t persistent_count_ = 0;
  std::int64_t persistent_elements_ = 0;
  std::int64_t live_elements_ = 0;
  std::int64_t peak_live_elements_ = 0;
  std::int64_t gathers_ = 0;
  std::int64_t prefetches_ = 0;
  double exposed_seconds_ = 0;
};

}  // namespace zt::zero
