// SPDX-License-Identifier: Apache-2.0
// The planner's arithmetic: model states per stage and offload in fp32 and in 16 bits, the
// order of the combinations, and the choice of the fastest that fits.
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
  // Offloaded optimizer, per rank on the node's CPU: fp32 master and moments 12 bytes per
  // slice element, the gradient slice 4, the new parameters' staging buffer of one sub-group
  // (the whole slice) 4, and where a reduced part (a bucket of one layer) lands.
  EXPECT_DOUBLE_EQ(rows[5].cpu_per_node, 8 * (20 * slice + 4 * layer));
  EXPECT_DOUBLE_EQ(rows[5].cpu_optimizer_states, 12 * slice);
  EXPECT_DOUBLE_EQ(rows[5].cpu_gradients, 4 * slice);
  EXPECT_DOUBLE_EQ(rows[5].cpu_parameters, 4 * slice);
  EXPECT_DOUBLE_EQ(rows[5].cpu_comm_buffers, 4 * layer);
  EXPECT_EQ(rows[5].gpu_optimizer_states, 0);
  // Every reduced part is received into scratch on the GPU: both windows' buckets in flight.
  EXPECT_DOUBLE_EQ(rows[5].gpu_comm_buffers, 4 * 2 * layer);
  // Traffic: 2 Psi (N-1)/N, stage 3 3 Psi (N-1)/N, 4 bytes each.
  EXPECT_DOUBLE_EQ(rows[2].network_bytes, 2 * 4 * P * 7 / 8);
  EXPECT_DOUBLE_EQ(rows[4].network_bytes, 3 * 4 * P * 7 / 8);
}

zt::memory::PlanSettings in_precision(const zt::memory::ModelShape& shape,
                                      const zt::memory::Precision& precision) {
  auto settings = zt::memory::plan_settings(shape);
  settings.precision = precision;
  return settings;
}

