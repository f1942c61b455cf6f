// SPDX-License-Identifier: Apache-2.0
// The asynchronous I/O engine: data written and read back byte for byte through both kernel
// interfaces across DeepSpeed's settings, and every failure (short read, full disk, file size
// limit, deleted file, file system without O_DIRECT) reported with the path and the cause.
#include "offload/aio.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <tuple>
#include <vector>

namespace zt::offload {
namespace {

namespace fs = std::filesystem;

constexpr std::int64_t kKiB = 1024;
constexpr std::int64_t kMiB = 1024 * 1024;

std::string temp_root() {
  const char* tmpdir = std::getenv("TMPDIR");
  return tmpdir != nullptr && *tmpdir != '\0' ? tmpdir : "/tmp";
}

void fill_random(void* data, std::int64_t bytes, std::uint64_t seed) {
  std::mt19937_64 generator(seed);
  auto* out = static_cast<unsigned char*>(data);
  std::int64_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    const std::uint64_t word = generator();
    std::memcpy(out + i, &word, 8);
  }
  for (; i < bytes; ++i) out[i] = static_cast<unsigned char>(generator());
}

// Empty when equal, else where the first difference is.
std::string first_difference(const void* expected, const void* actual, std::int64_t bytes) {
  const auto* a = static_cast<const unsigned char*>(expected);
  const auto* b = static_cast<const unsigned char*>(actual);
  for (std::int64_t i = 0; i < bytes; ++i)
    if (a[i] != b[i])
      return "first difference at byte " + std::to_string(i) + " of " + std::to_string(bytes);
  return "";
}

std::string io_error_of(const std::function<void()>& action) {
  try {
    action();
  } catch (const IoError& error) {
    return error.what();
  }
  return "(no IoError)";
}

// A file system mounted on a fresh directory for one test, unmounted and removed after.
class Mount {
 public:
  Mount(const std::string& folder, const char* type, const char* options) : folder_(folder) {
    if (geteuid() != 0) {
      problem_ = "needs root to mount " + std::string(type);
      return;
    }
    if (::mount(type, folder.c_str(), type, 0, options) != 0) {
      problem_ = "mount -t " + std::string(type) + " failed: " + std::strerror(errno);
      return;
    }
    mounted_ = true;
  }
  ~Mount() {
    if (mounted_) ::umount2(folder_.c_str(), MNT_DETACH);
  }
  Mount(const Mount&) = delete;
  Mount& operator=(const Mount&) = delete;
  bool mounted() const { return mounted_; }
  const std::string& problem() const { return problem_; }

 private:
  std::string folder_;
  bool mounted_ = false;
  std::string problem_;
};

class Aio : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern = temp_root() + "/zt_aio_XXXXXX";
    ASSERT_NE(mkdtemp(pattern.data()), nullptr) << pattern << ": " << std::strerror(errno);
    dir_ = pattern;
  }
  void TearDown() override {
    std::error_code ignored;
    fs::remove_all(dir_, ignored);
  }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  std::string subfolder(const std::string& name) const {
    const fs::path folder = dir_ / name;
    fs::create_directory(folder);
    return folder.string();
  }
  /// Whether `backend` can be set up here: containers often block io_uring (Docker's default
  /// seccomp profile does), and libaio can be capped by fs.aio-max-nr.
  static bool usable(IoBackend backend, std::string* why = nullptr) {
    try {
      AioSettings settings;
      settings.backend = backend;
      AioEngine probe(settings);
      return true;
    } catch (const IoError& error) {
      if (why != nullptr) *why = error.what();
      return false;
    }
  }
  /// Settings for `backend`, or for the other interface where this one cannot be set up (the
  /// tests that are not about the interface itself).
  static AioSettings settings_for(IoBackend backend, std::int64_t block_size = 64 * kKiB,
                                  int queue_depth = 4, int threads = 2) {
    AioSettings settings;
    const IoBackend other = backend == IoBackend::IoUring ? IoBackend::Libaio : IoBackend::IoUring;
    settings.backend = usable(backend) ? backend : other;
    settings.block_size = block_size;
    settings.queue_depth = queue_depth;
    settings.intra_op_parallelism = threads;
    return settings;
  }
  // Writes random bytes at `offset`, reads them back into a buffer full of other bytes.
  static void round_trip(AioEngine& engine, const AioFile& file, std::int64_t bytes,
                         std::int64_t offset, std::uint64_t seed) {
    AlignedBuffer written(bytes);
    AlignedBuffer read(bytes);
    fill_random(written.data(), bytes, seed);
    fill_random(read.data(), bytes, ~seed);
    AioTicket ticket = engine.write(file, written.data(), bytes, offset);
    engine.wait(ticket);
    EXPECT_FALSE(ticket.valid());
    ticket = engine.read(file, read.data(), bytes, offset);
    engine.wait(ticket);
    EXPECT_EQ(first_difference(written.data(), read.data(), bytes), "")
        << bytes << " bytes at offset " << offset;
    // The bytes are where they belong in the file, not only readable the way they were
    // written: read back with plain pread.
    AlignedBuffer plain(bytes);
    std::int64_t done = 0;
    while (done < bytes) {
      const ssize_t got = ::pread(file.fd(), static_cast<char*>(plain.data()) + done,
                                  static_cast<std::size_t>(bytes - done), offset + done);
      ASSERT_GT(got, 0) << std::strerror(errno);
      done += got;
    }
    EXPECT_EQ(first_difference(written.data(), plain.data(), bytes), "") << "(pread)";
  }
  fs::path dir_;
};

