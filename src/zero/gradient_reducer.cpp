// SPDX-License-Identifier: Apache-2.0
#include "zero/gradient_reducer.hpp"

#include <algorithm>
#include <climits>
#include <stdexcept>

#include "runtime/timer.hpp"

namespace zt::zero {

using backend::Buffer;
using backend::DType;
using backend::View;

comm::DataType comm_type(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return comm::DataType::Float32;
    case DType::F16:
      return comm::DataType::Float16;
    case DType::BF16:
      return comm::DataType::BFloat16;
    case DType::I32:
      return comm::DataType::Int32;
  }
  throw std::logic_error("comm_type: unknown dtype");
}

struct GradientReducer::Pending {
  // Declared first so it is destroyed last: the handle's destructor waits for the collective
  // that reads the staging buffer and writes the scratch.
  Buffer staging;  // the bucket in the communication dtype, when it differs from the gradients'
  Buffer scratch;  // receives this rank's part when it cannot land in the slice directly
  comm::Handle handle;
  int window = -1;
  View destination;  // this rank's part, in the slice
  View result;       // where the reduced part is once the handle completed
  bool add = false;
};

GradientReducer::GradientReducer(Source source, const FlatLayout& layout, const LayerMap& layers,
                                 comm::Communicator& comm, backend::Backend& backend,
                                 const ReducerSettings& settings, View full, View slice)
    : source_(source),
      layout_(layout),
      layers_(layers),
      comm_(comm),
      backend_(backend),
      settings_(settings),
      full_(full),
      slice_(slice),
      slice_begin_(layout.slice_begin(comm.rank())),
      slice_end_(layout.slice_end(comm.rank())),
      slice_in_host_memory_(slice.place != backend.compute_place()) {
  settings_.bucket_elements = std::clamp<std::int64_t>(settings_.bucket_elements, 1, INT_MAX / 2);
  if (source_ == Source::FullBuffer && full_.data == nullptr)
    throw std::invalid_argument("GradientReducer: FullBuffer needs the full gradient buffer");
  if (source_ == Source::Windows) {
    std::int64_t own_total = 0;
    std::int64_t largest = 0;
    for (const auto& range : layers_.own_range) {
      own_total += range.size();
      largest = std::max(largest, range.size());
    }
    largest_layer_ = largest;
    window_capacity_ = std::max(std::min(settings_.bucket_elements, own_total), largest);
    // A second window lets one fill while the other drains; pointless when one holds it all.
    window_pool_ = settings_.overlap_comm && window_capacity_ < own_total ? 2 : 1;
    for (const auto& shared : layers_.shared)
      shared_gradients_.emplace_back(slice_.dtype, shared.range.size(), backend_.compute_place(),
                                     memory::Kind::Gradients);
    shared_touched_.assign(layers_.shared.size(), false);
  }
}

GradientReducer::~GradientReducer() {
  // Handles wait in their destructors; drop them before the buffers they read.
  pending_.clear();
}

std::int64_t GradientReducer::landing_elements() const {
  std::int64_t total = 0;
  for (const auto& window : windows_) total += window->buffer.count();
  for (const auto& buffer : shared_gradients_) total += buffer.count();
  return total;
}

void GradientReducer::begin_micro_step(bool accumulate) {
  if (!pending_.empty()) throw std::logic_error("GradientReducer: previous micro-step unfinished");
  accumulate_ = accumulate;
  waiting_ = {0, 0};
  std::fill(shared_touched_.begin(), shared_touched_.end(), false);
}

View GradientReducer::window_from(Window& window, std::int64_t flat) const {
  const std::int64_t offset = flat - (window.end - window.capacity);
  return window.buffer.slice(offset, window.capacity - offset);
}

void GradientReducer::before_backward(int layer, model::GradTable& table) {
  if (source_ != Source::Windows) return;
  const FlatRange own = layers_.own_range[static_cast<std::size_t>(layer)];
  if (!own.empty()) {
    if (active_window_ >= 0) {
      Window& active = *windows_[static_cast<std::size_t>(active_window_)];
      if (own.end != active_low_ || active.end - own.begin > active.capacity) flush_active_window();
    }
    if (active_window_ < 0) {
      active_window_ = acquire_window(own.end);
      active_low_ = own.end;
    }
    Window& window = *windows_[static_cast<std::size_t>(active_window_)];
    backend_.set_zero(window_from(window, own.begin).slice(0, own.size()));
    for (const int p : layers_.own_parameters[static_cast<std::size_t>(layer)]) {
      const auto& entry = layout_.entries()[static_cast<std::size_t>(p)];
      table[static_cast<std::size_t>(p)] = window_from(window, entry.offset).slice(0, entry.numel);
    }
  }
  for (std::size_t s = 0; s < layers_.shared.size(); ++s) {
    const int p = layers_.shared[s].parameter;
    const auto& uses = layers_.parameters[static_cast<std::size_t>(layer)];
    if (std::find(uses.begin(), uses.end(), p) == uses.end()) continue;
    if (!shared_touched_[s]) {
      backend_.set_zero(shared_gradients_[s].view());
      shared_touched_[s] = true;
    }
    table[static_cast<std::size_t>(p)] = shared_gradients_[s].view();
  }
}

