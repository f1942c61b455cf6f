// SPDX-License-Identifier: Apache-2.0
// zero::LossScaler against DeepSpeed's algorithm. The golden sequences in
// loss_scaler_golden.txt come from loss_scaler_reference.py, a Python transcription of
// DeepSpeed's DynamicLossScaler/LossScaler as reference/deepspeed.md §2 quotes them (written from
// that text, not from this C++). To regenerate after changing the cases:
//     python3 tests/zero/loss_scaler_reference.py
// Every case is replayed here step by step: scale, hysteresis, iteration counters, log lines,
// and the exception at the minimum scale.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "zero/loss_scaler.hpp"

namespace zt::zero {
namespace {

// ---------------------------------------------------------------- golden replay

struct GoldenStep {
  bool overflow = false;
  bool raises = false;
  std::string raise_message;
  double scale = 0;
  std::string hysteresis, cur_iter, last_overflow_iter;  // "-" for the static scaler
  std::vector<std::string> messages;
};

struct GoldenCase {
  std::string name;
  LossScalerSettings settings;
  std::vector<GoldenStep> steps;
};

std::map<std::string, std::string> parse_settings(const std::string& line) {
  std::map<std::string, std::string> fields;
  std::istringstream in(line.substr(std::string("settings ").size()));
  std::string item;
  while (in >> item) {
    const std::size_t eq = item.find('=');
    fields[item.substr(0, eq)] = item.substr(eq + 1);
  }
  return fields;
}

double hex_double(const std::string& text) {
  return std::strtod(text.c_str(), nullptr);
}

std::vector<GoldenCase> read_golden() {
  std::ifstream file(ZT_LOSS_SCALER_GOLDEN);
  EXPECT_TRUE(file) << "cannot open " << ZT_LOSS_SCALER_GOLDEN;
  std::vector<GoldenCase> cases;
  std::string line;
  bool open_case = false;
  while (std::getline(file, line)) {
    if (line.empty() || line[0] == '#') continue;
    if (line.rfind("case ", 0) == 0) {
      cases.emplace_back();
      cases.back().name = line.substr(5);
      open_case = true;
    } else if (line.rfind("settings ", 0) == 0) {
      const auto f = parse_settings(line);
      LossScalerSettings& s = cases.back().settings;
      s.dynamic = f.at("dynamic") == "1";
      s.static_scale = hex_double(f.at("static_scale"));
      s.init_scale = hex_double(f.at("init_scale"));
      s.window = std::stoll(f.at("window"));
      s.min_scale = hex_double(f.at("min_scale"));
      s.delayed_shift = std::stoi(f.at("hysteresis"));
      s.consecutive_hysteresis = f.at("consecutive") == "1";
      s.raise_error_at_min_scale = f.at("raise") == "1";
    } else if (line.rfind("step ", 0) == 0) {
      std::istringstream in(line);
      std::string word, index, overflow_word, overflow;
      in >> word >> index >> overflow_word >> overflow;
      GoldenStep step;
      step.overflow = overflow == "1";
      std::string key, value;
      while (in >> key >> value) {
        if (key == "scale") step.scale = hex_double(value);
        if (key == "hysteresis") step.hysteresis = value;
        if (key == "cur_iter") step.cur_iter = value;
        if (key == "last_overflow_iter") step.last_overflow_iter = value;
      }
      cases.back().steps.push_back(step);
    } else if (line.rfind("log ", 0) == 0) {
      cases.back().steps.back().messages.push_back(line.substr(4));
    } else if (line.rfind("raises ", 0) == 0) {
      cases.back().steps.back().raises = true;
      cases.back().steps.back().raise_message = line.substr(7);
    } else if (line == "end") {
      open_case = false;
    } else {
      ADD_FAILURE() << "unexpected golden line: " << line;
    }
  }
  EXPECT_FALSE(open_case) << "golden file ends inside a case";
  return cases;
}

TEST(LossScalerGolden, FileHoldsEveryScenario) {
  std::set<std::string> names;
  for (const GoldenCase& c : read_golden()) names.insert(c.name);
  for (const char* required :
       {"growth_from_start", "hysteresis1_halving", "hysteresis2_window_refill",
        "hysteresis3_spent", "consecutive_refills", "window1_no_max", "huge_scale_exact_int",
        "min_scale_clamp_then_raise", "raise_at_min_after_hysteresis", "min_scale_no_raise",
        "fp16_key_defaults", "static_fp16_128", "static_unit"}) {
    EXPECT_TRUE(names.count(required)) << "missing golden case " << required;
  }
}

TEST(LossScalerGolden, EveryStepMatchesDeepSpeed) {
  const std::vector<GoldenCase> cases = read_golden();
  ASSERT_GE(cases.size(), 13u);
  int raised = 0;
  for (const GoldenCase& c : cases) {
    SCOPED_TRACE("case " + c.name);
    LossScaler scaler(c.settings);
    for (std::size_t i = 0; i < c.steps.size(); ++i) {
      SCOPED_TRACE("step " + std::to_string(i));
      const GoldenStep& expected = c.steps[i];
      if (expected.raises) {
        const LossScalerState before = scaler.state();
        try {
          scaler.update(expected.overflow);
          ADD_FAILURE() << "expected LossScaleAtMinimumError";
        } catch (const LossScaleAtMinimumError& e) {
          EXPECT_EQ(e.what(), expected.raise_message);
          ++raised;
        }
        EXPECT_EQ(scaler.state().cur_scale, before.cur_scale);  // nothing changed
        EXPECT_EQ(scaler.state().cur_iter, before.cur_iter);
        continue;
      }
      const double before = scaler.scale();
      const LossScaleUpdate u = scaler.update(expected.overflow);
      EXPECT_EQ(u.skip_step, expected.overflow);
      EXPECT_EQ(u.previous_scale, before);
      EXPECT_EQ(u.scale, expected.scale);  // exact: powers of two and clamps
      EXPECT_EQ(scaler.scale(), expected.scale);
      EXPECT_EQ(u.messages, expected.messages);
      if (c.settings.dynamic) {
        const LossScalerState s = scaler.state();
        EXPECT_EQ(std::to_string(s.cur_hysteresis), expected.hysteresis);
        EXPECT_EQ(std::to_string(s.cur_iter), expected.cur_iter);
        EXPECT_EQ(std::to_string(s.last_overflow_iter), expected.last_overflow_iter);
      } else {
        EXPECT_EQ(expected.hysteresis, "-");
        EXPECT_EQ(u.change, LossScaleChange::kNone);
      }
    }
  }
  EXPECT_EQ(raised, 2) << "the two min-scale cases must raise";
}

// ---------------------------------------------------------------- hand-checked behaviour

LossScalerSettings dynamic_defaults() {
  LossScalerSettings s;
  s.dynamic = true;
  return s;  // DynamicLossScaler(): 2^32, window 1000, min 1, hysteresis 1
}

TEST(LossScaler, ClassDefaultsFirstGrowAfterWindowCleanSteps) {
  LossScaler scaler(dynamic_defaults());
  EXPECT_EQ(scaler.scale(), 4294967296.0);
  for (int i = 0; i < 999; ++i) {
    const LossScaleUpdate u = scaler.update(false);
    ASSERT_EQ(u.change, LossScaleChange::kNone) << "iteration " << i;
    EXPECT_TRUE(u.messages.empty());
  }
  // cur_iter 999 == window - 1: (999 - -1) % 1000 == 0.
  const LossScaleUpdate u = scaler.update(false);
  EXPECT_EQ(u.change, LossScaleChange::kGrown);
  EXPECT_EQ(scaler.scale(), 8589934592.0);
  EXPECT_EQ(scaler.state().cur_iter, 1000);
}

TEST(LossScaler, OverflowLogLinesAreDeepSpeeds) {
  LossScalerSettings s = dynamic_defaults();
  s.init_scale = 65536;
  s.delayed_shift = 2;
  LossScaler scaler(s);
  LossScaleUpdate u = scaler.update(true);
  EXPECT_TRUE(u.skip_step);
  EXPECT_EQ(u.change, LossScaleChange::kHysteresisSpent);
  ASSERT_EQ(u.messages.size(), 1u);
  EXPECT_EQ(u.messages[0],
            "[deepspeed] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 65536, but "
            "hysteresis is 2. Reducing hysteresis to 1");
  u = scaler.update(true);
  EXPECT_EQ(u.change, LossScaleChange::kReduced);
  ASSERT_EQ(u.messages.size(), 1u);
  EXPECT_EQ(u.messages[0],
            "[deepspeed] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 65536, reducing "
            "to 32768");
  EXPECT_EQ(scaler.scale(), 32768.0);
}

TEST(LossScaler, ConsecutiveHysteresisLogsOnEveryCleanStep) {
  LossScalerSettings s = dynamic_defaults();
  s.delayed_shift = 3;
  s.consecutive_hysteresis = true;
  LossScaler scaler(s);
  scaler.update(true);
  EXPECT_EQ(scaler.state().cur_hysteresis, 2);
  const LossScaleUpdate u = scaler.update(false);
  ASSERT_EQ(u.messages.size(), 1u);
  EXPECT_EQ(u.messages[0], "Consecutive hysteresis is enabled. Restoring hysteresis to 3");
  EXPECT_EQ(scaler.state().cur_hysteresis, 3);
}

TEST(LossScaler, AtMinimumThrowsTheDedicatedError) {
  LossScalerSettings s = dynamic_defaults();
  s.init_scale = 2;
  LossScaler scaler(s);
  scaler.update(true);  // 2 -> 1
  EXPECT_EQ(scaler.scale(), 1.0);
  try {
    scaler.update(true);
    FAIL() << "expected LossScaleAtMinimumError";
  } catch (const LossScaleAtMinimumError& e) {
    EXPECT_STREQ(e.what(),
                 "Current loss scale already at minimum - cannot decrease scale anymore. "
                 "Exiting run.");
  }
  s.raise_error_at_min_scale = false;
  LossScaler lenient(s);
  lenient.update(true);
  const LossScaleUpdate u = lenient.update(true);
  EXPECT_EQ(lenient.scale(), 1.0);
  EXPECT_EQ(u.messages.at(0),
            "[deepspeed] OVERFLOW! Rank 0 Skipping step. Attempted loss scale: 1, reducing to 1");
}

TEST(LossScaler, StaticScalerNeverChangesButReportsOverflow) {
  LossScalerSettings s;
  s.static_scale = 1024;
  LossScaler scaler(s);
  EXPECT_FALSE(scaler.dynamic());
  for (int i = 0; i < 2000; ++i) {
    const bool overflow = i % 7 == 3;
    const LossScaleUpdate u = scaler.update(overflow);
    ASSERT_EQ(u.skip_step, overflow);
    ASSERT_EQ(u.scale, 1024.0);
    ASSERT_TRUE(u.messages.empty());
  }
  EXPECT_EQ(scaler.state().cur_iter, 0);
}

TEST(LossScaler, StateRoundTripContinuesIdentically) {
  LossScalerSettings s = dynamic_defaults();
  s.init_scale = 1 << 16;
  s.window = 3;
  s.delayed_shift = 2;
  LossScaler a(s);
  const bool first[] = {false, true, false, true, true, false};
  for (bool overflow : first) a.update(overflow);
  LossScaler b(s);
  b.set_state(a.state());
  const bool rest[] = {false, false, false, true, false, false, false, true, true};
  for (bool overflow : rest) {
    const LossScaleUpdate ua = a.update(overflow);
    const LossScaleUpdate ub = b.update(overflow);
    EXPECT_EQ(ua.scale, ub.scale);
    EXPECT_EQ(ua.messages, ub.messages);
  }
  EXPECT_EQ(a.state().cur_iter, b.state().cur_iter);
  EXPECT_EQ(a.state().last_overflow_iter, b.state().last_overflow_iter);
  EXPECT_EQ(a.state().cur_hysteresis, b.state().cur_hysteresis);
  LossScalerState bad = a.state();
  bad.last_overflow_iter = bad.cur_iter;
  EXPECT_THROW(b.set_state(bad), std::invalid_argument);
}

TEST(LossScaler, RefusesSettingsDeepSpeedWouldDivideByOrNeverReduce) {
  LossScalerSettings s = dynamic_defaults();
  s.window = 0;
  EXPECT_THROW(LossScaler{s}, std::invalid_argument);
  s = dynamic_defaults();
  s.delayed_shift = 0;
  EXPECT_THROW(LossScaler{s}, std::invalid_argument);
  s = LossScalerSettings{};
  s.static_scale = 0;
  EXPECT_THROW(LossScaler{s}, std::invalid_argument);
}

TEST(PythonIntText, MatchesPythonIntOfAFloat) {
  EXPECT_EQ(python_int_text(65536.0), "65536");
  EXPECT_EQ(python_int_text(4294967296.0), "4294967296");
  EXPECT_EQ(python_int_text(0.5), "0");
  EXPECT_EQ(python_int_text(1.99), "1");
  EXPECT_EQ(python_int_text(-2.7), "-2");
  EXPECT_EQ(python_int_text(9007199254740992.0), "9007199254740992");  // 2^53
  EXPECT_EQ(python_int_text(std::ldexp(1.0, 70)), "1180591620717411303424");
  EXPECT_EQ(python_int_text(std::ldexp(3.0, 64)), "55340232221128654848");
  EXPECT_EQ(python_int_text(1e22), "10000000000000000000000");
  EXPECT_EQ(python_int_text(1e23), "99999999999999991611392");  // int(1e23) in Python
  EXPECT_EQ(python_int_text(HUGE_VAL), "inf");
}

}  // namespace
}  // namespace zt::zero
