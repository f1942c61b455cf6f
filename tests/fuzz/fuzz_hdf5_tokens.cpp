// SPDX-License-Identifier: Apache-2.0
// Fuzz target: the HDF5 token reader (io::Hdf5TokenDataset) on arbitrary file bytes, used the
// way `zerotrain train --data` uses it: open, validate every token against a vocabulary, read
// windows. The input is the whole file; it is written to a private temporary directory (in
// /dev/shm when there is one: HDF5 opens by name). An IoError is the expected answer to a bad
// file; any other exception, a sanitizer report, a leaked HDF5 identifier (it would keep the
// file open, so the next input would read the old one) or tokens that disagree between reads
// is a finding.
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ZT_FUZZ_SANITIZED 1
#include <sanitizer/common_interface_defs.h>
#endif
#endif

#include "io/hdf5_handle.hpp"
#include "io/hdf5_tokens.hpp"
#include "tests/fuzz/fuzz_input.hpp"
#include "tests/fuzz/scratch_file.hpp"

namespace {

using zt::fuzz::invariant_failed;
using zt::fuzz::ScratchFile;
using zt::io::Hdf5TokenDataset;
using zt::io::IoError;

// The model vocabulary `train` validates against when the file names none (GPT-2's).
constexpr int kDefaultVocab = 50257;
// How many tokens each window read takes: windows, not the whole file, as the sampler does.
constexpr std::int64_t kWindow = 64;

std::vector<std::int32_t> read_window(const Hdf5TokenDataset& tokens, std::int64_t offset,
                                      std::int64_t count) {
  std::vector<std::int32_t> out(static_cast<std::size_t>(count));
  tokens.read(offset, count, out.data());
  return out;
}

void exercise(const std::string& path) {
  const Hdf5TokenDataset tokens(path, "tokens");
  const std::int64_t size = tokens.size();
  if (size < 2) invariant_failed("opened a dataset of fewer than 2 tokens");
  if (tokens.describe().empty() || tokens.stored_type().empty())
    invariant_failed("empty description");

  // What train does first: every token checked against the model's vocabulary.
  const int vocab = tokens.vocab_size_hint() > 0 ? tokens.vocab_size_hint() : kDefaultVocab;
  tokens.validate(vocab);

  // Then windows; after a successful validate every token read must be in the vocabulary, and
  // a window must read the same as the two halves it is made of.
  const std::int64_t count = std::min(size, kWindow);
  for (const std::int64_t offset : {std::int64_t{0}, (size - count) / 2, size - count}) {
    const std::vector<std::int32_t> window = read_window(tokens, offset, count);
    for (const std::int32_t token : window)
      if (token < 0 || token >= vocab) invariant_failed("validated, but read a token outside");
    const std::int64_t half = count / 2;
    std::vector<std::int32_t> halves = read_window(tokens, offset, half);
    const std::vector<std::int32_t> rest = read_window(tokens, offset + half, count - half);
    halves.insert(halves.end(), rest.begin(), rest.end());
    if (halves != window) invariant_failed("a window reads differently in two halves");
  }
  try {
    read_window(tokens, size - 1, 2);
  } catch (const IoError&) {
    return;  // a read past the end must be refused, not served from beyond the dataset
  }
  invariant_failed("a read past the end was not refused");
}

// Whether the innermost frame of a sanitizer report that is not runtime code lies in libhdf5.
// Runtime code: libc, libstdc++, and frames in this executable without a source location (the
// sanitizer's interceptors such as strdup or free, libFuzzer); our own code has file:line.
bool crashed_in_libhdf5(const std::string& report) {
  std::size_t start = 0;
  while ((start = report.find('#', start)) != std::string::npos) {
    const std::size_t end = report.find('\n', start);
    const std::string frame = report.substr(start, end == std::string::npos ? end : end - start);
    start = end == std::string::npos ? report.size() : end;
    if (frame.size() < 2 || frame[1] < '0' || frame[1] > '9') continue;  // not "#N ..."
    const bool shared_library = frame.find(".so") != std::string::npos;
    const bool has_source = frame.find(".cpp:") != std::string::npos ||
                            frame.find(".hpp:") != std::string::npos ||
                            frame.find(".h:") != std::string::npos;
    const bool runtime = frame.find("worker_crash_report") != std::string::npos ||
                         frame.find("libc.so") != std::string::npos ||
                         frame.find("libstdc++") != std::string::npos ||
                         frame.find("sysdeps/") != std::string::npos ||
                         (!shared_library && !has_source);
    if (!runtime) return frame.find("libhdf5") != std::string::npos;
  }
  return false;
}

// zerotrain opens a token file first in a helper process (`zerotrain data check`, run by
// train on every rank) because libhdf5 1.10 crashes on some damaged files; a crash there is
// refused with a message. The harness does the same: a child process exercises every file
// first. If the child died in libhdf5 (per its sanitizer report), that is the case zerotrain
// handles, not a finding; if it died anywhere else, it is. Only a file the child survived is
// exercised in this process, as zerotrain's ranks open only what their helper survived. The
// child is a worker forked once and fed file after file (a fork per input would cost more
// than the input), and forked anew after it died.
// In the worker, the signals the sanitizer leaves to libFuzzer (whose handler would write a crash
// artifact for the worker's empty unit): print where it happened, for crashed_in_libhdf5.
extern "C" void worker_crash_report(int signal_number) {
#ifdef ZT_FUZZ_SANITIZED
  std::fprintf(stderr, "worker: signal %d\n", signal_number);
  __sanitizer_print_stack_trace();
#endif
  ::_exit(128 + signal_number);
}

class Prober {
 public:
  static constexpr int kWorkerSeconds = 8;                // below libFuzzer's -timeout=10
  static constexpr long long kWorkerBytes = 768ll << 20;  // well below -rss_limit_mb=2048

