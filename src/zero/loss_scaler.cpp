// SPDX-License-Identifier: Apache-2.0
// DynamicLossScaler.update_scale and LossScaler of deepspeed/runtime/fp16/loss_scaler.py, as
// reference/deepspeed.md §2 gives them.
#include "zero/loss_scaler.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace zt::zero {
namespace {

constexpr double kScaleFactor = 2.0;  // DeepSpeed's scale_factor; not configurable

const char* const kOverflowPrefix = "[deepspeed] OVERFLOW! Rank 0 Skipping step.";

bool positive_finite(double value) {
  return std::isfinite(value) && value > 0.0;
}

}  // namespace

LossScaleAtMinimumError::LossScaleAtMinimumError() : std::runtime_error(message()) {}

const char* LossScaleAtMinimumError::message() {
  return "Current loss scale already at minimum - cannot decrease scale anymore. Exiting run.";
}

LossScaler::LossScaler(const LossScalerSettings& settings) : settings_(settings) {
  if (settings_.dynamic) {
    if (settings_.window < 1) {
      throw std::invalid_argument("loss scaler: window must be >= 1, got " +
                                  std::to_string(settings_.window));
    }
    if (settings_.delayed_shift < 1) {
      throw std::invalid_argument("loss scaler: hysteresis must be >= 1, got " +
                                  std::to_string(settings_.delayed_shift));
    }
    if (!positive_finite(settings_.init_scale) || !positive_finite(settings_.min_scale)) {
      throw std::invalid_argument("loss scaler: initial and minimum scale must be finite and > 0");
    }
    state_.cur_scale = settings_.init_scale;
    state_.cur_hysteresis = settings_.delayed_shift;
  } else {
    if (!positive_finite(settings_.static_scale)) {
      throw std::invalid_argument("loss scaler: the static scale must be finite and > 0");
    }
    state_.cur_scale = settings_.static_scale;
  }
}

LossScaleUpdate LossScaler::update(bool overflow) {
  LossScaleUpdate result;
  result.skip_step = overflow;
  result.previous_scale = state_.cur_scale;
  result.scale = state_.cur_scale;
  if (!settings_.dynamic) return result;  // LossScaler.update_scale: pass

  LossScalerState& s = state_;
  if (overflow) {
    if (settings_.delayed_shift == 1 || s.cur_hysteresis == 1) {
      if (s.cur_scale == settings_.min_scale && settings_.raise_error_at_min_scale) {
        throw LossScaleAtMinimumError();
      }
      const double next_scale = std::max(s.cur_scale / kScaleFactor, settings_.min_scale);
      result.messages.push_back(std::string(kOverflowPrefix) +
                                " Attempted loss scale: " + python_int_text(s.cur_scale) +
                                ", reducing to " + python_int_text(next_scale));
      s.cur_scale = next_scale;
      result.change = LossScaleChange::kReduced;
    } else {
      result.messages.push_back(std::string(kOverflowPrefix) +
                                " Attempted loss scale: " + python_int_text(s.cur_scale) +
                                ", but hysteresis is " + std::to_string(s.cur_hysteresis) +
                                ". Reducing hysteresis to " + std::to_string(s.cur_hysteresis - 1));
      s.cur_hysteresis -= 1;
      result.change = LossScaleChange::kHysteresisSpent;
    }
    s.last_overflow_iter = s.cur_iter;
  } else {
    if (settings_.consecutive_hysteresis) {
      result.messages.push_back("Consecutive hysteresis is enabled. Restoring hysteresis to " +
                                std::to_string(settings_.delayed_shift));
      s.cur_hysteresis = settings_.delayed_shift;
    }
    // cur_iter > last_overflow_iter always, so C++ % agrees with Python's here.
    if ((s.cur_iter - s.last_overflow_iter) % settings_.window == 0) {
      if (!settings_.consecutive_hysteresis) s.cur_hysteresis = settings_.delayed_shift;
      s.cur_scale *= kScaleFactor;
      result.change = LossScaleChange::kGrown;
    }
  }
  s.cur_iter += 1;
  result.scale = s.cur_scale;
  return result;
}

void LossScaler::set_state(const LossScalerState& state) {
  if (!positive_finite(state.cur_scale)) {
    throw std::invalid_argument("loss scaler state: the scale must be finite and > 0");
  }
  if (state.last_overflow_iter >= state.cur_iter || state.last_overflow_iter < -1) {
    throw std::invalid_argument("loss scaler state: last_overflow_iter " +
                                std::to_string(state.last_overflow_iter) +
                                " is not before cur_iter " + std::to_string(state.cur_iter));
  }
  state_ = state;
}

std::string python_int_text(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  const double truncated = std::trunc(value);
  const bool negative = truncated < 0;
  const double magnitude = std::fabs(truncated);
  if (magnitude < 9007199254740992.0) {  // 2^53: exact in an int64
    return std::to_string(static_cast<std::int64_t>(truncated));
  }
  // magnitude = mantissa * 2^shift with a 53-bit integer mantissa and shift >= 1.
  int exponent = 0;
  const double fraction = std::frexp(magnitude, &exponent);
  std::uint64_t mantissa = static_cast<std::uint64_t>(std::ldexp(fraction, 53));
  const int shift = exponent - 53;
  constexpr std::uint32_t kBase = 1000000000;  // little-endian limbs of 9 decimal digits
  std::vector<std::uint32_t> limbs;
  while (mantissa > 0) {
    limbs.push_back(static_cast<std::uint32_t>(mantissa % kBase));
    mantissa /= kBase;
  }
  for (int i = 0; i < shift; ++i) {
    std::uint32_t carry = 0;
    for (std::uint32_t& limb : limbs) {
      const std::uint64_t doubled = 2ull * limb + carry;
      limb = static_cast<std::uint32_t>(doubled % kBase);
      carry = static_cast<std::uint32_t>(doubled / kBase);
    }
    if (carry) limbs.push_back(carry);
  }
  std::string text = negative ? "-" : "";
  text += std::to_string(limbs.back());
  for (std::size_t i = limbs.size() - 1; i-- > 0;) {
    const std::string digits = std::to_string(limbs[i]);
    text += std::string(9 - digits.size(), '0') + digits;
  }
  return text;
}

}  // namespace zt::zero
