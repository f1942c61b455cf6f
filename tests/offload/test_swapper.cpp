// SPDX-License-Identifier: Apache-2.0
// The NVMe swapper: sub-group passes in every pipeline setting give back exactly what was
// written, dense parameter files read and write any element range (edges kept), swap folders
// disappear at exit, after an error and when the process is killed by SIGTERM, and a full disk
// or a deleted file is an error that names the file and the rank.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "offload/aio.hpp"
#include "offload/swapper.hpp"

namespace {

using zt::offload::AioEngine;
using zt::offload::AioSettings;
using zt::offload::DenseSwapFile;
using zt::offload::IoError;
using zt::offload::SubGroupLayout;
using zt::offload::SubGroupSwapper;
using zt::offload::SubGroupSwapSettings;
using zt::offload::SwapFolder;

bool exists(const std::string& path) {
  struct stat info {};
  return stat(path.c_str(), &info) == 0;
}

class TempRoot {
 public:
  TempRoot() {
    const char* tmp = std::getenv("TMPDIR");
    std::string pattern =
        std::string(tmp != nullptr && *tmp != '\0' ? tmp : "/tmp") + "/zt-swapper-XXXXXX";
    std::vector<char> buffer(pattern.begin(), pattern.end());
    buffer.push_back('\0');
    if (mkdtemp(buffer.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = buffer.data();
  }
  ~TempRoot() { std::system(("rm -rf '" + path_ + "'").c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

AioSettings small_aio(int threads) {
  AioSettings settings;
  settings.block_size = 8192;
  settings.queue_depth = 4;
  settings.intra_op_parallelism = threads;
  settings.backend = zt::offload::IoBackend::Automatic;  // io_uring, or libaio where blocked
  return settings;
}

struct PassCase {
  int sets;
  bool pipeline_read;
  bool pipeline_write;
  int threads;
};

class SubGroupPasses : public ::testing::TestWithParam<PassCase> {};

// Three passes as the optimizer makes them: initialise (no read), update every value, check;
// with groups of uneven size and more groups than buffer sets.
TEST_P(SubGroupPasses, GiveBackWhatWasWritten) {
  const PassCase c = GetParam();
  TempRoot root;
  AioEngine engine(small_aio(c.threads));
  SwapFolder folder(root.path(), "unit", 0, "nvme_path");
  SubGroupLayout layout{10'000, 1'537, {"fp32", "exp_avg", "exp_avg_sq"}};
  SubGroupSwapper swapper(engine, folder, layout,
                          SubGroupSwapSettings{c.sets, c.pipeline_read, c.pipeline_write}, 0);
  ASSERT_EQ(swapper.groups(), 7);
  auto value = [](int array, std::int64_t i, int pass) {
    return static_cast<float>(array * 100000 + i) * 0.5f + static_cast<float>(pass);
  };
  for (int g = 0; g < swapper.groups(); ++g) {
    const auto& arrays = swapper.acquire(g, /*read=*/false);
    for (int a = 0; a < 3; ++a)
      for (std::int64_t i = 0; i < swapper.group_size(g); ++i)
        arrays[a][i] = value(a, swapper.group_begin(g) + i, 0);
    swapper.release(g, 0b111u);
  }
  swapper.finish();
  for (int pass = 1; pass <= 2; ++pass) {
    for (int g = 0; g < swapper.groups(); ++g) {
      const auto& arrays = swapper.acquire(g);
      for (int a = 0; a < 3; ++a)
        for (std::int64_t i = 0; i < swapper.group_size(g); ++i) {
          const float expected =
              // Pass 1 rewrote only exp_avg (bit 1); pass 0 wrote all.
              value(a, swapper.group_begin(g) + i, pass == 2 && a == 1 ? 1 : 0);
          ASSERT_EQ(arrays[a][i], expected) << "pass " << pass << " group " << g << " array " << a;
          if (pass == 1 && a == 1) arrays[a][i] = value(a, swapper.group_begin(g) + i, 1);
        }
      swapper.release(g, pass == 1 ? 0b010u : 0u);
    }
    swapper.finish();
  }
  std::vector<float> range(3000);
  swapper.read_range(1, 1000, 4000, range.data());
  for (std::int64_t i = 0; i < 3000; ++i) ASSERT_EQ(range[i], value(1, 1000 + i, 1));
}

INSTANTIATE_TEST_SUITE_P(Pipelines, SubGroupPasses,
                         ::testing::Values(PassCase{1, false, false, 1},
                                           PassCase{2, true, false, 2}, PassCase{2, false, true, 1},
                                           PassCase{3, true, true, 3}, PassCase{5, true, true, 2}),
                         [](const auto& info) {
                           const PassCase& c = info.param;
                           return "sets" + std::to_string(c.sets) +
                                  (c.pipeline_read ? "_read" : "") +
                                  (c.pipeline_write ? "_write" : "") + "_threads" +
                                  std::to_string(c.threads);
                         });

TEST(SubGroupSwapper, RefusesAPipelineWithoutBuffers) {
  TempRoot root;
  AioEngine engine(small_aio(1));
  SwapFolder folder(root.path(), "unit", 0, "nvme_path");
  EXPECT_THROW(SubGroupSwapper(engine, folder, SubGroupLayout{100, 10, {"fp32"}},
                               SubGroupSwapSettings{1, true, false}, 0),
               std::invalid_argument);
}

// Element ranges that start and end inside blocks, against a reference array.
TEST(DenseSwapFile, ReadsAndWritesAnyRange) {
  for (const int element_bytes : {2, 4}) {
    TempRoot root;
    AioEngine engine(small_aio(2));
    SwapFolder folder(root.path(), "unit", 3, "nvme_path");
    const std::int64_t n = 50'001;
    DenseSwapFile file(engine, folder, "params.swp", n, element_bytes, 7000, 3);
    std::vector<unsigned char> reference(static_cast<std::size_t>(n * element_bytes), 0);
    std::mt19937 random(5);
    std::vector<unsigned char> values;
    for (int round = 0; round < 200; ++round) {
      std::int64_t begin = random() % n;
      std::int64_t end = std::min<std::int64_t>(n, begin + 1 + random() % 20000);
      if (round % 2 == 0) {
        values.resize(static_cast<std::size_t>((end - begin) * element_bytes));
        for (auto& byte : values) byte = static_cast<unsigned char>(random());
        file.write(begin, end, values.data());
        std::memcpy(reference.data() + begin * element_bytes, values.data(), values.size());
      } else {
        values.assign(static_cast<std::size_t>((end - begin) * element_bytes), 0xAB);
        file.read(begin, end, values.data());
        ASSERT_EQ(
            0, std::memcmp(values.data(), reference.data() + begin * element_bytes, values.size()))
            << "round " << round << " [" << begin << ", " << end << ")";
      }
    }
  }
}

TEST(SwapFolder, IsRemovedWithItsFiles) {
  TempRoot root;
  std::string job;
  {
    SwapFolder folder(root.path(), "job7", 2, "nvme_path");
    EXPECT_EQ(folder.path(), root.path() + "/zerotrain-job7/rank2");
    AioEngine engine(small_aio(1));
    SubGroupSwapper swapper(engine, folder, SubGroupLayout{4096, 1024, {"fp32", "exp_avg"}},
                            SubGroupSwapSettings{}, 2);
    EXPECT_TRUE(exists(folder.path() + "/fp32.swp"));
    EXPECT_TRUE(exists(folder.path() + "/exp_avg.swp"));
    job = root.path() + "/zerotrain-job7";
  }
  EXPECT_FALSE(exists(job));
}

TEST(SwapFolder, NamesAMissingOrUnwritablePath) {
  TempRoot root;
  try {
    SwapFolder folder(root.path() + "/absent", "t", 1,
                      "zero_optimization.offload_optimizer.nvme_path");
    FAIL() << "a missing nvme_path was accepted";
  } catch (const IoError& error) {
    EXPECT_NE(std::string(error.what()).find("offload_optimizer.nvme_path"), std::string::npos);
    EXPECT_NE(std::string(error.what()).find("/absent"), std::string::npos);
    EXPECT_NE(std::string(error.what()).find("rank 1"), std::string::npos);
  }
  if (geteuid() != 0) {  // root writes anywhere
    chmod(root.path().c_str(), 0500);
    EXPECT_THROW(SwapFolder(root.path(), "t", 0, "nvme_path"), IoError);
    chmod(root.path().c_str(), 0700);
  }
}

// mpirun and Slurm bring a job down with SIGTERM: the files go with it.
TEST(SwapFolder, IsRemovedWhenTheProcessIsTerminated) {
  TempRoot root;
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    close(ready[0]);
    SwapFolder folder(root.path(), "killed", 0, "nvme_path");
    AioEngine engine(small_aio(1));
    SubGroupSwapper swapper(engine, folder, SubGroupLayout{4096, 4096, {"fp32"}},
                            SubGroupSwapSettings{}, 0);
    const char byte = 1;
    if (write(ready[1], &byte, 1) != 1) _exit(3);
    pause();
    _exit(4);
  }
  close(ready[1]);
  char byte = 0;
  ASSERT_EQ(read(ready[0], &byte, 1), 1);
  close(ready[0]);
  EXPECT_TRUE(exists(root.path() + "/zerotrain-killed/rank0/fp32.swp"));
  kill(child, SIGTERM);
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGTERM);
  EXPECT_FALSE(exists(root.path() + "/zerotrain-killed"));
}

TEST(SubGroupSwapper, NoticesADeletedFile) {
  TempRoot root;
  AioEngine engine(small_aio(1));
  SwapFolder folder(root.path(), "deleted", 0, "nvme_path");
  SubGroupSwapper swapper(engine, folder, SubGroupLayout{4096, 1024, {"fp32", "exp_avg"}},
                          SubGroupSwapSettings{}, 0);
  ASSERT_EQ(unlink((folder.path() + "/exp_avg.swp").c_str()), 0);
  try {
    swapper.acquire(0);
    FAIL() << "a deleted swap file went unnoticed";
  } catch (const IoError& error) {
    EXPECT_NE(std::string(error.what()).find("exp_avg.swp"), std::string::npos) << error.what();
  }
}

// Whatever changes a swap file underneath the run (truncation followed by a write that extends
// it again, a stray write, a corrupting disk) reads back as other bytes: an error, never a wrong
// result.
TEST(SubGroupSwapper, RefusesBytesThatChangedUnderneath) {
  for (const bool truncate : {false, true}) {
    TempRoot root;
    AioEngine engine(small_aio(1));
    SwapFolder folder(root.path(), "changed", 4, "nvme_path");
    SubGroupSwapper swapper(engine, folder, SubGroupLayout{8192, 2048, {"fp32", "exp_avg"}},
                            SubGroupSwapSettings{}, 4);
    for (int g = 0; g < swapper.groups(); ++g) {
      const auto& arrays = swapper.acquire(g, false);
      for (int a = 0; a < 2; ++a)
        for (std::int64_t i = 0; i < 2048; ++i) arrays[a][i] = 1.0f + static_cast<float>(i);
      swapper.release(g, 0b11u);
    }
    swapper.finish();
    const std::string path = folder.path() + "/fp32.swp";
    if (truncate) {
      ASSERT_EQ(::truncate(path.c_str(), 0), 0);
      // The last group's write extends the file again: the groups before it read as zeros.
      const auto& arrays = swapper.acquire(3, false);
      swapper.release(3, 0b11u);
      (void)arrays;
      swapper.finish();
    } else {
      const int fd = open(path.c_str(), O_WRONLY);
      const float stray = -7.0f;
      ASSERT_EQ(pwrite(fd, &stray, sizeof stray, 8192 + 100), static_cast<ssize_t>(sizeof stray));
      close(fd);
    }
    try {
      swapper.acquire(truncate ? 0 : 1);
      FAIL() << "changed bytes were read back as good ones";
    } catch (const IoError& error) {
      const std::string message = error.what();
      EXPECT_NE(message.find("fp32.swp"), std::string::npos) << message;
      EXPECT_NE(message.find("rank 4"), std::string::npos) << message;
      EXPECT_NE(message.find("read back differently"), std::string::npos) << message;
    }
  }
}

TEST(DenseSwapFile, RefusesBytesThatChangedUnderneath) {
  TempRoot root;
  AioEngine engine(small_aio(1));
  SwapFolder folder(root.path(), "changed", 2, "nvme_path");
  DenseSwapFile file(engine, folder, "params.swp", 30'720, 2, 10'000, 2);
  std::vector<std::uint16_t> values(30'720, 0x3c00);
  file.write(0, 30'720, values.data());
  file.flush();
  ASSERT_EQ(::truncate(file.file().path().c_str(), 0), 0);
  // Whole blocks at the end extend the file again, with a hole before them.
  file.write(28'672, 30'720, values.data());
  file.flush();
  try {
    file.read(100, 200, values.data());
    FAIL() << "a hole was read back as the parameters";
  } catch (const IoError& error) {
    EXPECT_NE(std::string(error.what()).find("read back differently"), std::string::npos)
        << error.what();
  }
  // A partial block next to the hole is read back before it is written: that fails too.
  EXPECT_THROW(file.write(50, 60, values.data()), IoError);
}

// A file system too small for the swap files fails at creation, naming the file, the rank and
// the sizes (a 1 MiB tmpfs where root may mount one, else the file size limit).
TEST(SwapFiles, TooLittleSpaceIsNamed) {
  TempRoot root;
  const std::string mount_point = root.path() + "/small";
  ASSERT_EQ(mkdir(mount_point.c_str(), 0700), 0);
  const bool mounted =
      geteuid() == 0 &&
      std::system(("mount -t tmpfs -o size=1m tmpfs '" + mount_point + "' 2>/dev/null").c_str()) ==
          0;
  if (!mounted) GTEST_SKIP() << "cannot mount a small tmpfs here (needs root)";
  std::string message;
  {
    AioEngine engine(small_aio(1));
    SwapFolder folder(mount_point, "full", 5, "nvme_path");
    try {
      SubGroupSwapper swapper(engine, folder,
                              SubGroupLayout{1'000'000, 250'000, {"fp32", "exp_avg", "exp_avg_sq"}},
                              SubGroupSwapSettings{}, 5);
    } catch (const IoError& error) {
      message = error.what();
    }
  }
  std::system(("umount '" + mount_point + "'").c_str());
  EXPECT_NE(message.find("rank 5"), std::string::npos) << message;
  EXPECT_NE(message.find(".swp"), std::string::npos) << message;
  EXPECT_NE(message.find("space"), std::string::npos) << message;
}

}  // namespace
