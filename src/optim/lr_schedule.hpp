// SPDX-License-Identifier: Apache-2.0
// Learning-rate schedules with DeepSpeed's formulas (deepspeed/runtime/lr_schedules.py, 0.16.5):
// WarmupLR, WarmupDecayLR, WarmupCosineLR, OneCycle (with momentum cycling), LRRangeTest, and a
// constant schedule when the config has no "scheduler".
//
// Iteration convention. A DeepSpeed scheduler keeps last_batch_iteration, -1 at construction,
// and sets the optimizer's lr (and OneCycle's betas) at construction and after each
// scheduler.step(), which the engine calls after every *applied* optimizer step (not after an
// fp16 overflow-skipped one). So the k-th applied optimizer step (k = 1, 2, ...) runs with
//
//     lr = schedule.lr(k - 2),  betas = schedule.betas(k - 2) if set,  bias-correction t = k,
//
// i.e. the first step uses lr(-1) (the value set at construction: warmup_min_lr for WarmupLR,
// 0 for WarmupCosineLR, cycle_min_lr with beta1 = cycle_min_mom for OneCycle), the second lr(0).
// A checkpoint taken after k applied steps stores last_batch_iteration = k - 1.
// step_hyper() below applies this mapping; the engine should call it rather than index itself.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>

#include "optim/optimizer.hpp"

namespace zt::optim {

enum class ScheduleType {
  Constant,
  WarmupLR,
  WarmupDecayLR,
  WarmupCosineLR,
  OneCycle,
  LRRangeTest
};
enum class WarmupType { Log, Linear };

/// DeepSpeed's scheduler.params (defaults as its constructors; only the fields of `type` matter).
struct ScheduleSettings {
  ScheduleType type = ScheduleType::Constant;

  // WarmupLR, WarmupDecayLR
  double warmup_min_lr = 0.0;
  /// Unset: the optimizer's lr for WarmupLR, 0.001 for WarmupDecayLR (DeepSpeed 0.19).
  std::optional<double> warmup_max_lr;
  std::int64_t warmup_num_steps = 1000;      // also WarmupCosineLR; DeepSpeed uses max(2, this)
  WarmupType warmup_type = WarmupType::Log;  // also WarmupCosineLR
  std::int64_t total_num_steps = 0;          // WarmupDecayLR, WarmupCosineLR (required there)

  // WarmupCosineLR (ratios of the optimizer's lr)
  double warmup_min_ratio = 0.0;
  double cos_min_ratio = 0.0001;

  // OneCycle
  double cycle_min_lr = 0.0;
  double cycle_max_lr = 0.0;
  double decay_lr_rate = 0.0;
  double cycle_first_step_size = 2000;
  std::optional<double> cycle_second_step_size;  // unset: cycle_first_step_size
  double decay_step_size = 0;
  bool cycle_momentum = true;
  double cycle_min_mom = 0.8;
  double cycle_max_mom = 0.9;
  double decay_mom_rate = 0.0;
  // cycle_first/second_stair_count are accepted by DeepSpeed but unused by its formulas.

  // LRRangeTest
  double lr_range_test_min_lr = 1e-3;
  double lr_range_test_step_size = 2000;
  double lr_range_test_step_rate = 1.0;
  bool lr_range_test_staircase = false;
};

struct Betas {
  double beta1;
  double beta2;
};

class LrSchedule {
 public:
  virtual ~LrSchedule();
  /// The lr DeepSpeed's scheduler sets when last_batch_iteration == t (t >= -1).
  virtual double lr(std::int64_t last_batch_iteration) const = 0;
  /// The betas it sets at t, when it cycles momentum (OneCycle); nullopt: the optimizer's own.
  virtual std::optional<Betas> betas(std::int64_t last_batch_iteration) const;
};

/// Builds the schedule; `optimizer_lr` is optimizer.params.lr (WarmupCosineLR multiplies it,
/// Constant returns it, WarmupLR uses it when warmup_max_lr is unset).
/// Throws std::invalid_argument for values whose formulas would divide by zero
/// (DeepSpeed would raise ZeroDivisionError mid-run): OneCycle cycle_first_step_size <= 0 or
/// negative second step size, LRRangeTest step size 0, WarmupCosineLR total == max(2, warmup).
std::unique_ptr<LrSchedule> make_schedule(const ScheduleSettings& settings, double optimizer_lr);

/// The schedule's last_batch_iteration when the engine applies its k-th optimizer step.
inline std::int64_t schedule_iteration_for_step(std::int64_t applied_step) {
  return applied_step - 2;
}

/// Hyperparameters of the k-th applied optimizer step (k >= 1), following the convention above.
StepHyper step_hyper(const LrSchedule& schedule, const OptimizerSettings& settings,
                     std::int64_t applied_step);

}  // namespace zt::optim
