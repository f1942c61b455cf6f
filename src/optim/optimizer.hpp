// SPDX-License-Identifier: Apache-2.0
// Optimizers (Adam/AdamW as DeepSpeed's FusedAdam/CPUAdam, LAMB as its FusedLamb) that update a
// rank's contiguous slice of the flat fp32 master-parameter buffer.
//
// The slice holds all of the model's tensors back to back (plus padding); the ZeRO engine
// describes how the slice cuts them with TensorSegments. The optimizer owns the states of its
// slice (exp_avg, exp_avg_sq; fp32, allocated through the memory tracker as OptimizerStates).
//
// Protocol of one optimizer step (what step() does for the whole slice at once):
//
//   optimizer.begin_step(segments, hyper);                  // once per applied step
//   for each piece [b, e) of the slice (sub_group_size pieces, in any order, each once):
//     optimizer.update_range(master + b, {grads + b, dtype, multiplier}, b, e, {copy + b, dtype});
//   if (optimizer.needs_tensor_norms()) {                   // LAMB only
//     complete optimizer.tensor_norm_sums() across ranks    // see pack/unpack_split_norm_sums
//     for each piece [b, e): optimizer.finish_range(master + b, b, e, {copy + b, dtype});
//   }
//
// Every pointer points at slice element b of its array. The update is one fused pass over
// memory (host_kernels.hpp): it reads the gradient in its own dtype (fp32, fp16, bf16) and
// multiplies it by `multiplier` (the unscale and clip factor) on the fly, updates the fp32
// master and both moments in place, and writes the 16-bit (or fp32) parameter copy the model
// reads, so ZeRO-Offload's CPU step touches each byte once. Adam writes the copy in
// update_range, LAMB in finish_range (its master only changes there). The fp32-only overloads
// (no multiplier, no copy) remain for callers that convert separately.
//
// Adam does the whole update in update_range. LAMB's update_range updates the moments and
// accumulates per-tensor sums of squares of weights and directions; finish_range applies the
// update scaled by each tensor's trust ratio. Tensors wholly inside the slice (whole_tensor,
// e.g. stage 0) need no communication; for a tensor split across ranks each rank holds partial
// sums, which the engine must add up across ranks between the phases (one all-reduce of
// pack_split_norm_sums' vector, or a NormReducer given to step()).
//
// Elements not covered by any segment (padding) are updated by Adam (they stay zero: zero
// gradient, zero weight) and left alone by LAMB, which still writes their parameter copy.
//
// States may be split between places (StatePlacement): slice elements [0, host_elements) on the
// host, the rest on the device, as ZeRO-Offload's partial offload (`ratio`) wants. A range
// given to update_range / finish_range must then lie on one side of the split.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "kernels/ops/dtype.hpp"
#include "kernels/ops/optimizer_ops.hpp"
#include "memory/tracker.hpp"

