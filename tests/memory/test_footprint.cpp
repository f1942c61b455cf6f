// SPDX-License-Identifier: Apache-2.0
// The run footprint's arithmetic, the verdict against available memory and its message, the
// parsers behind available_host_memory (on sample files), and byte sizes past int64.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <string>

#include "memory/footprint.hpp"
#include "memory/format.hpp"
#include "memory/host_memory.hpp"
#include "memory/planner.hpp"

namespace {

using namespace zt::memory;

constexpr double kGiB = 1024.0 * 1024 * 1024;
constexpr double kMiB = 1024.0 * 1024;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

ModelShape blocks(double parameters, double layer) {
  ModelShape shape;
  shape.parameters = parameters;
  shape.largest_module = layer / 4;
  shape.layer = layer;
  shape.layers = parameters / layer;
  shape.gathered_layer = layer;
  return shape;
}

// ---- model states with a run's settings

TEST(ModelStates, LandingWindowsFollowOverlapAndContiguity) {
  const auto shape = blocks(1e8, 1e6);  // 100 blocks
  PlanSettings settings;
  settings.reduce_bucket_size = 5e6;
  const double slice = 1e8 / 4;
  settings.overlap_comm = false;  // one window of a bucket
  EXPECT_DOUBLE_EQ(model_states(shape, {2}, 4, settings).gradients, 4 * (slice + 5e6));
  settings.overlap_comm = true;  // two alternating windows
  EXPECT_DOUBLE_EQ(model_states(shape, {2}, 4, settings).gradients, 4 * (slice + 2 * 5e6));
  // A fresh window per bucket, all alive until the micro-step's reductions completed: the
  // whole model lands.
  settings.contiguous_gradients = false;
  EXPECT_DOUBLE_EQ(model_states(shape, {2}, 4, settings).gradients, 4 * (slice + 1e8));
  // A bucket below a layer: windows of a layer.
  settings.contiguous_gradients = true;
  settings.reduce_bucket_size = 10;
  EXPECT_DOUBLE_EQ(model_states(shape, {2}, 4, settings).gradients, 4 * (slice + 2 * 1e6));
  // Scratch while accumulating, one bucket's share at a time without overlap_comm.
  settings.gradient_accumulation_steps = 4;
  settings.overlap_comm = false;
  settings.reduce_bucket_size = 5e6;
  EXPECT_DOUBLE_EQ(model_states(shape, {2}, 4, settings).comm_buffers, 4 * 5e6);
  settings.reduce_scatter = false;  // all-reduce in place
  EXPECT_DOUBLE_EQ(model_states(shape, {2}, 4, settings).comm_buffers, 0);
}

TEST(ModelStates, Stage3GathersByPrefetchLiveCapAndReuse) {
  auto shape = blocks(1e8, 1e6);
  shape.largest_module = 4e5;
  PlanSettings settings;
  settings.reduce_bucket_size = 1e6;
  settings.prefetch_bucket_size = 1e6;  // one block ahead
  const double slice = 1e8 / 8;
  auto gathered = [&] { return model_states(shape, {3}, 8, settings).parameters / 4 - slice; };
  EXPECT_DOUBLE_EQ(gathered(), 2e6);
  // Whole tensors until the bucket is reached: at most one tensor past it, never past the
  // next block boundary.
  settings.prefetch_bucket_size = 3.5e6;
  EXPECT_DOUBLE_EQ(gathered(), 1e6 + 3.9e6);
  settings.prefetch_bucket_size = 3.8e6;
  EXPECT_DOUBLE_EQ(gathered(), 1e6 + 4e6);
  settings.prefetch_bucket_size = 1e5;
  EXPECT_DOUBLE_EQ(gathered(), 1e6 + 5e5);
  settings.prefetch_bucket_size = 5e7;
  settings.max_live_parameters = 3e6;  // prefetch stops at the cap
  EXPECT_DOUBLE_EQ(gathered(), 3e6);
  settings.prefetch_bucket_size = 0;  // no prefetch
  EXPECT_DOUBLE_EQ(gathered(), 1e6);
  // Reuse: blocks whose forward and backward are less than max_reuse_distance apart stay
  // gathered; twice the elements after a block lie between its two uses.
  settings.max_reuse_distance = 2 * 9.5e6;  // the last 10 blocks (0..9 blocks after)
  EXPECT_DOUBLE_EQ(gathered(), 10 * 1e6);
  settings.max_reuse_distance = 1e9;  // DeepSpeed's default: the whole model
  EXPECT_DOUBLE_EQ(gathered(), 1e8);
  // Persistent tensors do not gather, and stay whole on every rank.
  shape.persistent = 2e7;
  EXPECT_DOUBLE_EQ(model_states(shape, {3}, 8, settings).parameters, 4 * (slice + 8e7 + 2e7));
}

TEST(ModelStates, RecommendedSettingsKeepThePlannersNumbers) {
  // The planner's own test: two gathered layers and two windows at stage 3.
  const double P = 8e8, layer = 1e7;
  auto shape = blocks(P, layer);
  shape.largest_module = layer;
  const auto states = model_states(shape, {3}, 8, plan_settings(shape));
  EXPECT_DOUBLE_EQ(states.parameters + states.gradients + states.optimizer_states,
                   16 * (P / 8) + 4 * 2 * layer + 4 * 2 * layer);
}

// ---- model states in 16 bits

PlanSettings sixteen_bit(double communication_bytes) {
  PlanSettings settings;
  settings.precision = mixed_precision(communication_bytes);
  settings.reduce_bucket_size = 5e6;
  settings.overlap_comm = false;  // DeepSpeed's default below stage 3
  return settings;
}

TEST(ModelStates, SixteenBitsPerKindAtEveryStage) {
  auto shape = blocks(1e8, 1e6);  // 100 blocks
  shape.tied = 2e6;               // an embedding whose gradient lands whole
  shape.persistent = 1e6;
  const double P = 1e8, slice = P / 4;
  auto settings = sixteen_bit(2);
  settings.sub_group_size = 1e7;  // the fp32 unscaled gradients: a sub-group, not the range
  settings.prefetch_bucket_size = 0;
  settings.max_reuse_distance = 0;
  const double windows = 5e6 + 2e6;  // one window (no overlap_comm) and the tied gradient
  auto at = [&](int stage) { return model_states(shape, {stage}, 4, settings); };
  EXPECT_DOUBLE_EQ(at(0).parameters, 2 * P);
  EXPECT_DOUBLE_EQ(at(0).gradients, 2 * P);
  EXPECT_DOUBLE_EQ(at(0).optimizer_states, 12 * P + 4 * 1e7);
  EXPECT_DOUBLE_EQ(at(1).parameters, 2 * P);
  EXPECT_DOUBLE_EQ(at(1).gradients, 2 * P + 2 * slice);
  EXPECT_DOUBLE_EQ(at(1).optimizer_states, 12 * slice + 4 * 1e7);
  EXPECT_DOUBLE_EQ(at(2).parameters, 2 * P);
  EXPECT_DOUBLE_EQ(at(2).gradients, 2 * windows + 2 * slice);
  EXPECT_DOUBLE_EQ(at(2).optimizer_states, 12 * slice + 4 * 1e7);
  // Stage 3: the slice, one gathered block (no prefetch, no reuse), persistent tensors.
  EXPECT_DOUBLE_EQ(at(3).parameters, 2 * (slice + 1e6 + 1e6));
  EXPECT_DOUBLE_EQ(at(3).gradients, at(2).gradients);
  EXPECT_DOUBLE_EQ(at(3).optimizer_states, at(2).optimizer_states);
  for (int stage = 0; stage <= 3; ++stage) EXPECT_EQ(at(stage).comm_buffers, 0) << stage;
  // A sub-group larger than the range: the range.
  settings.sub_group_size = 1e9;
  EXPECT_DOUBLE_EQ(at(0).optimizer_states, 12 * P + 4 * P);
  EXPECT_DOUBLE_EQ(at(1).optimizer_states, 12 * slice + 4 * slice);
  // Scratch while accumulating, in 2 bytes.
  settings.gradient_accumulation_steps = 2;
  EXPECT_DOUBLE_EQ(at(2).comm_buffers, 2 * 5e6);
}

TEST(ModelStates, ReductionsInAnotherDtypeStageEveryBucket) {
  auto shape = blocks(1e8, 1e6);
  shape.tied = 2e6;
  const double P = 1e8, slice = P / 4;
  auto settings = sixteen_bit(4);  // fp16 gradients reduced in fp32
  auto comm = [&](int stage, double ranks = 4) {
    return model_states(shape, {stage}, ranks, settings).comm_buffers;
  };
  // Without overlap_comm one bucket at a time: its staging copy and the part received.
  EXPECT_DOUBLE_EQ(comm(0), 4 * 5e6);  // stage 0 all-reduces: nothing is received apart
  EXPECT_EQ(comm(0, 1), 0);            // one rank reduces nothing
  EXPECT_DOUBLE_EQ(comm(1), 4 * (5e6 + 5e6));
  EXPECT_DOUBLE_EQ(comm(2), 4 * (5e6 + 5e6));
  EXPECT_DOUBLE_EQ(comm(3), 4 * (5e6 + 5e6));
  EXPECT_DOUBLE_EQ(comm(2, 1), 4 * (5e6 + 5e6));  // one rank still converts and "reduces"
  // The received part is at most the slice.
  EXPECT_DOUBLE_EQ(comm(2, 40), 4 * (5e6 + P / 40));
  // Buckets below the tied gradient's size cut it too.
  settings.reduce_bucket_size = 1e5;
  EXPECT_DOUBLE_EQ(comm(2), 4 * (1e5 + 1e5));
  settings.reduce_bucket_size = 5e6;
  // overlap_comm: stage 1 completes nothing before backward ends; stages 2-3 keep the buckets
  // of two windows and the tied gradient in flight.
  settings.overlap_comm = true;
  EXPECT_DOUBLE_EQ(comm(1), 4 * (P + slice));
  EXPECT_DOUBLE_EQ(comm(2), 4 * (2 * 5e6 + 2e6 + 12e6));
  EXPECT_DOUBLE_EQ(comm(3), 4 * (2 * 5e6 + 2e6 + 12e6));
  // A window per bucket: all of it in flight.
  settings.contiguous_gradients = false;
  EXPECT_DOUBLE_EQ(comm(2), 4 * (P + slice));
  settings.contiguous_gradients = true;
  // All-reduce in place of reduce-scatter: the staging copies only.
  settings.reduce_scatter = false;
  EXPECT_DOUBLE_EQ(comm(2), 4 * (2 * 5e6 + 2e6));
  // Gradient accumulation adds nothing: the received part goes through scratch anyway.
  settings.reduce_scatter = true;
  settings.gradient_accumulation_steps = 8;
  EXPECT_DOUBLE_EQ(comm(2), 4 * (2 * 5e6 + 2e6 + 12e6));
  // Model states other than the buffers are those of 16-bit reductions.
  const auto staged = model_states(shape, {2}, 4, settings);
  auto unstaged = settings;
  unstaged.precision.communication_bytes = 2;
  const auto plain = model_states(shape, {2}, 4, unstaged);
  EXPECT_DOUBLE_EQ(staged.gradients, plain.gradients);
  EXPECT_DOUBLE_EQ(staged.optimizer_states, plain.optimizer_states);
}

TEST(ModelStates, Fp32TrainingWithSixteenBitReductions) {
  // communication_data_type fp16 with fp32 training: staged in 2 bytes, no master copy.
  const auto shape = blocks(1e8, 1e6);
  PlanSettings settings;
  settings.reduce_bucket_size = 5e6;
  settings.overlap_comm = false;
  settings.precision.communication_bytes = 2;
  const auto states = model_states(shape, {2}, 4, settings);
  EXPECT_DOUBLE_EQ(states.parameters, 4e8);
  EXPECT_DOUBLE_EQ(states.gradients, 4 * (5e6 + 2.5e7));
  EXPECT_DOUBLE_EQ(states.optimizer_states, 8 * 2.5e7);
  EXPECT_DOUBLE_EQ(states.comm_buffers, 2 * (5e6 + 5e6));
}

// ---- the footprint and the verdict

RunDescription small_run() {
  RunDescription run;
  run.model = blocks(3e4, 1e4);  // a 30K-parameter model
  run.model.tensors = 40;
  run.model.activation_bytes = 7.98 * kGiB;
  run.placement.stage = 0;
  run.ranks = 2;
  run.micro_batch = 20000;
  run.seq_len = 64;
  run.data_bytes = 4 * kMiB;
  return run;
}

TEST(RunFootprint, FollowsTheRunsPrecision) {
  auto run = small_run();
  run.settings.precision = mixed_precision();
  const auto footprint = run_footprint(run);
  // Stage 0, 3e4 parameters: 2 + 2 + 12 bytes each and the fp32 unscaled gradients.
  EXPECT_DOUBLE_EQ(footprint.parameters, 2 * 3e4);
  EXPECT_DOUBLE_EQ(footprint.gradients, 2 * 3e4);
  EXPECT_DOUBLE_EQ(footprint.optimizer_states, 12 * 3e4 + 4 * 3e4);
  EXPECT_EQ(footprint.comm_buffers, 0);
}

TEST(RunFootprint, AddsEveryCategoryOnAHostOnlyRun) {
  const auto footprint = run_footprint(small_run());
  EXPECT_DOUBLE_EQ(footprint.model_states(), 16 * 3e4);  // stage 0: 16 bytes per parameter
  EXPECT_DOUBLE_EQ(footprint.activations, 7.98 * kGiB);
  EXPECT_DOUBLE_EQ(footprint.bookkeeping, 40 * kBookkeepingBytesPerTensor + 8 * 20000 * 64);
  EXPECT_DOUBLE_EQ(footprint.host(), footprint.device() + 4 * kMiB + footprint.bookkeeping);
}

TEST(RunFootprint, GpuRunsAndTheDeviceCapLeaveHostMemoryOut) {
  auto run = small_run();
  run.device_is_host = false;
  const auto on_gpu = run_footprint(run);
  EXPECT_DOUBLE_EQ(on_gpu.host(), 4 * kMiB + on_gpu.bookkeeping);
  run.device_is_host = true;
  run.device_limit = 1 * kGiB;
  const auto capped = run_footprint(run);
  EXPECT_DOUBLE_EQ(capped.host(), 1 * kGiB + 4 * kMiB + capped.bookkeeping);
  EXPECT_TRUE(contains(describe_footprint(capped), "device arena 1.00 GiB"))
      << describe_footprint(capped);
}

TEST(RunFootprint, CpuOffloadMovesTheOptimizerToHostMemory) {
  auto run = small_run();
  run.placement = {2, Offload::Cpu, Offload::None};
  run.settings.reduce_bucket_size = 1e4;  // a layer
  run.settings.overlap_comm = false;
  const double slice = 3e4 / 2;
  const auto footprint = run_footprint(run);
  // Device: parameters, the landing windows (one: without overlap_comm) and the scratch each
  // reduced part is received into; host: master and moments, the gradient slice, the new
  // parameters' staging and the landing buffer of one part.
  EXPECT_DOUBLE_EQ(footprint.parameters, 4 * 3e4);
  EXPECT_DOUBLE_EQ(footprint.gradients, 4 * 1e4);
  EXPECT_EQ(footprint.optimizer_states, 0);
  EXPECT_DOUBLE_EQ(footprint.comm_buffers, 4 * 1e4);
  EXPECT_DOUBLE_EQ(footprint.offloaded, (12 + 4 + 4) * slice + 4 * 1e4);
  // On a GPU the offloaded bytes are what the run needs of host memory besides data and
  // bookkeeping; on a CPU-only run the device arena comes on top.
  run.device_is_host = false;
  const auto on_gpu = run_footprint(run);
  EXPECT_DOUBLE_EQ(on_gpu.host(), on_gpu.offloaded + 4 * kMiB + on_gpu.bookkeeping);
  EXPECT_DOUBLE_EQ(footprint.host(), on_gpu.host() + footprint.device());
  EXPECT_TRUE(contains(describe_footprint(on_gpu), "offloaded states 332.03 KiB"))
      << describe_footprint(on_gpu);
}

TEST(RunFootprint, NvmeOffloadKeepsSwapBuffersInHostMemory) {
  auto run = small_run();
  run.placement = {2, Offload::Nvme, Offload::None};
  run.settings.reduce_bucket_size = 1e4;  // a layer
  run.settings.overlap_comm = false;
  run.settings.sub_group_size = 5e3;  // the run's own (train passes it as both)
  run.settings.nvme_sub_group_size = 5e3;
  run.settings.optimizer_buffer_count = 6;  // two sets
  const double slice = 3e4 / 2;
  const auto cpu = [&] {
    auto on_cpu = run;
    on_cpu.placement.optimizer = Offload::Cpu;
    return run_footprint(on_cpu);
  }();
  const auto footprint = run_footprint(run);
  // The fp32 master and both moments on NVMe; in host memory two sets of three sub-group
  // buffers instead of them; the device and the gradient side unchanged.
  EXPECT_DOUBLE_EQ(footprint.nvme, 12 * slice);
  EXPECT_DOUBLE_EQ(footprint.offloaded, cpu.offloaded - 12 * slice + 2 * 3 * 4 * 5e3);
  EXPECT_DOUBLE_EQ(footprint.device(), cpu.device());
  EXPECT_EQ(cpu.nvme, 0);
  // Parameters on NVMe beyond max_in_cpu (stage 3).
  run.placement = {3, Offload::Nvme, Offload::Nvme};
  run.settings.parameter_max_in_cpu = 5e3;
  run.settings.parameter_buffer_count = 2;
  run.settings.parameter_buffer_size = 1e3;
  const auto both = run_footprint(run);
  EXPECT_DOUBLE_EQ(both.nvme, 12 * slice + 4 * (slice - 5e3));
}

TEST(RunFootprint, AbsurdSizesGiveHugeNumbersNotOverflows) {
  auto run = small_run();
  run.model = blocks(1e30, 1e20);
  run.model.tensors = 1e12;
  run.model.activation_bytes = 1e40;
  run.data_bytes = 4e12;
  run.placement.stage = 3;
  const auto footprint = run_footprint(run);
  EXPECT_TRUE(std::isfinite(footprint.host()));
  EXPECT_GT(footprint.host(), 1e40);
  const auto verdict = check_host_memory(footprint, 8, AvailableMemory{64 * kGiB, "MemAvailable"});
  EXPECT_FALSE(verdict.fits);
  EXPECT_TRUE(contains(verdict.message, "EiB")) << verdict.message;
  EXPECT_FALSE(contains(verdict.message, " -")) << verdict.message;  // never negative
  // NaN (a shape nobody checked) never fits.
  run.model.activation_bytes = std::numeric_limits<double>::quiet_NaN();
  EXPECT_FALSE(check_host_memory(run_footprint(run), 1, AvailableMemory{64 * kGiB, "x"}).fits);
}

TEST(MemoryVerdict, NamesWhatTheRunNeedsAndWhatIsAvailable) {
  const auto footprint = run_footprint(small_run());
  const auto verdict = check_host_memory(footprint, 2, AvailableMemory{5.9 * kGiB, "MemAvailable"});
  EXPECT_FALSE(verdict.fits);
  EXPECT_DOUBLE_EQ(verdict.needed_on_node, 2 * footprint.host());
  EXPECT_EQ(verdict.message,
            "this run needs 7.99 GiB per rank (activations 7.98 GiB for micro-batch 20000 x 64 "
            "tokens, bookkeeping 9.79 MiB, data 4.00 MiB, model states 468.75 KiB), 15.99 GiB "
            "for the 2 ranks on this node; 5.90 GiB is available (MemAvailable)");
  // One rank, enough memory: fits, and the message has no per-node part.
  const auto alone = check_host_memory(footprint, 1, AvailableMemory{22.9 * kGiB, "MemAvailable"});
  EXPECT_TRUE(alone.fits);
  EXPECT_FALSE(contains(alone.message, "ranks on this node")) << alone.message;
  EXPECT_TRUE(contains(alone.message, "22.90 GiB is available (MemAvailable)")) << alone.message;
  // Unknown: not refused, and said.
  const auto unknown = check_host_memory(footprint, 2, AvailableMemory{});
  EXPECT_TRUE(unknown.fits);
  EXPECT_TRUE(contains(unknown.message, "could not be read")) << unknown.message;
  // The boundary: exactly what is available fits.
  EXPECT_TRUE(check_host_memory(footprint, 3, AvailableMemory{3 * footprint.host(), "x"}).fits);
}

// ---- /proc/meminfo and cgroups

const char* kMeminfo =
    "MemTotal:       24523180 kB\n"
    "MemFree:        23171436 kB\n"
    "MemAvailable:   23012345 kB\n"
    "Buffers:           12345 kB\n";

TEST(HostMemory, ParsesMemAvailable) {
  EXPECT_DOUBLE_EQ(*parse_meminfo_available(kMeminfo), 23012345.0 * 1024);
  EXPECT_FALSE(parse_meminfo_available("MemTotal: 100 kB\nMemFree: 50 kB\n"));
  EXPECT_FALSE(parse_meminfo_available(""));
}

TEST(HostMemory, ParsesCgroupFiles) {
  EXPECT_DOUBLE_EQ(*parse_cgroup_limit("8589934592\n"), 8589934592.0);
  EXPECT_FALSE(parse_cgroup_limit("max\n"));                  // v2: no limit
  EXPECT_FALSE(parse_cgroup_limit("9223372036854771712\n"));  // v1: no limit
  EXPECT_FALSE(parse_cgroup_limit("garbage"));
  EXPECT_DOUBLE_EQ(*parse_cgroup_usage("123456\n"), 123456.0);
  EXPECT_DOUBLE_EQ(parse_inactive_file("anon 100\nfile 900\nactive_file 300\ninactive_file 600\n"),
                   600.0);
  EXPECT_DOUBLE_EQ(parse_inactive_file("cache 5\ninactive_file 7\ntotal_inactive_file 70\n"),
                   70.0);  // v1: the hierarchical total
  EXPECT_DOUBLE_EQ(parse_inactive_file("anon 1\n"), 0.0);
}

TEST(HostMemory, ParsesProcSelfCgroup) {
  const auto v2 = parse_proc_self_cgroup("0::/user.slice/user-0.slice/session-3.scope\n");
  EXPECT_EQ(v2.v2.value_or("?"), "/user.slice/user-0.slice/session-3.scope");
  EXPECT_FALSE(v2.v1_memory);
  const auto v1 = parse_proc_self_cgroup(
      "12:cpu,cpuacct:/slurm/uid_1/job_7\n7:memory:/slurm/uid_1/job_7/step_0\n"
      "1:name=systemd:/user.slice\n0::/user.slice\n");
  EXPECT_EQ(v1.v1_memory.value_or("?"), "/slurm/uid_1/job_7/step_0");
  EXPECT_EQ(v1.v2.value_or("?"), "/user.slice");
  EXPECT_EQ(parse_proc_self_cgroup("4:cpu,memory:/docker/ab:cd\n").v1_memory.value_or("?"),
            "/docker/ab:cd");  // a path may contain ':'
}

FileReader files(std::map<std::string, std::string> contents) {
  return [contents](const std::string& path) -> std::optional<std::string> {
    const auto it = contents.find(path);
    if (it == contents.end()) return std::nullopt;
    return it->second;
  };
}

TEST(HostMemory, MemAvailableAloneWithoutALimit) {
  const auto available =
      available_host_memory(files({{"/proc/meminfo", kMeminfo},
                                   {"/proc/self/cgroup", "0::/user.slice\n"},
                                   {"/sys/fs/cgroup/user.slice/memory.max", "max\n"}}));
  EXPECT_DOUBLE_EQ(available.bytes, 23012345.0 * 1024);
  EXPECT_EQ(available.source, "MemAvailable");
}

TEST(HostMemory, TheTightestCgroupOnThePathWins) {
  const std::string job = "/sys/fs/cgroup/slurm/job_7";
  const auto available = available_host_memory(files({
      {"/proc/meminfo", kMeminfo},
      {"/proc/self/cgroup", "0::/slurm/job_7/step_0\n"},
      {job + "/step_0/memory.max", "max\n"},
      {job + "/memory.max", "8589934592\n"},      // 8 GiB for the job
      {job + "/memory.current", "3221225472\n"},  // 3 GiB used, 1 GiB of it inactive cache
      {job + "/memory.stat", "anon 2147483648\ninactive_file 1073741824\n"},
      {"/sys/fs/cgroup/slurm/memory.max", "68719476736\n"},  // 64 GiB: looser
      {"/sys/fs/cgroup/slurm/memory.current", "0\n"},
  }));
  EXPECT_DOUBLE_EQ(available.bytes, 6 * kGiB);
  EXPECT_EQ(available.source, "cgroup /slurm/job_7 memory.max 8.00 GiB");
}

TEST(HostMemory, AContainersCgroupIsAtTheMountRoot) {
  // Without a cgroup namespace the path names the host's hierarchy, absent in the container.
  const auto available = available_host_memory(files({
      {"/proc/meminfo", kMeminfo},
      {"/proc/self/cgroup", "0::/kubepods/pod1/ctr\n"},
      {"/sys/fs/cgroup/memory.max", "2147483648\n"},
      {"/sys/fs/cgroup/memory.current", "1073741824\n"},
  }));
  EXPECT_DOUBLE_EQ(available.bytes, 1 * kGiB);
  EXPECT_EQ(available.source, "cgroup / memory.max 2.00 GiB");
}

TEST(HostMemory, CgroupV1MemoryController) {
  const std::string base = "/sys/fs/cgroup/memory/slurm/uid_1/job_7";
  const auto available = available_host_memory(files({
      {"/proc/meminfo", kMeminfo},
      {"/proc/self/cgroup", "7:memory:/slurm/uid_1/job_7\n0::/\n"},
      {base + "/memory.limit_in_bytes", "4294967296\n"},
      {base + "/memory.usage_in_bytes", "1073741824\n"},
      {base + "/memory.stat", "total_inactive_file 0\n"},
      {"/sys/fs/cgroup/memory/memory.limit_in_bytes", "9223372036854771712\n"},
  }));
  EXPECT_DOUBLE_EQ(available.bytes, 3 * kGiB);
  EXPECT_EQ(available.source, "cgroup /slurm/uid_1/job_7 memory.limit_in_bytes 4.00 GiB");
}

TEST(HostMemory, MemAvailableWinsWhenTighterAndNothingReadableIsUnknown) {
  const auto available = available_host_memory(files({
      {"/proc/meminfo", "MemAvailable: 1048576 kB\n"},  // 1 GiB
      {"/proc/self/cgroup", "0::/\n"},
      {"/sys/fs/cgroup/memory.max", "8589934592\n"},
      {"/sys/fs/cgroup/memory.current", "0\n"},
  }));
  EXPECT_DOUBLE_EQ(available.bytes, 1 * kGiB);
  EXPECT_EQ(available.source, "MemAvailable");
  EXPECT_FALSE(available_host_memory(files({})).known());
  // This machine: something is known, and it is not negative.
  const auto here = available_host_memory();
  EXPECT_TRUE(here.known());
  EXPECT_GE(here.bytes, 0);
}

// ---- sizes past int64

TEST(Sizes, FormatSizeGoesPastInt64) {
  EXPECT_EQ(format_size(512), "512 B");
  EXPECT_EQ(format_size(1.5 * kGiB), "1.50 GiB");
  EXPECT_EQ(format_size(3.0 * 1024 * 1024 * kGiB), "3.00 PiB");
  EXPECT_EQ(format_size(9223372036854775807.0), "8.00 EiB");
  EXPECT_EQ(format_size(1.2e6 * 1024 * 1024 * 1024 * kGiB), "1.2e+06 EiB");
  EXPECT_EQ(format_size(std::numeric_limits<double>::infinity()), "infinite");
  EXPECT_EQ(format_size(std::nan("")), "not a number");
  EXPECT_EQ(format_bytes(INT64_MAX), "8.00 EiB");
  EXPECT_EQ(format_bytes(1023), "1023 B");
  EXPECT_EQ(format_bytes(1536), "1.50 KiB");
}

TEST(Sizes, ParseBytesRefusesWhatInt64CannotHold) {
  EXPECT_EQ(parse_bytes("9e18"), 9000000000000000000);
  EXPECT_EQ(parse_bytes("8388607TiB"), 8388607LL << 40);
  EXPECT_THROW(parse_bytes("8388608TiB"), std::invalid_argument);  // exactly 2^63
  EXPECT_THROW(parse_bytes("1e19"), std::invalid_argument);
  EXPECT_THROW(parse_bytes("1e30TiB"), std::invalid_argument);
  EXPECT_THROW(parse_bytes("inf"), std::invalid_argument);
  EXPECT_THROW(parse_bytes("nan GiB"), std::invalid_argument);
  try {
    parse_bytes("1e30TiB");
  } catch (const std::invalid_argument& error) {
    EXPECT_TRUE(contains(error.what(), "1e30TiB")) << error.what();
  }
}

// ---- the plan at sizes past anything real

TEST(Planner, HugeModelsGiveFiniteNonNegativeRows) {
  Machine machine;
  machine.gpus_per_node = 8;
  machine.nodes = 1000;
  machine.gpu_bytes = 80 * kGiB;
  machine.cpu_bytes = 2048 * kGiB;
  for (const double parameters : {1e15, 1e18, 1e30}) {
    const auto shape = blocks(parameters, parameters / 100);
    const auto rows = make_plan(shape, machine, plan_settings(shape));
    for (const auto& row : rows) {
      for (const double value : {row.gpu_model_states(), row.cpu_per_node, row.nvme_per_node,
                                 row.network_bytes, row.offload_bytes}) {
        EXPECT_TRUE(std::isfinite(value) && value >= 0) << row.name() << " " << value;
      }
      EXPECT_FALSE(row.fits) << row.name();
    }
    EXPECT_EQ(fastest_fitting(rows), -1);
  }
  // A shape with NaN fits nowhere.
  const auto broken = blocks(std::nan(""), 1e6);
  EXPECT_EQ(fastest_fitting(make_plan(broken, machine, plan_settings(broken))), -1);
}

}  // namespace
