// SPDX-License-Identifier: Apache-2.0
// Safe file I/O: what may be written where, what happens when a write fails, and what is
// refused as an input.
#include "files/files.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

namespace zt::files {
namespace {

namespace fs = std::filesystem;

class Files : public ::testing::Test {
 protected:
  void SetUp() override {
    char pattern[] = "/tmp/zt_files_XXXXXX";
    ASSERT_NE(mkdtemp(pattern), nullptr);
    dir_ = pattern;
  }
  void TearDown() override {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  static std::string read(const std::string& file) {
    std::ifstream in(file, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
  }
  static void write(const std::string& file, const std::string& text) {
    std::ofstream(file, std::ios::binary) << text;
  }
  // Only the files the test made: no temporaries or staging directories left behind.
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(dir_))
      names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }
  static std::string message_of(const std::function<void()>& action) {
    try {
      action();
    } catch (const FileError& error) {
      return error.what();
    }
    return "(no error)";
  }

  fs::path dir_;
};

// Makes writes past `bytes` fail with EFBIG instead of killing the process with SIGXFSZ: the
// same failure path as a full disk.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    getrlimit(RLIMIT_FSIZE, &saved_);
    previous_ = std::signal(SIGXFSZ, SIG_IGN);
    rlimit limit = saved_;
    limit.rlim_cur = bytes;
    setrlimit(RLIMIT_FSIZE, &limit);
  }
  ~FileSizeLimit() {
    setrlimit(RLIMIT_FSIZE, &saved_);
    std::signal(SIGXFSZ, previous_);
  }

 private:
  rlimit saved_{};
  void (*previous_)(int) = nullptr;
};

TEST_F(Files, AtomicFileReplacesTheTargetOnlyOnCommit) {
  const std::string target = path("summary.json");
  write(target, "old");
  {
    AtomicFile file(target, "--summary-json");
    file.write("new contents");
    EXPECT_EQ(read(target), "old");  // readers see the old file until the rename
    file.commit();
  }
  EXPECT_EQ(read(target), "new contents");
  EXPECT_EQ(entries(), std::vector<std::string>{"summary.json"});
}

TEST_F(Files, AnUncommittedAtomicFileLeavesNothing) {
  const std::string target = path("weights.safetensors");
  write(target, "trained yesterday");
  {
    AtomicFile file(target, "--save-weights");
    file.write("half a model");
  }
  EXPECT_EQ(read(target), "trained yesterday");
  EXPECT_EQ(entries(), std::vector<std::string>{"weights.safetensors"});
}

TEST_F(Files, AtomicFileKeepsTheReplacedFilesPermissions) {
  const std::string target = path("shared.json");
  write(target, "x");
  chmod(target.c_str(), 0640);
  write_file_atomically(target, "y", "output");
  struct stat status {};
  ASSERT_EQ(stat(target.c_str(), &status), 0);
  EXPECT_EQ(status.st_mode & 0777, 0640u);
}

TEST_F(Files, AtomicFileCreatesMissingDirectories) {
  const std::string target = path("a/b/c.json");
  write_file_atomically(target, "{}", "output");
  EXPECT_EQ(read(target), "{}");
}

TEST_F(Files, ASymlinkAtTheTargetIsRefusedAndItsDestinationUntouched) {
  const std::string victim = path("victim");
  write(victim, "precious");
  const std::string link = path("out.json");
  ASSERT_EQ(symlink(victim.c_str(), link.c_str()), 0);
  const std::string message =
      message_of([&] { write_file_atomically(link, "overwritten", "--summary-json"); });
  EXPECT_NE(message.find("--summary-json '" + link + "': is a symbolic link"), std::string::npos)
      << message;
  EXPECT_EQ(read(victim), "precious");
  EXPECT_TRUE(fs::is_symlink(link));
}

TEST_F(Files, ADanglingSymlinkAtTheTargetIsRefused) {
  const std::string link = path("out.json");
  ASSERT_EQ(symlink(path("nowhere").c_str(), link.c_str()), 0);
  EXPECT_THROW(write_file_atomically(link, "x", "output"), FileError);
  EXPECT_FALSE(fs::exists(path("nowhere")));
}