TEST(Planner, SixteenBitModelStatesFollowTheEngine) {
  const double P = 8e8, layer = 1e7;
  const auto shape = counts(P, layer);
  const auto rows = zt::memory::make_plan(shape, machine(8, 1, 80, 512),
                                          in_precision(shape, zt::memory::mixed_precision()));
  const double slice = P / 8;
  const double windows = 2 * layer;  // two landing windows of a layer (overlap_comm)
  // Stage 0: 2 + 2 + 12 bytes per parameter, and the optimizer's one sub-group (1e9 elements:
  // all of the model) of fp32 unscaled gradients.
  EXPECT_DOUBLE_EQ(rows[0].gpu_parameters, 2 * P);
  EXPECT_DOUBLE_EQ(rows[0].gpu_gradients, 2 * P);
  EXPECT_DOUBLE_EQ(rows[0].gpu_optimizer_states, 12 * P + 4 * P);
  // Stage 1: the gradient slice besides the whole gradient; a sub-group of the slice.
  EXPECT_DOUBLE_EQ(rows[1].gpu_parameters, 2 * P);
  EXPECT_DOUBLE_EQ(rows[1].gpu_gradients, 2 * P + 2 * slice);
  EXPECT_DOUBLE_EQ(rows[1].gpu_optimizer_states, 12 * slice + 4 * slice);
  // Stages 2-3: windows and slice in 2 bytes.
  EXPECT_DOUBLE_EQ(rows[2].gpu_parameters, 2 * P);
  EXPECT_DOUBLE_EQ(rows[2].gpu_gradients, 2 * windows + 2 * slice);
  EXPECT_DOUBLE_EQ(rows[2].gpu_optimizer_states, 12 * slice + 4 * slice);
  EXPECT_DOUBLE_EQ(rows[4].gpu_parameters, 2 * slice + 2 * 2 * layer);  // two gathered layers
  EXPECT_DOUBLE_EQ(rows[4].gpu_gradients, 2 * windows + 2 * slice);
  EXPECT_DOUBLE_EQ(rows[4].gpu_optimizer_states, 12 * slice + 4 * slice);
  // Reductions in the training dtype need no buffers without gradient accumulation, unless
  // the gradient slice is in host memory: then each part is received into scratch.
  for (const auto& row : rows)
    EXPECT_DOUBLE_EQ(row.gpu_comm_buffers, row.optimizer == Offload::None ? 0 : 2 * windows)
        << row.name();
  // Offloaded optimizer: the fp32 master copy and moments (12), the 16-bit gradient slice (2)
  // and the new 16-bit parameters' staging (2) on the CPU, and one bucket's landing buffer;
  // nothing of the optimizer on the GPU.
  EXPECT_DOUBLE_EQ(rows[5].cpu_per_node, 8 * (16 * slice + 2 * layer));
  EXPECT_DOUBLE_EQ(rows[5].gpu_gradients, 2 * windows);
  EXPECT_EQ(rows[5].gpu_optimizer_states, 0);
  // Offloaded parameters: the 16-bit slice itself instead of the staging; on the GPU the
  // gathered layers and, at most, the staged parts of as many (up to buffer_count tensors).
  EXPECT_DOUBLE_EQ(rows[6].cpu_per_node, 8 * (16 * slice + 2 * layer));
  EXPECT_DOUBLE_EQ(rows[6].cpu_parameters, 2 * slice);
  EXPECT_DOUBLE_EQ(rows[6].gpu_parameters, 2 * 2 * layer + 2 * 2 * layer);
  // NVMe optimizer: the fp32 master and both moments (12) on NVMe; the slice (1e8 elements) is
  // under offload_param.max_in_cpu (1e9), so offload_param nvme keeps it in host memory.
  EXPECT_DOUBLE_EQ(rows[7].nvme_per_node, 8 * 12 * slice);
  EXPECT_DOUBLE_EQ(rows[8].nvme_per_node, 8 * 12 * slice);
  EXPECT_DOUBLE_EQ(rows[8].cpu_parameters, 2 * slice);
  // Traffic in 2 bytes: 2 Psi (N-1)/N, stage 3 3 Psi (N-1)/N.
  EXPECT_DOUBLE_EQ(rows[0].network_bytes, 2 * 2 * P * 7 / 8);
  EXPECT_DOUBLE_EQ(rows[2].network_bytes, 2 * 2 * P * 7 / 8);
  EXPECT_DOUBLE_EQ(rows[4].network_bytes, 3 * 2 * P * 7 / 8);
  // Gradients out, parameters back.
  EXPECT_DOUBLE_EQ(rows[5].bytes_to_host, 2 * slice);
  EXPECT_DOUBLE_EQ(rows[5].bytes_to_device, 2 * slice);
  EXPECT_DOUBLE_EQ(rows[5].offload_bytes, 2 * 2 * slice);
}

