// SPDX-License-Identifier: Apache-2.0
// Initialises Kokkos once for a serial GoogleTest executable that links GTest::gtest_main
// (which owns main): a global Environment registered from a static initialiser. zt_add_test
// adds this file to a test given the KOKKOS option.
#include <gtest/gtest.h>
#include <Kokkos_Core.hpp>

namespace {

class KokkosEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    if (!Kokkos::is_initialized()) Kokkos::initialize();
  }
  void TearDown() override {
    if (Kokkos::is_initialized()) Kokkos::finalize();
  }
};

// GoogleTest takes ownership of the environment.
const auto* const kRegistered = ::testing::AddGlobalTestEnvironment(new KokkosEnvironment);

}  // namespace
