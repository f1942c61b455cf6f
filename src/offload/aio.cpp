// SPDX-License-Identifier: Apache-2.0
// The asynchronous I/O engine (aio.hpp). Each worker thread owns one queue (an io_uring ring or
// a libaio context) and a fixed table of `queue_depth` request slots; a transfer is split into
// one part per worker, and a worker streams the parts queued to it through its slots in
// `block_size` requests. Nothing is allocated per request: slots, the completion array and the
// retry list are sized once, when the worker starts.
#include "offload/aio.hpp"

#include <fcntl.h>
#include <libaio.h>
#include <liburing.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <new>
#include <numeric>
#include <thread>
#include <vector>

namespace zt::offload {
namespace {

using Clock = std::chrono::steady_clock;

// The largest request the engine issues: Linux transfers at most 0x7ffff000 bytes per call,
// and io_uring takes a 32-bit length.
constexpr std::int64_t kMaxBlockSize = std::int64_t{1} << 30;
// io_uring's IORING_MAX_ENTRIES; libaio contexts are bounded by /proc/sys/fs/aio-max-nr.
constexpr int kMaxQueueDepth = 32768;
constexpr int kMaxWorkers = 1024;

// strerror_r is the GNU variant (returns the text) under glibc and the XSI one (fills the
// buffer) elsewhere; both are thread-safe, unlike strerror. The overloads take either.
[[maybe_unused]] const char* strerror_text(int rc, const char* buffer) {
  return rc == 0 ? buffer : "unknown error";
}
[[maybe_unused]] const char* strerror_text(const char* text, const char*) {
  return text;
}

std::string error_text(int error) {
  char buffer[256] = {};
  std::string text = strerror_text(strerror_r(error, buffer, sizeof buffer), buffer);
  if (error == EFBIG) {
    rlimit limit{};
    if (getrlimit(RLIMIT_FSIZE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY)
      text +=
          " (file size limit (ulimit -f) reached: " + std::to_string(limit.rlim_cur) + " bytes)";
  }
  return text;
}

std::string quoted(const std::string& path) {
  return "'" + path + "'";
}

std::string byte_range(std::int64_t offset, std::int64_t bytes) {
  return "bytes [" + std::to_string(offset) + ", " + std::to_string(offset + bytes) + ")";
}

// With SIGXFSZ at its default a write past RLIMIT_FSIZE kills the process without a word;
// ignored, the write fails with EFBIG and is reported like any other failure.
void ignore_file_size_signal() {
  static std::once_flag once;
  std::call_once(once, [] { std::signal(SIGXFSZ, SIG_IGN); });
}

// ---------------------------------------------------------------------------------------------
// Queues: the two kernel interfaces behind one small interface. A completion names the slot
// the request was prepared in and the kernel's result (bytes transferred, or -errno).

struct Completion {
  int slot = 0;
  std::int64_t result = 0;
};

class IoQueue {
 public:
  virtual ~IoQueue() = default;
  virtual IoBackend backend() const = 0;
  /// Prepares one request; at most `depth` requests are prepared or in flight at a time.
  virtual void prepare(int slot, bool write, int fd, void* buffer, unsigned length,
                       std::int64_t offset) = 0;
  /// Hands every prepared request to the kernel. A request the kernel refuses outright comes
  /// back as a completion with its error.
  virtual void submit() = 0;
  /// Waits until at least `min_completions` requests completed and returns up to `capacity` of
  /// them in `out`.
  virtual int reap(int min_completions, Completion* out, int capacity) = 0;
  /// submit() then reap(), in one system call where the interface allows.
  virtual int submit_and_reap(int min_completions, Completion* out, int capacity) {
    submit();
    return reap(min_completions, out, capacity);
  }
};

// RAII owner of an io_uring ring.
class UringQueue final : public IoQueue {
 public:
  explicit UringQueue(int depth) : cqes_(static_cast<std::size_t>(depth)) {
    const int rc = io_uring_queue_init(static_cast<unsigned>(depth), &ring_, 0);
    if (rc < 0)
      throw IoError("io_uring cannot be set up (io_uring_queue_init): " + error_text(-rc));
  }
  ~UringQueue() override { io_uring_queue_exit(&ring_); }
  UringQueue(const UringQueue&) = delete;
  UringQueue& operator=(const UringQueue&) = delete;

  IoBackend backend() const override { return IoBackend::IoUring; }

  void prepare(int slot, bool write, int fd, void* buffer, unsigned length,
               std::int64_t offset) override {
    io_uring_sqe* sqe = io_uring_get_sqe(&ring_);
    if (sqe == nullptr) throw IoError("io_uring submission queue unexpectedly full");
    if (write)
      io_uring_prep_write(sqe, fd, buffer, length, static_cast<__u64>(offset));
    else
      io_uring_prep_read(sqe, fd, buffer, length, static_cast<__u64>(offset));
    io_uring_sqe_set_data64(sqe, static_cast<__u64>(slot));
  }

  void submit() override {
    while (io_uring_sq_ready(&ring_) > 0) {
      const int rc = io_uring_submit(&ring_);
      if (rc < 0 && !transient(rc)) throw IoError("io_uring submission failed: " + error_text(-rc));
    }
  }

  int reap(int min_completions, Completion* out, int capacity) override {
    if (min_completions > 0) {
      io_uring_cqe* cqe = nullptr;
      for (;;) {
        const int rc = io_uring_wait_cqe_nr(&ring_, &cqe, static_cast<unsigned>(min_completions));
        if (rc == 0) break;
        if (!transient(rc)) throw IoError("io_uring wait failed: " + error_text(-rc));
      }
    }
    const unsigned count =
        io_uring_peek_batch_cqe(&ring_, cqes_.data(), static_cast<unsigned>(capacity));
    for (unsigned i = 0; i < count; ++i)
      out[i] = {static_cast<int>(io_uring_cqe_get_data64(cqes_[i])), cqes_[i]->res};
    io_uring_cq_advance(&ring_, count);
    return static_cast<int>(count);
  }

  int submit_and_reap(int min_completions, Completion* out, int capacity) override {
    const int rc = io_uring_submit_and_wait(&ring_, static_cast<unsigned>(min_completions));
    if (rc < 0 && !transient(rc)) throw IoError("io_uring submission failed: " + error_text(-rc));
    submit();  // whatever an interrupted call left in the submission queue
    return reap(min_completions, out, capacity);
  }

 private:
  static bool transient(int rc) { return rc == -EINTR || rc == -EAGAIN || rc == -EBUSY; }

  io_uring ring_{};
  std::vector<io_uring_cqe*> cqes_;
};

// RAII owner of a libaio context.
class LibaioQueue final : public IoQueue {
 public:
  explicit LibaioQueue(int depth)
      : iocbs_(static_cast<std::size_t>(depth)),
        prepared_(static_cast<std::size_t>(depth)),
        events_(static_cast<std::size_t>(depth)),
        refused_(static_cast<std::size_t>(depth)) {
    const int rc = io_setup(depth, &context_);
    if (rc < 0) {
      std::string message = "libaio cannot be set up (io_setup): " + error_text(-rc);
      if (rc == -EAGAIN)
        message += " (queue_depth x intra_op_parallelism over /proc/sys/fs/aio-max-nr)";
      throw IoError(message);
    }
  }
  ~LibaioQueue() override { io_destroy(context_); }
  LibaioQueue(const LibaioQueue&) = delete;
  LibaioQueue& operator=(const LibaioQueue&) = delete;

  IoBackend backend() const override { return IoBackend::Libaio; }

  void prepare(int slot, bool write, int fd, void* buffer, unsigned length,
               std::int64_t offset) override {
    iocb* request = &iocbs_[static_cast<std::size_t>(slot)];
    if (write)
      io_prep_pwrite(request, fd, buffer, length, offset);
    else
      io_prep_pread(request, fd, buffer, length, offset);
    request->data = reinterpret_cast<void*>(static_cast<std::intptr_t>(slot));
    prepared_[static_cast<std::size_t>(prepared_count_++)] = request;
  }

  void submit() override {
    int done = 0;
    while (done < prepared_count_) {
      const int rc = io_submit(context_, prepared_count_ - done, prepared_.data() + done);
      if (rc > 0) {
        done += rc;
      } else if (rc == 0 || rc == -EINTR || rc == -EAGAIN) {
        continue;
      } else {
        // io_submit reports an error only for the first request of the batch: that one is
        // refused, the rest are submitted again.
        const iocb* request = prepared_[static_cast<std::size_t>(done++)];
        refused_[static_cast<std::size_t>(refused_count_++)] = {
            static_cast<int>(reinterpret_cast<std::intptr_t>(request->data)), rc};
      }
    }
    prepared_count_ = 0;
  }

  int reap(int min_completions, Completion* out, int capacity) override {
    int count = 0;
    while (refused_count_ > 0 && count < capacity)
      out[count++] = refused_[static_cast<std::size_t>(--refused_count_)];
    if (count == capacity) return count;
    const long wanted = std::max(0, min_completions - count);
    for (;;) {
      const int rc = io_getevents(context_, wanted, capacity - count, events_.data(), nullptr);
      if (rc >= 0) {
        for (int i = 0; i < rc; ++i) {
          const io_event& event = events_[static_cast<std::size_t>(i)];
          out[count++] = {static_cast<int>(reinterpret_cast<std::intptr_t>(event.data)),
                          static_cast<long>(event.res)};
        }
        return count;
      }
      if (rc != -EINTR) throw IoError("libaio wait (io_getevents) failed: " + error_text(-rc));
    }
  }

 private:
  io_context_t context_ = nullptr;
  std::vector<iocb> iocbs_;  // one per slot
  std::vector<iocb*> prepared_;
  int prepared_count_ = 0;
  std::vector<io_event> events_;
  std::vector<Completion> refused_;
  int refused_count_ = 0;
};

std::unique_ptr<IoQueue> make_queue(IoBackend backend, int depth) {
  if (backend == IoBackend::Libaio) return std::make_unique<LibaioQueue>(depth);
  return std::make_unique<UringQueue>(depth);
}

void check_settings(const AioSettings& settings) {
  if (settings.block_size <= 0 || settings.block_size % kDirectAlignment != 0 ||
      settings.block_size > kMaxBlockSize)
    throw std::invalid_argument("aio.block_size must be a positive multiple of " +
                                std::to_string(kDirectAlignment) + " bytes up to " +
                                std::to_string(kMaxBlockSize) + ", got " +
                                std::to_string(settings.block_size));
  if (settings.queue_depth < 1 || settings.queue_depth > kMaxQueueDepth)
    throw std::invalid_argument("aio.queue_depth must be between 1 and " +
                                std::to_string(kMaxQueueDepth) + ", got " +
                                std::to_string(settings.queue_depth));
  if (settings.intra_op_parallelism < 1 || settings.intra_op_parallelism > kMaxWorkers)
    throw std::invalid_argument("aio.intra_op_parallelism must be between 1 and " +
                                std::to_string(kMaxWorkers) + ", got " +
                                std::to_string(settings.intra_op_parallelism));
}

}  // namespace

// -------------------------------------------------------------------------------------------------

const char* io_backend_name(IoBackend backend) {
  switch (backend) {
    case IoBackend::IoUring:
      return "io_uring";
    case IoBackend::Libaio:
      return "libaio";
    case IoBackend::Automatic:
      break;
  }
  return "auto";
}

IoBackend parse_io_backend(const std::string& text) {
  if (text == "io_uring") return IoBackend::IoUring;
  if (text == "libaio") return IoBackend::Libaio;
  if (text == "auto") return IoBackend::Automatic;
  throw std::invalid_argument("unknown aio backend '" + text +
                              "' (accepted: io_uring, libaio, auto)");
}

// --- AioFile
// --------------------------------------------------------------------------------------

AioFile::~AioFile() {
  if (fd_ >= 0) ::close(fd_);
}

AioFile::AioFile(AioFile&& other) noexcept
    : fd_(other.fd_),
      path_(std::move(other.path_)),
      direct_(other.direct_),
      fallback_reason_(std::move(other.fallback_reason_)) {
  other.fd_ = -1;
}

AioFile& AioFile::operator=(AioFile&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    path_ = std::move(other.path_);
    direct_ = other.direct_;
    fallback_reason_ = std::move(other.fallback_reason_);
    other.fd_ = -1;
  }
  return *this;
}

void AioFile::check_still_linked() const {
  struct stat status {};
  if (::fstat(fd_, &status) != 0)
    throw IoError(quoted(path_) + ": cannot check the swap file (fstat): " + error_text(errno));
  if (status.st_nlink == 0)
    throw IoError(quoted(path_) +
                  ": file was deleted underneath the run (removed or replaced since it was "
                  "opened; its data can no longer be written back there)");
}

namespace {

// An aligned transfer through a file opened with O_DIRECT: the file systems that accept the
// flag at open but not the transfers (some overlay and network ones) fail it with EINVAL. An
// empty file gets a write, undone at once; a file with data is only read.
bool direct_transfers_work(int fd, std::string& why) {
  AlignedBuffer probe(kDirectAlignment);
  struct stat status {};
  if (::fstat(fd, &status) != 0) return true;  // left to the real transfers to report
  if (status.st_size == 0) {
    const ssize_t written = ::pwrite(fd, probe.data(), kDirectAlignment, 0);
    const int error = errno;
    if (::ftruncate(fd, 0) != 0) return true;
    if (written < 0 && error == EINVAL) {
      why =
          "the file system refuses O_DIRECT transfers (aligned probe write: " + error_text(error) +
          ")";
      return false;
    }
    return true;
  }
  const ssize_t read = ::pread(fd, probe.data(), kDirectAlignment, 0);
  if (read < 0 && errno == EINVAL) {
    why = "the file system refuses O_DIRECT transfers (aligned probe read: " + error_text(EINVAL) +
          ")";
    return false;
  }
  return true;
}

}  // namespace

AioFile open_swap_file(const std::string& path, bool create) {
  // O_NOFOLLOW: like every output of the project (files.hpp) a planted link is refused.
  const int flags = O_RDWR | O_CLOEXEC | O_NOFOLLOW | (create ? O_CREAT | O_TRUNC : 0);
  AioFile file;
  file.path_ = path;
  int fd = ::open(path.c_str(), flags | O_DIRECT, 0600);
  if (fd < 0 && errno == EINVAL) {
    file.fallback_reason_ = "the file system refuses O_DIRECT (open: " + error_text(EINVAL) + ")";
    fd = ::open(path.c_str(), flags, 0600);
  }
  if (fd < 0) {
    const int error = errno;
    throw IoError(quoted(path) + ": open of the swap file failed: " +
                  (error == ELOOP ? "it is a symbolic link (refused)" : error_text(error)));
  }
  file.fd_ = fd;  // closed by `file` from here on
  struct stat status {};
  if (::fstat(fd, &status) != 0)
    throw IoError(quoted(path) + ": open of the swap file failed (fstat): " + error_text(errno));
  if (!S_ISREG(status.st_mode))
    throw IoError(quoted(path) + ": open of the swap file failed: not a regular file");
  std::string why;
  if (file.fallback_reason_.empty() && !direct_transfers_work(fd, why)) {
    const int status_flags = ::fcntl(fd, F_GETFL);
    if (status_flags < 0 || ::fcntl(fd, F_SETFL, status_flags & ~O_DIRECT) != 0)
      throw IoError(quoted(path) + ": " + why +
                    ", and O_DIRECT cannot be turned off (fcntl): " + error_text(errno));
    file.fallback_reason_ = why;
  }
  file.direct_ = file.fallback_reason_.empty();
  return file;
}

// --- AlignedBuffer
// --------------------------------------------------------------------------------

AlignedBuffer::AlignedBuffer(std::int64_t bytes) {
  if (bytes < 0) throw std::invalid_argument("AlignedBuffer: negative size");
  if (bytes == 0) return;
  const std::int64_t rounded = align_up(bytes, kDirectAlignment);
  void* pointer = nullptr;
  if (posix_memalign(&pointer, static_cast<std::size_t>(kDirectAlignment),
                     static_cast<std::size_t>(rounded)) != 0)
    throw std::bad_alloc();
  std::memset(pointer, 0, static_cast<std::size_t>(rounded));
  data_ = pointer;
  bytes_ = bytes;
}

AlignedBuffer::~AlignedBuffer() {
  std::free(data_);
}

AlignedBuffer::AlignedBuffer(AlignedBuffer&& other) noexcept
    : data_(other.data_), bytes_(other.bytes_) {
  other.data_ = nullptr;
  other.bytes_ = 0;
}

AlignedBuffer& AlignedBuffer::operator=(AlignedBuffer&& other) noexcept {
  if (this != &other) {
    std::free(data_);
    data_ = other.data_;
    bytes_ = other.bytes_;
    other.data_ = nullptr;
    other.bytes_ = 0;
  }
  return *this;
}

// --- AioEngine
// ------------------------------------------------------------------------------------

class AioEngine::Impl {
 public:
  explicit Impl(const AioSettings& settings);
  ~Impl() { shutdown(); }
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  IoBackend backend() const { return backend_; }
  const AioSettings& settings() const { return settings_; }
  AioTicket start(bool write, const AioFile& file, char* buffer, std::int64_t bytes,
                  std::int64_t offset);
  void wait(AioTicket& ticket);
  void wait_all();
  AioCounters counters() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return counters_;
  }

