// SPDX-License-Identifier: Apache-2.0
// The run footprint (memory/footprint.hpp) against the memory tracker of real training steps:
// a small model at stages 0-3 on 1, 2 and 4 ranks, with the settings `zerotrain plan`
// recommends, DeepSpeed's defaults, and settings that exercise every rule (buckets below a
// layer, a window per bucket, gradient accumulation, partial reuse, a max_live cap), in fp32,
// fp16 and bf16, with gradients reduced in the training dtype and in another one (staged); and
// with ZeRO-Offload to CPU memory (the optimizer at stages 1-3, the parameters too at stage 3),
// where the host's peaks and the copies of a step are checked as well.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <random>
#include <string>
#include <tuple>

#include "comm/communicator.hpp"
#include "io/sampler.hpp"
#include "io/synthetic_markov.hpp"
#include "io/token_source.hpp"
#include "memory/footprint.hpp"
#include "memory/tracker.hpp"
#include "model/gpt.hpp"
#include "zero/engine.hpp"

namespace {

using zt::memory::Kind;
using zt::memory::Place;

constexpr int kMicroBatch = 2;
constexpr int kSeqLen = 16;
constexpr double kPersistence = 1000;  // the blocks' four weights and both embeddings gather

zt::model::GptConfig small_model() {
  zt::model::GptConfig config;
  config.vocab_size = 40;
  config.n_positions = 32;
  config.n_embd = 40;  // tensors of 40, 120, 160 elements: the flat layout pads them
  config.n_layer = 3;
  config.n_head = 4;
  return config;
}

struct Variant {
  const char* name;
  zt::memory::PlanSettings settings;
};

std::vector<Variant> variants() {
  const auto shape =
      zt::model::Gpt::memory_shape(small_model(), kMicroBatch, kSeqLen, kPersistence);
  std::vector<Variant> list;
  auto recommended = zt::memory::plan_settings(shape);
  recommended.persistence_threshold = kPersistence;
  list.push_back({"recommended", recommended});

  zt::memory::PlanSettings defaults;  // DeepSpeed's, as EngineSettings has them
  defaults.reduce_bucket_size = 5e8;
  defaults.overlap_comm = false;
  defaults.prefetch_bucket_size = 5e7;
  defaults.persistence_threshold = kPersistence;
  defaults.max_live_parameters = 1e9;
  defaults.max_reuse_distance = 1e9;  // keeps every layer gathered from forward to backward
  list.push_back({"deepspeed_defaults", defaults});

  zt::memory::PlanSettings rules;
  rules.reduce_bucket_size = 3000;  // below a layer: windows of the largest layer
  rules.overlap_comm = true;
  rules.contiguous_gradients = false;     // a window per bucket, kept until the reductions end
  rules.gradient_accumulation_steps = 2;  // the second micro-step reduces through scratch
  rules.prefetch_bucket_size = 5000;      // whole tensors: one weight ahead
  rules.persistence_threshold = kPersistence;
  rules.max_reuse_distance = 2.5 * shape.layer;  // the last block and the head stay
  list.push_back({"every_rule", rules});

  zt::memory::PlanSettings capped = defaults;
  capped.max_reuse_distance = 0;
  capped.max_live_parameters = 20000;  // prefetch stops at one block's worth
  list.push_back({"max_live_cap", capped});
  return list;
}

using zt::backend::DType;

// A training dtype, a communication_data_type and whether gradients accumulate in fp32 at
// stages 0-1 (data_types.grad_accum_dtype; the engine accumulates in the training dtype from
// stage 2 on), as the engine takes them.
struct Dtypes {
  DType training;
  DType communication;
  bool fp32_accumulation = false;
};

// DeepSpeed's grad_accum_dtype when it is unset: the training dtype under ZeRO, fp32 for bf16
// without it.
DType accumulation_dtype(const Dtypes& dtypes, int stage) {
  if (stage < 2 && dtypes.fp32_accumulation) return DType::F32;
  return dtypes.training == DType::BF16 && stage == 0 ? DType::F32 : dtypes.training;
}

std::string dtypes_name(const Dtypes& dtypes) {
  return std::string(zt::kernels::dtype_name(dtypes.training)) + "_reduced_in_" +
         zt::kernels::dtype_name(dtypes.communication) +
         (dtypes.fp32_accumulation ? "_accumulated_in_fp32" : "");
}

// What the application derives from the config's fp16/bf16, communication_data_type and
// data_types.grad_accum_dtype.
zt::memory::Precision precision_of(const Dtypes& dtypes, int stage) {
  zt::memory::Precision precision;
  precision.training_bytes = zt::kernels::size_of(dtypes.training);
  precision.communication_bytes = zt::kernels::size_of(dtypes.communication);
  precision.master_copy = dtypes.training != DType::F32;
  precision.accumulation_bytes = zt::kernels::size_of(accumulation_dtype(dtypes, stage));
  return precision;
}

zt::zero::EngineSettings engine_settings(int stage, const zt::memory::PlanSettings& plan,
                                         const Dtypes& dtypes,
                                         const zt::memory::Placement& placement = {}) {
  zt::zero::EngineSettings settings;
  settings.dtype = dtypes.training;
  settings.communication_dtype = dtypes.communication;
  settings.gradient_accumulation_dtype = accumulation_dtype(dtypes, stage);
  settings.stage = stage;
  settings.micro_batch = kMicroBatch;
  settings.seq_len = kSeqLen;
  settings.gradient_accumulation_steps = static_cast<int>(plan.gradient_accumulation_steps);
  settings.reduce_bucket_size = static_cast<std::int64_t>(plan.reduce_bucket_size);
  settings.allgather_bucket_size = static_cast<std::int64_t>(plan.reduce_bucket_size);
  settings.overlap_comm = plan.overlap_comm;
  settings.contiguous_gradients = plan.contiguous_gradients;
  settings.reduce_scatter = plan.reduce_scatter;
  settings.prefetch_bucket_size = static_cast<std::int64_t>(plan.prefetch_bucket_size);
  settings.param_persistence_threshold = static_cast<std::int64_t>(plan.persistence_threshold);
  settings.max_live_parameters = static_cast<std::int64_t>(plan.max_live_parameters);
  settings.max_reuse_distance = static_cast<std::int64_t>(plan.max_reuse_distance);
  settings.sub_group_size = static_cast<std::int64_t>(plan.sub_group_size);
  settings.optimizer.lr = 1e-3;
  settings.seed = 7;
  settings.offload.optimizer = placement.optimizer == zt::memory::Offload::Cpu;
  settings.offload.parameters = placement.parameters == zt::memory::Offload::Cpu;
  settings.offload.ratio = plan.offload_ratio;
  settings.offload.parameter_buffer_count = static_cast<int>(plan.parameter_buffer_count);
  return settings;
}

// Peak bytes by kind in one place, above what it held before the engine was built.
struct Kinds {
  double parameters = 0, gradients = 0, optimizer_states = 0, comm_buffers = 0;
};

struct Measured {
  double parameters, gradients, optimizer_states, comm_buffers, activations, host_activations;
  Kinds host;
  // The engine's copies between the device and host memory in each of the two steps.
  double bytes_to_host[2], bytes_to_device[2];
};

Measured train_and_measure(zt::comm::Communicator& comm, const zt::zero::EngineSettings& settings) {
  auto& tracker = zt::memory::Tracker::instance();
  auto peak_above = [&](Place place, Kind kind, std::int64_t base) {
    return static_cast<double>(tracker.usage(place, kind).peak - base);
  };
  auto current = [&](Place place, Kind kind) { return tracker.usage(place, kind).current; };
  const auto base_parameters = current(Place::Device, Kind::Parameters);
  const auto base_gradients = current(Place::Device, Kind::Gradients);
  const auto base_states = current(Place::Device, Kind::OptimizerStates);
  const auto base_comm = current(Place::Device, Kind::CommBuffers);
  const auto base_activations = current(Place::Device, Kind::Activations);
  const auto base_host = current(Place::Host, Kind::Activations);
  const Kinds base_offloaded{static_cast<double>(current(Place::Host, Kind::Parameters)),
                             static_cast<double>(current(Place::Host, Kind::Gradients)),
                             static_cast<double>(current(Place::Host, Kind::OptimizerStates)),
                             static_cast<double>(current(Place::Host, Kind::CommBuffers))};
  tracker.reset_peaks();

  const auto config = small_model();
  std::mt19937 generator(3);
  std::vector<std::int32_t> stream(4000);
  for (auto& token : stream) token = static_cast<std::int32_t>(generator() % config.vocab_size);
  const zt::io::InMemoryTokens tokens(stream, config.vocab_size);
  const int accumulation = settings.gradient_accumulation_steps;
  zt::model::Gpt model(config, kMicroBatch, kSeqLen, settings.dtype);
  zt::zero::Engine engine(model, comm, settings);
  zt::io::SamplerConfig sampler_config{kSeqLen,
                                       kMicroBatch * accumulation * comm.size(),
                                       kMicroBatch,
                                       accumulation,
                                       comm.size(),
                                       comm.rank(),
                                       5};
  zt::io::Sampler sampler(sampler_config, tokens);
  Measured measured{};
  for (int step = 0; step < 2; ++step) {
    const auto result =
        engine.train_step([&](int micro, std::int32_t* inputs, std::int32_t* targets) {
          sampler.fill_micro_batch(tokens, step, micro, inputs, targets);
        });
    measured.bytes_to_host[step] = static_cast<double>(result.bytes_to_host);
    measured.bytes_to_device[step] = static_cast<double>(result.bytes_to_device);
  }
  measured.parameters = peak_above(Place::Device, Kind::Parameters, base_parameters);
  measured.gradients = peak_above(Place::Device, Kind::Gradients, base_gradients);
  measured.optimizer_states = peak_above(Place::Device, Kind::OptimizerStates, base_states);
  measured.comm_buffers = peak_above(Place::Device, Kind::CommBuffers, base_comm);
  measured.activations = peak_above(Place::Device, Kind::Activations, base_activations);
  measured.host_activations = peak_above(Place::Host, Kind::Activations, base_host);
  auto host_peak = [&](Kind kind, double base) {
    return peak_above(Place::Host, kind, static_cast<std::int64_t>(base));
  };
  measured.host = Kinds{host_peak(Kind::Parameters, base_offloaded.parameters),
                        host_peak(Kind::Gradients, base_offloaded.gradients),
                        host_peak(Kind::OptimizerStates, base_offloaded.optimizer_states),
                        host_peak(Kind::CommBuffers, base_offloaded.comm_buffers)};
  return measured;
}

// The flat layout's alignment padding: up to 15 elements per tensor, 4 bytes each.
double padding_bytes() {
  return 4.0 * 15 * static_cast<double>(small_model().num_tensors());
}

// Within 10% (the e2e plan test's bound), and within the padding where the quantity is that
// small.
void expect_close(double predicted, double measured, const std::string& what) {
  EXPECT_LE(std::fabs(predicted - measured), std::max(0.1 * measured, padding_bytes()))
      << what << ": predicted " << predicted << ", measured " << measured;
}

// An upper bound on every rank (within the padding) that the largest rank's value comes within
// 25% of. Every rank calls it.
void expect_bound(zt::comm::Communicator& world, double predicted, double measured,
                  const std::string& what) {
  EXPECT_LE(measured, predicted + padding_bytes())
      << what << ": predicted at most " << predicted << ", measured " << measured;
  const double largest = world.all_reduce_scalar(measured, zt::comm::ReduceOp::Max);
  EXPECT_GE(largest, 0.75 * predicted - padding_bytes())
      << what << ": predicted at most " << predicted << ", the largest rank's is " << largest;
}

class FootprintMeasured : public ::testing::TestWithParam<std::tuple<int, Dtypes>> {};

TEST_P(FootprintMeasured, ModelStatesAndActivationsMatchTheTracker) {
  const int stage = std::get<0>(GetParam());
  const Dtypes dtypes = std::get<1>(GetParam());
  auto world = zt::comm::make_mpi_communicator(MPI_COMM_WORLD);
  auto all = variants();
  if (dtypes.training != DType::F32) {
    // The unscaled fp32 gradients in sub-groups smaller than a rank's range.
    auto pieces = all.front();
    pieces.name = "sub_groups";
    pieces.settings.sub_group_size = 5000;
    all.push_back(pieces);
  }
  for (const auto& variant : all) {
    SCOPED_TRACE(std::string(variant.name) + ", stage " + std::to_string(stage) + ", " +
                 dtypes_name(dtypes) + ", " + std::to_string(world->size()) + " ranks");
    const Measured measured =
        train_and_measure(*world, engine_settings(stage, variant.settings, dtypes));

    zt::memory::RunDescription run;
    run.model =
        zt::model::Gpt::memory_shape(small_model(), kMicroBatch, kSeqLen,
                                     variant.settings.persistence_threshold, dtypes.training);
    run.placement.stage = stage;
    run.ranks = world->size();
    run.settings = variant.settings;
    run.settings.precision = precision_of(dtypes, stage);
    run.micro_batch = kMicroBatch;
    run.seq_len = kSeqLen;
    const auto footprint = zt::memory::run_footprint(run);

    expect_close(footprint.parameters, measured.parameters, "parameters");
    expect_close(footprint.gradients, measured.gradients, "gradients");
    expect_close(footprint.optimizer_states, measured.optimizer_states, "optimizer states");
    expect_close(footprint.comm_buffers, measured.comm_buffers, "communication scratch");
    EXPECT_EQ(footprint.activations, measured.activations);
    // The engine's micro-batch token buffers are part of the host bookkeeping.
    EXPECT_GE(footprint.bookkeeping, measured.host_activations);
  }
}

INSTANTIATE_TEST_SUITE_P(
    StageAndPrecision, FootprintMeasured,
    ::testing::Combine(
        ::testing::Values(0, 1, 2, 3),
        ::testing::Values(Dtypes{DType::F32, DType::F32}, Dtypes{DType::F16, DType::F16},
                          Dtypes{DType::F16, DType::F32}, Dtypes{DType::BF16, DType::BF16},
                          Dtypes{DType::BF16, DType::F32}, Dtypes{DType::F32, DType::BF16},
                          Dtypes{DType::F16, DType::F16, true},
                          Dtypes{DType::BF16, DType::F32, true})),
    [](const ::testing::TestParamInfo<FootprintMeasured::ParamType>& info) {
      return "stage" + std::to_string(std::get<0>(info.param)) + "_" +
             dtypes_name(std::get<1>(info.param));
    });

// ZeRO-Offload to CPU memory: what stays on the device, what moves to host memory (by kind)
// and the copies between them, against the tracker and the engine's step results.
struct OffloadCase {
  int stage;
  zt::memory::Placement placement;
  Dtypes dtypes;
};

std::string offload_case_name(const OffloadCase& test) {
  std::string name = "stage" + std::to_string(test.stage) + "_optimizer_on_cpu";
  if (test.placement.parameters == zt::memory::Offload::Cpu) name += "_parameters_on_cpu";
  return name + "_" + dtypes_name(test.dtypes);
}

class FootprintMeasuredOffload : public ::testing::TestWithParam<OffloadCase> {};

TEST_P(FootprintMeasuredOffload, DeviceAndHostMatchTheTracker) {
  const OffloadCase test = GetParam();
  auto world = zt::comm::make_mpi_communicator(MPI_COMM_WORLD);
  auto all = variants();
  const bool offload_parameters = test.placement.parameters == zt::memory::Offload::Cpu;
  {
    // Several sub-groups: the new parameters stream back through two staging buffers.
    auto pieces = all.front();
    pieces.name = "sub_groups";
    pieces.settings.sub_group_size = 5000;
    all.push_back(pieces);
  }
  if (test.stage == 3 && !offload_parameters) {
    // Partial offload: half of the sub-groups (and their states) stay on the device.
    auto partial = all.front();
    partial.name = "ratio_half";
    partial.settings.sub_group_size = 5000;
    partial.settings.offload_ratio = 0.5;
    all.push_back(partial);
  }
  if (offload_parameters) {
    // One gather from host memory in flight at a time.
    auto one = all.front();
    one.name = "one_staging_buffer";
    one.settings.parameter_buffer_count = 1;
    all.push_back(one);
  }
  for (const auto& variant : all) {
    SCOPED_TRACE(std::string(variant.name) + ", " + offload_case_name(test) + ", " +
                 std::to_string(world->size()) + " ranks");
    const Measured measured = train_and_measure(
        *world, engine_settings(test.stage, variant.settings, test.dtypes, test.placement));

    zt::memory::RunDescription run;
    run.model =
        zt::model::Gpt::memory_shape(small_model(), kMicroBatch, kSeqLen,
                                     variant.settings.persistence_threshold, test.dtypes.training);
    run.placement = test.placement;
    run.placement.stage = test.stage;
    run.ranks = world->size();
    run.settings = variant.settings;
    run.settings.precision = precision_of(test.dtypes, test.stage);
    run.micro_batch = kMicroBatch;
    run.seq_len = kSeqLen;
    const auto footprint = zt::memory::run_footprint(run);
    const auto states = zt::memory::model_states(run.model, run.placement, run.ranks, run.settings);

    // Exact: what follows from the slice and the layers (within the flat layout's padding).
    expect_close(footprint.gradients, measured.gradients, "device gradients");
    expect_close(footprint.optimizer_states, measured.optimizer_states, "device optimizer states");
    EXPECT_EQ(footprint.activations, measured.activations);
    expect_close(states.host_parameters, measured.host.parameters, "host parameters");
    expect_close(states.host_gradients, measured.host.gradients, "host gradients");
    expect_close(states.host_optimizer_states, measured.host.optimizer_states,
                 "host optimizer states");
    EXPECT_DOUBLE_EQ(footprint.offloaded, states.host());
    // Bounds: a rank's part of a bucket, or of the tensors a gather stages, depends on where
    // the bucket or tensor falls across the slices. The model says at most the bucket (or the
    // tensors) and at most the slice, which every rank respects and one nearly reaches.
    expect_bound(*world, states.host_comm_buffers, measured.host.comm_buffers,
                 "host landing buffer");
    expect_bound(*world, footprint.comm_buffers, measured.comm_buffers,
                 "device communication scratch");
    if (offload_parameters) {
      // The gathered and persistent parameters exactly; the staged parts within the bound.
      auto resident = run.placement;
      resident.parameters = zt::memory::Offload::None;
      const double e = run.settings.precision.training_bytes;
      const double gathered =
          zt::memory::model_states(run.model, resident, run.ranks, run.settings).parameters -
          e * run.model.parameters / run.ranks;
      EXPECT_LE(measured.parameters, footprint.parameters + padding_bytes()) << "device parameters";
      EXPECT_GE(measured.parameters, gathered - padding_bytes()) << "device parameters";
    } else {
      expect_close(footprint.parameters, measured.parameters, "device parameters");
    }
    // The copies of a step: the reduced gradients exactly; the parameters exactly when they
    // live on the device, with offload_param a rank's share of every gather (its mean over the
    // ranks). The step's token ids (inputs and targets, int32) go to the device too.
    const double tokens =
        2 * 4.0 * kMicroBatch * kSeqLen * variant.settings.gradient_accumulation_steps;
    for (int step = 0; step < 2; ++step) {
      expect_close(states.bytes_to_host, measured.bytes_to_host[step], "bytes to host per step");
      const double to_device = measured.bytes_to_device[step] - tokens;
      if (offload_parameters)
        expect_close(states.bytes_to_device,
                     world->all_reduce_scalar(to_device, zt::comm::ReduceOp::Sum) / world->size(),
                     "bytes to the device per step, mean over the ranks");
      else
        expect_close(states.bytes_to_device, to_device, "bytes to the device per step");
    }
  }
}

std::vector<OffloadCase> offload_cases() {
  using zt::memory::Offload;
  std::vector<OffloadCase> cases;
  const Dtypes precisions[] = {Dtypes{DType::F32, DType::F32}, Dtypes{DType::BF16, DType::BF16},
                               Dtypes{DType::BF16, DType::F32},
                               Dtypes{DType::BF16, DType::F32, true}};
  for (const auto& dtypes : precisions) {
    for (int stage = 1; stage <= 3; ++stage) {
      // fp32 accumulation of 16-bit gradients is built for stages 0-1 only.
      if (dtypes.fp32_accumulation && stage > 1) continue;
      cases.push_back({stage, {stage, Offload::Cpu, Offload::None}, dtypes});
    }
    if (!dtypes.fp32_accumulation) cases.push_back({3, {3, Offload::Cpu, Offload::Cpu}, dtypes});
  }
  return cases;
}

INSTANTIATE_TEST_SUITE_P(CpuOffload, FootprintMeasuredOffload, ::testing::ValuesIn(offload_cases()),
                         [](const ::testing::TestParamInfo<OffloadCase>& info) {
                           return offload_case_name(info.param);
                         });

double resident_bytes() {
  std::ifstream status("/proc/self/status");
  std::string key;
  while (status >> key)
    if (key == "VmRSS:") {
      double kib = 0;
      status >> kib;
      return kib * 1024;
    }
  return 0;
}

// The data part of the footprint: what the synthetic source holds once built is its stream
// and tables, and bytes_needed bounds it (it also covers the construction's transients).
TEST(SyntheticDataBytes, BoundWhatTheSourceHolds) {
  // 64 MiB of tokens: past glibc's largest mmap threshold, so they are fresh resident pages.
  auto spec = zt::io::default_synthetic_spec(64, std::int64_t{1} << 24);
  const double needed = zt::io::SyntheticMarkovSource::bytes_needed(spec);
  EXPECT_GE(needed, 4.0 * spec.num_tokens);
  EXPECT_LE(needed, 4.0 * spec.num_tokens + (1 << 20));  // 256 contexts: small tables
  const double before = resident_bytes();
  const zt::io::SyntheticMarkovSource source(spec);
  const double grown = resident_bytes() - before;
  EXPECT_GE(grown, 0.9 * 4.0 * spec.num_tokens);
  EXPECT_LE(grown, needed + (4 << 20)) << "resident growth " << grown << ", needed " << needed;
  // The sizes a command line can ask for: finite, huge, no overflow.
  spec.num_tokens = 1000000000000;  // --synthetic-tokens 1e12
  EXPECT_DOUBLE_EQ(
      zt::io::SyntheticMarkovSource::bytes_needed(spec),
      4e12 + zt::io::SyntheticMarkovSource::bytes_needed(zt::io::default_synthetic_spec(64, 0)));
  spec.vocab_size = 50257;  // V^order contexts: the constructor refuses, the bound does not
  spec.order = 8;
  EXPECT_TRUE(std::isfinite(zt::io::SyntheticMarkovSource::bytes_needed(spec)));
  EXPECT_GT(zt::io::SyntheticMarkovSource::bytes_needed(spec), 1e37);
}

}  // namespace
