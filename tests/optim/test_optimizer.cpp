// SPDX-License-Identifier: Apache-2.0
// Adam/AdamW and LAMB against hand-computed values (tests/optim/reference_values.py, output in
// reference_values.txt), stepping in pieces, the split-tensor norm protocol, state tracking.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

#include "memory/tracker.hpp"
#include "optim/lr_schedule.hpp"
#include "optim/optimizer.hpp"

namespace zt::optim {
namespace {

// The kernels compute in fp32; the references are double. Three steps keep the error within
// a few ulps of the values' magnitudes.
constexpr double kRelativeTolerance = 2e-6;
constexpr double kAbsoluteTolerance = 1e-7;

void expect_close(const std::vector<float>& actual, const std::vector<double>& expected,
                  const char* what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  for (std::size_t i = 0; i < actual.size(); ++i)
    EXPECT_NEAR(actual[i], expected[i],
                kAbsoluteTolerance + kRelativeTolerance * std::fabs(expected[i]))
        << what << " element " << i;
}

std::vector<float> state_values(Optimizer& optimizer, const char* name) {
  for (const StateTensor& state : optimizer.state())
    if (state.name == name) return std::vector<float>(state.data, state.data + state.size);
  ADD_FAILURE() << "no state " << name;
  return {};
}

const std::vector<float> kInitialParams = {0.5f, -1.0f, 2.0f, 0.0f};
const std::vector<std::vector<float>> kGrads = {
    {0.1f, -0.2f, 0.3f, 0.05f}, {0.05f, 0.1f, -0.4f, 0.0f}, {-0.3f, 0.2f, 0.1f, 1.0f}};

OptimizerSettings adam_settings(bool adam_w_mode, bool bias_correction) {
  OptimizerSettings settings;
  settings.type = OptimizerType::Adam;
  settings.lr = 0.01;
  settings.weight_decay = 0.1;
  settings.adam_w_mode = adam_w_mode;
  settings.bias_correction = bias_correction;
  return settings;
}

StepHyper hyper_for(const OptimizerSettings& settings, std::int64_t step) {
  StepHyper hyper;
  hyper.lr = settings.lr;
  hyper.beta1 = settings.beta1;
  hyper.beta2 = settings.beta2;
  hyper.step = step;
  return hyper;
}

// Runs the three steps of the reference on the four elements; one segment covers them all.
std::vector<float> run_adam(Optimizer& optimizer) {
  std::vector<float> params = kInitialParams;
  const std::vector<TensorSegment> segments = {{0, 4, 0, true}};
  for (std::size_t k = 0; k < kGrads.size(); ++k)
    optimizer.step(params.data(), kGrads[k].data(), 4, segments,
                   hyper_for(optimizer.settings(), static_cast<std::int64_t>(k) + 1));
  return params;
}

TEST(Adam, AdamWThreeStepsMatchHandComputedValues) {
  auto optimizer = make_optimizer(adam_settings(true, true), 4);
  expect_close(run_adam(*optimizer),
               {0.4826812519662487, -0.987089250393122, 1.9861722754253144, -0.02331246697960096},
               "params");
  expect_close(
      state_values(*optimizer, "exp_avg"),
      {-0.017399999999999992, 0.012799999999999995, -0.0017000000000000036, 0.10404999999999998},
      "exp_avg");
  expect_close(
      state_values(*optimizer, "exp_avg_sq"),
      {0.00010247751000000009, 8.99100400000001e-05, 0.0002596600900000003, 0.0010024950025000008},
      "exp_avg_sq");
}

TEST(Adam, ClassicL2ModeMatchesHandComputedValues) {
  auto optimizer = make_optimizer(adam_settings(false, true), 4);
  expect_close(run_adam(*optimizer),
               {0.4811621485709144, -0.9804896182789199, 1.9811361247943287, -0.02318359051900815},
               "params");
  expect_close(
      state_values(*optimizer, "exp_avg"),
      {-0.004136919661868552, -0.014043242725026895, 0.0522756014569817, 0.10379449636169434},
      "exp_avg");
}

TEST(Adam, WithoutBiasCorrectionMatchesHandComputedValues) {
  auto optimizer = make_optimizer(adam_settings(true, false), 4);
  expect_close(run_adam(*optimizer),
               {0.44455629778301287, -0.9676357024630464, 1.9717166266887585, -0.0928679663751284},
               "params");
}

// One step from zero moments: AdamW decays the weight outside the moments (moments see the raw
// gradient), classic Adam adds wd*p to the gradient (moments see g + wd*p).
TEST(Adam, L2AndDecoupledDecayDifferExactlyAsExpected) {
  const float param = 2.0f;
  const float grad = 0.3f;
  const double lr = 0.01;
  const double weight_decay = 0.1;
  const std::vector<TensorSegment> segments = {{0, 1, 0, true}};

  auto decoupled = make_optimizer(adam_settings(true, true), 1);
  float decoupled_param = param;
  decoupled->step(&decoupled_param, &grad, 1, segments, hyper_for(decoupled->settings(), 1));
  // First step, bias corrected: m_hat/(sqrt(v_hat)+eps) = g/(|g|+eps) ~ sign(g).
  const double adam_term = lr * grad / (std::fabs(grad) + 1e-8);
  EXPECT_NEAR(decoupled_param, param - lr * weight_decay * param - adam_term, 1e-6);
  EXPECT_NEAR(state_values(*decoupled, "exp_avg")[0], 0.1 * grad, 1e-8);

  auto classic = make_optimizer(adam_settings(false, true), 1);
  float classic_param = param;
  classic->step(&classic_param, &grad, 1, segments, hyper_for(classic->settings(), 1));
  const double l2_grad = grad + weight_decay * param;
  EXPECT_NEAR(classic_param, param - lr * l2_grad / (std::fabs(l2_grad) + 1e-8), 1e-6);
  EXPECT_NEAR(state_values(*classic, "exp_avg")[0], 0.1 * l2_grad, 1e-8);
}

TEST(Adam, ZeroWeightDecayMakesBothModesIdentical) {
  OptimizerSettings decoupled = adam_settings(true, true);
  OptimizerSettings classic = adam_settings(false, true);
  decoupled.weight_decay = classic.weight_decay = 0.0;
  auto a = make_optimizer(decoupled, 4);
  auto b = make_optimizer(classic, 4);
  const std::vector<float> from_a = run_adam(*a);
  const std::vector<float> from_b = run_adam(*b);
  for (std::size_t i = 0; i < from_a.size(); ++i) EXPECT_EQ(from_a[i], from_b[i]);
}

// Stepping a slice in sub_group_size pieces gives bit-identical results to one whole step.
TEST(Adam, SteppingInPiecesEqualsOneStep) {
  constexpr std::int64_t kElements = 1000;
  std::vector<float> params(kElements);
  std::vector<float> grads(kElements);
  for (std::int64_t i = 0; i < kElements; ++i) {
    params[i] = 0.01f * static_cast<float>(i % 37) - 0.2f;
    grads[i] = 0.003f * static_cast<float>(i % 11) - 0.015f;
  }
  const OptimizerSettings settings = adam_settings(true, true);
  const std::vector<TensorSegment> segments = {{0, 600, 0, true}, {600, 390, 1, true}};
  auto whole = make_optimizer(settings, kElements);
  auto pieces = make_optimizer(settings, kElements);
  std::vector<float> whole_params = params;
  std::vector<float> piece_params = params;
  for (std::int64_t step = 1; step <= 3; ++step) {
    whole->step(whole_params.data(), grads.data(), kElements, segments, hyper_for(settings, step));
    pieces->begin_step(segments, hyper_for(settings, step));
    for (std::int64_t begin = 0; begin < kElements; begin += 128) {
      const std::int64_t end = std::min(begin + 128, kElements);
      pieces->update_range(piece_params.data() + begin, grads.data() + begin, begin, end);
    }
  }
  for (std::int64_t i = 0; i < kElements; ++i) ASSERT_EQ(whole_params[i], piece_params[i]) << i;
  EXPECT_EQ(state_values(*whole, "exp_avg_sq"), state_values(*pieces, "exp_avg_sq"));
}

TEST(Optimizer, StatesAreTrackedAsOptimizerStates) {
  auto& tracker = memory::Tracker::instance();
  const std::int64_t before =
      tracker.usage(memory::Place::Device, memory::Kind::OptimizerStates).current;
  {
    auto optimizer = make_optimizer(adam_settings(true, true), 1000);
    EXPECT_EQ(optimizer->state_bytes(), 2 * 1000 * 4);
    EXPECT_EQ(tracker.usage(memory::Place::Device, memory::Kind::OptimizerStates).current,
              before + 8000);
  }
  EXPECT_EQ(tracker.usage(memory::Place::Device, memory::Kind::OptimizerStates).current, before);
  auto offloaded = make_optimizer(adam_settings(true, true), 10, memory::Place::Host);
  EXPECT_GE(tracker.usage(memory::Place::Host, memory::Kind::OptimizerStates).current, 80);
}

TEST(Optimizer, RejectsBadRangesAndSegments) {
  auto optimizer = make_optimizer(adam_settings(true, true), 10);
  std::vector<float> values(10);
  EXPECT_THROW(optimizer->update_range(values.data(), values.data(), 0, 10), std::logic_error);
  EXPECT_THROW(optimizer->step(values.data(), values.data(), 9, {}, StepHyper{}),
               std::invalid_argument);
  EXPECT_THROW(optimizer->begin_step({{5, 6, 0, true}}, StepHyper{}), std::invalid_argument);
  EXPECT_THROW(optimizer->begin_step({{4, 3, 0, true}, {0, 2, 1, true}}, StepHyper{}),
               std::invalid_argument);
  StepHyper step_zero;
  step_zero.step = 0;
  EXPECT_THROW(optimizer->begin_step({}, step_zero), std::invalid_argument);
  optimizer->begin_step({}, StepHyper{});
  EXPECT_THROW(optimizer->update_range(values.data(), values.data(), 4, 11), std::out_of_range);
}

// ---------------------------------------------------------------------------------------------
// LAMB
// ---------------------------------------------------------------------------------------------

OptimizerSettings lamb_settings() {
  OptimizerSettings settings;
  settings.type = OptimizerType::Lamb;
  settings.lr = 0.01;
  settings.weight_decay = 0.01;
  return settings;
}

// Two tensors of 3 and 2 elements back to back, two steps.
const std::vector<float> kLambParams = {0.5f, -1.0f, 2.0f, 0.1f, 0.2f};
const std::vector<std::vector<float>> kLambGrads = {{0.1f, -0.2f, 0.3f, 0.05f, -0.05f},
                                                    {0.05f, 0.1f, -0.4f, 0.2f, 0.1f}};
const std::vector<TensorSegment> kLambSegments = {{0, 3, 0, true}, {3, 2, 1, true}};

TEST(Lamb, TwoTensorsTwoStepsMatchHandComputedValues) {
  const OptimizerSettings settings = lamb_settings();
  auto optimizer = make_optimizer(settings, 5);
  std::vector<float> params = kLambParams;
  const std::vector<std::vector<double>> expected_ratios = {
      {0.4167923286974433, 0.05000821764436332}, {0.5434180302865689, 0.05500596487128721}};
  for (std::int64_t step = 1; step <= 2; ++step) {
    optimizer->step(params.data(), kLambGrads[step - 1].data(), 5, kLambSegments,
                    hyper_for(settings, step));
    const auto& sums = optimizer->tensor_norm_sums();
    for (std::size_t s = 0; s < 2; ++s) {
      const float ratio = kernels::lamb_trust_ratio(sums[s].weight_sum_of_squares,
                                                    sums[s].update_sum_of_squares, 0.01f, 10.0f);
      EXPECT_NEAR(ratio, expected_ratios[step - 1][s], 1e-6) << "step " << step << " tensor " << s;
    }
  }
  expect_close(params,
               {0.49075354154326806, -0.9943588476559609, 1.9968317691977544, 0.0990131749802071,
                0.20029812500273939},
               "params");
}

TEST(Lamb, EpsInsideSqrtWithoutBiasCorrection) {
  OptimizerSettings settings = lamb_settings();
  settings.eps_inside_sqrt = true;
  settings.bias_correction = false;
  auto optimizer = make_optimizer(settings, 5);
  std::vector<float> params = kLambParams;
  for (std::int64_t step = 1; step <= 2; ++step)
    optimizer->step(params.data(), kLambGrads[step - 1].data(), 5, kLambSegments,
                    hyper_for(settings, step));
  expect_close(params,
               {0.46537997166177614, -0.9806084722587168, 1.9910702727916614, 0.09634568408252153,
                0.20072182451016288},
               "params");
}

// Tensor 0: large weights, ratio 1e3 clamped to max_coeff 10; tensor 1: tiny weights, clamped to
// min_coeff 0.01; tensor 2: zero weights, ratio exactly 1 (FusedLamb's zero-norm rule).
TEST(Lamb, TrustRatioClampsAtMaxAndMinAndIsOneForZeroNorm) {
  OptimizerSettings settings = lamb_settings();
  settings.weight_decay = 0.0;
  auto optimizer = make_optimizer(settings, 6);
  std::vector<float> params = {100.0f, -200.0f, 1e-4f, 1e-4f, 0.0f, 0.0f};
  const std::vector<float> grads = {0.1f, 0.1f, 0.1f, -0.1f, 0.3f, 0.4f};
  optimizer->step(params.data(), grads.data(), 6,
                  {{0, 2, 0, true}, {2, 2, 1, true}, {4, 2, 2, true}}, hyper_for(settings, 1));
  const auto& sums = optimizer->tensor_norm_sums();
  EXPECT_FLOAT_EQ(kernels::lamb_trust_ratio(sums[0].weight_sum_of_squares,
                                            sums[0].update_sum_of_squares, 0.01f, 10.0f),
                  10.0f);
  EXPECT_FLOAT_EQ(kernels::lamb_trust_ratio(sums[1].weight_sum_of_squares,
                                            sums[1].update_sum_of_squares, 0.01f, 10.0f),
                  0.01f);
  EXPECT_FLOAT_EQ(kernels::lamb_trust_ratio(sums[2].weight_sum_of_squares,
                                            sums[2].update_sum_of_squares, 0.01f, 10.0f),
                  1.0f);
  EXPECT_FLOAT_EQ(kernels::lamb_trust_ratio(0.0, 0.0, 0.01f, 10.0f), 1.0f);
  EXPECT_FLOAT_EQ(kernels::lamb_trust_ratio(4.0, 0.0, 0.01f, 10.0f), 1.0f);
  expect_close(params,
               {99.90000031622677, -200.09999968377323, 3.1622676604559953e-10,
                0.00019999968377323396, -0.009999989459085576, -0.009999992094312099},
               "params");
}

// The same two tensors cut across two "ranks" (slices [0, 2) and [2, 5)): tensor 0 is split.
// Completing the partial sums with pack/unpack (what the engine's all-reduce does) gives the
// same result as the unsplit stage-0 step; without a reducer step() refuses.
TEST(Lamb, SplitTensorNormsCompletedAcrossSlicesMatchWholeStep) {
  const OptimizerSettings settings = lamb_settings();
  auto whole = make_optimizer(settings, 5);
  std::vector<float> whole_params = kLambParams;

  auto rank0 = make_optimizer(settings, 2);
  auto rank1 = make_optimizer(settings, 3);
  const std::vector<TensorSegment> segments0 = {{0, 2, 0, false}};
  const std::vector<TensorSegment> segments1 = {{0, 1, 0, false}, {1, 2, 1, true}};
  std::vector<float> params0(kLambParams.begin(), kLambParams.begin() + 2);
  std::vector<float> params1(kLambParams.begin() + 2, kLambParams.end());

  EXPECT_THROW(
      rank0->step(params0.data(), kLambGrads[0].data(), 2, segments0, hyper_for(settings, 1)),
      std::logic_error);
  rank0 = make_optimizer(settings, 2);  // the refused step had already updated its moments

  for (std::int64_t step = 1; step <= 2; ++step) {
    const std::vector<float>& grads = kLambGrads[step - 1];
    whole->step(whole_params.data(), grads.data(), 5, kLambSegments, hyper_for(settings, step));

    rank0->begin_step(segments0, hyper_for(settings, step));
    rank1->begin_step(segments1, hyper_for(settings, step));
    rank0->update_range(params0.data(), grads.data(), 0, 2);
    // rank 1 in two sub-group pieces
    rank1->update_range(params1.data(), grads.data() + 2, 0, 2);
    rank1->update_range(params1.data() + 2, grads.data() + 4, 2, 3);
    std::vector<double> reduced = pack_split_norm_sums(rank0->tensor_norm_sums(), 2);
    const std::vector<double> from_rank1 = pack_split_norm_sums(rank1->tensor_norm_sums(), 2);
    for (std::size_t i = 0; i < reduced.size(); ++i) reduced[i] += from_rank1[i];
    unpack_split_norm_sums(reduced, rank0->tensor_norm_sums());
    unpack_split_norm_sums(reduced, rank1->tensor_norm_sums());
    rank0->finish_range(params0.data(), 0, 2);
    rank1->finish_range(params1.data(), 0, 1);
    rank1->finish_range(params1.data() + 1, 1, 3);
  }
  std::vector<float> joined = params0;
  joined.insert(joined.end(), params1.begin(), params1.end());
  for (std::size_t i = 0; i < joined.size(); ++i)
    EXPECT_NEAR(joined[i], whole_params[i], 1e-7) << i;
}

TEST(Lamb, ReducerGivenToStepCompletesSplitNorms) {
  const OptimizerSettings settings = lamb_settings();
  auto optimizer = make_optimizer(settings, 5);
  std::vector<float> params = kLambParams;
  int calls = 0;
  optimizer->step(params.data(), kLambGrads[0].data(), 5, {{0, 3, 0, false}, {3, 2, 1, true}},
                  hyper_for(settings, 1), [&](std::vector<TensorNormSums>& sums) {
                    ++calls;
                    EXPECT_EQ(sums.size(), 2u);
                    EXPECT_FALSE(sums[0].whole_tensor);
                  });
  EXPECT_EQ(calls, 1);
}

// Padding outside every segment is left untouched by LAMB.
TEST(Lamb, ElementsOutsideSegmentsAreUntouched) {
  const OptimizerSettings settings = lamb_settings();
  auto optimizer = make_optimizer(settings, 6);
  std::vector<float> params = {0.5f, -1.0f, 2.0f, 0.1f, 0.2f, 7.0f};
  const std::vector<float> grads = {0.1f, -0.2f, 0.3f, 0.05f, -0.05f, 1.0f};
  optimizer->step(params.data(), grads.data(), 6, kLambSegments, hyper_for(settings, 1));
  EXPECT_EQ(params[5], 7.0f);
  EXPECT_EQ(state_values(*optimizer, "exp_avg")[5], 0.0f);
}

// OneCycle's momentum reaches the update through step_hyper (beta1 cycled, beta2 = 0.99).
TEST(Optimizer, StepHyperCarriesScheduleMomentum) {
  ScheduleSettings schedule_settings;
  schedule_settings.type = ScheduleType::OneCycle;
  schedule_settings.cycle_min_lr = 0.001;
  schedule_settings.cycle_max_lr = 0.01;
  schedule_settings.cycle_first_step_size = 4;
  auto schedule = make_schedule(schedule_settings, 0.1);
  const OptimizerSettings settings = adam_settings(true, true);
  const StepHyper first = step_hyper(*schedule, settings, 1);
  EXPECT_DOUBLE_EQ(first.lr, 0.001);
  EXPECT_DOUBLE_EQ(first.beta1, 0.8);
  EXPECT_DOUBLE_EQ(first.beta2, 0.99);
  EXPECT_EQ(first.step, 1);
  const StepHyper second = step_hyper(*schedule, settings, 2);
  EXPECT_DOUBLE_EQ(second.lr, schedule->lr(0));
  EXPECT_DOUBLE_EQ(second.beta1, schedule->betas(0)->beta1);
  EXPECT_EQ(second.step, 2);

  auto constant = make_schedule(ScheduleSettings{}, 0.02);
  const StepHyper plain = step_hyper(*constant, settings, 5);
  EXPECT_DOUBLE_EQ(plain.lr, 0.02);
  EXPECT_DOUBLE_EQ(plain.beta1, settings.beta1);
  EXPECT_DOUBLE_EQ(plain.beta2, settings.beta2);
}

}  // namespace
}  // namespace zt::optim