 private:
  struct Transfer;

  // One worker's share of a transfer. The bookkeeping fields belong to that worker alone.
  struct Part {
    Transfer* transfer = nullptr;
    char* buffer = nullptr;
    std::int64_t bytes = 0;
    std::int64_t offset = 0;
    std::int64_t issued = 0;  // bytes handed out in requests so far
    int outstanding = 0;      // requests issued and not finished
    bool failed = false;
    std::string error;
    std::int64_t error_offset = 0;
  };

  struct Transfer {
    bool write = false;
    bool direct = false;
    int fd = -1;
    std::string path;
    std::int64_t bytes = 0;
    Clock::time_point start;
    std::vector<Part> parts;
    int parts_left = 0;  // guarded by mutex_
    bool done = false;   // guarded by mutex_
    std::string error;   // the first failed part's message, set when done
  };

  // A request in flight (or waiting to be resubmitted for the rest of a short transfer).
  struct Slot {
    Part* part = nullptr;  // null when free
    char* buffer = nullptr;
    std::int64_t offset = 0;
    std::int64_t length = 0;        // bytes still to transfer
    std::int64_t first_offset = 0;  // the request as first issued, for messages
    std::int64_t asked = 0;
  };

  struct Worker {
    std::unique_ptr<IoQueue> queue;
    std::deque<Part*> queued;  // guarded by mutex_
    std::condition_variable wake;
    std::thread thread;
  };