const IoBackend kBackends[] = {IoBackend::IoUring, IoBackend::Libaio};

// --- Round trips across DeepSpeed's settings ----------------------------------------------------

using Grid = std::tuple<IoBackend, std::int64_t, int, int, bool, bool>;

class AioGrid : public Aio, public ::testing::WithParamInterface<Grid> {};

TEST_P(AioGrid, RoundTripIsByteExact) {
  const auto [backend, block_size, queue_depth, threads, single_submit, overlap_events] =
      GetParam();
  if (std::string why; !usable(backend, &why)) GTEST_SKIP() << why;
  AioSettings settings = settings_for(backend, block_size, queue_depth, threads);
  settings.single_submit = single_submit;
  settings.overlap_events = overlap_events;
  AioEngine engine(settings);
  EXPECT_EQ(engine.backend(), backend);
  // O_DIRECT where the temporary folder's file system allows it (buffered otherwise: the
  // split into requests and shares is the same).
  AioFile file = open_swap_file(path("swap"), true);
  // Not a multiple of any block size or of the thread count's shares; at an offset.
  const std::int64_t bytes = kMiB + 5 * kDirectAlignment;
  round_trip(engine, file, bytes, 2 * kDirectAlignment, 17);
  const AioCounters counters = engine.counters();
  EXPECT_EQ(counters.bytes_written, bytes);
  EXPECT_EQ(counters.bytes_read, bytes);
  EXPECT_GT(counters.read_seconds, 0.0);
  EXPECT_GT(counters.write_seconds, 0.0);
}

std::string grid_name(const ::testing::TestParamInfo<Grid>& info) {
  const auto [backend, block_size, queue_depth, threads, single_submit, overlap_events] =
      info.param;
  return std::string(backend == IoBackend::IoUring ? "io_uring" : "libaio") + "_bs" +
         std::to_string(block_size / kKiB) + "K_qd" + std::to_string(queue_depth) + "_t" +
         std::to_string(threads) + (single_submit ? "_single" : "_batch") +
         (overlap_events ? "_overlap" : "_sequential");
}

INSTANTIATE_TEST_SUITE_P(Settings, AioGrid,
                         ::testing::Combine(::testing::ValuesIn(kBackends),
                                            ::testing::Values(4 * kKiB, 64 * kKiB, kMiB),
                                            ::testing::Values(1, 4, 32), ::testing::Values(1, 2, 3),
                                            ::testing::Bool(), ::testing::Bool()),
                         grid_name);