// ZeRO-Offload to CPU memory as the engine allocates and copies it (the notation of
// planner.cpp: P elements, slice = P / W, e/a/c bytes of the training, accumulation and
// communication dtypes, h elements stepped on the CPU).
TEST(Planner, CpuOffloadFollowsTheEngine) {
  using zt::memory::Placement;
  const double P = 8e8, layer = 1e7;
  auto shape = counts(P, layer);
  shape.layers = 78;
  shape.tied = P - 78 * layer;  // the embedding: 2 layers' worth, its gradient whole
  shape.gathered_first = shape.tied;
  shape.gathered_last = shape.tied;
  const double W = 8, slice = P / W;
  auto settings = zt::memory::plan_settings(shape);
  settings.precision = zt::memory::mixed_precision(4);  // bf16, reduced in fp32
  settings.precision.accumulation_bytes = 4;            // stage 1 accumulates in fp32
  settings.sub_group_size = 4e7;                        // whole sub-groups of the slice
  const Placement stage1{1, Offload::Cpu, Offload::None};
  const auto one = zt::memory::model_states(shape, stage1, W, settings);
  // Stage 1: the full fp32 buffer and a micro-step's bf16 gradients stay on the device, the
  // slice moves to host memory; bf16 parameters come back through two sub-group buffers.
  EXPECT_DOUBLE_EQ(one.gradients, 4 * P + 2 * P);
  EXPECT_EQ(one.optimizer_states, 0);
  EXPECT_DOUBLE_EQ(one.host_gradients, 4 * slice);
  EXPECT_DOUBLE_EQ(one.host_optimizer_states, 12 * slice);
  EXPECT_DOUBLE_EQ(one.host_parameters, 2 * 2 * 4e7);
  // Reduced in the accumulation dtype: nothing to convert, but every part is received into
  // scratch, all in flight until backward ends (overlap_comm); the largest part (a bucket of a
  // layer) lands in host memory.
  EXPECT_DOUBLE_EQ(one.comm_buffers, 4 * slice);
  EXPECT_DOUBLE_EQ(one.host_comm_buffers, 4 * layer);
  // Reduced once per step, whatever the accumulation; parameters back once.
  settings.gradient_accumulation_steps = 4;
  const auto accumulating = zt::memory::model_states(shape, stage1, W, settings);
  EXPECT_DOUBLE_EQ(accumulating.bytes_to_host, 4 * slice);
  EXPECT_DOUBLE_EQ(accumulating.bytes_to_device, 2 * slice);
  // Stages 2-3 reduce every micro-step.
  const auto two =
      zt::memory::model_states(shape, Placement{2, Offload::Cpu, Offload::None}, W, settings);
  EXPECT_DOUBLE_EQ(two.bytes_to_host, 4 * 4 * slice);
  EXPECT_DOUBLE_EQ(two.bytes_to_device, 2 * slice);
  EXPECT_DOUBLE_EQ(two.gradients, 2 * (2 * layer + shape.tied));
  EXPECT_DOUBLE_EQ(two.host_gradients, 2 * slice);  // stage 2 accumulates in bf16
  // Buckets of a layer, the tied gradient's too.
  EXPECT_DOUBLE_EQ(two.host_comm_buffers, 4 * layer);
  // Both windows' buckets and the tied gradient's in flight, staged in fp32 and received.
  EXPECT_DOUBLE_EQ(two.comm_buffers, 4 * 2 * (2 * layer + shape.tied));

  // Partial offload (stage 3): the first int(ratio x sub-groups) on the CPU, the rest on the
  // device with their states, master and one sub-group of fp32 gradients and a staging buffer
  // of one sub-group of gradients from host memory.
  settings.gradient_accumulation_steps = 1;
  settings.offload_ratio = 0.5;
  const auto partial =
      zt::memory::model_states(shape, Placement{3, Offload::Cpu, Offload::None}, W, settings);
  const double h = 1 * 4e7;  // int(0.5 x 3 sub-groups) = 1
  EXPECT_DOUBLE_EQ(partial.host_optimizer_states, 12 * h);
  EXPECT_DOUBLE_EQ(partial.host_parameters, 2 * h);  // one sub-group: one staging buffer
  EXPECT_DOUBLE_EQ(partial.host_gradients, 2 * slice);
  EXPECT_DOUBLE_EQ(partial.optimizer_states, 12 * (slice - h) + 4 * 4e7);
  EXPECT_DOUBLE_EQ(partial.gradients, 2 * (2 * layer + shape.tied) + 2 * 4e7);
  EXPECT_DOUBLE_EQ(partial.bytes_to_device, 2 * h + 2 * (slice - h));
  EXPECT_DOUBLE_EQ(partial.bytes_to_host, 4 * slice);
  // Without a whole sub-group for the CPU everything stays on the device.
  settings.offload_ratio = 0.2;
  EXPECT_EQ(zt::memory::model_states(shape, Placement{3, Offload::Cpu, Offload::None}, W, settings)
                .host_optimizer_states,
            0);

  // Parameters in host memory too: the slice there, no staging of new parameters; each gather
  // copies this rank's part over, forward and backward (the embedding's wte read by the first
  // and the last layer), and the persistent parameters after each step.
  settings.offload_ratio = 1;
  settings.precision = zt::memory::mixed_precision();
  shape.persistent = 1e6;
  const auto params =
      zt::memory::model_states(shape, Placement{3, Offload::Cpu, Offload::Cpu}, W, settings);
  EXPECT_DOUBLE_EQ(params.host_parameters, 2 * slice);
  EXPECT_DOUBLE_EQ(params.host_optimizer_states, 12 * slice);
  const double uses = 2 * (2 * shape.tied + 78 * layer);
  EXPECT_DOUBLE_EQ(params.bytes_to_device, 2 * (uses + 1e6) / W);
  EXPECT_DOUBLE_EQ(params.bytes_to_host, 2 * slice);
  // On the device: gathered layers and persistent parameters, no slice, and the staged parts of
  // the gathered tensors (at most buffer_count of them, each at most the slice).
  const double gathered = shape.tied + layer;  // the head, or a block, with a layer ahead
  EXPECT_DOUBLE_EQ(params.parameters, 2 * (gathered + 1e6) + 2 * gathered);
  settings.parameter_buffer_count = 1;
  EXPECT_DOUBLE_EQ(
      zt::memory::model_states(shape, Placement{3, Offload::Cpu, Offload::Cpu}, W, settings)
          .parameters,
      2 * (gathered + 1e6) + 2 * layer);
}

