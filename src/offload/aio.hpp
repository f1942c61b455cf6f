// SPDX-License-Identifier: Apache-2.0
// The asynchronous I/O engine of NVMe offload (DESIGN §5): reads and writes of large aligned
// buffers at file offsets, with DeepSpeed's aio settings (reference/deepspeed.md §4.1-4.2):
// - a transfer is cut into `block_size` requests; each of `intra_op_parallelism` workers (one
//   io_uring ring or libaio context each) transfers its contiguous 1/T share of every transfer
//   with up to `queue_depth` requests in flight;
// - `overlap_events` true: a worker keeps its queue full, reaping one completion at a time;
//   false: it submits a batch of up to `queue_depth` requests and waits for all of them;
// - `single_submit` true: one submission call per request; false: one per batch.
// io_uring (liburing) and libaio are both built; `IoBackend::Automatic` takes the faster of the
// two on the file system in question (a short probe), and the choice is printed by the caller.
// Files are opened with O_DIRECT where the file system allows it; where it does not (ramfs,
// some overlay and network file systems) `open_swap_file` says so and falls back to buffered
// I/O, never silently: the file's `direct()` is false and `fallback_reason()` says why.
//
// Errors (a failed or short transfer, a full disk, a file deleted underneath the run) throw
// IoError naming the path, the operation, the byte range and the system's message.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

namespace zt::offload {

enum class IoBackend { Automatic, IoUring, Libaio };

/// "io_uring", "libaio", "auto".
const char* io_backend_name(IoBackend backend);
/// Parses "io_uring" / "libaio" / "auto"; throws std::invalid_argument naming the accepted
/// values otherwise.
IoBackend parse_io_backend(const std::string& text);

/// DeepSpeed's `aio` block (reference/deepspeed.md §1.5), with its defaults.
struct AioSettings {
  std::int64_t block_size = 1048576;  // bytes per request
  int queue_depth = 8;                // requests in flight per worker
  int intra_op_parallelism = 1;       // workers; DeepSpeed's docs call it thread_count
  bool single_submit = false;
  bool overlap_events = true;
  IoBackend backend = IoBackend::Automatic;
};

/// A transfer that failed, or a swap file that cannot be used. what() names the path, the
/// operation ("read", "write", "open"), the byte range and the cause ("No space left on
/// device", "short read: 4096 of 1048576 bytes", "file was deleted").
class IoError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The alignment O_DIRECT asks of buffer addresses, file offsets and lengths on this file
/// system (statx's STATX_DIOALIGN where the kernel reports it, else 4096). Buffers handed to
/// the engine for direct files must be aligned to it, offsets and lengths multiples of it.
constexpr std::int64_t kDirectAlignment = 4096;

/// An open file for swapping (RAII: closed at destruction; not removed, see SwapFolder).
class AioFile {
 public:
  AioFile() = default;
  ~AioFile();
  AioFile(AioFile&& other) noexcept;
  AioFile& operator=(AioFile&& other) noexcept;
  AioFile(const AioFile&) = delete;
  AioFile& operator=(const AioFile&) = delete;

  int fd() const { return fd_; }
  const std::string& path() const { return path_; }
  /// True when opened with O_DIRECT.
  bool direct() const { return direct_; }
  /// Why O_DIRECT was not used (empty when direct()).
  const std::string& fallback_reason() const { return fallback_reason_; }
  /// Throws IoError when the file was removed or replaced since it was opened (its link
  /// count dropped to zero): reads would still see the old data, and nothing could be written
  /// back where the user expects it.
  void check_still_linked() const;

 private:
  friend AioFile open_swap_file(const std::string& path, bool create);
  int fd_ = -1;
  std::string path_;
  bool direct_ = false;
  std::string fallback_reason_;
};

/// Opens (create: creates or truncates, mode 0600) `path` for reading and writing with
/// O_DIRECT, or buffered when the file system refuses O_DIRECT (EINVAL at open, or an aligned
/// probe transfer failing with EINVAL). Throws IoError naming the path on any other failure
/// (missing folder, no permission, read-only file system).
AioFile open_swap_file(const std::string& path, bool create);

/// One in-flight transfer; wait for it with AioEngine::wait. Default-constructed: nothing to
/// wait for.
class AioTicket {
 public:
  AioTicket() = default;
  bool valid() const { return id_ != 0; }

