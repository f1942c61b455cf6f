// SPDX-License-Identifier: Apache-2.0
// DeepSpeed's loss scalers (deepspeed/runtime/fp16/loss_scaler.py), step for step.
//
//   LossScaler scaler(settings);                    // settings: config::loss_scaler_values()
//   backward of (loss * scaler.scale());
//   const LossScaleUpdate u = scaler.update(overflow_on_any_rank);   // once per optimizer step
//   if (rank == 0) for (const auto& line : u.messages) log_info(line);
//   if (u.skip_step) { zero the gradients; count a skipped step; do not step the LR schedule; }
//
// The dynamic scaler is DeepSpeed's DynamicLossScaler.update_scale (reference/deepspeed.md §2):
// the scale doubles after `window` consecutive clean steps (first at iteration window-1), halves
// on an overflow once the hysteresis is spent (never below min_scale), has no maximum, and the
// log lines are DeepSpeed's, character for character. At the minimum it throws
// LossScaleAtMinimumError (DeepSpeed raises and the run ends). The static scaler (fp16 with
// loss_scale > 0, and bf16/fp32 with scale 1) never changes; an overflowed step is still skipped
// (DeepSpeed's ZeRO optimizers skip on overflow whatever the scaler) and, as in DeepSpeed
// (whose static update_scale is a no-op), it logs nothing.
//
// Pure host code, no communication: the caller agrees `overflow` across ranks first
// (all-reduce MAX), so every rank's scaler stays identical.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace zt::zero {

/// What a scaler is built from. The defaults are DynamicLossScaler's class defaults, which is what
/// DeepSpeed's ZeRO optimizers use when the fp16 section names no dynamic-scaler key.
struct LossScalerSettings {
  bool dynamic = false;
  double static_scale = 1.0;         // the scale when !dynamic
  double init_scale = 4294967296.0;  // 2^32
  std::int64_t window = 1000;        // scale_window, >= 1
  double min_scale = 1.0;
  int delayed_shift = 1;  // "hysteresis": overflows tolerated before the scale is reduced, >= 1
  bool consecutive_hysteresis = false;  // refill the hysteresis on every clean step
  bool raise_error_at_min_scale = true;
};

/// The mutable part of a scaler, for checkpoints (DeepSpeed pickles the whole object; these are
/// its fields that change). A static scaler keeps cur_iter 0, last_overflow_iter -1.
struct LossScalerState {
  double cur_scale = 1.0;
  std::int64_t cur_iter = 0;
  std::int64_t last_overflow_iter = -1;
  int cur_hysteresis = 1;
};

enum class LossScaleChange {
  kNone,             // clean step without growth, or any step of a static scaler
  kGrown,            // clean step ending a window: scale doubled
  kReduced,          // overflow: scale halved (or clamped to min_scale)
  kHysteresisSpent,  // overflow absorbed by the hysteresis: scale kept, counter decremented
};

/// What one update did.
struct LossScaleUpdate {
  bool skip_step = false;  // the step overflowed: the optimizer must not step (static or dynamic)
  LossScaleChange change = LossScaleChange::kNone;
  double previous_scale = 1.0;  // the scale the step's gradients were computed with
  double scale = 1.0;           // the scale for the next step
  /// DeepSpeed's rank-0 `logger.info` lines, in order (print them on rank 0 only).
  std::vector<std::string> messages;
};

/// Thrown by update(true) when the scale is already at min_scale and raise_error_at_min_scale is
/// set; what() is DeepSpeed's message. The scaler's state is unchanged.
class LossScaleAtMinimumError : public std::runtime_error {
 public:
  LossScaleAtMinimumError();
  static const char* message();
};

class LossScaler {
 public:
  /// Throws std::invalid_argument for a window < 1, a hysteresis < 1 or a non-positive or
  /// non-finite scale (the config reader refuses those before they get here).
  explicit LossScaler(const LossScalerSettings& settings);

  double scale() const { return state_.cur_scale; }
  bool dynamic() const { return settings_.dynamic; }
  const LossScalerSettings& settings() const { return settings_; }

  /// DeepSpeed's update_scale(overflow); call once per optimizer step with the overflow flag
  /// agreed across ranks.
  LossScaleUpdate update(bool overflow);

  LossScalerState state() const { return state_; }
  /// Restores a checkpointed state (settings stay those of the constructor).
  void set_state(const LossScalerState& state);

 private:
  LossScalerSettings settings_;
  LossScalerState state_;
};

/// Python's str(int(value)) for a finite double: the exact decimal integer of its truncation
/// (DeepSpeed formats scales that way, e.g. 4294967296, 1180591620717411303424). Infinity and
/// NaN, where Python raises, give "inf" / "nan".
std::string python_int_text(double value);

}  // namespace zt::zero
