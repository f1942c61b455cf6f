// SPDX-License-Identifier: Apache-2.0
// Partitioned gradient reduction (ZeRO stages 1-3). Every rank ends a step holding the
// reduced gradient of its own slice of the flat buffer, averaged over the ranks.
//
// Gradients reach the reducer in one of two ways:
//  - FullBuffer (stage 1): backward accumulates into a full-size gradient buffer; ranges of it
//    are reduce-scattered into the slice, during the last micro-step's backward (overlap_comm)
//    or after it.
//  - Windows (stages 2 and 3): no full-size buffer exists. Before a layer's backward the reducer
//    points the layer's gradient table entries into a bucket window (reduce_bucket_size
//    elements, DeepSpeed's "ipg" buffer; two with overlap_comm so one fills while the other
//    drains) and reduce-scatters a window once it holds a bucket's worth, every micro-step.
//    A shared (tied) parameter keeps a whole-size gradient buffer until its last user's
//    backward completed it, as autograd's .grad does in DeepSpeed.
//
// A range of the flat buffer falls across the ranks' slices unevenly, so a reduction is the
// uneven reduce-scatter (reduce_scatter_v); with reduce_scatter: false it is an all-reduce
// of the range, of which each rank keeps its part (DeepSpeed's behaviour for that key).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <vector>

#include "backend/backend.hpp"
#include "comm/communicator.hpp"
#include "memory/tracker.hpp"
#include "model/gpt.hpp"
#include "zero/flat_layout.hpp"
#include "zero/layer_map.hpp"

namespace zt::zero {

struct ReducerSettings {
  std::int64_t bucket_elements = 500'000'000;  // reduce_bucket_size
  bool overlap_comm = false;
  bool contiguous_gradients = true;
  bool reduce_scatter = true;
  bool average = true;  // divide the sum by the world size
  /// The collectives' element type (communication_data_type). When it differs from the
  /// gradients' dtype, each bucket is converted into a staging buffer of this type, reduced
  /// there (accumulated in fp32 when it is fp32) and converted back into the slice.
  backend::DType communication_dtype = backend::DType::F32;
};

/// comm's element type for a backend dtype.
comm::DataType comm_type(backend::DType dtype);

class GradientReducer {
 public:
  enum class Source { FullBuffer, Windows };

  /// `full` is the full gradient buffer for Source::FullBuffer (empty for Windows); `slice`
  /// receives this rank's reduced gradients (layout.slice_elements() elements). Landing
  /// windows are of the slice's dtype, at the backend's compute place. A slice in host memory
  /// (optimizer offload) receives each reduced part by a copy as the reduction completes.
  GradientReducer(Source source, const FlatLayout& layout, const LayerMap& layers,
                  comm::Communicator& comm, backend::Backend& backend,
                  const ReducerSettings& settings, backend::View full, backend::View slice);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  /// Starts a micro-step whose reductions write the slice (accumulate = false: the first
  /// micro-step of an optimizer step) or add to it.
  void begin_micro_step(bool accumulate);
  /// Windows: points the layer's gradient table entries into the landing buffers (zeroed).
  void before_backward(int layer, model::GradTable& table);
  /// Issues the reductions the layer's backward made possible.
  void after_backward(int layer);
  /// FullBuffer without hooks: reduces the whole buffer now, in buckets.
  void reduce_everything();
  /// Reduces what is left and waits for every reduction of the micro-step.
  void finish_micro_step();

  /// Called when a landing window does not fit under the device-memory cap: frees something
  /// (stage 3: a cached parameter) and returns true, or returns false when nothing is left.
  void set_memory_relief(std::function<bool()> relieve) { relieve_memory_ = std::move(relieve); }

  /// Seconds the caller spent waiting for reductions (exposed communication) so far.
  double exposed_seconds() const { return exposed_seconds_; }
  /// Elements of landing memory (windows and shared-gradient buffers): what stage 2 holds on
  /// top of its gradient slice.
  std::int64_t landing_elements() const;
  std::int64_t window_elements() const { return window_capacity_; }

 private:
  struct Window {
    backend::Buffer buffer;
    std::int64_t capacity = 0;
    std::int64_t end = 0;  // flat address of buffer[capacity]
    int outstanding = 0;   // reductions still reading it
  };
  struct Pending;

  void flush(FlatRange range, backend::View source, int window);
  void flush_active_window();
  void complete_front();
  void wait_window(int window);
  int acquire_window(std::int64_t end);
  void release_idle_windows();
  void allocate_window(Window& window);
  /// The window's elements from flat address `flat` up to the window's end.
  backend::View window_from(Window& window, std::int64_t flat) const;
  /// Host memory for one reduced part on its way into a slice in host memory.
  backend::View host_landing(backend::DType dtype, std::int64_t count);

  Source source_;
  const FlatLayout& layout_;
  const LayerMap& layers_;
  comm::Communicator& comm_;
  backend::Backend& backend_;
  ReducerSettings settings_;
  backend::View full_;
  backend::View slice_;
  std::int64_t slice_begin_;
  std::int64_t slice_end_;
  bool slice_in_host_memory_;
  backend::Buffer host_landing_;
  bool accumulate_ = false;
  double exposed_seconds_ = 0;

  std::deque<std::unique_ptr<Pending>> pending_;
  // FullBuffer: the completed range not yet reduced.
  FlatRange waiting_{0, 0};
  // Windows.
  std::int64_t window_capacity_ = 0;
  std::int64_t largest_layer_ = 0;
  int window_pool_ = 1;
  std::vector<std::unique_ptr<Window>> windows_;
  int active_window_ = -1;
  std::int64_t active_low_ = 0;  // flat start of what the active window holds
  int next_window_ = 0;
  std::vector<backend::Buffer> shared_gradients_;  // by LayerMap::shared index
  std::vector<bool> shared_touched_;
  std::function<bool()> relieve_memory_;
};

}  // namespace zt::zero