 private:
  friend class AioEngine;
  std::uint64_t id_ = 0;
};

/// Byte counts and busy time, for reports and the bench.
struct AioCounters {
  std::int64_t bytes_read = 0;
  std::int64_t bytes_written = 0;
  double read_seconds = 0;   // summed from submission to completion of each transfer
  double write_seconds = 0;
};

class AioEngine {
 public:
  /// Starts `settings.intra_op_parallelism` workers on `backend` (Automatic is resolved by
  /// the caller with choose_io_backend; here it means io_uring where the kernel offers it, else
  /// libaio). Throws std::invalid_argument for settings out of range (block_size not a positive
  /// multiple of kDirectAlignment, queue_depth < 1, intra_op_parallelism < 1), IoError when
  /// neither interface can be set up (io_uring disabled and libaio failing).
  explicit AioEngine(const AioSettings& settings);
  ~AioEngine();  // waits for transfers in flight, then stops the workers
  AioEngine(const AioEngine&) = delete;
  AioEngine& operator=(const AioEngine&) = delete;

  /// Which interface the workers use.
  IoBackend backend() const;
  const AioSettings& settings() const;

  /// Queues a transfer of `bytes` between `buffer` and `file` at `offset` and returns at once.
  /// The buffer must stay valid and untouched until the ticket is waited for. For direct files
  /// `buffer`, `offset` and `bytes` must be multiples of kDirectAlignment, and each worker's
  /// share (bytes / intra_op_parallelism, rounded up to the alignment) is transferred by that
  /// worker (std::invalid_argument otherwise). A read past the end of the file is a short
  /// read: an IoError at wait.
  AioTicket read(const AioFile& file, void* buffer, std::int64_t bytes, std::int64_t offset);
  AioTicket write(const AioFile& file, const void* buffer, std::int64_t bytes,
                  std::int64_t offset);
  /// Blocks until the transfer is complete; throws IoError if any part of it failed or came
  /// up short (after all its parts have finished, so the buffer is free again either way).
  void wait(AioTicket& ticket);
  /// Waits for every transfer in flight; throws the first failure.
  void wait_all();

  AioCounters counters() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

/// Measured rates of one interface on one folder, for the start-up line.
struct BackendProbe {
  IoBackend backend = IoBackend::IoUring;
  bool works = false;
  double read_gb_per_s = 0;
  double write_gb_per_s = 0;
  std::string problem;  // why it does not work
};

struct BackendChoice {
  IoBackend chosen = IoBackend::IoUring;
  BackendProbe io_uring;
  BackendProbe libaio;
  /// "io_uring (read 2.10 GB/s, write 1.80 GB/s; libaio 1.90/1.70 GB/s)", or why one was not
  /// measured.
  std::string description;
};

/// Resolves `settings.backend`: an explicit choice is checked to work; Automatic writes and
/// reads a probe file of `probe_bytes` in `folder` with each interface that can be set up and
/// takes the faster (read + write rate). The probe file is removed. Throws IoError when no
/// interface works, or the explicit one does not.
BackendChoice choose_io_backend(const AioSettings& settings, const std::string& folder,
                                std::int64_t probe_bytes = std::int64_t{32} << 20);

/// Page-aligned (kDirectAlignment) host memory for transfers, zeroed; RAII. Plain memory: for
/// pinned (cudaHostAlloc) memory the caller uses the tracker's host allocator instead.
class AlignedBuffer {
 public:
  AlignedBuffer() = default;
  explicit AlignedBuffer(std::int64_t bytes);
  ~AlignedBuffer();
  AlignedBuffer(AlignedBuffer&& other) noexcept;
  AlignedBuffer& operator=(AlignedBuffer&& other) noexcept;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  void* data() const { return data_; }
  std::int64_t bytes() const { return bytes_; }

 private:
  void* data_ = nullptr;
  std::int64_t bytes_ = 0;
};

/// Rounds `bytes` up to a multiple of `alignment`.
constexpr std::int64_t align_up(std::int64_t bytes, std::int64_t alignment) {
  return (bytes + alignment - 1) / alignment * alignment;
}

}  // namespace zt::offload