  ~Prober() { stop(); }

  /// False when the child died in libhdf5 on this file.
  bool survives(const std::string& path) {
    if (pid_ <= 0) start(path);
    const char go = 'g';
    if (::write(request_, &go, 1) != 1) invariant_failed("cannot reach the worker");
    // The limits zerotrain's helper runs under (an address-space cap, a timeout), checked from
    // here: a worker that exceeds them is stopped, as the helper would be, and that is a
    // refusal, not a finding. (RLIMIT_AS cannot be used under ASan, which reserves terabytes.)
    const auto start = std::chrono::steady_clock::now();
    char answer = 0;
    ssize_t got = 0;
    for (;;) {
      pollfd watch{reply_, POLLIN, 0};
      if (::poll(&watch, 1, 100) > 0) {
        while ((got = ::read(reply_, &answer, 1)) < 0 && errno == EINTR) {
        }
        break;
      }
      drain();
      if (std::chrono::steady_clock::now() - start > std::chrono::seconds(kWorkerSeconds) ||
          resident_bytes(pid_) > kWorkerBytes) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, nullptr, 0);
        pid_ = -1;
        stop();
        return false;
      }
    }
    drain();
    if (got == 1) return true;
    // The worker died on this file: its report tells where.
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    drain();
    const std::string report = std::move(report_);
    stop();
    if (crashed_in_libhdf5(report)) return false;
    std::fputs(report.c_str(), stderr);
    invariant_failed("the worker exercising the file died outside libhdf5");
  }

 private:
  void start(const std::string& path) {
    int requests[2], replies[2], errors[2];
    if (::pipe(requests) != 0 || ::pipe(replies) != 0 || ::pipe(errors) != 0)
      invariant_failed("cannot create pipes");
    pid_ = ::fork();
    if (pid_ < 0) invariant_failed("cannot fork");
    if (pid_ == 0) {
      // The worker's death is reported by the sanitizer alone: libFuzzer's callbacks would
      // write a crash artifact for the (empty) unit the worker inherited.
#ifdef ZT_FUZZ_SANITIZED
      __sanitizer_set_death_callback(nullptr);
#endif
      for (const int signal_number : {SIGABRT, SIGFPE, SIGILL})
        std::signal(signal_number, worker_crash_report);
      ::dup2(errors[1], 2);
      ::close(requests[1]);
      ::close(replies[0]);
      ::close(errors[0]);
      char go = 0;
      while (::read(requests[0], &go, 1) == 1) {
        try {
          exercise(path);
        } catch (const IoError&) {
        }
        const char done = 'k';
        if (::write(replies[1], &done, 1) != 1) break;
      }
      ::_exit(0);
    }
    ::close(requests[0]);
    ::close(replies[1]);
    ::close(errors[1]);
    request_ = requests[1];
    reply_ = replies[0];
    errors_ = errors[0];
    ::fcntl(errors_, F_SETFL, O_NONBLOCK);
  }

  static long long resident_bytes(pid_t pid) {
    std::FILE* statm = std::fopen(("/proc/" + std::to_string(pid) + "/statm").c_str(), "r");
    if (statm == nullptr) return 0;
    long long size = 0, resident = 0;
    const int read = std::fscanf(statm, "%lld %lld", &size, &resident);
    std::fclose(statm);
    return read == 2 ? resident * ::sysconf(_SC_PAGESIZE) : 0;
  }

  // Reads what the worker wrote to stderr so far (a full pipe would block it).
  void drain() {
    char buffer[4096];
    for (ssize_t got; (got = ::read(errors_, buffer, sizeof buffer)) > 0;)
      report_.append(buffer, static_cast<std::size_t>(got));
    if (report_.size() > (1u << 20)) report_.erase(0, report_.size() - (1u << 20));
  }

  void stop() {
    for (int* fd : {&request_, &reply_, &errors_})
      if (*fd >= 0) {
        ::close(*fd);
        *fd = -1;
      }
    if (pid_ > 0) ::waitpid(pid_, nullptr, 0);  // closing its requests ends it
    pid_ = -1;
    report_.clear();
  }

  pid_t pid_ = -1;
  int request_ = -1, reply_ = -1, errors_ = -1;
  std::string report_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static ScratchFile scratch("hdf5", "input.h5");
  zt::io::silence_hdf5_error_printing();
  const std::string& path = scratch.write(data, size);
  static Prober prober;
  if (!prober.survives(path)) return 0;  // zerotrain refuses it: libhdf5 crashed on it
  try {
    exercise(path);
  } catch (const IoError&) {
    // the expected answer to a malformed file
  }
  if (H5Fget_obj_count(static_cast<hid_t>(H5F_OBJ_ALL), H5F_OBJ_ALL) != 0)
    invariant_failed("HDF5 identifiers are still open after the reader was destroyed");
  return 0;
}
