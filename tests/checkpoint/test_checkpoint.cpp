// SPDX-License-Identifier: Apache-2.0
// Checkpoints through the engine: a run saved at step k and loaded into a fresh engine continues
// bit for bit at the same stage, and within 1e-5 at any other stage, world size or offload
// setting (the checkpoint of this world size is read at every stage); the reader returns every
// tensor range exactly as the engine gathers it. Run at np 1, 2 and 4.
#include <gtest/gtest.h>

#include <mpi.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>

#include "checkpoint/checkpoint.hpp"
#include "comm/communicator.hpp"
#include "io/sampler.hpp"
#include "io/token_source.hpp"
#include "model/gpt.hpp"
#include "zero/engine.hpp"

namespace {

using zt::zero::EngineSettings;

constexpr int kSeqLen = 12;
constexpr int kTrainBatch = 8;
constexpr int kSteps = 4;  // saved after kSteps, continued for kSteps more

zt::model::GptConfig tiny_model() {
  zt::model::GptConfig config;
  config.vocab_size = 13;  // wte (13 x 16): tensors straddle slice boundaries
  config.n_positions = 16;
  config.n_embd = 16;
  config.n_layer = 2;
  config.n_head = 2;
  return config;
}

const zt::io::InMemoryTokens& tokens() {
  static const zt::io::InMemoryTokens data = [] {
    std::mt19937 generator(11);
    std::vector<std::int32_t> values(20000);
    for (auto& value : values) value = static_cast<std::int32_t>(generator() % 13);
    return zt::io::InMemoryTokens(values, 13);
  }();
  return data;
}

EngineSettings settings_for(int stage, bool offload, bool nvme, int world) {
  EngineSettings settings;
  settings.stage = stage;
  settings.micro_batch = kTrainBatch / world;
  settings.seq_len = kSeqLen;
  settings.gradient_clipping = 0.5;
  settings.optimizer.lr = 3e-3;
  settings.optimizer.weight_decay = 0.01;
  settings.seed = 99;
  settings.reduce_bucket_size = 700;
  settings.sub_group_size = 900;  // several sub-groups, swapped one at a time
  settings.param_persistence_threshold = 0;
  settings.offload.optimizer = offload;
  settings.offload.parameters = offload && stage == 3;
  if (nvme) {
    const char* tmp = std::getenv("TMPDIR");
    int tag = static_cast<int>(getpid());
    MPI_Bcast(&tag, 1, MPI_INT, 0, MPI_COMM_WORLD);
    settings.offload.optimizer_nvme = true;
    settings.offload.optimizer_nvme_path = tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
    settings.offload.parameters_nvme = settings.offload.parameters;
    settings.offload.parameter_nvme_path = settings.offload.optimizer_nvme_path;
    settings.offload.parameter_max_in_cpu = 100;
    settings.offload.aio.block_size = 8192;
    settings.offload.swap_tag = "test-checkpoint-" + std::to_string(tag);
  }
  return settings;
}

struct Training {
  std::unique_ptr<zt::model::Gpt> model;
  std::unique_ptr<zt::comm::Communicator> comm;
  std::unique_ptr<zt::zero::Engine> engine;
  std::unique_ptr<zt::io::Sampler> sampler;

  explicit Training(const EngineSettings& settings) {
    comm = zt::comm::make_mpi_communicator(MPI_COMM_WORLD);
    model = std::make_unique<zt::model::Gpt>(tiny_model(), settings.micro_batch, kSeqLen);
    engine = std::make_unique<zt::zero::Engine>(*model, *comm, settings);
    zt::io::SamplerConfig config{
        kSeqLen, kTrainBatch, settings.micro_batch, 1, comm->size(), comm->rank(), 5};
    sampler = std::make_unique<zt::io::Sampler>(config, tokens());
  }

  std::vector<double> train(int steps) {
    std::vector<double> losses;
    for (int s = 0; s < steps; ++s) {
      const std::int64_t step = sampler->step();
      losses.push_back(engine
                           ->train_step([&](int m, std::int32_t* in, std::int32_t* out) {
                             sampler->fill_micro_batch(tokens(), step, m, in, out);
                           })
                           .loss);
      sampler->advance();
    }
    return losses;
  }