  void work(Worker& worker);
  Part* next_part(Worker& worker);
  void finish_part(Part& part);
  void shutdown();

  AioSettings settings_;
  IoBackend backend_ = IoBackend::IoUring;
  std::vector<std::unique_ptr<Worker>> workers_;

  mutable std::mutex mutex_;
  std::condition_variable finished_;  // a transfer completed
  std::map<std::uint64_t, std::unique_ptr<Transfer>> transfers_;
  std::uint64_t next_id_ = 1;
  int unfinished_ = 0;
  bool stop_ = false;
  AioCounters counters_;
};

AioEngine::Impl::Impl(const AioSettings& settings) : settings_(settings) {
  check_settings(settings);
  ignore_file_size_signal();
  const int count = settings.intra_op_parallelism;
  const IoBackend wanted =
      settings.backend == IoBackend::Automatic ? IoBackend::IoUring : settings.backend;
  std::vector<std::unique_ptr<IoQueue>> queues;
  try {
    for (int i = 0; i < count; ++i) queues.push_back(make_queue(wanted, settings.queue_depth));
  } catch (const IoError& uring_error) {
    if (settings.backend != IoBackend::Automatic) throw;
    queues.clear();
    try {
      for (int i = 0; i < count; ++i)
        queues.push_back(make_queue(IoBackend::Libaio, settings.queue_depth));
    } catch (const IoError& libaio_error) {
      throw IoError(std::string("no asynchronous I/O interface can be set up: ") +
                    uring_error.what() + "; " + libaio_error.what());
    }
  }
  backend_ = queues.front()->backend();
  for (auto& queue : queues) {
    workers_.push_back(std::make_unique<Worker>());
    workers_.back()->queue = std::move(queue);
  }
  try {
    for (auto& worker : workers_)
      worker->thread = std::thread([this, raw = worker.get()] { work(*raw); });
  } catch (...) {
    shutdown();
    throw;
  }
}