void GradientReducer::after_backward(int layer) {
  const FlatRange own = layers_.own_range[static_cast<std::size_t>(layer)];
  if (source_ == Source::Windows) {
    if (!own.empty() && active_window_ >= 0) {
      active_low_ = own.begin;
      const Window& window = *windows_[static_cast<std::size_t>(active_window_)];
      if (window.end - active_low_ >= settings_.bucket_elements) flush_active_window();
    }
    for (std::size_t s = 0; s < layers_.shared.size(); ++s)
      if (layers_.shared[s].completing_layer == layer)
        flush(layers_.shared[s].range, shared_gradients_[s].view(), -1);
    return;
  }
  // FullBuffer: extend the completed range downwards; reduce it once it makes a bucket.
  if (!own.empty()) {
    if (!waiting_.empty() && own.end == waiting_.begin) {
      waiting_.begin = own.begin;
    } else {
      if (!waiting_.empty()) flush(waiting_, full_.slice(waiting_.begin, waiting_.size()), -1);
      waiting_ = own;
    }
    if (waiting_.size() >= settings_.bucket_elements) {
      flush(waiting_, full_.slice(waiting_.begin, waiting_.size()), -1);
      waiting_ = {0, 0};
    }
  }
  for (const auto& shared : layers_.shared)
    if (shared.completing_layer == layer)
      flush(shared.range, full_.slice(shared.range.begin, shared.range.size()), -1);
}

void GradientReducer::reduce_everything() {
  if (source_ != Source::FullBuffer)
    throw std::logic_error("GradientReducer::reduce_everything needs the full gradient buffer");
  flush({0, layout_.padded_elements()}, full_, -1);
}

void GradientReducer::finish_micro_step() {
  if (source_ == Source::FullBuffer && !waiting_.empty()) {
    flush(waiting_, full_.slice(waiting_.begin, waiting_.size()), -1);
    waiting_ = {0, 0};
  }
  if (active_window_ >= 0) flush_active_window();
  while (!pending_.empty()) complete_front();
  release_idle_windows();
}

void GradientReducer::flush_active_window() {
  Window& window = *windows_[static_cast<std::size_t>(active_window_)];
  const FlatRange range{active_low_, window.end};
  const int index = active_window_;
  active_window_ = -1;
  if (!range.empty()) flush(range, window_from(window, range.begin).slice(0, range.size()), index);
}

void GradientReducer::flush(FlatRange range, View source, int window) {
  const int ranks = comm_.size();
  const std::int64_t slice = layout_.slice_elements();
  const DType wire = settings_.communication_dtype;
  const bool staged = wire != source.dtype;
  for (std::int64_t begin = range.begin; begin < range.end; begin += settings_.bucket_elements) {
    const std::int64_t end = std::min(range.end, begin + settings_.bucket_elements);
    const std::int64_t mine_begin = std::max(begin, slice_begin_);
    const std::int64_t mine_end = std::min(end, slice_end_);
    const std::int64_t mine = std::max<std::int64_t>(0, mine_end - mine_begin);
    auto pending = std::make_unique<Pending>();
    pending->destination = slice_.slice(mine > 0 ? mine_begin - slice_begin_ : 0, mine);
    pending->window = window;
    pending->add = accumulate_;
    View chunk = source.slice(begin - range.begin, end - begin);
    if (staged) {
      pending->staging = Buffer(wire, end - begin, source.place, memory::Kind::CommBuffers);
      backend_.convert(chunk, pending->staging.view());
      chunk = pending->staging.view();
    }
    if (settings_.reduce_scatter) {
      View receive = pending->destination;
      if ((accumulate_ || staged || slice_in_host_memory_) && mine > 0) {
        pending->scratch = Buffer(wire, mine, source.place, memory::Kind::CommBuffers);
        receive = pending->scratch.view();
      }
      pending->result = receive;
      pending->handle = comm_.reduce_scatter_v_async(
          chunk.data, receive.data, comm::split_range_by_rank(begin, end, slice, ranks),
          comm_type(wire), comm::ReduceOp::Sum);
    } else {
      pending->result = chunk.slice(mine > 0 ? mine_begin - begin : 0, mine);
      pending->handle = comm_.all_reduce_async(chunk.data, chunk.data, end - begin, comm_type(wire),
                                               comm::ReduceOp::Sum);
    }
    if (window >= 0) ++windows_[static_cast<std::size_t>(window)]->outstanding;
    pending_.push_back(std::move(pending));
    if (!settings_.overlap_comm) complete_front();
  }
}