  zt::checkpoint::RunRecord record(int stage) const {
    zt::checkpoint::RunRecord run;
    run.precision = "fp32";
    run.optimizer = "Adam";
    run.stage = stage;
    run.world_size = comm->size();
    run.sampler = sampler->state();
    return run;
  }
};

/// A fresh directory, the same on every rank, removed at the end.
class SharedDirectory {
 public:
  SharedDirectory() {
    char name[256] = {};
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0) {
      const char* tmp = std::getenv("TMPDIR");
      std::string pattern = std::string(tmp != nullptr && *tmp ? tmp : "/tmp") + "/ztckptXXXXXX";
      std::snprintf(name, sizeof name, "%s", pattern.c_str());
      if (::mkdtemp(name) == nullptr) name[0] = '\0';
    }
    MPI_Bcast(name, sizeof name, MPI_CHAR, 0, MPI_COMM_WORLD);
    path_ = name;
  }
  ~SharedDirectory() {
    MPI_Barrier(MPI_COMM_WORLD);
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0) std::filesystem::remove_all(path_);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

struct Case {
  std::string name;
  int save_stage;
  bool save_offload;
  bool save_nvme;
  int load_stage;
  bool load_offload;
  bool load_nvme;
};

class SaveLoad : public ::testing::TestWithParam<Case> {};

TEST_P(SaveLoad, ContinuesTheRun) {
  const Case& c = GetParam();
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  SharedDirectory directory;
  ASSERT_FALSE(directory.path().empty());

  std::vector<double> uninterrupted;
  {
    Training full(settings_for(c.save_stage, c.save_offload, c.save_nvme, world));
    uninterrupted = full.train(2 * kSteps);
  }
  {
    Training first(settings_for(c.save_stage, c.save_offload, c.save_nvme, world));
    first.train(kSteps);
    zt::checkpoint::SaveSettings save;
    save.directory = directory.path();
    zt::checkpoint::save(*first.engine, MPI_COMM_WORLD, first.record(c.save_stage), save,
                         "global_step4");
  }
  Training second(settings_for(c.load_stage, c.load_offload, c.load_nvme, world));
  zt::checkpoint::Reader reader(directory.path(), "");
  EXPECT_EQ(reader.info().counters.global_steps, kSteps);
  zt::checkpoint::load(*second.engine, MPI_COMM_WORLD, reader);
  second.sampler->restore(reader.info().run.sampler);
  EXPECT_EQ(second.engine->applied_steps(), kSteps);
  const auto resumed = second.train(kSteps);
  const bool same = c.save_stage == c.load_stage;
  for (int s = 0; s < kSteps; ++s) {
    const double want = uninterrupted[static_cast<std::size_t>(kSteps + s)];
    if (same)
      EXPECT_EQ(resumed[static_cast<std::size_t>(s)], want) << c.name << " step " << kSteps + s + 1;
    else
      EXPECT_NEAR(resumed[static_cast<std::size_t>(s)], want, 1e-5 * std::fabs(want))
          << c.name << " step " << kSteps + s + 1;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Stages, SaveLoad,
    ::testing::Values(Case{"stage0", 0, false, false, 0, false, false},
                      Case{"stage1", 1, false, false, 1, false, false},
                      Case{"stage2_cpu", 2, true, false, 2, true, false},
                      Case{"stage3_cpu", 3, true, false, 3, true, false},
                      Case{"stage3_nvme", 3, true, true, 3, true, true},
                      Case{"stage1_nvme", 1, true, true, 1, true, true},
                      Case{"stage3_to_stage0", 3, false, false, 0, false, false},
                      Case{"stage0_to_stage3_nvme", 0, false, false, 3, true, true},
                      Case{"stage3_nvme_to_stage2", 3, true, true, 2, false, false}),
    [](const auto& info) { return info.param.name; });

TEST(Reader, ReturnsEveryRangeAsTheEngineGathersIt) {
  int world = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  SharedDirectory directory;
  Training run(settings_for(3, false, false, world));
  run.train(2);
  zt::checkpoint::SaveSettings save;
  save.directory = directory.path();
  zt::checkpoint::save(*run.engine, MPI_COMM_WORLD, run.record(3), save, "global_step2");
  zt::checkpoint::Reader reader(directory.path(), "global_step2");
  const auto& entries = run.engine->layout().entries();
  std::mt19937 generator(3);
  for (std::size_t t = 0; t < entries.size(); ++t) {
    std::vector<float> gathered(static_cast<std::size_t>(entries[t].numel));
    run.engine->gather_parameter(static_cast<int>(t), gathered.data());
    for (int trial = 0; trial < 3; ++trial) {
      const std::int64_t a = generator() % entries[t].numel;
      const std::int64_t b = a + generator() % (entries[t].numel - a) + 1;
      std::vector<float> read(static_cast<std::size_t>(b - a));
      reader.read(zt::zero::StateArray::Parameters, static_cast<int>(t), a, b, read.data());
      for (std::int64_t i = a; i < b; ++i)
        ASSERT_EQ(read[static_cast<std::size_t>(i - a)], gathered[static_cast<std::size_t>(i)])
            << entries[t].name << " element " << i;
    }
  }
}

}  // namespace
