// SPDX-License-Identifier: Apache-2.0
// Every schedule at t = -1 (construction), around the warmup boundary and in the decay/cosine
// phases, against reference_values.py (DeepSpeed lr_schedules.py formulas).
#include <gtest/gtest.h>

#include <cmath>
#include <stdexcept>
#include <vector>

#include "optim/lr_schedule.hpp"

namespace zt::optim {
namespace {

void expect_lrs(const LrSchedule& schedule, const std::vector<std::int64_t>& iterations,
                const std::vector<double>& expected) {
  ASSERT_EQ(iterations.size(), expected.size());
  for (std::size_t i = 0; i < iterations.size(); ++i)
    EXPECT_NEAR(schedule.lr(iterations[i]), expected[i], 1e-15)
        << "last_batch_iteration " << iterations[i];
}

ScheduleSettings warmup(ScheduleType type, WarmupType warmup_type) {
  ScheduleSettings settings;
  settings.type = type;
  settings.warmup_min_lr = 0.001;
  settings.warmup_max_lr = 0.01;
  settings.warmup_num_steps = 10;
  settings.warmup_type = warmup_type;
  return settings;
}

TEST(LrSchedule, ConstantWithoutScheduler) {
  auto schedule = make_schedule(ScheduleSettings{}, 0.02);
  expect_lrs(*schedule, {-1, 0, 1000}, {0.02, 0.02, 0.02});
  EXPECT_FALSE(schedule->betas(0).has_value());
}

TEST(LrSchedule, WarmupLrLog) {
  auto schedule = make_schedule(warmup(ScheduleType::WarmupLR, WarmupType::Log), 0.5);
  expect_lrs(*schedule, {-1, 0, 1, 5, 9, 10, 11, 50},
             {0.001, 0.001, 0.0037092699609758304, 0.008003361253452792, 0.010000000000000002,
              0.010000000000000002, 0.010000000000000002, 0.010000000000000002});
}

TEST(LrSchedule, WarmupLrLinear) {
  auto schedule = make_schedule(warmup(ScheduleType::WarmupLR, WarmupType::Linear), 0.5);
  expect_lrs(*schedule, {-1, 0, 1, 5, 9, 10, 11, 50},
             {0.001, 0.001, 0.0019000000000000002, 0.0055000000000000005, 0.0091,
              0.010000000000000002, 0.010000000000000002, 0.010000000000000002});
}

TEST(LrSchedule, WarmupLrMaxDefaultsToOptimizerLr) {
  ScheduleSettings settings = warmup(ScheduleType::WarmupLR, WarmupType::Linear);
  settings.warmup_max_lr.reset();
  auto schedule = make_schedule(settings, 0.5);
  EXPECT_DOUBLE_EQ(schedule->lr(100), 0.5);
}

TEST(LrSchedule, WarmupNumStepsBelowTwoActsAsTwo) {
  ScheduleSettings settings = warmup(ScheduleType::WarmupLR, WarmupType::Log);
  settings.warmup_num_steps = 1;
  auto schedule = make_schedule(settings, 0.5);
  EXPECT_DOUBLE_EQ(schedule->lr(0), 0.001);
  EXPECT_DOUBLE_EQ(schedule->lr(1), 0.001 + 0.009 * std::log(2.0) / std::log(2.0));
}

TEST(LrSchedule, WarmupDecayLrLinearWarmupThenLinearDecayToZero) {
  ScheduleSettings settings = warmup(ScheduleType::WarmupDecayLR, WarmupType::Linear);
  settings.warmup_min_lr = 0.0;
  settings.total_num_steps = 20;
  auto schedule = make_schedule(settings, 0.5);
  expect_lrs(
      *schedule, {-1, 0, 5, 9, 10, 11, 15, 19, 20, 25},
      {0.0, 0.0, 0.005, 0.009000000000000001, 0.01, 0.009000000000000001, 0.005, 0.001, 0.0, 0.0});
  settings.warmup_max_lr.reset();
  EXPECT_DOUBLE_EQ(make_schedule(settings, 0.5)->lr(10), 0.001);  // its own default, not lr
}

TEST(LrSchedule, WarmupCosineLrMultipliesOptimizerLr) {
  ScheduleSettings settings;
  settings.type = ScheduleType::WarmupCosineLR;
  settings.total_num_steps = 20;
  settings.warmup_num_steps = 10;
  settings.warmup_min_ratio = 0.1;
  settings.cos_min_ratio = 0.01;
  auto schedule = make_schedule(settings, 0.1);
  // t = -1: lr 0 at construction; t = 19: cosine end = base * cos_min_ratio; past the end the
  // formula rises again, exactly as DeepSpeed's.
  expect_lrs(
      *schedule, {-1, 0, 1, 9, 10, 11, 15, 19, 20, 25},
      {0.0, 0.010000000000000002, 0.037092699609758306, 0.1, 0.09757729755661011,
       0.09054634122155991, 0.03520365877844011, 0.001, 0.003422702443389889, 0.06579634122155989});
  settings.total_num_steps = 10;
  EXPECT_THROW(make_schedule(settings, 0.1), std::invalid_argument);
}

TEST(LrSchedule, OneCycleBothHalvesThenDecayWithMomentum) {
  ScheduleSettings settings;
  settings.type = ScheduleType::OneCycle;
  settings.cycle_min_lr = 0.001;
  settings.cycle_max_lr = 0.01;
  settings.cycle_first_step_size = 4;
  settings.cycle_second_step_size = 6;
  settings.decay_lr_rate = 0.5;
  settings.decay_step_size = 2;
  settings.cycle_min_mom = 0.85;
  settings.cycle_max_mom = 0.95;
  settings.decay_mom_rate = 0.1;
  auto schedule = make_schedule(settings, 0.5);
  const std::vector<std::int64_t> ts = {-1, 0, 1, 3, 4, 5, 8, 9, 10, 11, 13};
  expect_lrs(
      *schedule, ts,
      {0.001, 0.0032500000000000025, 0.0055, 0.009999999999999998, 0.0085, 0.006999999999999999,
       0.0025000000000000014, 0.001, 0.0008, 0.0006666666666666666, 0.0005});
  const std::vector<double> beta1 = {0.85,
                                     0.9249999999999999,
                                     0.9,
                                     0.85,
                                     0.8666666666666667,
                                     0.8833333333333333,
                                     0.9333333333333332,
                                     0.95,
                                     0.9974999999999999,
                                     1.045,
                                     1.14};
  for (std::size_t i = 0; i < ts.size(); ++i) {
    const std::optional<Betas> betas = schedule->betas(ts[i]);
    ASSERT_TRUE(betas.has_value());
    EXPECT_NEAR(betas->beta1, beta1[i], 1e-15) << "t " << ts[i];
    EXPECT_DOUBLE_EQ(betas->beta2, 0.99);
  }
}

TEST(LrSchedule, OneCycleWithoutDecayOrMomentum) {
  ScheduleSettings settings;
  settings.type = ScheduleType::OneCycle;
  settings.cycle_min_lr = 0.001;
  settings.cycle_max_lr = 0.01;
  settings.cycle_first_step_size = 4;  // second half defaults to the first
  settings.cycle_momentum = false;
  auto schedule = make_schedule(settings, 0.5);
  EXPECT_DOUBLE_EQ(schedule->lr(3), 0.01);     // peak at t + 1 = first step size
  EXPECT_DOUBLE_EQ(schedule->lr(100), 0.001);  // no decay configured: stays at min
  EXPECT_FALSE(schedule->betas(3).has_value());
}

TEST(LrSchedule, LrRangeTestContinuousAndStaircase) {
  ScheduleSettings settings;
  settings.type = ScheduleType::LRRangeTest;
  settings.lr_range_test_min_lr = 0.001;
  settings.lr_range_test_step_size = 4;
  settings.lr_range_test_step_rate = 0.5;
  expect_lrs(*make_schedule(settings, 0.5), {-1, 0, 1, 2, 3, 7},
             {0.001, 0.0011250000000000001, 0.00125, 0.001375, 0.0015, 0.002});
  settings.lr_range_test_staircase = true;
  expect_lrs(*make_schedule(settings, 0.5), {-1, 0, 1, 2, 3, 7},
             {0.001, 0.001, 0.001, 0.001, 0.0015, 0.002});
}

TEST(LrSchedule, IterationForStepFollowsDeepSpeedOrder) {
  EXPECT_EQ(schedule_iteration_for_step(1), -1);  // lr set at construction
  EXPECT_EQ(schedule_iteration_for_step(2), 0);   // after the first scheduler.step()
  auto schedule = make_schedule(warmup(ScheduleType::WarmupLR, WarmupType::Linear), 0.5);
  EXPECT_DOUBLE_EQ(step_hyper(*schedule, OptimizerSettings{}, 12).lr, schedule->lr(10));
  EXPECT_THROW(step_hyper(*schedule, OptimizerSettings{}, 0), std::invalid_argument);
}

}  // namespace
}  // namespace zt::optim