namespace zt::optim {

enum class OptimizerType {
  Adam,  // "Adam" and "AdamW"; adam_w_mode picks decoupled decay
  Lamb,
};

/// How the slice cuts one model tensor: the tensor's elements that fall in the slice are
/// slice[offset_in_slice, offset_in_slice + length). whole_tensor is false when the tensor
/// continues in another rank's slice.
struct TensorSegment {
  std::int64_t offset_in_slice = 0;
  std::int64_t length = 0;
  std::int64_t tensor_index = 0;  // the tensor's index in the model's registration order
  bool whole_tensor = true;
};

/// DeepSpeed's optimizer.params, defaults as DeepSpeed's constructors.
/// type "Adam" with adam_w_mode true (DeepSpeed's default) and type "AdamW" are both AdamW.
struct OptimizerSettings {
  OptimizerType type = OptimizerType::Adam;
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  bool adam_w_mode = true;  // Adam: decoupled weight decay (p -= lr*wd*p); false: L2 in grad
  bool bias_correction = true;
  double max_coeff = 10.0;  // LAMB trust ratio clamp
  double min_coeff = 0.01;
  bool eps_inside_sqrt = false;  // LAMB: sqrt(v + eps) instead of sqrt(v) + eps
};

/// Per-step hyperparameters. Build it with step_hyper() (lr_schedule.hpp), which applies
/// DeepSpeed's scheduler/step indexing.
struct StepHyper {
  double lr = 1e-3;
  double beta1 = 0.9;    // cycled by OneCycle
  double beta2 = 0.999;  // OneCycle with cycle_momentum sets it to 0.99, as DeepSpeed does
  /// Number of this update counting applied (not overflow-skipped) steps; 1 for the first.
  /// Used for bias correction.
  std::int64_t step = 1;
};

/// The gradients of one range: `data` points at the range's first element, of `dtype` (F32, F16,
/// BF16); the optimizer uses float(data[i]) * multiplier, rounded to float once.
struct GradientInput {
  const void* data = nullptr;
  kernels::DType dtype = kernels::DType::F32;
  float multiplier = 1.0f;
};

/// Where to write the updated parameters rounded to `dtype` (the copy the model computes with),
/// pointing at the range's first element; data null: no copy.
struct ParameterOutput {
  void* data = nullptr;
  kernels::DType dtype = kernels::DType::F32;
};

/// Where the optimizer states live: slice elements [0, host_elements) of every state at
/// Place::Host, the rest at Place::Device (two tracked buffers per state when both are used).
struct StatePlacement {
  std::int64_t host_elements = 0;
  /// NVMe offload: the host part's states live in swap files; the caller binds host buffers
  /// holding one range of them at a time (bind_swapped_states) before updating that range.
  bool host_states_swapped = false;
};

/// A view of one contiguous buffer of one state array, for checkpoints and swapping: slice
/// elements [offset, offset + size). A state split between places has one view per place.
struct StateTensor {
  std::string name;  // "exp_avg", "exp_avg_sq" (DeepSpeed's names)
  float* data = nullptr;
  std::int64_t size = 0;
  std::int64_t offset = 0;  // first slice element in `data`
  memory::Place place = memory::Place::Device;
};

/// Partial (then, after the engine's reduction, complete) sums of squares of one segment's
/// tensor: weights and LAMB directions. One entry per segment, in the order of the segments.
struct TensorNormSums {
  std::int64_t tensor_index = 0;
  bool whole_tensor = true;
  double weight_sum_of_squares = 0.0;
  double update_sum_of_squares = 0.0;
};

/// Completes the sums of the entries with whole_tensor == false across ranks, in place.
using NormReducer = std::function<void(std::vector<TensorNormSums>& sums)>;

/// Dense vector of 2 * tensor_count doubles: [2k] = weight, [2k+1] = update sum of squares of
/// tensor k, filled from this rank's split (whole_tensor == false) entries, zero elsewhere.
/// All-reduce it (sum) across the ranks that share tensors, then unpack_split_norm_sums.
std::vector<double> pack_split_norm_sums(const std::vector<TensorNormSums>& sums,
                                         std::int64_t tensor_count);
/// Copies the reduced totals back into the split entries.
void unpack_split_norm_sums(const std::vector<double>& reduced, std::vector<TensorNormSums>& sums);

class Optimizer {
 public:
  /// All states at state_place.
  Optimizer(const OptimizerSettings& settings, std::int64_t slice_elements,
            memory::Place state_place);
  /// States split between host and device (std::invalid_argument unless 0 <= host_elements <=
  /// slice_elements).
  Optimizer(const OptimizerSettings& settings, std::int64_t slice_elements,
            const StatePlacement& placement);
  virtual ~Optimizer();
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  const OptimizerSettings& settings() const { return settings_; }
  std::int64_t slice_elements() const { return slice_elements_; }

  /// One whole step over the slice: params and grads point at slice element 0, n must equal
  /// slice_elements(). For LAMB with split tensors, `reducer` must be given (else
  /// std::logic_error).
  void step(float* params, const float* grads, std::int64_t n,
            const std::vector<TensorSegment>& segments, const StepHyper& hyper,
            const NormReducer& reducer = nullptr);