TEST_F(Aio, TransferSizesNotMultiplesOfTheBlockSize) {
  for (IoBackend backend : kBackends) {
    SCOPED_TRACE(io_backend_name(backend));
    AioEngine engine(settings_for(backend, kMiB, 8, 3));
    AioFile file = open_swap_file(path("sizes"), true);
    std::int64_t offset = 0;
    std::uint64_t seed = 1;
    // One page (only the first worker has a share), three pages (one each), just under and
    // over a block, several blocks and a tail.
    for (std::int64_t bytes : {kDirectAlignment, 3 * kDirectAlignment, kMiB - kDirectAlignment,
                               kMiB + kDirectAlignment, 5 * kMiB + 3 * kDirectAlignment}) {
      round_trip(engine, file, bytes, offset, seed++);
      offset += bytes;
    }
  }
}

TEST_F(Aio, ManyConcurrentTickets) {
  for (IoBackend backend : kBackends) {
    SCOPED_TRACE(io_backend_name(backend));
    AioEngine engine(settings_for(backend, 16 * kKiB, 4, 2));
    AioFile file = open_swap_file(path("tickets"), true);
    constexpr int kTransfers = 48;
    std::vector<std::int64_t> sizes, offsets;
    std::int64_t total = 0;
    for (int i = 0; i < kTransfers; ++i) {
      sizes.push_back((1 + i % 7) * 12 * kKiB);
      offsets.push_back(total);
      total += sizes.back();
    }
    AlignedBuffer written(total);
    AlignedBuffer read(total);
    fill_random(written.data(), total, 99);
    auto* source = static_cast<char*>(written.data());
    auto* target = static_cast<char*>(read.data());
    std::vector<AioTicket> tickets;
    for (int i = 0; i < kTransfers; ++i)
      tickets.push_back(engine.write(file, source + offsets[i], sizes[i], offsets[i]));
    // Waited for out of order.
    for (int i = kTransfers - 1; i >= 0; i -= 2) engine.wait(tickets[i]);
    engine.wait_all();
    for (AioTicket& ticket : tickets) engine.wait(ticket);  // already collected: no-ops
    tickets.clear();
    for (int i = 0; i < kTransfers; ++i)
      tickets.push_back(engine.read(file, target + offsets[i], sizes[i], offsets[i]));
    for (int i = 0; i < kTransfers; ++i) engine.wait(tickets[(i * 5) % kTransfers]);
    EXPECT_EQ(first_difference(written.data(), read.data(), total), "");
    EXPECT_EQ(engine.counters().bytes_read, total);
    EXPECT_EQ(engine.counters().bytes_written, total);
  }
}

TEST_F(Aio, ZeroByteTransferCompletesAtOnce) {
  AioEngine engine(settings_for(IoBackend::IoUring));
  AioFile file = open_swap_file(path("empty"), true);
  AioTicket ticket = engine.read(file, nullptr, 0, 0);
  EXPECT_TRUE(ticket.valid());
  engine.wait(ticket);
  EXPECT_FALSE(ticket.valid());
  AioTicket nothing;
  engine.wait(nothing);
}

// --- Buffered fallback --------------------------------------------------------------------------

TEST_F(Aio, BufferedFallbackWhereODirectIsRefused) {
  const std::string folder = subfolder("ramfs");
  Mount ramfs(folder, "ramfs", nullptr);
  if (!ramfs.mounted()) GTEST_SKIP() << "no file system without O_DIRECT: " << ramfs.problem();
  for (IoBackend backend : kBackends) {
    SCOPED_TRACE(io_backend_name(backend));
    AioFile file = open_swap_file(folder + "/swap", true);
    EXPECT_FALSE(file.direct());
    EXPECT_NE(file.fallback_reason(), "");
    AioEngine engine(settings_for(backend, 64 * kKiB, 4, 3));
    round_trip(engine, file, 3 * kMiB + 4 * kDirectAlignment, kDirectAlignment, 5);
    // Buffered files take any buffer address, offset and length.
    std::vector<char> written(100003), read(100003);
    fill_random(written.data(), static_cast<std::int64_t>(written.size()), 6);
    AioTicket ticket = engine.write(file, written.data() + 1, 100001, 12345);
    engine.wait(ticket);
    ticket = engine.read(file, read.data() + 1, 100001, 12345);
    engine.wait(ticket);
    EXPECT_EQ(first_difference(written.data() + 1, read.data() + 1, 100001), "");
    // A buffered read across the end of the file comes back short; the engine asks for the
    // rest, gets nothing, and says how much came. Three workers: the second one's share
    // [45056, 90112) holds the end.
    ASSERT_EQ(::ftruncate(file.fd(), 64 * kKiB + 100), 0);
    const std::string message = io_error_of([&] {
      AioTicket across = engine.read(file, read.data(), 128 * kKiB, 0);
      engine.wait(across);
    });
    EXPECT_NE(message.find(folder + "/swap"), std::string::npos) << message;
    EXPECT_NE(message.find("short read: 20580 of 45056 bytes at offset 45056"), std::string::npos)
        << message;
  }
}