void AioEngine::Impl::shutdown() {
  {
    std::unique_lock<std::mutex> lock(mutex_);
    finished_.wait(lock, [this] { return unfinished_ == 0; });
    stop_ = true;
  }
  for (auto& worker : workers_) worker->wake.notify_all();
  for (auto& worker : workers_)
    if (worker->thread.joinable()) worker->thread.join();
}

AioTicket AioEngine::Impl::start(bool write, const AioFile& file, char* buffer, std::int64_t bytes,
                                 std::int64_t offset) {
  const char* op = write ? "write" : "read";
  if (file.fd() < 0) throw std::invalid_argument(std::string("aio ") + op + ": file is not open");
  if (bytes < 0 || offset < 0)
    throw std::invalid_argument(std::string("aio ") + op + " of " + quoted(file.path()) +
                                ": negative size or offset");
  if (buffer == nullptr && bytes > 0)
    throw std::invalid_argument(std::string("aio ") + op + " of " + quoted(file.path()) +
                                ": no buffer");
  if (file.direct() && (reinterpret_cast<std::uintptr_t>(buffer) % kDirectAlignment != 0 ||
                        offset % kDirectAlignment != 0 || bytes % kDirectAlignment != 0))
    throw std::invalid_argument(std::string("aio ") + op + " of " + quoted(file.path()) + " " +
                                byte_range(offset, bytes) +
                                ": O_DIRECT needs the buffer address, offset and length to be "
                                "multiples of " +
                                std::to_string(kDirectAlignment));

  auto transfer = std::make_unique<Transfer>();
  transfer->write = write;
  transfer->direct = file.direct();
  transfer->fd = file.fd();
  transfer->path = file.path();
  transfer->bytes = bytes;
  const int count = static_cast<int>(workers_.size());
  const std::int64_t share = align_up((bytes + count - 1) / count, kDirectAlignment);
  std::vector<int> owners;
  for (int i = 0; i < count; ++i) {
    const std::int64_t begin = share * i;
    if (begin >= bytes) break;
    Part part;
    part.transfer = transfer.get();
    part.buffer = buffer + begin;
    part.bytes = std::min(share, bytes - begin);
    part.offset = offset + begin;
    transfer->parts.push_back(std::move(part));
    owners.push_back(i);
  }
  transfer->parts_left = static_cast<int>(transfer->parts.size());
  transfer->done = transfer->parts.empty();

  AioTicket ticket;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ticket.id_ = next_id_++;
    transfer->start = Clock::now();
    Transfer& queued = *transfer;
    transfers_.emplace(ticket.id_, std::move(transfer));
    if (!queued.done) ++unfinished_;
    for (std::size_t i = 0; i < owners.size(); ++i)
      workers_[static_cast<std::size_t>(owners[i])]->queued.push_back(&queued.parts[i]);
  }
  for (int owner : owners) workers_[static_cast<std::size_t>(owner)]->wake.notify_one();
  return ticket;
}