TEST(Planner, ReductionsInAnotherDtypeStageTheirBuckets) {
  // fp16 training, gradients reduced in fp32: a staging copy of each bucket in flight and the
  // received part of it, 4 bytes each; gradients move in 4 bytes, parameters in 2.
  const double P = 8e8, layer = 1e7;
  const auto shape = counts(P, layer);
  const auto rows = zt::memory::make_plan(shape, machine(8, 1, 80, 512),
                                          in_precision(shape, zt::memory::mixed_precision(4)));
  const double slice = P / 8;
  // Stage 0: one bucket (of a layer) at a time.
  EXPECT_DOUBLE_EQ(rows[0].gpu_comm_buffers, 4 * layer);
  // Stage 1 with overlap_comm: nothing completes before backward ends.
  EXPECT_DOUBLE_EQ(rows[1].gpu_comm_buffers, 4 * (P + slice));
  // Stages 2-3: the buckets of both windows.
  EXPECT_DOUBLE_EQ(rows[2].gpu_comm_buffers, 4 * (2 * layer + 2 * layer));
  EXPECT_DOUBLE_EQ(rows[4].gpu_comm_buffers, 4 * (2 * layer + 2 * layer));
  // The rest is as with 16-bit reductions.
  EXPECT_DOUBLE_EQ(rows[2].gpu_model_states(),
                   2 * P + 2 * 2 * layer + 2 * slice + 12 * slice + 4 * slice);
  EXPECT_DOUBLE_EQ(rows[0].network_bytes, 2 * 4 * P * 7 / 8);
  EXPECT_DOUBLE_EQ(rows[2].network_bytes, (4 + 2) * P * 7 / 8);
  EXPECT_DOUBLE_EQ(rows[4].network_bytes, (4 + 2 * 2) * P * 7 / 8);
  // Staged buffers count towards what must fit on a GPU.
  const double stage1_need = rows[1].gpu_model_states() + rows[1].gpu_comm_buffers;
  const auto tight = machine(8, 1, (stage1_need - 1) / 0.9 / (1ull << 30), 512);
  const auto tight_rows =
      zt::memory::make_plan(shape, tight, in_precision(shape, zt::memory::mixed_precision(4)));
  EXPECT_FALSE(tight_rows[1].fits);
  EXPECT_EQ(tight_rows[1].limit, "GPU");
}