// --- Failures
// -------------------------------------------------------------------------------------

TEST_F(Aio, ReadPastEndOfFileIsAShortRead) {
  for (IoBackend backend : kBackends) {
    SCOPED_TRACE(io_backend_name(backend));
    const std::string name = path("short");
    AioEngine engine(settings_for(backend, 64 * kKiB, 4, 1));
    AioFile file = open_swap_file(name, true);
    AlignedBuffer data(256 * kKiB);
    AioTicket ticket = engine.write(file, data.data(), 64 * kKiB, 0);
    engine.wait(ticket);
    // Wholly past the end.
    std::string message = io_error_of([&] {
      AioTicket past = engine.read(file, data.data(), 64 * kKiB, kMiB);
      engine.wait(past);
    });
    EXPECT_NE(message.find(name), std::string::npos) << message;
    EXPECT_NE(message.find("short read: 0 of 65536 bytes at offset 1048576"), std::string::npos)
        << message;
    // Across the end: the first block arrives, the second finds nothing.
    message = io_error_of([&] {
      AioTicket across = engine.read(file, data.data(), 128 * kKiB, 0);
      engine.wait(across);
    });
    EXPECT_NE(message.find(name), std::string::npos) << message;
    EXPECT_NE(message.find("short read: 0 of 65536 bytes at offset 65536"), std::string::npos)
        << message;
    // The engine is still usable afterwards.
    ticket = engine.read(file, data.data(), 64 * kKiB, 0);
    engine.wait(ticket);
  }
}

TEST_F(Aio, ShortReadInsideTheLastBlock) {
  // The file ends 100 bytes into a block: the read returns part of the request, the engine
  // asks for the rest, finds the end of the file and says how much came.
  for (IoBackend backend : kBackends) {
    SCOPED_TRACE(io_backend_name(backend));
    const std::string name = path("partial");
    AioEngine engine(settings_for(backend, 128 * kKiB, 4, 1));
    AioFile file = open_swap_file(name, true);
    AlignedBuffer data(128 * kKiB);
    AioTicket ticket = engine.write(file, data.data(), 64 * kKiB, 0);
    engine.wait(ticket);
    ASSERT_EQ(::ftruncate(file.fd(), 64 * kKiB + 100), 0);
    const std::string message = io_error_of([&] {
      AioTicket across = engine.read(file, data.data(), 128 * kKiB, 0);
      engine.wait(across);
    });
    EXPECT_NE(message.find(name), std::string::npos) << message;
    EXPECT_NE(message.find("short read: 65636 of 131072 bytes at offset 0"), std::string::npos)
        << message;
  }
}

TEST_F(Aio, FailedTransferIsReportedOnlyAfterAllItsParts) {
  // Three workers; the first two shares are past the end of the file, the third lies inside.
  // wait() must not return before the slow successful part is done with the buffer either.
  AioEngine engine(settings_for(IoBackend::IoUring, 4 * kKiB, 1, 3));
  AioFile file = open_swap_file(path("parts"), true);
  AlignedBuffer data(3 * kMiB);
  AioTicket ticket = engine.write(file, data.data(), 3 * kMiB, 0);
  engine.wait(ticket);
  ASSERT_EQ(::ftruncate(file.fd(), kMiB), 0);
  const std::string message = io_error_of([&] {
    AioTicket read = engine.read(file, data.data(), 3 * kMiB, 0);
    engine.wait(read);
  });
  EXPECT_NE(message.find("short read"), std::string::npos) << message;
  EXPECT_EQ(engine.counters().bytes_read, 0);
  engine.wait_all();  // nothing left in flight
}

