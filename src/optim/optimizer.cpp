// SPDX-License-Identifier: Apache-2.0
#include "optim/optimizer.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>

#include "optim/host_kernels.hpp"

namespace zt::optim {
namespace {

std::string range_text(std::int64_t begin, std::int64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + ")";
}

class AdamOptimizer final : public Optimizer {
 public:
  using Optimizer::Optimizer;

  void begin_step(const std::vector<TensorSegment>& segments, const StepHyper& hyper) override {
    Optimizer::begin_step(segments, hyper);
    constants_ = kernels::make_adam_constants(hyper.lr, hyper.beta1, hyper.beta2, settings_.eps,
                                              settings_.weight_decay, settings_.adam_w_mode,
                                              settings_.bias_correction, hyper.step);
  }

  void update_range(float* params, const float* grads, std::int64_t begin,
                    std::int64_t end) override {
    check_range(begin, end);
    host::adam_update(params, grads, exp_avg_.data() + begin, exp_avg_sq_.data() + begin,
                      end - begin, constants_);
  }

 private:
  kernels::AdamElementConstants constants_{};
};

class LambOptimizer final : public Optimizer {
 public:
  using Optimizer::Optimizer;

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

  void update_range(float* params, const float* grads, std::int64_t begin,
                    std::int64_t end) override {
    check_range(begin, end);
    for_each_overlap(begin, end, [&](std::size_t s, std::int64_t first, std::int64_t last) {
      const host::LambSquareSums sums = host::lamb_update_moments(
          params + (first - begin), grads + (first - begin), exp_avg_.data() + first,
          exp_avg_sq_.data() + first, last - first, constants_);
      norm_sums_[s].weight_sum_of_squares += sums.weight;
      norm_sums_[s].update_sum_of_squares += sums.update;
    });
  }

  void finish_range(float* params, std::int64_t begin, std::int64_t end) override {
    check_range(begin, end);
    const auto min_coeff = static_cast<float>(settings_.min_coeff);
    const auto max_coeff = static_cast<float>(settings_.max_coeff);
    for_each_overlap(begin, end, [&](std::size_t s, std::int64_t first, std::int64_t last) {
      const float trust_ratio =
          kernels::lamb_trust_ratio(norm_sums_[s].weight_sum_of_squares,
                                    norm_sums_[s].update_sum_of_squares, min_coeff, max_coeff);
      host::lamb_apply(params + (first - begin), exp_avg_.data() + first,
                       exp_avg_sq_.data() + first, last - first, trust_ratio, constants_);
    });
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
    : settings_(settings),
      slice_elements_(slice_elements),
      exp_avg_(static_cast<std::size_t>(slice_elements), state_place,
               memory::Kind::OptimizerStates),
      exp_avg_sq_(static_cast<std::size_t>(slice_elements), state_place,
                  memory::Kind::OptimizerStates) {}

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

void Optimizer::finish_range(float* /*params*/, std::int64_t begin, std::int64_t end) {
  check_range(begin, end);
}

void Optimizer::check_range(std::int64_t begin, std::int64_t end) const {
  if (!step_begun_) throw std::logic_error("optimizer range update before begin_step()");
  if (begin < 0 || begin > end || end > slice_elements_)
    throw std::out_of_range("optimizer range " + range_text(begin, end) + " outside the slice of " +
                            std::to_string(slice_elements_) + " elements");
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
  return {{"exp_avg", exp_avg_.data(), slice_elements_},
          {"exp_avg_sq", exp_avg_sq_.data(), slice_elements_}};
}

std::int64_t Optimizer::state_bytes() const {
  return static_cast<std::int64_t>((exp_avg_.size() + exp_avg_sq_.size()) * sizeof(float));
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

}  // namespace zt::optim
