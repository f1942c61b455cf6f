// SPDX-License-Identifier: Apache-2.0
#include <gtest/gtest.h>

#include "memory/format.hpp"
#include "memory/tracker.hpp"

using namespace zt::memory;

TEST(ParseBytes, AcceptsUnitsPeopleWrite) {
  EXPECT_EQ(parse_bytes("4096"), 4096);
  EXPECT_EQ(parse_bytes("64MiB"), 64ll << 20);
  EXPECT_EQ(parse_bytes("2 GiB"), 2ll << 30);
  EXPECT_EQ(parse_bytes("1.5GB"), 1500000000ll);
  EXPECT_EQ(parse_bytes("10kb"), 10000);
  EXPECT_THROW(parse_bytes("lots"), std::invalid_argument);
  EXPECT_THROW(parse_bytes("3 parsecs"), std::invalid_argument);
  EXPECT_THROW(parse_bytes("-1MiB"), std::invalid_argument);
}

TEST(Tracker, CountsCurrentAndPeakByPlaceAndKind) {
  auto& tracker = Tracker::instance();
  tracker.reset_peaks();
  const auto before = tracker.total(Place::Device).current;
  {
    TrackedBuffer<float> params(1000, Place::Device, Kind::Parameters);
    TrackedBuffer<float> grads(500, Place::Device, Kind::Gradients);
    EXPECT_EQ(tracker.usage(Place::Device, Kind::Parameters).current, 4000);
    EXPECT_EQ(tracker.total(Place::Device).current, before + 6000);
    EXPECT_EQ(params[999], 0.0f);  // zero-initialised
  }
  EXPECT_EQ(tracker.total(Place::Device).current, before);
  EXPECT_EQ(tracker.total(Place::Device).peak, before + 6000);
  EXPECT_EQ(tracker.usage(Place::Device, Kind::Gradients).peak, 2000);
}

TEST(Tracker, DeviceLimitRefusesAndExplains) {
  auto& tracker = Tracker::instance();
  tracker.set_device_limit(tracker.total(Place::Device).current + (1 << 20));
  TrackedBuffer<float> fits(1000, Place::Device, Kind::Parameters);
  try {
    TrackedBuffer<float> too_big(1 << 20, Place::Device, Kind::OptimizerStates);
    FAIL() << "expected OutOfMemory";
  } catch (const OutOfMemory& error) {
    const std::string text = error.what();
    EXPECT_NE(text.find("asked for 4.00 MiB of optimizer_states"), std::string::npos) << text;
    EXPECT_NE(text.find("parameters"), std::string::npos) << text;
  }
  TrackedBuffer<float> host_is_unlimited(1 << 20, Place::Host, Kind::OptimizerStates);
  tracker.set_device_limit(0);
}