void AioEngine::Impl::wait(AioTicket& ticket) {
  if (!ticket.valid()) return;
  std::unique_ptr<Transfer> transfer;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    const auto found = transfers_.find(ticket.id_);
    ticket.id_ = 0;
    if (found == transfers_.end()) return;  // already collected by wait_all
    Transfer* waited = found->second.get();
    finished_.wait(lock, [waited] { return waited->done; });
    transfer = std::move(found->second);
    transfers_.erase(found);
  }
  if (!transfer->error.empty()) throw IoError(transfer->error);
}

void AioEngine::Impl::wait_all() {
  std::map<std::uint64_t, std::unique_ptr<Transfer>> collected;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    finished_.wait(lock, [this] { return unfinished_ == 0; });
    collected.swap(transfers_);
  }
  for (const auto& entry : collected)
    if (!entry.second->error.empty()) throw IoError(entry.second->error);
}

AioEngine::Impl::Part* AioEngine::Impl::next_part(Worker& worker) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (worker.queued.empty()) return nullptr;
  Part* part = worker.queued.front();
  worker.queued.pop_front();
  return part;
}

void AioEngine::Impl::finish_part(Part& part) {
  Transfer& transfer = *part.transfer;
  std::lock_guard<std::mutex> lock(mutex_);
  if (--transfer.parts_left > 0) return;
  for (const Part& each : transfer.parts) {
    if (!each.error.empty()) {
      transfer.error = each.error;
      break;
    }
  }
  if (transfer.error.empty()) {
    const double seconds = std::chrono::duration<double>(Clock::now() - transfer.start).count();
    if (transfer.write) {
      counters_.bytes_written += transfer.bytes;
      counters_.write_seconds += seconds;
    } else {
      counters_.bytes_read += transfer.bytes;
      counters_.read_seconds += seconds;
    }
  }
  transfer.done = true;
  --unfinished_;
  finished_.notify_all();
}