TEST_F(Files, DeviceNodesAreNeverReplaced) {
  for (const char* device : {"/dev/null", "/dev/full"}) {
    struct stat before {};
    ASSERT_EQ(stat(device, &before), 0);
    const std::string message = message_of([&] { write_file_atomically(device, "{}", "output"); });
    EXPECT_NE(message.find("is a character device, not a regular file"), std::string::npos)
        << message;
    struct stat after {};
    ASSERT_EQ(stat(device, &after), 0);
    EXPECT_TRUE(S_ISCHR(after.st_mode)) << device;
    EXPECT_EQ(before.st_rdev, after.st_rdev);
    EXPECT_THROW(check_output_file(device, "output"), FileError);
    EXPECT_THROW(AppendFile(device, "csv_monitor"), FileError);
  }
}

TEST_F(Files, ADirectoryOrFifoAtTheTargetIsRefused) {
  fs::create_directory(path("dir"));
  EXPECT_NE(
      message_of([&] { write_file_atomically(path("dir"), "x", "o"); }).find("is a directory"),
      std::string::npos);
  ASSERT_EQ(mkfifo(path("fifo").c_str(), 0600), 0);
  EXPECT_NE(message_of([&] { write_file_atomically(path("fifo"), "x", "o"); }).find("FIFO"),
            std::string::npos);
  EXPECT_THROW(AppendFile(path("fifo"), "csv"), FileError);
  EXPECT_TRUE(fs::is_fifo(path("fifo")));
}

TEST_F(Files, AFailedWriteIsAnErrorAndTheOldFileStays) {
  const std::string target = path("big.bin");
  write(target, "old");
  std::string message;
  {
    FileSizeLimit limit(4096);
    message = message_of([&] {
      AtomicFile file(target, "--save-weights");
      const std::string block(64 * 1024, 'x');
      file.write(block);
      file.commit();
    });
  }
  EXPECT_NE(message.find("--save-weights '" + target + "': write failed"), std::string::npos)
      << message;
  EXPECT_EQ(read(target), "old");
  EXPECT_EQ(entries(), std::vector<std::string>{"big.bin"});
}

TEST_F(Files, AppendFileChecksEveryWrite) {
  const std::string log = path("train_loss.csv");
  FileSizeLimit limit(64);
  AppendFile file(log, "csv_monitor");
  file.write("step,train_loss\n");
  std::string message;
  try {
    for (int i = 0; i < 100; ++i) file.write("123,4.5678\n");
  } catch (const FileError& error) {
    message = error.what();
  }
  EXPECT_NE(message.find("csv_monitor '" + log + "': write failed"), std::string::npos) << message;
}

TEST_F(Files, AppendFileStartsAfreshAndRefusesLinks) {
  const std::string log = path("lr.csv");
  write(log, "from an older run\n");
  {
    AppendFile file(log, "csv");
    file.write("step,lr\n");
    file.close();
  }
  EXPECT_EQ(read(log), "step,lr\n");
  const std::string victim = path("victim");
  write(victim, "precious");
  ASSERT_EQ(symlink(victim.c_str(), path("link.csv").c_str()), 0);
  EXPECT_THROW(AppendFile(path("link.csv"), "csv"), FileError);
  EXPECT_EQ(read(victim), "precious");
}

TEST_F(Files, StagedFileIsMovedIntoPlaceOrRemoved) {
  const std::string target = path("tokens.h5");
  {
    StagedFile staged(target, "output");
    EXPECT_EQ(fs::path(staged.path()).filename(), "tokens.h5");
    EXPECT_NE(fs::path(staged.path()).parent_path(), dir_);
    struct stat status {};
    ASSERT_EQ(stat(fs::path(staged.path()).parent_path().c_str(), &status), 0);
    EXPECT_EQ(status.st_mode & 0777, 0700u);  // nobody else can plant anything in there
    write(staged.path(), "abandoned");
  }
  EXPECT_TRUE(entries().empty());
  {
    StagedFile staged(target, "output");
    write(staged.path(), "data");
    staged.commit();
  }
  EXPECT_EQ(read(target), "data");
  EXPECT_EQ(entries(), std::vector<std::string>{"tokens.h5"});
}

TEST_F(Files, InputsMustBeRegularFiles) {
  EXPECT_NE(message_of([&] {
              check_input_file(path("missing.json"), "--config");
            }).find("--config '" + path("missing.json") + "': does not exist"),
            std::string::npos);
  fs::create_directory(path("dir"));
  EXPECT_NE(message_of([&] { check_input_file(path("dir"), "--model"); }).find("is a directory"),
            std::string::npos);
  EXPECT_NE(
      message_of([&] { check_input_file("/dev/null", "--data"); }).find("is a character device"),
      std::string::npos);
  // A FIFO is refused at once instead of blocking until somebody writes to it.
  ASSERT_EQ(mkfifo(path("fifo").c_str(), 0600), 0);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_NE(message_of([&] { read_input_file(path("fifo"), "--config"); }).find("FIFO"),
            std::string::npos);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  // Links to regular files are fine for inputs.
  write(path("real.json"), "{}");
  ASSERT_EQ(symlink(path("real.json").c_str(), path("link.json").c_str()), 0);
  EXPECT_EQ(read_input_file(path("link.json"), "--config"), "{}");
}

