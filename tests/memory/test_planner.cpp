// SPDX-License-Identifier: Apache-2.0
// The planner's arithmetic: fp32 model states per stage and offload, the order of the
// combinations, and the choice of the fastest that fits.
#include <gtest/gtest.h>

#include "memory/planner.hpp"

namespace {

using zt::memory::Offload;

zt::memory::ModelShape counts(double parameters, double layer) {
  zt::memory::ModelShape shape;
  shape.parameters = parameters;
  shape.largest_module = layer;
  shape.layer = layer;
  shape.gathered_layer = layer;
  return shape;
}

zt::memory::Machine machine(int gpus, int nodes, double gpu_gib, double cpu_gib, double nvme = 0) {
  zt::memory::Machine m;
  m.gpus_per_node = gpus;
  m.nodes = nodes;
  m.gpu_bytes = gpu_gib * (1ull << 30);
  m.cpu_bytes = cpu_gib * (1ull << 30);
  m.nvme_bandwidth = nvme;
  return m;
}

std::string recommended(const zt::memory::ModelShape& shape, const zt::memory::Machine& m) {
  const auto rows = zt::memory::make_plan(shape, m, zt::memory::plan_settings(shape));
  const int best = zt::memory::fastest_fitting(rows);
  return best < 0 ? "nothing" : rows[static_cast<std::size_t>(best)].name();
}

TEST(Planner, ListsCombinationsFastestFirst) {
  const auto shape = counts(1e9, 1e7);
  const auto rows =
      zt::memory::make_plan(shape, machine(8, 1, 80, 512), zt::memory::plan_settings(shape));
  std::vector<std::string> names;
  for (const auto& row : rows) names.push_back(row.name());
  EXPECT_EQ(names,
            (std::vector<std::string>{"stage 0", "stage 1", "stage 2", "stage 2 + optimizer on cpu",
                                      "stage 3", "stage 3 + optimizer on cpu",
                                      "stage 3 + optimizer on cpu + parameters on cpu",
                                      "stage 3 + optimizer on nvme + parameters on cpu",
                                      "stage 3 + optimizer on nvme + parameters on nvme"}));
}

TEST(Planner, ModelStatesFollowTheEngine) {
  const double P = 8e8, layer = 1e7;
  const auto shape = counts(P, layer);
  const auto rows =
      zt::memory::make_plan(shape, machine(8, 1, 80, 512), zt::memory::plan_settings(shape));
  const double slice = P / 8;
  EXPECT_DOUBLE_EQ(rows[0].gpu_model_states(), 16 * P);  // stage 0
  EXPECT_DOUBLE_EQ(rows[1].gpu_model_states(), 4 * P + 4 * P + 4 * slice + 8 * slice);
  // Stage 2: slice plus two landing windows of one layer (overlap_comm).
  EXPECT_DOUBLE_EQ(rows[2].gpu_model_states(), 4 * P + 4 * (slice + 2 * layer) + 8 * slice);
  // Stage 3: slices, two gathered layers, two windows.
  EXPECT_DOUBLE_EQ(rows[4].gpu_model_states(), 16 * slice + 4 * 2 * layer + 4 * 2 * layer);
  // Offloaded optimizer: 16 bytes per slice element per rank on the node's CPU.
  EXPECT_DOUBLE_EQ(rows[5].cpu_per_node, 8 * 16 * slice);
  EXPECT_EQ(rows[5].gpu_optimizer_states, 0);
  // Traffic: 2 Psi (N-1)/N, stage 3 3 Psi (N-1)/N, 4 bytes each.
  EXPECT_DOUBLE_EQ(rows[2].network_bytes, 2 * 4 * P * 7 / 8);
  EXPECT_DOUBLE_EQ(rows[4].network_bytes, 3 * 4 * P * 7 / 8);
}

TEST(Planner, RecommendsTheFastestThatFits) {
  // Fits at stage 1 (stage 0 needs 16 GB per GPU, stage 1 about 9.5 GB).
  EXPECT_EQ(recommended(counts(1e9, 1e7), machine(8, 1, 12, 256)), "stage 1");
  // Parameters alone (80 GB) exceed a GPU: stage 3.
  EXPECT_EQ(recommended(counts(20e9, 2e8), machine(8, 8, 80, 1024)), "stage 3");
  // Stage 3 needs 43 GB per GPU on one node: the optimizer goes to the CPU.
  EXPECT_EQ(recommended(counts(20e9, 2e8), machine(8, 1, 40, 512)), "stage 3 + optimizer on cpu");
  // Not enough CPU memory either, but NVMe.
  EXPECT_EQ(recommended(counts(20e9, 2e8), machine(8, 1, 40, 64, 3e9)),
            "stage 3 + optimizer on nvme + parameters on nvme");
  // Without NVMe nothing fits.
  EXPECT_EQ(recommended(counts(20e9, 2e8), machine(8, 1, 40, 64)), "nothing");
}

TEST(Planner, StreamingTimeUsesTheBandwidth) {
  const auto shape = counts(20e9, 2e8);
  const auto rows =
      zt::memory::make_plan(shape, machine(8, 1, 40, 64, 4e9), zt::memory::plan_settings(shape));
  const auto& nvme = rows.back();
  // Per rank 2 x 16 bytes per slice element read and written; 8 ranks share the bandwidth.
  EXPECT_NEAR(nvme.nvme_seconds, 8 * 2 * 16 * (20e9 / 8) / 4e9, 1e-6);
}

}  // namespace
