// SPDX-License-Identifier: Apache-2.0
// Adam/AdamW and LAMB against hand-computed values (tests/optim/reference_values.py, output in
// reference_values.txt), stepping in pieces, the split-tensor norm protocol, state tracking.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "kernels/ops/dtype.hpp"
#include "memory/tracker.hpp"
#include "optim/host_kernels.hpp"
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

// One state over the whole slice, joined from its views (one per place when split).
std::vector<float> state_values(Optimizer& optimizer, const char* name) {
  std::vector<float> values(static_cast<std::size_t>(optimizer.slice_elements()));
  std::int64_t covered = 0;
  for (const StateTensor& state : optimizer.state())
    if (state.name == name) {
      EXPECT_EQ(state.offset, covered) << name << ": views out of order or with a gap";
      std::copy(state.data, state.data + state.size, values.begin() + state.offset);
      covered = state.offset + state.size;
    }
  EXPECT_EQ(covered, optimizer.slice_elements()) << "state " << name << " does not cover the slice";
  return values;
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

// ---------------------------------------------------------------------------------------------
// The typed, fused protocol and split state placement
// ---------------------------------------------------------------------------------------------

std::vector<float> pattern(std::int64_t n, float scale, int period, float offset) {
  std::vector<float> values(static_cast<std::size_t>(n));
  for (std::int64_t i = 0; i < n; ++i) values[i] = scale * static_cast<float>(i % period) + offset;
  return values;
}

std::vector<kernels::bf16> to_bf16(const std::vector<float>& values) {
  std::vector<kernels::bf16> out;
  for (const float value : values) out.push_back(kernels::from_float<kernels::bf16>(value));
  return out;
}

std::vector<kernels::fp16> to_fp16(const std::vector<float>& values) {
  std::vector<kernels::fp16> out;
  for (const float value : values) out.push_back(kernels::from_float<kernels::fp16>(value));
  return out;
}

void expect_same_bits(const std::vector<float>& actual, const std::vector<float>& expected,
                      const char* what) {
  ASSERT_EQ(actual.size(), expected.size()) << what;
  EXPECT_EQ(std::memcmp(actual.data(), expected.data(), actual.size() * sizeof(float)), 0) << what;
}

// update_range with bf16 gradients, a multiplier and a bf16 copy is the host kernel's fused step
// on the optimizer's states; the fp32 overload is the typed one with multiplier 1.
TEST(Adam, TypedUpdateRangeIsTheFusedHostStep) {
  constexpr std::int64_t kElements = 20000;
  const OptimizerSettings settings = adam_settings(true, true);
  const std::vector<float> start = pattern(kElements, 0.01f, 37, -0.2f);
  const std::vector<kernels::bf16> grads = to_bf16(pattern(kElements, 0.03f, 11, -0.15f));
  const float multiplier = 0.3f;

  auto optimizer = make_optimizer(settings, kElements);
  std::vector<float> master = start;
  std::vector<kernels::bf16> copy(kElements);
  optimizer->begin_step({{0, kElements, 0, true}}, hyper_for(settings, 1));
  for (std::int64_t begin = 0; begin < kElements; begin += 7000) {
    const std::int64_t end = std::min(begin + 7000, kElements);
    optimizer->update_range(master.data() + begin,
                            {grads.data() + begin, kernels::DType::BF16, multiplier}, begin, end,
                            {copy.data() + begin, kernels::DType::BF16});
  }

  std::vector<float> expected = start, m(kElements), v(kElements);
  const auto c = kernels::make_adam_constants(settings.lr, settings.beta1, settings.beta2,
                                              settings.eps, settings.weight_decay, true, true, 1);
  host::adam_step(expected.data(), grads.data(), kernels::DType::BF16, multiplier, m.data(),
                  v.data(), kElements, c, nullptr, kernels::DType::F32);
  expect_same_bits(master, expected, "master");
  expect_same_bits(state_values(*optimizer, "exp_avg_sq"), v, "exp_avg_sq");
  for (std::int64_t i = 0; i < kElements; ++i)
    ASSERT_EQ(copy[i].bits, kernels::from_float<kernels::bf16>(master[i]).bits) << i;

  // fp32 gradients: the old overload and the typed one with multiplier 1 agree
  const std::vector<float> grads32 = pattern(kElements, 0.003f, 13, -0.02f);
  auto old_style = make_optimizer(settings, kElements);
  auto typed = make_optimizer(settings, kElements);
  std::vector<float> old_master = start, typed_master = start;
  old_style->begin_step({}, hyper_for(settings, 1));
  typed->begin_step({}, hyper_for(settings, 1));
  old_style->update_range(old_master.data(), grads32.data(), 0, kElements);
  typed->update_range(typed_master.data(), {grads32.data()}, 0, kElements);
  expect_same_bits(typed_master, old_master, "fp32 overloads");
}

TEST(Optimizer, SplitPlacementPutsTheHostPartOnTheHost) {
  auto& tracker = memory::Tracker::instance();
  const auto usage = [&](memory::Place place) {
    return tracker.usage(place, memory::Kind::OptimizerStates).current;
  };
  const std::int64_t host_before = usage(memory::Place::Host);
  const std::int64_t device_before = usage(memory::Place::Device);
  {
    auto optimizer = make_optimizer(adam_settings(true, true), 1000, StatePlacement{300});
    EXPECT_EQ(usage(memory::Place::Host), host_before + 2 * 300 * 4);
    EXPECT_EQ(usage(memory::Place::Device), device_before + 2 * 700 * 4);
    EXPECT_EQ(optimizer->state_bytes(), 2 * 1000 * 4);
    EXPECT_EQ(optimizer->state_bytes(memory::Place::Host), 2 * 300 * 4);
    EXPECT_EQ(optimizer->state_bytes(memory::Place::Device), 2 * 700 * 4);
    EXPECT_EQ(optimizer->state_bytes(memory::Place::Nvme), 0);
    const std::vector<StateTensor> views = optimizer->state();
    ASSERT_EQ(views.size(), 4u);
    const char* names[] = {"exp_avg", "exp_avg", "exp_avg_sq", "exp_avg_sq"};
    for (std::size_t k = 0; k < 4; ++k) {
      EXPECT_EQ(views[k].name, names[k]);
      EXPECT_EQ(views[k].offset, k % 2 == 0 ? 0 : 300);
      EXPECT_EQ(views[k].size, k % 2 == 0 ? 300 : 700);
      EXPECT_EQ(views[k].place, k % 2 == 0 ? memory::Place::Host : memory::Place::Device);
    }
  }
  EXPECT_EQ(usage(memory::Place::Host), host_before);
  EXPECT_EQ(usage(memory::Place::Device), device_before);

  // all on one side: one view per state
  auto all_host = make_optimizer(adam_settings(true, true), 10, StatePlacement{10});
  ASSERT_EQ(all_host->state().size(), 2u);
  EXPECT_EQ(all_host->state()[0].place, memory::Place::Host);
  EXPECT_EQ(all_host->state_bytes(memory::Place::Host), 80);
  auto all_device = make_optimizer(adam_settings(true, true), 10, StatePlacement{0});
  ASSERT_EQ(all_device->state().size(), 2u);
  EXPECT_EQ(all_device->state()[1].place, memory::Place::Device);
  auto legacy = make_optimizer(adam_settings(true, true), 10, memory::Place::Host);
  EXPECT_EQ(legacy->state()[0].place, memory::Place::Host);
  EXPECT_EQ(legacy->state_bytes(memory::Place::Host), 80);
  auto empty = make_optimizer(adam_settings(true, true), 0, StatePlacement{0});
  EXPECT_TRUE(empty->state().empty());

  EXPECT_THROW(make_optimizer(adam_settings(true, true), 10, StatePlacement{-1}),
               std::invalid_argument);
  EXPECT_THROW(make_optimizer(adam_settings(true, true), 10, StatePlacement{11}),
               std::invalid_argument);
}

// A split slice steps to the same bits as an unsplit one, Adam and LAMB; a range across the
// split is refused.
TEST(Optimizer, SplitPlacementStepsLikeOnePlace) {
  constexpr std::int64_t kElements = 30000;
  constexpr std::int64_t kHost = 12345;
  const std::vector<float> start = pattern(kElements, 0.01f, 37, -0.2f);
  const std::vector<kernels::fp16> grads = to_fp16(pattern(kElements, 0.003f, 11, -0.015f));
  const std::vector<TensorSegment> segments = {{0, 10000, 0, true}, {10000, 19000, 1, true}};
  for (const OptimizerSettings& settings : {adam_settings(true, true), lamb_settings()}) {
    auto one_place = make_optimizer(settings, kElements, memory::Place::Host);
    auto split = make_optimizer(settings, kElements, StatePlacement{kHost});
    std::vector<float> one_master = start, split_master = start;
    std::vector<kernels::bf16> one_copy(kElements), split_copy(kElements);
    for (std::int64_t step = 1; step <= 2; ++step) {
      const auto run = [&](Optimizer& optimizer, std::vector<float>& master,
                           std::vector<kernels::bf16>& copy,
                           const std::vector<std::int64_t>& cuts) {
        optimizer.begin_step(segments, hyper_for(settings, step));
        for (std::size_t k = 0; k + 1 < cuts.size(); ++k)
          optimizer.update_range(master.data() + cuts[k],
                                 {grads.data() + cuts[k], kernels::DType::F16, 0.5f}, cuts[k],
                                 cuts[k + 1], {copy.data() + cuts[k], kernels::DType::BF16});
        if (!optimizer.needs_tensor_norms()) return;
        for (std::size_t k = 0; k + 1 < cuts.size(); ++k)
          optimizer.finish_range(master.data() + cuts[k], cuts[k], cuts[k + 1],
                                 {copy.data() + cuts[k], kernels::DType::BF16});
      };
      // the same pieces (LAMB's partial sums add up per piece), which must respect the split
      const std::vector<std::int64_t> cuts = {0, 5000, kHost, 20000, kElements};
      run(*one_place, one_master, one_copy, cuts);
      run(*split, split_master, split_copy, cuts);
    }
    expect_same_bits(split_master, one_master, "master");
    expect_same_bits(state_values(*split, "exp_avg"), state_values(*one_place, "exp_avg"),
                     "exp_avg");
    expect_same_bits(state_values(*split, "exp_avg_sq"), state_values(*one_place, "exp_avg_sq"),
                     "exp_avg_sq");
    for (std::int64_t i = 0; i < kElements; ++i)
      ASSERT_EQ(split_copy[i].bits, one_copy[i].bits) << i;

    split->begin_step(segments, hyper_for(settings, 3));
    EXPECT_THROW(
        split->update_range(split_master.data() + kHost - 1,
                            {grads.data() + kHost - 1, kernels::DType::F16}, kHost - 1, kHost + 1),
        std::invalid_argument);
    EXPECT_THROW(split->finish_range(split_master.data(), 0, kElements), std::invalid_argument);
    split->update_range(split_master.data() + kHost, {grads.data() + kHost, kernels::DType::F16},
                        kHost, kHost);  // empty ranges are fine anywhere
  }
}

// LAMB writes the parameter copy in finish_range (update_range leaves it), over the whole range:
// padding outside every segment keeps its value and gets its copy. Gradients unscaled on the fly
// give the bits of gradients converted first.
TEST(Lamb, FinishRangeWritesTheCopyOfTheWholeRange) {
  const OptimizerSettings settings = lamb_settings();
  const std::vector<float> start = {0.5f, -1.0f, 2.0f, 9.0f, 0.1f, 0.2f, 7.0f};
  const std::vector<float> grads32 = {0.1f, -0.2f, 0.3f, 1.0f, 0.05f, -0.05f, 1.0f};
  const std::vector<TensorSegment> segments = {{0, 3, 0, true}, {4, 2, 1, true}};
  const std::vector<kernels::fp16> grads = to_fp16(grads32);
  const float multiplier = 0.25f;

  auto fused = make_optimizer(settings, 7);
  std::vector<float> master = start;
  std::vector<kernels::fp16> copy(7, kernels::fp16{0x1234});
  fused->begin_step(segments, hyper_for(settings, 1));
  fused->update_range(master.data(), {grads.data(), kernels::DType::F16, multiplier}, 0, 7,
                      {copy.data(), kernels::DType::F16});
  for (const kernels::fp16 value : copy) EXPECT_EQ(value.bits, 0x1234);  // not yet
  fused->finish_range(master.data(), 0, 7, {copy.data(), kernels::DType::F16});
  EXPECT_EQ(master[3], 9.0f);
  EXPECT_EQ(master[6], 7.0f);
  for (std::size_t i = 0; i < 7; ++i)
    EXPECT_EQ(copy[i].bits, kernels::from_float<kernels::fp16>(master[i]).bits) << i;

  std::vector<float> converted;
  for (const kernels::fp16 g : grads) converted.push_back(multiplier * kernels::to_float(g));
  auto separate = make_optimizer(settings, 7);
  std::vector<float> separate_master = start;
  separate->step(separate_master.data(), converted.data(), 7, segments, hyper_for(settings, 1));
  expect_same_bits(master, separate_master, "master");
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