// The worker loop. `issuing` is the part being cut into requests; a part leaves it once all its
// requests are issued or one failed, and is finished (reported to the engine, after which it
// may be freed by a waiter) when its last request completes.
void AioEngine::Impl::work(Worker& worker) {
  IoQueue& queue = *worker.queue;
  const int depth = settings_.queue_depth;
  const std::int64_t block = settings_.block_size;
  const bool overlap = settings_.overlap_events;
  const bool single = settings_.single_submit;
  std::vector<Slot> slots(static_cast<std::size_t>(depth));
  std::vector<int> free_slots(static_cast<std::size_t>(depth));
  std::iota(free_slots.rbegin(), free_slots.rend(), 0);
  std::vector<int> retry;
  retry.reserve(static_cast<std::size_t>(depth));
  std::vector<Completion> completions(static_cast<std::size_t>(depth));
  Part* issuing = nullptr;
  int in_use = 0;      // slots holding a request, submitted or waiting to be resubmitted
  std::string broken;  // set when the queue itself failed: every later part fails with it

  // A part reports the failure at the lowest offset (requests complete in any order).
  const auto fail = [&](Part& part, const std::string& message, std::int64_t offset) {
    if (part.failed && offset >= part.error_offset) return;
    part.failed = true;
    part.error = message;
    part.error_offset = offset;
    if (issuing == &part) issuing = nullptr;
  };
  const auto maybe_finish = [&](Part& part) {
    if ((part.failed || part.issued == part.bytes) && part.outstanding == 0) finish_part(part);
  };
  const auto release = [&](int index) {
    Slot& slot = slots[static_cast<std::size_t>(index)];
    Part& part = *slot.part;
    slot.part = nullptr;
    free_slots.push_back(index);
    --in_use;
    --part.outstanding;
    maybe_finish(part);
  };
  const auto describe = [](const Part& part, const Slot& slot) {
    return quoted(part.transfer->path) + ": " + (part.transfer->write ? "write" : "read") + " of " +
           byte_range(slot.first_offset, slot.asked) + " failed: ";
  };

  // `more`: bytes the last completion brought beyond what the slot had before.
  const auto short_read = [&](const Part& part, const Slot& slot, std::int64_t more) {
    return describe(part, slot) + "short read: " + std::to_string(slot.asked - slot.length + more) +
           " of " + std::to_string(slot.asked) + " bytes at offset " +
           std::to_string(slot.first_offset) + " (end of file at offset " +
           std::to_string(slot.offset + more) + ")";
  };

  for (;;) {
    if (issuing == nullptr) {
      std::unique_lock<std::mutex> lock(mutex_);
      if (in_use == 0) worker.wake.wait(lock, [&] { return stop_ || !worker.queued.empty(); });
      if (!worker.queued.empty()) {
        issuing = worker.queued.front();
        worker.queued.pop_front();
      } else if (in_use == 0) {
        return;  // stopped, and nothing left
      }
    }
    try {
      // Fill: resubmit the rest of short requests, then (keeping the queue full with
      // overlap_events, or starting a new batch once the last one drained) new requests.
      const bool batch_open = overlap || in_use == 0;
      int prepared = 0;
      const auto issue = [&](int index) {
        const Slot& slot = slots[static_cast<std::size_t>(index)];
        queue.prepare(index, slot.part->transfer->write, slot.part->transfer->fd, slot.buffer,
                      static_cast<unsigned>(slot.length), slot.offset);
        if (single)
          queue.submit();
        else
          ++prepared;
      };
      for (int index : retry) issue(index);
      retry.clear();
      while (batch_open && !free_slots.empty()) {
        if (issuing == nullptr) issuing = next_part(worker);
        if (issuing == nullptr) break;
        Part& part = *issuing;
        if (!broken.empty()) {
          fail(part, quoted(part.transfer->path) + ": " + broken, part.offset);
          maybe_finish(part);
          continue;
        }
        const int index = free_slots.back();
        free_slots.pop_back();
        Slot& slot = slots[static_cast<std::size_t>(index)];
        slot.part = &part;
        slot.buffer = part.buffer + part.issued;
        slot.offset = part.offset + part.issued;
        slot.length = std::min(block, part.bytes - part.issued);
        slot.first_offset = slot.offset;
        slot.asked = slot.length;
        part.issued += slot.length;
        ++part.outstanding;
        ++in_use;
        if (part.issued == part.bytes) issuing = nullptr;
        issue(index);
      }
      if (in_use == 0) continue;

      // Reap: one completion at a time with overlap_events, else the whole batch.
      const int wanted = overlap ? 1 : in_use;
      const int count = prepared > 0 ? queue.submit_and_reap(wanted, completions.data(), depth)
                                     : queue.reap(wanted, completions.data(), depth);
      for (int i = 0; i < count; ++i) {
        const Completion& done = completions[static_cast<std::size_t>(i)];
        Slot& slot = slots[static_cast<std::size_t>(done.slot)];
        Part& part = *slot.part;
        if (done.result >= slot.length) {
          release(done.slot);
        } else if (done.result > 0 && !part.transfer->write && part.transfer->direct &&
                   (slot.offset + done.result) % kDirectAlignment != 0) {
          // O_DIRECT reads stop short of a block only at the end of the file (the rest could
          // not even be asked for: the offset is no longer aligned).
          fail(part, short_read(part, slot, done.result), slot.first_offset);
          release(done.slot);
        } else if (done.result > 0) {  // short: the rest is asked for again
          slot.buffer += done.result;
          slot.offset += done.result;
          slot.length -= done.result;
          retry.push_back(done.slot);
        } else if (done.result == -EINTR || done.result == -EAGAIN) {
          retry.push_back(done.slot);
        } else {
          const std::int64_t got = slot.asked - slot.length;
          if (done.result == 0 && !part.transfer->write)
            fail(part, short_read(part, slot, 0), slot.first_offset);
          else if (done.result == 0)
            fail(part,
                 describe(part, slot) + "short write: " + std::to_string(got) + " of " +
                     std::to_string(slot.asked) + " bytes (no progress)",
                 slot.first_offset);
          else
            fail(part, describe(part, slot) + error_text(static_cast<int>(-done.result)),
                 slot.first_offset);
          release(done.slot);
        }
      }
    } catch (const std::exception& error) {
      // The queue itself failed (not a transfer): fail what it holds and every later part.
      // Requests already in the kernel cannot be called back; this does not happen short of a
      // kernel or memory fault.
      broken = std::string(io_backend_name(queue.backend())) + " queue failed: " + error.what();
      retry.clear();
      for (std::size_t index = 0; index < slots.size(); ++index) {
        if (slots[index].part == nullptr) continue;
        fail(*slots[index].part, quoted(slots[index].part->transfer->path) + ": " + broken,
             slots[index].first_offset);
        release(static_cast<int>(index));
      }
    }
  }
}

