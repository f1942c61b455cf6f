// SPDX-License-Identifier: Apache-2.0
#include "optim/optimizer.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>

#include "optim/host_kernels.hpp"

namespace zt::optim {
namespace {

std::string range_text(std::int64_t begin, std::int64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + ")";
}

class AdamOptimizer final : public Optimizer {
 public:
  using Optimizer::finish_range;
  using Optimizer::Optimizer;
  using Optimizer::update_range;

  void begin_step(const std::vector<TensorSegment>& segments, const StepHyper& hyper) override {
    Optimizer::begin_step(segments, hyper);
    constants_ = kernels::make_adam_constants(hyper.lr, hyper.beta1, hyper.beta2, settings_.eps,
                                              settings_.weight_decay, settings_.adam_w_mode,
                                              settings_.bias_correction, hyper.step);
  }

  void update_range(float* master, const GradientInput& grads, std::int64_t begin, std::int64_t end,
                    const ParameterOutput& out) override {
    check_range(begin, end);
    const StateRange states = states_at(begin, end);
    host::adam_step(master, grads.data, grads.dtype, grads.multiplier, states.exp_avg,
                    states.exp_avg_sq, end - begin, constants_, out.data, out.dtype);
  }

 private:
  kernels::AdamElementConstants constants_{};
};

class LambOptimizer final : public Optimizer {
 public:
  using Optimizer::finish_range;
  using Optimizer::Optimizer;
  using Optimizer::update_range;

  bool needs_tensor_norms() const override { return true; }

  void begin_step(const std::vector<TensorSegment>& segments, const StepHyper& hyper) override {
    Optimizer::begin_step(segments, hyper);
    constants_ = kernels::make_lamb_constants(hyper.lr, hyper.beta1, hyper.beta2, settings_.eps,
                                              settings_.weight_decay, settings_.eps_inside_sqrt,
                                              settings_.bias_correction, hyper.step);
    norm_sums_.clear();
    for (const TensorSegment& segment : segments)
      norm_sums_.push_back({segment.tensor_index, segment.whole_tensor, 0.0, 0.0});
  }

  void update_range(float* master, const GradientInput& grads, std::int64_t begin, std::int64_t end,
                    const ParameterOutput& /*out: written by finish_range*/) override {
    check_range(begin, end);
    const StateRange states = states_at(begin, end);
    const int grad_size = kernels::size_of(grads.dtype);
    for_each_overlap(begin, end, [&](std::size_t s, std::int64_t first, std::int64_t last) {
      const std::int64_t at = first - begin;
      const host::LambSquareSums sums = host::lamb_update_moments(
          master + at, static_cast<const char*>(grads.data) + at * grad_size, grads.dtype,
          grads.multiplier, states.exp_avg + at, states.exp_avg_sq + at, last - first, constants_);
      norm_sums_[s].weight_sum_of_squares += sums.weight;
      norm_sums_[s].update_sum_of_squares += sums.update;
    });
  }

  void finish_range(float* master, std::int64_t begin, std::int64_t end,
                    const ParameterOutput& out) override {
    check_range(begin, end);
    const StateRange states = states_at(begin, end);
    const auto min_coeff = static_cast<float>(settings_.min_coeff);
    const auto max_coeff = static_cast<float>(settings_.max_coeff);
    const int out_size = kernels::size_of(out.dtype);
    auto out_at = [&](std::int64_t at) -> void* {
      return out.data == nullptr ? nullptr : static_cast<char*>(out.data) + at * out_size;
    };
    // Elements outside every segment (padding) keep their value, but their copy is still
    // written, so the copy of a range is complete whatever the segments.
    std::int64_t copied_to = begin;
    auto copy_gap = [&](std::int64_t until) {
      if (out.data != nullptr && copied_to < until)
        host::convert_from_float(master + (copied_to - begin), until - copied_to,
                                 out_at(copied_to - begin), out.dtype);
    };
    for_each_overlap(begin, end, [&](std::size_t s, std::int64_t first, std::int64_t last) {
      copy_gap(first);
      copied_to = last;
      const float trust_ratio =
          kernels::lamb_trust_ratio(norm_sums_[s].weight_sum_of_squares,
                                    norm_sums_[s].update_sum_of_squares, min_coeff, max_coeff);
      const std::int64_t at = first - begin;
      host::lamb_apply(master + at, states.exp_avg + at, states.exp_avg_sq + at, last - first,
                       trust_ratio, constants_, out_at(at), out.dtype);
    });
    copy_gap(end);
  }

 private:
  // Calls visit(segment_index, first, last) for each segment's overlap [first, last) with
  // [begin, end), in slice coordinates.
  template <class Visit>
  void for_each_overlap(std::int64_t begin, std::int64_t end, Visit&& visit) const {
    const std::vector<TensorSegment>& all = segments();
    for (std::size_t s = 0; s < all.size(); ++s) {
      const std::int64_t first = std::max(begin, all[s].offset_in_slice);
      const std::int64_t last = std::min(end, all[s].offset_in_slice + all[s].length);
      if (first < last) visit(s, first, last);
    }
  }