TEST(Planner, NvmeHoldsTheOptimizerStatesAndTheParametersBeyondMaxInCpu) {
  const double P = 8e8, layer = 1e7;
  const auto shape = counts(P, layer);
  const double slice = P / 8;
  const double piece = 1e7;  // the sub-groups NVMe states stream in
  for (const bool sixteen : {false, true}) {
    SCOPED_TRACE(sixteen ? "16-bit" : "fp32");
    const double e = sixteen ? 2 : 4;
    auto settings = sixteen ? in_precision(shape, zt::memory::mixed_precision())
                            : zt::memory::plan_settings(shape);
    settings.nvme_sub_group_size = piece;
    settings.optimizer_buffer_count = 4;  // DeepSpeed's default: one set of three buffers
    settings.parameter_max_in_cpu = slice / 4;
    settings.parameter_buffer_count = 5;
    settings.parameter_buffer_size = 1e6;
    const zt::memory::Placement cpu{3, Offload::Cpu, Offload::Cpu};
    const zt::memory::Placement nvme_optimizer{3, Offload::Nvme, Offload::Cpu};
    const zt::memory::Placement nvme_both{3, Offload::Nvme, Offload::Nvme};
    const auto on_cpu = zt::memory::model_states(shape, cpu, 8, settings);
    const auto optimizer = zt::memory::model_states(shape, nvme_optimizer, 8, settings);
    const auto both = zt::memory::model_states(shape, nvme_both, 8, settings);
    // Optimizer on NVMe: 12 bytes per element there (fp32 master, exp_avg, exp_avg_sq), the
    // host keeping one set of three sub-group buffers instead.
    EXPECT_DOUBLE_EQ(optimizer.nvme, 12 * slice);
    EXPECT_DOUBLE_EQ(optimizer.host_optimizer_states, 3 * 4 * piece);
    EXPECT_DOUBLE_EQ(optimizer.nvme_traffic, 2 * 12 * slice);  // read and written every step
    EXPECT_EQ(on_cpu.nvme, 0);
    EXPECT_DOUBLE_EQ(on_cpu.host_optimizer_states, 12 * slice);
    // Gradients and parameters stay where CPU offload keeps them.
    EXPECT_DOUBLE_EQ(optimizer.host_gradients, on_cpu.host_gradients);
    EXPECT_DOUBLE_EQ(optimizer.host_parameters, e * slice);
    EXPECT_DOUBLE_EQ(optimizer.device(), on_cpu.device());
    // Parameters on NVMe too: the slice beyond max_in_cpu there, in the training dtype, read
    // through buffer_count buffers of buffer_size elements.
    EXPECT_DOUBLE_EQ(both.nvme, 12 * slice + e * 0.75 * slice);
    EXPECT_DOUBLE_EQ(both.host_parameters, e * 0.25 * slice + e * 5 * 1e6);
    EXPECT_GE(both.nvme_traffic, optimizer.nvme_traffic + e * 0.75 * slice);
    EXPECT_DOUBLE_EQ(both.device(), on_cpu.device());
    // More buffer sets (pipelining) cost host memory, not NVMe.
    settings.optimizer_buffer_count = 9;
    const auto pipelined = zt::memory::model_states(shape, nvme_optimizer, 8, settings);
    EXPECT_DOUBLE_EQ(pipelined.host_optimizer_states, 3 * 3 * 4 * piece);
    EXPECT_DOUBLE_EQ(pipelined.nvme, optimizer.nvme);
    // A slice within max_in_cpu stays in host memory.
    settings.parameter_max_in_cpu = slice;
    const auto within = zt::memory::model_states(shape, nvme_both, 8, settings);
    EXPECT_DOUBLE_EQ(within.nvme, 12 * slice);
    EXPECT_DOUBLE_EQ(within.host_parameters, e * slice);
  }
  // At stage 1 too (DeepSpeed would run it as CPU offload; zerotrain swaps).
  const auto stage1 = zt::memory::model_states(shape, {1, Offload::Nvme, Offload::None}, 8,
                                               zt::memory::plan_settings(shape));
  EXPECT_DOUBLE_EQ(stage1.nvme, 12 * slice);
}