AioEngine::AioEngine(const AioSettings& settings) : impl_(std::make_unique<Impl>(settings)) {}

AioEngine::~AioEngine() = default;

IoBackend AioEngine::backend() const {
  return impl_->backend();
}

const AioSettings& AioEngine::settings() const {
  return impl_->settings();
}

AioTicket AioEngine::read(const AioFile& file, void* buffer, std::int64_t bytes,
                          std::int64_t offset) {
  return impl_->start(false, file, static_cast<char*>(buffer), bytes, offset);
}

AioTicket AioEngine::write(const AioFile& file, const void* buffer, std::int64_t bytes,
                           std::int64_t offset) {
  // The buffer is only read from; the kernel interfaces take a non-const pointer.
  return impl_->start(true, file, static_cast<char*>(const_cast<void*>(buffer)), bytes, offset);
}

void AioEngine::wait(AioTicket& ticket) {
  impl_->wait(ticket);
}

void AioEngine::wait_all() {
  impl_->wait_all();
}

AioCounters AioEngine::counters() const {
  return impl_->counters();
}

// --- Choosing the interface
// -----------------------------------------------------------------------

namespace {

std::string rate_text(double gb_per_s) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2f", gb_per_s);
  return text;
}

// Removes the probe file however the probe ends.
struct RemoveAtExit {
  std::string path;
  ~RemoveAtExit() { ::unlink(path.c_str()); }
};