// Writes `bytes` into `name` and returns the IoError's message.
std::string write_error(IoBackend backend, const std::string& name, std::int64_t bytes) {
  AioSettings settings;
  settings.backend = backend;
  settings.block_size = 256 * kKiB;
  settings.queue_depth = 4;
  settings.intra_op_parallelism = 2;
  AioEngine engine(settings);
  AioFile file = open_swap_file(name, true);
  AlignedBuffer data(bytes);
  return io_error_of([&] {
    AioTicket ticket = engine.write(file, data.data(), bytes, 0);
    engine.wait(ticket);
  });
}

// In a forked child (RLIMIT_FSIZE would also stop the parent's later writes): 0 when the
// write past the limit failed with a message naming the path and `expected`.
int write_past_file_size_limit(IoBackend backend, const std::string& name,
                               const std::string& expected) {
  const pid_t child = fork();
  if (child == 0) {
    rlimit limit{};
    limit.rlim_cur = limit.rlim_max = static_cast<rlim_t>(kMiB);
    if (setrlimit(RLIMIT_FSIZE, &limit) != 0) _exit(3);
    int code = 0;
    try {
      const std::string message = write_error(backend, name, 4 * kMiB);
      if (message.find(name) == std::string::npos || message.find(expected) == std::string::npos) {
        std::fprintf(stderr, "unexpected message: %s\n", message.c_str());
        code = 1;
      }
    } catch (const std::exception& error) {
      std::fprintf(stderr, "unexpected exception: %s\n", error.what());
      code = 2;
    }
    _exit(code);
  }
  int status = 0;
  if (child < 0 || waitpid(child, &status, 0) != child) return -1;
  if (WIFSIGNALED(status)) return 100 + WTERMSIG(status);  // SIGXFSZ killed it
  return WEXITSTATUS(status);
}

TEST_F(Aio, DiskFullNamesThePathAndTheCause) {
  const std::string folder = subfolder("small");
  Mount tmpfs(folder, "tmpfs", "size=2m");
  for (IoBackend backend : kBackends) {
    SCOPED_TRACE(io_backend_name(backend));
    if (tmpfs.mounted()) {
      const std::string name = folder + "/full";
      const std::string message = write_error(backend, name, 4 * kMiB);
      EXPECT_NE(message.find(name), std::string::npos) << message;
      EXPECT_NE(message.find("write of bytes ["), std::string::npos) << message;
      EXPECT_NE(message.find("No space left on device"), std::string::npos) << message;
      ::unlink(name.c_str());
    } else {
      // No small file system to fill: the file size limit stands in for it.
      EXPECT_EQ(write_past_file_size_limit(backend, path("full"), "File too large"), 0)
          << "(tmpfs: " << tmpfs.problem() << ")";
    }
  }
}

TEST_F(Aio, FileSizeLimitIsAnErrorNotASignal) {
  for (IoBackend backend : kBackends) {
    SCOPED_TRACE(io_backend_name(backend));
    EXPECT_EQ(write_past_file_size_limit(backend, path("limited"), "file size limit (ulimit -f)"),
              0);
  }
}

TEST_F(Aio, DeletedOrReplacedFileIsDetected) {
  const std::string name = path("deleted");
  AioFile file = open_swap_file(name, true);
  EXPECT_NO_THROW(file.check_still_linked());
  ASSERT_EQ(::unlink(name.c_str()), 0);
  std::string message = io_error_of([&] { file.check_still_linked(); });
  EXPECT_NE(message.find(name), std::string::npos) << message;
  EXPECT_NE(message.find("deleted underneath the run"), std::string::npos) << message;

  const std::string replaced = path("replaced");
  AioFile original = open_swap_file(replaced, true);
  AioFile other = open_swap_file(path("other"), true);
  ASSERT_EQ(::rename(path("other").c_str(), replaced.c_str()), 0);
  EXPECT_NO_THROW(other.check_still_linked());
  message = io_error_of([&] { original.check_still_linked(); });
  EXPECT_NE(message.find("deleted underneath the run"), std::string::npos) << message;
}