  kernels::LambElementConstants constants_{};
};

}  // namespace

std::vector<double> pack_split_norm_sums(const std::vector<TensorNormSums>& sums,
                                         std::int64_t tensor_count) {
  std::vector<double> packed(static_cast<std::size_t>(2 * tensor_count), 0.0);
  for (const TensorNormSums& entry : sums) {
    if (entry.whole_tensor) continue;
    if (entry.tensor_index < 0 || entry.tensor_index >= tensor_count)
      throw std::out_of_range("tensor_index " + std::to_string(entry.tensor_index) +
                              " outside [0, " + std::to_string(tensor_count) + ")");
    packed[2 * entry.tensor_index] += entry.weight_sum_of_squares;
    packed[2 * entry.tensor_index + 1] += entry.update_sum_of_squares;
  }
  return packed;
}

void unpack_split_norm_sums(const std::vector<double>& reduced, std::vector<TensorNormSums>& sums) {
  for (TensorNormSums& entry : sums) {
    if (entry.whole_tensor) continue;
    const auto index = static_cast<std::size_t>(2 * entry.tensor_index);
    if (index + 1 >= reduced.size())
      throw std::out_of_range("reduced norm vector too short for tensor_index " +
                              std::to_string(entry.tensor_index));
    entry.weight_sum_of_squares = reduced[index];
    entry.update_sum_of_squares = reduced[index + 1];
  }
}

Optimizer::Optimizer(const OptimizerSettings& settings, std::int64_t slice_elements,
                     memory::Place state_place)
    : settings_(settings), slice_elements_(slice_elements) {
  add_part(0, slice_elements, state_place);
}

Optimizer::Optimizer(const OptimizerSettings& settings, std::int64_t slice_elements,
                     const StatePlacement& placement)
    : settings_(settings), slice_elements_(slice_elements) {
  if (placement.host_elements < 0 || placement.host_elements > slice_elements)
    throw std::invalid_argument("optimizer states: " + std::to_string(placement.host_elements) +
                                " host elements outside a slice of " +
                                std::to_string(slice_elements));
  add_part(0, placement.host_elements,
           placement.host_states_swapped ? memory::Place::Nvme : memory::Place::Host);
  add_part(placement.host_elements, slice_elements - placement.host_elements,
           memory::Place::Device);
}

void Optimizer::add_part(std::int64_t offset, std::int64_t size, memory::Place place) {
  if (size <= 0) return;
  StatePart part;
  part.offset = offset;
  part.size = size;
  part.place = place;
  if (place == memory::Place::Nvme) {  // in swap files; bound range by range
    parts_.push_back(std::move(part));
    return;
  }
  part.exp_avg = memory::TrackedBuffer<float>(static_cast<std::size_t>(size), place,
                                              memory::Kind::OptimizerStates);
  part.exp_avg_sq = memory::TrackedBuffer<float>(static_cast<std::size_t>(size), place,
                                                 memory::Kind::OptimizerStates);
  parts_.push_back(std::move(part));
}

std::ptrdiff_t Optimizer::part_of(std::int64_t begin, std::int64_t end) const {
  for (std::size_t p = 0; p < parts_.size(); ++p)
    if (begin >= parts_[p].offset && end <= parts_[p].offset + parts_[p].size)
      return static_cast<std::ptrdiff_t>(p);
  return -1;
}

Optimizer::StateRange Optimizer::states_at(std::int64_t begin, std::int64_t end) {
  // An empty range touches no state (and an empty slice has no buffers).
  const std::ptrdiff_t p = begin < end ? part_of(begin, end) : -1;
  if (p < 0) return {};
  StatePart& part = parts_[static_cast<std::size_t>(p)];
  if (part.place == memory::Place::Nvme) {
    if (begin < part.bound_begin || end > part.bound_end)
      throw std::logic_error("optimizer range " + range_text(begin, end) +
                             " of swapped states outside the bound range " +
                             range_text(part.bound_begin, part.bound_end));
    return {part.bound_exp_avg + (begin - part.bound_begin),
            part.bound_exp_avg_sq + (begin - part.bound_begin)};
  }
  return {part.exp_avg.data() + (begin - part.offset),
          part.exp_avg_sq.data() + (begin - part.offset)};
}

void Optimizer::bind_swapped_states(std::int64_t begin, std::int64_t end, float* exp_avg,
                                    float* exp_avg_sq) {
  const std::ptrdiff_t p = begin < end ? part_of(begin, end) : -1;
  if (p < 0 || parts_[static_cast<std::size_t>(p)].place != memory::Place::Nvme)
    throw std::logic_error("optimizer range " + range_text(begin, end) +
                           " is not one of swapped states");
  StatePart& part = parts_[static_cast<std::size_t>(p)];
  part.bound_begin = begin;
  part.bound_end = end;
  part.bound_exp_avg = exp_avg;
  part.bound_exp_avg_sq = exp_avg_sq;
}

Optimizer::~Optimizer() = default;

void Optimizer::begin_step(const std::vector<TensorSegment>& segments, const StepHyper& hyper) {
  if (hyper.step < 1)
    throw std::invalid_argument("optimizer step count must start at 1, got " +
                                std::to_string(hyper.step));
  std::int64_t previous_end = 0;
  for (const TensorSegment& segment : segments) {
    if (segment.length < 0 || segment.offset_in_slice < previous_end ||
        segment.offset_in_slice + segment.length > slice_elements_)
      throw std::invalid_argument(
          "segment of tensor " + std::to_string(segment.tensor_index) + " at " +
          range_text(segment.offset_in_slice, segment.offset_in_slice + segment.length) +
          " is unsorted, overlapping or outside the slice of " + std::to_string(slice_elements_) +
          " elements");
    previous_end = segment.offset_in_slice + segment.length;
  }
  segments_ = segments;
  hyper_ = hyper;
  step_begun_ = true;
}

void Optimizer::finish_range(float* /*master*/, std::int64_t begin, std::int64_t end,
                             const ParameterOutput& /*out*/) {
  check_range(begin, end);
}

void Optimizer::check_range(std::int64_t begin, std::int64_t end) const {
  if (!step_begun_) throw std::logic_error("optimizer range update before begin_step()");
  if (begin < 0 || begin > end || end > slice_elements_)
    throw std::out_of_range("optimizer range " + range_text(begin, end) + " outside the slice of " +
                            std::to_string(slice_elements_) + " elements");
  if (begin < end && part_of(begin, end) < 0)
    throw std::invalid_argument("optimizer range " + range_text(begin, end) +
                                " straddles the split of the states between host and device at " +
                                std::to_string(parts_.front().offset + parts_.front().size));
}

void Optimizer::step(float* params, const float* grads, std::int64_t n,
                     const std::vector<TensorSegment>& segments, const StepHyper& hyper,
                     const NormReducer& reducer) {
  if (n != slice_elements_)
    throw std::invalid_argument("optimizer step over " + std::to_string(n) +
                                " elements, but the slice has " + std::to_string(slice_elements_));
  begin_step(segments, hyper);
  update_range(params, grads, 0, n);
  if (!needs_tensor_norms()) return;
  const bool has_split_tensor =
      std::any_of(segments.begin(), segments.end(),
                  [](const TensorSegment& segment) { return !segment.whole_tensor; });
  if (has_split_tensor) {
    if (!reducer)
      throw std::logic_error(
          "LAMB on a slice that splits a tensor needs a NormReducer to complete its norms");
    reducer(norm_sums_);
  }
  finish_range(params, 0, n);
}

std::vector<StateTensor> Optimizer::state() {
  std::vector<StateTensor> views;
  for (StatePart& part : parts_)
    views.push_back({"exp_avg", part.exp_avg.data(), part.size, part.offset, part.place});
  for (StatePart& part : parts_)
    views.push_back({"exp_avg_sq", part.exp_avg_sq.data(), part.size, part.offset, part.place});
  return views;
}

std::int64_t Optimizer::state_bytes() const {
  std::int64_t bytes = 0;
  for (const StatePart& part : parts_)
    bytes +=
        static_cast<std::int64_t>((part.exp_avg.size() + part.exp_avg_sq.size()) * sizeof(float));
  return bytes;
}

std::int64_t Optimizer::state_bytes(memory::Place place) const {
  std::int64_t bytes = 0;
  for (const StatePart& part : parts_)
    if (part.place == place && place == memory::Place::Nvme)
      bytes += 2 * part.size * static_cast<std::int64_t>(sizeof(float));
    else if (part.place == place)
      bytes +=
          static_cast<std::int64_t>((part.exp_avg.size() + part.exp_avg_sq.size()) * sizeof(float));
  return bytes;
}

std::unique_ptr<Optimizer> make_optimizer(const OptimizerSettings& settings,
                                          std::int64_t slice_elements, memory::Place state_place) {
  if (slice_elements < 0)
    throw std::invalid_argument("negative slice length " + std::to_string(slice_elements));
  switch (settings.type) {
    case OptimizerType::Adam:
      return std::make_unique<AdamOptimizer>(settings, slice_elements, state_place);
    case OptimizerType::Lamb:
      return std::make_unique<LambOptimizer>(settings, slice_elements, state_place);
  }
  throw std::invalid_argument("unknown optimizer type");
}

std::unique_ptr<Optimizer> make_optimizer(const OptimizerSettings& settings,
                                          std::int64_t slice_elements,
                                          const StatePlacement& placement) {
  if (slice_elements < 0)
    throw std::invalid_argument("negative slice length " + std::to_string(slice_elements));
  switch (settings.type) {
    case OptimizerType::Adam:
      return std::make_unique<AdamOptimizer>(settings, slice_elements, placement);
    case OptimizerType::Lamb:
      return std::make_unique<LambOptimizer>(settings, slice_elements, placement);
  }
  throw std::invalid_argument("unknown optimizer type");
}

}  // namespace zt::optim