TEST(Planner, SaysBytesPerParameter) {
  EXPECT_EQ(zt::memory::bytes_per_parameter_text({}), "4 + 4 + 8 bytes per parameter");
  EXPECT_EQ(zt::memory::bytes_per_parameter_text(zt::memory::mixed_precision()),
            "2 + 2 + 12 bytes per parameter");
}

TEST(Planner, SixteenBitsFitAnEarlierStage) {
  // 1e9 parameters on 8 GPUs of 8 GiB (7.7 GB usable): fp32 stage 1 needs 9.5 GB, so stage 2;
  // bf16 stage 1 needs 2 + 2 + 0.25 + 0.5 (the unscaled sub-group) + 1.5 GB.
  const auto shape = counts(1e9, 1e7);
  const auto m = machine(8, 1, 8, 256);
  EXPECT_EQ(recommended(shape, m), "stage 2");
  const auto rows =
      zt::memory::make_plan(shape, m, in_precision(shape, zt::memory::mixed_precision()));
  EXPECT_EQ(rows[static_cast<std::size_t>(zt::memory::fastest_fitting(rows))].name(), "stage 1");
  EXPECT_DOUBLE_EQ(rows[1].gpu_model_states(), 2e9 + 2e9 + 6 * 1.25e8 + 12 * 1.25e8);
}

TEST(Planner, RecommendsTheFastestThatFits) {
  // Fits at stage 1 (stage 0 needs 16 GB per GPU, stage 1 about 9.5 GB).
  EXPECT_EQ(recommended(counts(1e9, 1e7), machine(8, 1, 12, 256)), "stage 1");
  // Parameters alone (80 GB) exceed a GPU: stage 3.
  EXPECT_EQ(recommended(counts(20e9, 2e8), machine(8, 8, 80, 1024)), "stage 3");
  // Stage 3 needs 43 GB per GPU on one node: the optimizer goes to the CPU.
  EXPECT_EQ(recommended(counts(20e9, 2e8), machine(8, 1, 40, 512)), "stage 3 + optimizer on cpu");
  // Not enough CPU memory for the optimizer's states (364 GiB per node), but NVMe: with it the
  // node's CPU memory holds the gradient slices (80 GB), the swap buffers and the parameter
  // slices (164 GiB), or with the parameters on NVMe too only their first max_in_cpu
  // elements (134 GiB).
  EXPECT_EQ(recommended(counts(20e9, 2e8), machine(8, 1, 40, 200, 3e9)),
            "stage 3 + optimizer on nvme + parameters on cpu");
  EXPECT_EQ(recommended(counts(20e9, 2e8), machine(8, 1, 40, 160, 3e9)),
            "stage 3 + optimizer on nvme + parameters on nvme");
  // Without NVMe nothing fits.
  EXPECT_EQ(recommended(counts(20e9, 2e8), machine(8, 1, 40, 160)), "nothing");
}

TEST(Planner, StreamingTimeUsesTheBandwidth) {
  const auto shape = counts(20e9, 2e8);
  const auto rows =
      zt::memory::make_plan(shape, machine(8, 1, 40, 64, 4e9), zt::memory::plan_settings(shape));
  const auto& optimizer = rows[rows.size() - 2];
  ASSERT_EQ(optimizer.name(), "stage 3 + optimizer on nvme + parameters on cpu");
  // Per rank the 12 bytes per slice element of the optimizer's states read and written back;
  // 8 ranks share the bandwidth.
  EXPECT_NEAR(optimizer.nvme_seconds, 8 * 2 * 12 * (20e9 / 8) / 4e9, 1e-6);
  // The parameters beyond max_in_cpu (1e9 of the 2.5e9 per rank stay in CPU memory) add
  // their reads and writes.
  EXPECT_GE(rows.back().nvme_seconds, optimizer.nvme_seconds + 8 * 4 * 1.5e9 / 4e9);
}

}  // namespace
