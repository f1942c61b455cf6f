// SPDX-License-Identifier: Apache-2.0
#include "optim/lr_schedule.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

namespace zt::optim {
namespace {

constexpr double kPi = 3.14159265358979323846;

// DeepSpeed's warmup fraction at t (0 <= t < warmup_steps): ln(t+1)/ln(N) or t/N.
double warmup_fraction(std::int64_t t, std::int64_t warmup_steps, WarmupType type) {
  if (type == WarmupType::Linear) return static_cast<double>(t) / static_cast<double>(warmup_steps);
  return std::log(static_cast<double>(t + 1)) / std::log(static_cast<double>(warmup_steps));
}

// DeepSpeed clamps warmup_num_steps to at least 2 so that ln(N) > 0.
std::int64_t effective_warmup_steps(std::int64_t warmup_num_steps) {
  return std::max<std::int64_t>(2, warmup_num_steps);
}

class ConstantSchedule final : public LrSchedule {
 public:
  explicit ConstantSchedule(double lr) : lr_(lr) {}
  double lr(std::int64_t) const override { return lr_; }

 private:
  double lr_;
};

// WarmupLR and WarmupDecayLR: lr = min + (max - min) * gamma(t).
class WarmupSchedule final : public LrSchedule {
 public:
  WarmupSchedule(const ScheduleSettings& s, double max_lr, bool decays)
      : min_lr_(s.warmup_min_lr),
        delta_lr_(max_lr - s.warmup_min_lr),
        warmup_steps_(effective_warmup_steps(s.warmup_num_steps)),
        type_(s.warmup_type),
        decays_(decays),
        total_steps_(s.total_num_steps) {}

  double lr(std::int64_t t) const override {
    if (t < 0) return min_lr_;  // DeepSpeed: "before it has started" returns min_lr
    return min_lr_ + delta_lr_ * gamma(t);
  }

 private:
  double gamma(std::int64_t t) const {
    if (t < warmup_steps_) return warmup_fraction(t, warmup_steps_, type_);
    if (!decays_) return 1.0;
    const double remaining = static_cast<double>(total_steps_ - t);
    const double decay_steps = std::max(1.0, static_cast<double>(total_steps_ - warmup_steps_));
    return std::max(0.0, remaining / decay_steps);
  }

  double min_lr_;
  double delta_lr_;
  std::int64_t warmup_steps_;
  WarmupType type_;
  bool decays_;
  std::int64_t total_steps_;
};

class WarmupCosineSchedule final : public LrSchedule {
 public:
  WarmupCosineSchedule(const ScheduleSettings& s, double base_lr)
      : base_lr_(base_lr),
        warmup_min_ratio_(s.warmup_min_ratio),
        cos_min_ratio_(s.cos_min_ratio),
        warmup_steps_(effective_warmup_steps(s.warmup_num_steps)),
        total_steps_(s.total_num_steps),
        type_(s.warmup_type) {
    if (total_steps_ == warmup_steps_)
      throw std::invalid_argument(
          "WarmupCosineLR: total_num_steps (" + std::to_string(total_steps_) +
          ") must differ from warmup_num_steps (" + std::to_string(warmup_steps_) +
          "; at least 2): the cosine phase would have zero length");
  }

  double lr(std::int64_t t) const override {
    if (t < 0) return 0.0;  // DeepSpeed sets lr 0 at construction
    return base_lr_ * ratio(t);
  }

 private:
  double ratio(std::int64_t t) const {
    if (t < warmup_steps_)
      return warmup_min_ratio_ +
             warmup_fraction(t, warmup_steps_, type_) * (1.0 - warmup_min_ratio_);
    const double into_cosine = static_cast<double>(t - warmup_steps_ + 1);
    const double cosine_steps = static_cast<double>(total_steps_ - warmup_steps_);
    const double cosine = (1.0 + std::cos(kPi * into_cosine / cosine_steps)) / 2.0;
    return std::max(0.0, cos_min_ratio_ + (1.0 - cos_min_ratio_) * cosine);
  }

  double base_lr_;
  double warmup_min_ratio_;
  double cos_min_ratio_;
  std::int64_t warmup_steps_;
  std::int64_t total_steps_;
  WarmupType type_;
};

class OneCycleSchedule final : public LrSchedule {
 public:
  explicit OneCycleSchedule(const ScheduleSettings& s) : s_(s) {
    const double second = s.cycle_second_step_size.value_or(s.cycle_first_step_size);
    total_size_ = s.cycle_first_step_size + second;
    // A zero first half makes DeepSpeed divide 0 by 0 at the start of every cycle; a zero
    // second half is fine (the lr only rises).
    if (!(s.cycle_first_step_size > 0.0) || !(second >= 0.0))
      throw std::invalid_argument(
          "OneCycle: cycle_first_step_size must be > 0 and cycle_second_step_size >= 0");
    step_ratio_ = s.cycle_first_step_size / total_size_;
    // DeepSpeed skips a decay whose step size or rate is zero (math.isclose(x, 0) with its
    // default tolerances is true only for exactly 0).
    const bool no_decay_step = s.decay_step_size == 0.0;
    skip_lr_decay_ = no_decay_step || s.decay_lr_rate == 0.0;
    skip_mom_decay_ = no_decay_step || s.decay_mom_rate == 0.0;
  }