// Writes then reads back `probe_bytes` through `backend` (rates in GB/s, 1e9 bytes).
BackendProbe probe_backend(const AioSettings& settings, IoBackend backend,
                           const std::string& folder, std::int64_t probe_bytes) {
  BackendProbe probe;
  probe.backend = backend;
  const std::string path =
      folder + "/.zt_aio_probe." + std::to_string(::getpid()) + "." + io_backend_name(backend);
  RemoveAtExit remove{path};
  try {
    AioSettings probe_settings = settings;
    probe_settings.backend = backend;
    AioEngine engine(probe_settings);
    AioFile file = open_swap_file(path, true);
    const std::int64_t bytes = align_up(std::max(probe_bytes, kDirectAlignment), kDirectAlignment);
    AlignedBuffer written(bytes);
    AlignedBuffer read(bytes);
    auto* words = static_cast<std::uint64_t*>(written.data());
    std::uint64_t state = 0x9e3779b97f4a7c15ULL;
    for (std::int64_t i = 0; i < bytes / 8; ++i) {
      state ^= state << 13;
      state ^= state >> 7;
      state ^= state << 17;
      words[i] = state;
    }
    const auto start = Clock::now();
    AioTicket ticket = engine.write(file, written.data(), bytes, 0);
    engine.wait(ticket);
    const auto between = Clock::now();
    ticket = engine.read(file, read.data(), bytes, 0);
    engine.wait(ticket);
    const auto end = Clock::now();
    if (std::memcmp(written.data(), read.data(), static_cast<std::size_t>(bytes)) != 0) {
      probe.problem = "the probe file read back differs from what was written";
      return probe;
    }
    const double write_seconds = std::chrono::duration<double>(between - start).count();
    const double read_seconds = std::chrono::duration<double>(end - between).count();
    probe.write_gb_per_s = static_cast<double>(bytes) / 1e9 / std::max(write_seconds, 1e-9);
    probe.read_gb_per_s = static_cast<double>(bytes) / 1e9 / std::max(read_seconds, 1e-9);
    probe.works = true;
  } catch (const std::exception& error) {
    probe.problem = error.what();
  }
  return probe;
}

std::string rates_text(const BackendProbe& probe) {
  return "read " + rate_text(probe.read_gb_per_s) + " GB/s, write " +
         rate_text(probe.write_gb_per_s) + " GB/s";
}

}  // namespace

BackendChoice choose_io_backend(const AioSettings& settings, const std::string& folder,
                                std::int64_t probe_bytes) {
  check_settings(settings);
  BackendChoice choice;
  choice.io_uring.backend = IoBackend::IoUring;
  choice.libaio.backend = IoBackend::Libaio;
  if (settings.backend != IoBackend::Automatic) {
    const bool uring = settings.backend == IoBackend::IoUring;
    BackendProbe& asked = uring ? choice.io_uring : choice.libaio;
    BackendProbe& other = uring ? choice.libaio : choice.io_uring;
    asked = probe_backend(settings, settings.backend, folder, probe_bytes);
    other.problem = "not measured: the backend was set explicitly";
    if (!asked.works)
      throw IoError(std::string(io_backend_name(settings.backend)) +
                    " was asked for but does not work in " + quoted(folder) + ": " + asked.problem);
    choice.chosen = settings.backend;
    choice.description = std::string(io_backend_name(settings.backend)) + " (" + rates_text(asked) +
                         "; set explicitly)";
    return choice;
  }

  choice.io_uring = probe_backend(settings, IoBackend::IoUring, folder, probe_bytes);
  choice.libaio = probe_backend(settings, IoBackend::Libaio, folder, probe_bytes);
  if (!choice.io_uring.works && !choice.libaio.works)
    throw IoError("no asynchronous I/O interface works in " + quoted(folder) +
                  ": io_uring: " + choice.io_uring.problem + "; libaio: " + choice.libaio.problem);
  const auto combined = [](const BackendProbe& probe) {
    return probe.read_gb_per_s + probe.write_gb_per_s;
  };
  const bool uring = choice.io_uring.works &&
                     (!choice.libaio.works || combined(choice.io_uring) >= combined(choice.libaio));
  choice.chosen = uring ? IoBackend::IoUring : IoBackend::Libaio;
  const BackendProbe& winner = uring ? choice.io_uring : choice.libaio;
  const BackendProbe& loser = uring ? choice.libaio : choice.io_uring;
  choice.description = std::string(io_backend_name(choice.chosen)) + " (" + rates_text(winner) +
                       "; " + io_backend_name(loser.backend) + " ";
  if (loser.works)
    choice.description +=
        rate_text(loser.read_gb_per_s) + "/" + rate_text(loser.write_gb_per_s) + " GB/s)";
  else
    choice.description += "does not work: " + loser.problem + ")";
  return choice;
}

}  // namespace zt::offload
