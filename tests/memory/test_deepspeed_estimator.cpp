// SPDX-License-Identifier: Apache-2.0
// The DeepSpeed estimator port against golden text from an independent Python port
// (deepspeed_estimator_reference.py, run by hand; its output is committed beside this file).
#include <gtest/gtest.h>

#include <cstdint>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "memory/deepspeed_estimator.hpp"

namespace {

using zt::memory::deepspeed_zero2_estimate;
using zt::memory::deepspeed_zero3_estimate;
using zt::memory::DeepSpeedEstimateRow;
using zt::memory::format_deepspeed_estimate_table;

struct GoldenCase {
  std::string header;
  int stage = 0;
  double params = 0, largest = 0, abf = 0;
  int gpus_per_node = 0, nodes = 0;
  std::string text;
};

// __FILE__ is the absolute path CMake compiles, so the golden file is found from any build dir.
std::string golden_path() {
  const std::string here = __FILE__;
  return here.substr(0, here.find_last_of('/') + 1) + "deepspeed_estimator_golden.txt";
}

// "key=value" out of the header line, parsed as a double (Python's repr of a float or an int).
double field(const std::string& header, const std::string& key) {
  const auto at = header.find(" " + key + "=");
  if (at == std::string::npos) throw std::runtime_error("no " + key + " in: " + header);
  return std::stod(header.substr(at + key.size() + 2));
}

std::vector<GoldenCase> load_golden() {
  std::ifstream in(golden_path());
  if (!in) throw std::runtime_error("cannot read " + golden_path());
  std::vector<GoldenCase> cases;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("===", 0) == 0) {
      GoldenCase c;
      c.header = line;
      c.stage = static_cast<int>(field(line, "stage"));
      c.params = field(line, "params");
      c.largest = field(line, "largest");
      c.gpus_per_node = static_cast<int>(field(line, "gpus_per_node"));
      c.nodes = static_cast<int>(field(line, "nodes"));
      c.abf = field(line, "abf");
      cases.push_back(c);
    } else if (!cases.empty()) {
      cases.back().text += line + "\n";
    }
  }
  return cases;
}

std::string table_for(int stage, double params, double largest, int gpus, int nodes,
                      double abf = 1.5) {
  const auto rows = stage == 3 ? deepspeed_zero3_estimate(params, largest, gpus, nodes, abf)
                               : deepspeed_zero2_estimate(params, gpus, nodes, abf);
  return format_deepspeed_estimate_table(stage, params, largest, gpus, nodes, rows);
}

TEST(DeepSpeedEstimator, MatchesThePythonPortDigitForDigit) {
  const auto cases = load_golden();
  ASSERT_GE(cases.size(), 20u);
  for (const auto& c : cases) {
    EXPECT_EQ(table_for(c.stage, c.params, c.largest, c.gpus_per_node, c.nodes, c.abf), c.text)
        << c.header;
  }
}

TEST(DeepSpeedEstimator, ReproducesTheReferenceExample) {
  // reference/deepspeed.md section 7: 2851e6 params, 32e6 largest layer, 1 node x 8 GPUs.
  const std::string table = table_for(3, 2851e6, 32e6, 8, 1);
  EXPECT_NE(table.find("HW: Setup with 1 node, 8 GPUs per node.\n"), std::string::npos);
  EXPECT_NE(table.find("SW: Model with 2851M total params, 32M largest layer params.\n"),
            std::string::npos);
  EXPECT_NE(table.find("\n   71.69GB |   0.12GB | offload_param=cpu , offload_optimizer=cpu , "
                       "zero_init=1\n"),
            std::string::npos);
  EXPECT_NE(table.find("\n    1.43GB |   6.09GB | offload_param=none, offload_optimizer=none, "
                       "zero_init=1\n"),
            std::string::npos);
  const std::string stage2 = table_for(2, 2851e6, 0, 8, 1);
  EXPECT_NE(stage2.find("SW: Model with 2851M total params.\n"), std::string::npos);
  EXPECT_NE(stage2.find("\n  127.45GB |   5.31GB | offload_optimizer=cpu \n"), std::string::npos);
  EXPECT_NE(stage2.find("\n  127.45GB |  11.28GB | offload_optimizer=none\n"), std::string::npos);
}