  double lr(std::int64_t t) const override {
    if (t < 0) return s_.cycle_min_lr;  // set at construction
    if (in_cycle(t)) return s_.cycle_min_lr + (s_.cycle_max_lr - s_.cycle_min_lr) * scale(t);
    if (skip_lr_decay_) return s_.cycle_min_lr;
    return s_.cycle_min_lr / (1.0 + s_.decay_lr_rate * decay_interval(t));
  }

  std::optional<Betas> betas(std::int64_t t) const override {
    if (!s_.cycle_momentum) return std::nullopt;
    // DeepSpeed's momentum pairs are (cycle_*_mom, 0.99): beta2 is overridden too.
    constexpr double kBeta2 = 0.99;
    if (t < 0) return Betas{s_.cycle_min_mom, kBeta2};  // set at construction
    if (in_cycle(t))
      return Betas{s_.cycle_max_mom - (s_.cycle_max_mom - s_.cycle_min_mom) * scale(t), kBeta2};
    if (skip_mom_decay_) return Betas{s_.cycle_max_mom, kBeta2};
    return Betas{s_.cycle_max_mom * (1.0 + s_.decay_mom_rate * decay_interval(t)), kBeta2};
  }

 private:
  bool in_cycle(std::int64_t t) const { return static_cast<double>(t) < total_size_; }

  // Position in the triangle: rises 0 -> 1 over the first step size, falls back over the second.
  double scale(std::int64_t t) const {
    const double batch = static_cast<double>(t + 1);
    const double cycle = std::floor(1.0 + batch / total_size_);
    const double x = 1.0 + batch / total_size_ - cycle;
    return x <= step_ratio_ ? x / step_ratio_ : (x - 1.0) / (step_ratio_ - 1.0);
  }

  double decay_interval(std::int64_t t) const {
    return (static_cast<double>(t) - total_size_ + 1.0) / s_.decay_step_size;
  }

  ScheduleSettings s_;
  double total_size_ = 0.0;
  double step_ratio_ = 0.0;
  bool skip_lr_decay_ = true;
  bool skip_mom_decay_ = true;
};

class LrRangeTestSchedule final : public LrSchedule {
 public:
  explicit LrRangeTestSchedule(const ScheduleSettings& s)
      : min_lr_(s.lr_range_test_min_lr),
        step_size_(s.lr_range_test_step_size),
        step_rate_(s.lr_range_test_step_rate),
        staircase_(s.lr_range_test_staircase) {
    if (step_size_ == 0.0)
      throw std::invalid_argument("LRRangeTest: lr_range_test_step_size must not be 0");
  }

  double lr(std::int64_t t) const override {
    double interval = static_cast<double>(t + 1) / step_size_;
    if (staircase_) interval = std::floor(interval);
    return min_lr_ * (1.0 + step_rate_ * interval);
  }

 private:
  double min_lr_;
  double step_size_;
  double step_rate_;
  bool staircase_;
};

}  // namespace

LrSchedule::~LrSchedule() = default;

std::optional<Betas> LrSchedule::betas(std::int64_t) const {
  return std::nullopt;
}

std::unique_ptr<LrSchedule> make_schedule(const ScheduleSettings& settings, double optimizer_lr) {
  switch (settings.type) {
    case ScheduleType::Constant:
      return std::make_unique<ConstantSchedule>(optimizer_lr);
    case ScheduleType::WarmupLR:
      return std::make_unique<WarmupSchedule>(
          settings, settings.warmup_max_lr.value_or(optimizer_lr), /*decays=*/false);
    case ScheduleType::WarmupDecayLR:
      return std::make_unique<WarmupSchedule>(settings, settings.warmup_max_lr.value_or(0.001),
                                              /*decays=*/true);
    case ScheduleType::WarmupCosineLR:
      return std::make_unique<WarmupCosineSchedule>(settings, optimizer_lr);
    case ScheduleType::OneCycle:
      return std::make_unique<OneCycleSchedule>(settings);
    case ScheduleType::LRRangeTest:
      return std::make_unique<LrRangeTestSchedule>(settings);
  }
  throw std::invalid_argument("unknown scheduler type");
}

StepHyper step_hyper(const LrSchedule& schedule, const OptimizerSettings& settings,
                     std::int64_t applied_step) {
  if (applied_step < 1)
    throw std::invalid_argument("applied optimizer steps count from 1, got " +
                                std::to_string(applied_step));
  const std::int64_t t = schedule_iteration_for_step(applied_step);
  StepHyper hyper;
  hyper.lr = schedule.lr(t);
  const std::optional<Betas> betas = schedule.betas(t);
  hyper.beta1 = betas ? betas->beta1 : settings.beta1;
  hyper.beta2 = betas ? betas->beta2 : settings.beta2;
  hyper.step = applied_step;
  return hyper;
}

}  // namespace zt::optim