TEST_F(Files, OversizedInputsAreRefusedBeforeReading) {
  write(path("huge.json"), std::string(2000, ' '));
  const std::string message =
      message_of([&] { read_input_file(path("huge.json"), "--config", 1000); });
  EXPECT_NE(message.find("is 2000 bytes"), std::string::npos) << message;
  EXPECT_EQ(read_input_file(path("huge.json"), "--config", 2000).size(), 2000u);
}

TEST_F(Files, AnOutputThatIsAnInputIsRefused) {
  write(path("tokens.h5"), "data");
  ASSERT_EQ(link(path("tokens.h5").c_str(), path("hardlink.h5").c_str()), 0);
  ASSERT_EQ(symlink(path("tokens.h5").c_str(), path("symlink.h5").c_str()), 0);
  const std::vector<NamedPath> inputs{{"--config", path("c.json")}, {"--data", path("tokens.h5")}};
  for (const std::string& output :
       {path("tokens.h5"), path("hardlink.h5"), path("symlink.h5"), path("x/../tokens.h5")}) {
    const std::string message = message_of([&] {
      check_outputs_are_not_inputs({{"--save-weights", output}}, inputs);
    });
    EXPECT_NE(message.find("is also an input (--data '" + path("tokens.h5") + "')"),
              std::string::npos)
        << output << ": " << message;
  }
  EXPECT_NO_THROW(
      check_outputs_are_not_inputs({{"--save-weights", path("w.safetensors")}}, inputs));
  EXPECT_NE(message_of([&] {
              check_outputs_are_not_inputs(
                  {{"--summary-json", path("o.json")}, {"--save-weights", path("o.json")}}, inputs);
            }).find("is also --summary-json"),
            std::string::npos);
}

TEST_F(Files, OutputPreflightProbesTheDirectory) {
  EXPECT_NO_THROW(check_output_file(path("new/dir/summary.json"), "--summary-json"));
  EXPECT_TRUE(fs::is_directory(path("new/dir")));
  EXPECT_TRUE(fs::is_empty(path("new/dir")));  // the probe is gone
  write(path("file"), "x");
  EXPECT_THROW(check_output_file(path("file/summary.json"), "--summary-json"), FileError);
  EXPECT_THROW(check_output_directory(path("file"), "--output-dir"), FileError);
  if (geteuid() != 0) {  // root may write anywhere
    fs::create_directory(path("readonly"));
    chmod(path("readonly").c_str(), 0500);
    EXPECT_THROW(check_output_file(path("readonly/s.json"), "--summary-json"), FileError);
  }
}

TEST_F(Files, ASecondLockOnADirectoryNamesTheHolder) {
  DirectoryLock first(dir_.string(), "--output-dir", "pid 123 on node07, Slurm job 55");
  EXPECT_TRUE(first.held());
  const std::string message =
      message_of([&] { DirectoryLock second(dir_.string(), "--output-dir", "pid 456 on node08"); });
  EXPECT_NE(message.find("is in use by another zerotrain run (pid 123 on node07, Slurm job 55"),
            std::string::npos)
      << message;
}

TEST_F(Files, ALockIsFreeAgainOnceReleased) {
  { DirectoryLock first(dir_.string(), "--output-dir", "first"); }
  DirectoryLock second(dir_.string(), "--output-dir", "second");
  EXPECT_TRUE(second.held());
  EXPECT_EQ(read(second.lock_path()), "second\n");
}

TEST(Escaping, ControlCharactersAreWrittenAsHex) {
  EXPECT_EQ(escaped("a\x1b[2Jb"), "a\\x1b[2Jb");
  EXPECT_EQ(escaped("line\nnext"), "line\\x0anext");
  EXPECT_EQ(escaped("line\nnext", true), "line\nnext");
  EXPECT_EQ(escaped("\x7f"), "\\x7f");
  EXPECT_EQ(escaped("gr\xc3\xbc\xc3\x9f"), "gr\xc3\xbc\xc3\x9f");  // UTF-8 passes
  EXPECT_EQ(quote("x\ty"), "'x\\x09y'");
}

}  // namespace
}  // namespace zt::files
