// SPDX-License-Identifier: Apache-2.0
// The ZeRO training engine: owns the flat parameter, gradient and optimizer buffers of this
// rank, runs forward/backward over the micro-batches of a step, reduces gradients across
// ranks, clips, and steps the optimizer. Nothing here reads the config file: the application
// translates the config into EngineSettings.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "comm/communicator.hpp"
#include "memory/tracker.hpp"
#include "model/gpt.hpp"
#include "optim/lr_schedule.hpp"
#include "optim/optimizer.hpp"
#include "zero/flat_layout.hpp"

namespace zt::zero {

struct EngineSettings {
  int stage = 0;
  int micro_batch = 1;
  int gradient_accumulation_steps = 1;
  int seq_len = 0;
  double gradient_clipping = 0.0;  // 0 disables
  /// Elements per gradient all-reduce call (DeepSpeed's reduce_bucket_size counts elements).
  std::int64_t reduce_bucket_size = 500'000'000;
  bool average_gradients = true;  // gradient_allreduce_op "mean"; false: "sum"
  optim::OptimizerSettings optimizer;
  optim::ScheduleSettings schedule;
  std::uint64_t seed = 42;
};

/// Seconds spent in each phase of a step (summed over micro-batches) on this rank.
struct PhaseTimes {
  double forward = 0;
  double backward = 0;
  double reduction = 0;  // gradient all-reduce, loss reduction
  double optimizer = 0;  // clipping and the optimizer step
  double total = 0;
  PhaseTimes& operator+=(const PhaseTimes& other);
};

struct StepResult {
  std::int64_t step = 0;  // applied optimizer steps so far, this one included
  double loss = 0;        // mean over the global batch
  double grad_norm = 0;   // global norm before clipping (-1 for inf/NaN)
  double lr = 0;          // the learning rate this step used
  bool clipped = false;
  PhaseTimes phases;
};

/// Fills one micro-batch (micro_batch x seq_len inputs and targets) for micro step `micro_step`
/// of the current optimizer step.
using BatchFiller =
    std::function<void(int micro_step, std::int32_t* inputs, std::int32_t* targets)>;

class Engine {
 public:
  /// Collective: every rank of `comm` constructs its engine with the same settings.
  /// Parameters are initialised from `settings.seed` independently of the world size.
  Engine(model::Gpt& model, comm::Communicator& comm, const EngineSettings& settings);

  /// One optimizer step over gradient_accumulation_steps micro-batches. Collective.
  StepResult train_step(const BatchFiller& fill);

  const FlatLayout& layout() const { return layout_; }
  std::int64_t applied_steps() const { return applied_steps_; }
  /// The full parameters (every stage 0 rank holds them all).
  const float* parameters() const { return params_.data(); }
  const model::ParamTable& parameter_table() const { return param_table_; }

 private:
  void reduce_gradients();
  double clip_gradients(bool& clipped);

  model::Gpt& model_;
  comm::Communicator& comm_;
  EngineSettings settings_;
  FlatLayout layout_;
  memory::TrackedBuffer<float> params_;
  memory::TrackedBuffer<float> grads_;
  model::ParamTable param_table_;
  model::GradTable grad_table_;
  std::vector<optim::TensorSegment> segments_;
  std::unique_ptr<optim::Optimizer> optimizer_;
  std::unique_ptr<optim::LrSchedule> schedule_;
  memory::TrackedBuffer<std::int32_t> inputs_;
  memory::TrackedBuffer<std::int32_t> targets_;
  std::int64_t applied_steps_ = 0;
};

}  // namespace zt::zero