void GradientReducer::complete_front() {
  Pending& pending = *pending_.front();
  {
    runtime::ScopedTimer timer(exposed_seconds_);
    pending.handle.wait();
  }
  const float scale = settings_.average ? 1.0f / static_cast<float>(comm_.size()) : 1.0f;
  if (pending.destination.count > 0 && slice_in_host_memory_) {
    // Offloaded gradients: the reduced part streams to host memory as it completes, and is
    // averaged and accumulated there with the arithmetic of the device path below.
    const View landing = host_landing(pending.result.dtype, pending.result.count);
    backend_.copy_async(pending.result, landing).wait();
    if (pending.add)
      backend_.add_scaled(landing, pending.destination, scale);
    else
      backend_.convert(landing, pending.destination, scale);
  } else if (pending.destination.count > 0) {
    if (pending.add)
      backend_.add_scaled(pending.result, pending.destination, scale);
    else if (pending.result.data != pending.destination.data || scale != 1.0f)
      backend_.convert(pending.result, pending.destination, scale);
  }
  if (pending.window >= 0) --windows_[static_cast<std::size_t>(pending.window)]->outstanding;
  pending_.pop_front();
}

View GradientReducer::host_landing(DType dtype, std::int64_t count) {
  if (host_landing_.dtype() != dtype || host_landing_.count() < count) {
    host_landing_ = Buffer();
    host_landing_ = Buffer(dtype, count, slice_.place, memory::Kind::CommBuffers);
  }
  return host_landing_.slice(0, count);
}

void GradientReducer::wait_window(int window) {
  while (windows_[static_cast<std::size_t>(window)]->outstanding > 0) complete_front();
}

int GradientReducer::acquire_window(std::int64_t end) {
  int index = -1;
  if (settings_.contiguous_gradients) {
    // Preallocated and reused: one window, or two that alternate so one drains while the
    // next fills (overlap_comm).
    const int pool = window_pool_;
    bool allocated = false;
    if (static_cast<int>(windows_.size()) < pool) {
      auto window = std::make_unique<Window>();
      try {
        allocate_window(*window);
        windows_.push_back(std::move(window));
        index = static_cast<int>(windows_.size()) - 1;
        allocated = true;
      } catch (const memory::OutOfMemory&) {
        // Under the device-memory cap, drain and refill the windows we have.
        if (windows_.empty()) throw;
        window_pool_ = static_cast<int>(windows_.size());
      }
    }
    if (!allocated) {
      const int pool_now = window_pool_;
      index = next_window_ % pool_now;
      wait_window(index);
    }
    ++next_window_;
  } else {
    // A fresh window per bucket, freed once its reductions completed.
    release_idle_windows();
    for (std::size_t i = 0; i < windows_.size(); ++i)
      if (windows_[i]->buffer.empty() && windows_[i]->outstanding == 0) index = static_cast<int>(i);
    if (index < 0) {
      windows_.push_back(std::make_unique<Window>());
      index = static_cast<int>(windows_.size()) - 1;
    }
    allocate_window(*windows_[static_cast<std::size_t>(index)]);
  }
  windows_[static_cast<std::size_t>(index)]->end = end;
  return index;
}

void GradientReducer::allocate_window(Window& window) {
  // reduce_bucket_size bounds a bucket; under the device-memory cap a window shrinks to the
  // largest layer (smaller buckets, more calls) rather than failing.
  for (;;) {
    try {
      window.buffer =
          Buffer(slice_.dtype, window_capacity_, backend_.compute_place(), memory::Kind::Gradients);
      window.capacity = window_capacity_;
      return;
    } catch (const memory::OutOfMemory&) {
      if (window_capacity_ > largest_layer_) {
        window_capacity_ = largest_layer_;
      } else if (!relieve_memory_ || !relieve_memory_()) {
        throw;
      }
    }
  }
}

void GradientReducer::release_idle_windows() {
  if (settings_.contiguous_gradients) return;
  for (std::size_t i = 0; i < windows_.size(); ++i)
    if (static_cast<int>(i) != active_window_ && windows_[i]->outstanding == 0)
      windows_[i]->buffer = Buffer();
}

}  // namespace zt::zero