TEST_F(Aio, OpenFailuresNameThePath) {
  const std::string missing = path("no/such/folder/swap");
  std::string message = io_error_of([&] { open_swap_file(missing, true); });
  EXPECT_NE(message.find(missing), std::string::npos) << message;
  EXPECT_NE(message.find("No such file or directory"), std::string::npos) << message;
  message = io_error_of([&] { open_swap_file(path("absent"), false); });
  EXPECT_NE(message.find("absent"), std::string::npos) << message;
  // A planted link is refused, not followed.
  const std::string link = path("link");
  ASSERT_EQ(::symlink(path("target").c_str(), link.c_str()), 0);
  message = io_error_of([&] { open_swap_file(link, true); });
  EXPECT_NE(message.find("symbolic link"), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(path("target")));
  message = io_error_of([&] { open_swap_file(dir_.string(), false); });
  EXPECT_NE(message.find(dir_.string()), std::string::npos) << message;
}

TEST_F(Aio, ExistingFileKeepsItsData) {
  const std::string name = path("kept");
  AioEngine engine(settings_for(IoBackend::Libaio));
  AlignedBuffer written(256 * kKiB);
  AlignedBuffer read(256 * kKiB);
  fill_random(written.data(), written.bytes(), 3);
  {
    AioFile file = open_swap_file(name, true);
    AioTicket ticket = engine.write(file, written.data(), written.bytes(), 0);
    engine.wait(ticket);
  }
  AioFile file = open_swap_file(name, false);
  AioTicket ticket = engine.read(file, read.data(), read.bytes(), 0);
  engine.wait(ticket);
  EXPECT_EQ(first_difference(written.data(), read.data(), written.bytes()), "");
}

// --- Settings
// -------------------------------------------------------------------------------------

TEST_F(Aio, InvalidSettingsAreRefused) {
  const auto refused = [](std::int64_t block_size, int queue_depth, int threads) {
    AioSettings settings;
    settings.block_size = block_size;
    settings.queue_depth = queue_depth;
    settings.intra_op_parallelism = threads;
    EXPECT_THROW(AioEngine{settings}, std::invalid_argument)
        << block_size << " " << queue_depth << " " << threads;
  };
  refused(0, 8, 1);
  refused(-4096, 8, 1);
  refused(1000, 8, 1);
  refused(4096 + 512, 8, 1);
  refused(kMiB, 0, 1);
  refused(kMiB, -1, 1);
  refused(kMiB, 8, 0);
  refused(kMiB, 8, -2);

  AioEngine engine(settings_for(IoBackend::IoUring));
  AioFile file = open_swap_file(path("aligned"), true);
  if (!file.direct()) return;  // buffered I/O takes any alignment
  AlignedBuffer data(2 * kMiB);
  auto* bytes = static_cast<char*>(data.data());
  EXPECT_THROW(engine.write(file, bytes + 512, kMiB, 0), std::invalid_argument);
  EXPECT_THROW(engine.write(file, bytes, kMiB + 512, 0), std::invalid_argument);
  EXPECT_THROW(engine.read(file, bytes, kMiB, 512), std::invalid_argument);
  EXPECT_THROW(engine.read(file, bytes, kMiB, -4096), std::invalid_argument);
  AioFile closed;
  EXPECT_THROW(engine.read(closed, bytes, kMiB, 0), std::invalid_argument);
}

TEST(AioNames, BackendNamesRoundTrip) {
  for (IoBackend backend : {IoBackend::Automatic, IoBackend::IoUring, IoBackend::Libaio})
    EXPECT_EQ(parse_io_backend(io_backend_name(backend)), backend);
  try {
    parse_io_backend("posix");
    ADD_FAILURE() << "posix accepted";
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find("io_uring, libaio, auto"), std::string::npos);
  }
}