TEST(DeepSpeedEstimator, Stage2Bytes) {
  const auto rows = deepspeed_zero2_estimate(2851e6, 8, 1, 1.5);
  ASSERT_EQ(rows.size(), 2u);
  // Offload: 2 B fp16 params on the GPU; P * max(4*8, 16) * 1.5 on the CPU.
  EXPECT_EQ(rows[0].gpu_bytes, 5702000000);
  EXPECT_EQ(rows[0].cpu_bytes, 136848000000);
  // No offload: 2*P + int(18*P/8) = 5702e6 + 6414750000.
  EXPECT_EQ(rows[1].gpu_bytes, 12116750000);
  EXPECT_EQ(rows[1].cpu_bytes, 2851000000LL * 4 * 8 * 3 / 2);
  EXPECT_TRUE(rows[0].offload_optimizer);
  EXPECT_FALSE(rows[1].offload_optimizer);
  EXPECT_EQ(rows[0].options, "offload_optimizer=cpu ");
  EXPECT_EQ(rows[1].options, "offload_optimizer=none");
}

TEST(DeepSpeedEstimator, Stage3BytesTruncateLikePython) {
  // 3 nodes: gpus_factor = 1/3 is inexact, and the quotients 2*P/6, 18*P/6 are not integers.
  const double P = 1000000001;
  const auto rows = deepspeed_zero3_estimate(P, 1e7 + 1, 2, 3, 1.5);
  ASSERT_EQ(rows.size(), 6u);
  EXPECT_EQ(rows[0].gpu_bytes, 40000004);               // 4 * largest
  EXPECT_EQ(rows[2].gpu_bytes, 40000004 + 333333333);   // + int(2*P / 6)
  EXPECT_EQ(rows[4].gpu_bytes, 40000004 + 3000000003);  // + int(18*P / 6)
  EXPECT_EQ(rows[0].cpu_bytes, 9000000009);             // P * 18 * (1/3) * 1.5, exact here
  // P * 16 * (1/3) * 1.5 is 8000000007.999999 in floats: int() gives ...007, not 8 * P.
  EXPECT_EQ(rows[2].cpu_bytes, 8000000007);
  EXPECT_EQ(rows[1].cpu_bytes, 12000000012);  // max(4*2, 18/3) = 8 wins
  EXPECT_EQ(rows[4].cpu_bytes, 120000012);    // largest * 4 * 2 * 1.5
}

TEST(DeepSpeedEstimator, RowsComeInDeepSpeedsOrder) {
  const auto rows = deepspeed_zero3_estimate(2851e6, 32e6, 8, 1, 1.5);
  ASSERT_EQ(rows.size(), 6u);
  // (offload_param, offload_optimizer, zero_init)
  const bool expected[6][3] = {{true, true, true},   {true, true, false},  {false, true, true},
                               {false, true, false}, {false, false, true}, {false, false, false}};
  const char* options[6] = {"offload_param=cpu , offload_optimizer=cpu , zero_init=1",
                            "offload_param=cpu , offload_optimizer=cpu , zero_init=0",
                            "offload_param=none, offload_optimizer=cpu , zero_init=1",
                            "offload_param=none, offload_optimizer=cpu , zero_init=0",
                            "offload_param=none, offload_optimizer=none, zero_init=1",
                            "offload_param=none, offload_optimizer=none, zero_init=0"};
  for (int i = 0; i < 6; ++i) {
    EXPECT_EQ(rows[i].offload_param, expected[i][0]) << i;
    EXPECT_EQ(rows[i].offload_optimizer, expected[i][1]) << i;
    EXPECT_EQ(rows[i].zero_init, expected[i][2]) << i;
    EXPECT_EQ(rows[i].options, options[i]) << i;
  }
}

TEST(DeepSpeedEstimator, PluralsFollowTheCounts) {
  EXPECT_NE(table_for(2, 1e9, 0, 1, 1).find("HW: Setup with 1 node, 1 GPU per node.\n"),
            std::string::npos);
  EXPECT_NE(table_for(2, 1e9, 0, 2, 3).find("HW: Setup with 3 nodes, 2 GPUs per node.\n"),
            std::string::npos);
}

TEST(DeepSpeedEstimator, RefusesWhatDoesNotFit) {
  EXPECT_THROW(deepspeed_zero2_estimate(1e30, 1, 1, 1.5), std::invalid_argument);
  EXPECT_THROW(deepspeed_zero3_estimate(1e9, 1e7, 0, 1, 1.5), std::invalid_argument);
}

}  // namespace