  /// Starts a step (see the protocol above). Segments must be sorted by offset, disjoint and
  /// inside the slice (std::invalid_argument otherwise).
  virtual void begin_step(const std::vector<TensorSegment>& segments, const StepHyper& hyper);
  /// Updates slice elements [begin, end). `master`, `grads.data` and `out.data` point at element
  /// `begin`. Adam writes `out`; LAMB ignores it here (see finish_range).
  virtual void update_range(float* master, const GradientInput& grads, std::int64_t begin,
                            std::int64_t end, const ParameterOutput& out = {}) = 0;
  /// update_range with fp32 gradients, multiplier 1, no parameter copy.
  void update_range(float* params, const float* grads, std::int64_t begin, std::int64_t end) {
    update_range(params, GradientInput{grads, kernels::DType::F32, 1.0f}, begin, end);
  }
  /// True when the step needs per-tensor norms between update_range and finish_range.
  virtual bool needs_tensor_norms() const { return false; }
  /// Per-segment sums filled by update_range (empty for Adam).
  std::vector<TensorNormSums>& tensor_norm_sums() { return norm_sums_; }
  /// Second pass over [begin, end) (LAMB: applies the update and writes `out`); nothing for
  /// Adam, whose copy was written by update_range.
  virtual void finish_range(float* master, std::int64_t begin, std::int64_t end,
                            const ParameterOutput& out = {});

  /// The state arrays, for checkpoints and NVMe swapping (writable: a restore fills them): one
  /// view per state and contiguous buffer, all of exp_avg's in slice order, then exp_avg_sq's.
  std::vector<StateTensor> state();
  /// NVMe offload: the swapped states of slice elements [begin, end) are at `exp_avg` and
  /// `exp_avg_sq` until the next bind; update_range / finish_range of a swapped range must lie
  /// inside the bound one (std::logic_error otherwise).
  void bind_swapped_states(std::int64_t begin, std::int64_t end, float* exp_avg, float* exp_avg_sq);

  /// Bytes of optimizer state owned (2 fp32 arrays of the slice's length; swapped states at
  /// Place::Nvme are counted there, not owned).
  std::int64_t state_bytes() const;
  /// The part of state_bytes() at `place`.
  std::int64_t state_bytes(memory::Place place) const;

 protected:
  /// The moments of slice elements [begin, end), which lie in one buffer.
  struct StateRange {
    float* exp_avg = nullptr;
    float* exp_avg_sq = nullptr;
  };

  /// Checks that a step has begun, that [begin, end) is inside the slice (std::out_of_range) and
  /// that it does not straddle the host/device split (std::invalid_argument).
  void check_range(std::int64_t begin, std::int64_t end) const;
  /// The moments at slice element `begin` of a range that passed check_range.
  StateRange states_at(std::int64_t begin, std::int64_t end);
  const std::vector<TensorSegment>& segments() const { return segments_; }
  const StepHyper& hyper() const { return hyper_; }

  OptimizerSettings settings_;
  std::int64_t slice_elements_;
  std::vector<TensorNormSums> norm_sums_;

 private:
  /// One contiguous part of the slice with its states in one place.
  struct StatePart {
    std::int64_t offset = 0;
    std::int64_t size = 0;
    memory::Place place = memory::Place::Device;
    memory::TrackedBuffer<float> exp_avg;
    memory::TrackedBuffer<float> exp_avg_sq;
    // Place::Nvme: the bound range [bound_begin, bound_end) and its buffers.
    std::int64_t bound_begin = 0;
    std::int64_t bound_end = 0;
    float* bound_exp_avg = nullptr;
    float* bound_exp_avg_sq = nullptr;
  };
  void add_part(std::int64_t offset, std::int64_t size, memory::Place place);
  /// The index of the part holding [begin, end), -1 when the range straddles two parts.
  std::ptrdiff_t part_of(std::int64_t begin, std::int64_t end) const;

  std::vector<StatePart> parts_;  // sorted by offset, covering the slice
  std::vector<TensorSegment> segments_;
  StepHyper hyper_;
  bool step_begun_ = false;
};

/// Creates the optimizer for `settings.type`. States (2 x slice_elements floats) are allocated
/// as TrackedBuffer(Place state_place, Kind::OptimizerStates): Device normally, Host with
/// offload_optimizer (the engine decides).
std::unique_ptr<Optimizer> make_optimizer(const OptimizerSettings& settings,
                                          std::int64_t slice_elements,
                                          memory::Place state_place = memory::Place::Device);

/// Creates the optimizer with its states split between host and device (see StatePlacement).
std::unique_ptr<Optimizer> make_optimizer(const OptimizerSettings& settings,
                                          std::int64_t slice_elements,
                                          const StatePlacement& placement);

}  // namespace zt::optim