TEST(AioNames, AlignedBufferIsAlignedAndZeroed) {
  AlignedBuffer buffer(10000);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(buffer.data()) % kDirectAlignment, 0u);
  EXPECT_EQ(buffer.bytes(), 10000);
  const auto* bytes = static_cast<const unsigned char*>(buffer.data());
  EXPECT_TRUE(std::all_of(bytes, bytes + 10000, [](unsigned char b) { return b == 0; }));
  AlignedBuffer moved = std::move(buffer);
  EXPECT_EQ(buffer.data(), nullptr);
  EXPECT_EQ(moved.bytes(), 10000);
  EXPECT_EQ(align_up(4097, 4096), 8192);
}

// --- Choosing the interface
// -----------------------------------------------------------------------

TEST_F(Aio, ChooseIoBackendMeasuresBothAndLeavesNoProbeFile) {
  const std::string folder = subfolder("probe");
  AioSettings settings = settings_for(IoBackend::Automatic, kMiB, 8, 1);
  const BackendChoice choice = choose_io_backend(settings, folder, 4 * kMiB);
  for (const BackendProbe* probe : {&choice.io_uring, &choice.libaio})
    if (!usable(probe->backend)) {
      // Where an interface is blocked, the other is chosen and the reason kept.
      EXPECT_FALSE(probe->works);
      EXPECT_FALSE(probe->problem.empty());
      EXPECT_NE(choice.chosen, probe->backend);
      return;
    }
  EXPECT_TRUE(choice.io_uring.works) << choice.io_uring.problem;
  EXPECT_TRUE(choice.libaio.works) << choice.libaio.problem;
  EXPECT_GT(choice.io_uring.read_gb_per_s, 0.0);
  EXPECT_GT(choice.libaio.write_gb_per_s, 0.0);
  const BackendProbe& winner =
      choice.chosen == IoBackend::IoUring ? choice.io_uring : choice.libaio;
  const BackendProbe& loser = choice.chosen == IoBackend::IoUring ? choice.libaio : choice.io_uring;
  EXPECT_GE(winner.read_gb_per_s + winner.write_gb_per_s,
            loser.read_gb_per_s + loser.write_gb_per_s);
  EXPECT_EQ(choice.description.rfind(io_backend_name(choice.chosen), 0), 0u) << choice.description;
  EXPECT_NE(choice.description.find("GB/s"), std::string::npos) << choice.description;
  EXPECT_TRUE(fs::is_empty(folder));

  // The choice works.
  settings.backend = choice.chosen;
  AioEngine engine(settings);
  AioFile file = open_swap_file(folder + "/swap", true);
  round_trip(engine, file, 2 * kMiB, 0, 8);

  settings.backend = IoBackend::Libaio;
  const BackendChoice explicit_choice = choose_io_backend(settings, folder, kMiB);
  EXPECT_EQ(explicit_choice.chosen, IoBackend::Libaio);
  EXPECT_TRUE(explicit_choice.libaio.works);
  EXPECT_NE(explicit_choice.description.find("set explicitly"), std::string::npos);
}

TEST_F(Aio, ChooseIoBackendFailsInAMissingFolder) {
  const std::string folder = path("absent");
  const std::string message = io_error_of([&] { choose_io_backend(AioSettings{}, folder, kMiB); });
  EXPECT_NE(message.find(folder), std::string::npos) << message;
  EXPECT_FALSE(fs::exists(folder));
}

TEST_F(Aio, ChooseIoBackendRemovesTheProbeFileWhenTheDiskIsFull) {
  const std::string folder = subfolder("tiny");
  Mount tmpfs(folder, "tmpfs", "size=1m");
  if (!tmpfs.mounted()) GTEST_SKIP() << tmpfs.problem();
  const std::string message =
      io_error_of([&] { choose_io_backend(AioSettings{}, folder, 4 * kMiB); });
  EXPECT_NE(message.find("No space left on device"), std::string::npos) << message;
  EXPECT_TRUE(fs::is_empty(folder));
}

}  // namespace
}  // namespace zt::offload
