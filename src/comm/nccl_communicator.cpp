// SPDX-License-Identifier: Apache-2.0
// NCCL backend. Every collective runs on one non-blocking communication stream: it waits for
// an event recorded on the legacy default stream (where the producers of its buffers run),
// then the NCCL call, then a completion event the Handle polls. Polling instead of
// cudaEventSynchronize lets NCCL's asynchronous error (a peer that died) end the wait: the
// communicator is then aborted, so no rank blocks forever in a collective that cannot finish.
#include "comm/nccl_communicator.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "runtime/error.hpp"

namespace zt::comm {

CudaEvent::CudaEvent(unsigned flags) {
  ZT_CUDA_CHECK(cudaEventCreateWithFlags(&event_, flags));
}

CudaEvent::~CudaEvent() {
  if (event_ != nullptr) cudaEventDestroy(event_);
}

DeviceBuffer::DeviceBuffer(std::size_t bytes) {
  if (bytes > 0) ZT_CUDA_CHECK(cudaMalloc(&data_, bytes));
  bytes_ = bytes;
}

DeviceBuffer::~DeviceBuffer() {
  if (data_ != nullptr) cudaFree(data_);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& other) noexcept {
  if (this != &other) {
    if (data_ != nullptr) cudaFree(data_);
    data_ = std::exchange(other.data_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

namespace {

ncclDataType_t nccl_type(DataType type) {
  switch (type) {
    case DataType::Float32:
      return ncclFloat32;
    case DataType::Float64:
      return ncclFloat64;
    case DataType::Int32:
      return ncclInt32;
    case DataType::Int64:
      return ncclInt64;
    // NCCL reduces 16-bit types as the MPI backend does: widen, combine, round once per hop.
    case DataType::Float16:
      return ncclFloat16;
    case DataType::BFloat16:
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 10, 0)
      return ncclBfloat16;
#else
      throw std::invalid_argument(runtime::concat(
          "NCCL communicator: bf16 collectives need NCCL >= 2.10, this build has ", NCCL_MAJOR, ".",
          NCCL_MINOR, " (use communication_data_type fp16 or fp32, or a newer NCCL)"));
#endif
  }
  throw std::invalid_argument("NCCL: unknown data type");
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum:
      return ncclSum;
    case ReduceOp::Max:
      return ncclMax;
    case ReduceOp::Min:
      return ncclMin;
  }
  throw std::invalid_argument("NCCL: unknown reduction");
}

std::size_t checked_count(std::int64_t count, const char* operation) {
  if (count < 0)
    throw std::invalid_argument(runtime::concat("NCCL ", operation, ": negative count ", count));
  return static_cast<std::size_t>(count);
}

/// Makes `device` current for a scope: events, buffers and streams belong to the device that
/// is current when they are made, and the calling thread may have selected another one.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) : device_(device) {
    ZT_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device_) ZT_CUDA_CHECK(cudaSetDevice(device_));
  }
  ~DeviceGuard() {
    if (previous_ != device_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int device_;
  int previous_ = -1;
};

/// ncclGroupStart/End around the point-to-point style v collectives. Ends the group also when
/// an enqueue throws, so the thread is not left inside a group that later calls would join.
class NcclGroup {
 public:
  NcclGroup() { ZT_NCCL_CHECK(ncclGroupStart()); }
  ~NcclGroup() {
    if (open_) ncclGroupEnd();
  }
  NcclGroup(const NcclGroup&) = delete;
  NcclGroup& operator=(const NcclGroup&) = delete;
  void end() {
    open_ = false;
    ZT_NCCL_CHECK(ncclGroupEnd());
  }

 private:
  bool open_ = true;
};

/// Enqueues one collective on (send, recv), which may be staging copies of the caller's.
using Launch =
    std::function<void(const void* send, void* recv, ncclComm_t comm, cudaStream_t stream)>;

/// What the communicator and its pending completions share. A Handle may outlive the
/// communicator (its destructor waits), so the NCCL communicator and the stream stay until
/// the last of them is gone. Like the MPI backend, used from one thread at a time.
class NcclState {
 public:
  NcclState(MPI_Comm parent, int device) : device_(device) {
    nccl_ = std::make_unique<NcclCommunicatorHandle>(parent, device);  // selects `device`
    DeviceGuard guard(device_);
    ZT_NCCL_CHECK(ncclCommUserRank(nccl_->get(), &rank_));
    ZT_NCCL_CHECK(ncclCommCount(nccl_->get(), &size_));
    stream_ = std::make_unique<CudaStream>();
    ready_ = std::make_unique<CudaEvent>();
    barrier_buffer_ = DeviceBuffer(sizeof(std::int32_t));
    ZT_CUDA_CHECK(cudaMemset(barrier_buffer_.data(), 0, barrier_buffer_.bytes()));
  }

  ~NcclState() {
    try {
      DeviceGuard guard(device_);
      if (!failed_) {
        // Let what is in flight finish, watching for errors as a wait does: destroying the
        // NCCL communicator under a collective whose peer died would block in the destructor.
        CudaEvent drained;
        ZT_CUDA_CHECK(cudaEventRecord(drained.get(), stream_->get()));
        await(drained.get(), "shutdown");
      }
    } catch (...) {
      // Reported where it matters (the failed wait); the communicator is aborted by now.
    }
    try {
      DeviceGuard guard(device_);
      nccl_.reset();
      stream_.reset();
      ready_.reset();
      barrier_buffer_ = DeviceBuffer();
      scratch_ = DeviceBuffer();
    } catch (...) {
    }
  }

  NcclState(const NcclState&) = delete;
  NcclState& operator=(const NcclState&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  int device() const { return device_; }
  cudaStream_t stream() const { return stream_->get(); }
  cudaEvent_t ready() const { return ready_->get(); }
  void* barrier_buffer() const { return barrier_buffer_.data(); }
  double busy_seconds() const { return static_cast<double>(busy_nanoseconds_.load()) * 1e-9; }

  /// The communicator for a new collective; throws once an earlier one failed.
  ncclComm_t comm(const char* operation) const {
    if (failed_) throw std::runtime_error(aborted_message(operation));
    return nccl_->get();
  }

  /// Device scratch of at least `bytes` for staging host buffers. Only synchronous staged
  /// collectives use it, so one buffer serves them all.
  char* scratch(std::size_t bytes) {
    if (scratch_.bytes() < bytes) {
      scratch_ = DeviceBuffer();  // free first: the old one is not needed any more
      scratch_ = DeviceBuffer(bytes);
    }
    return scratch_.as<char>();
  }

  /// True when the buffer is memory of this device (or managed) that NCCL can use directly;
  /// false for host memory, which the caller stages.
  bool on_device(const void* pointer, const char* operation) const {
    cudaPointerAttributes attributes{};
    if (cudaPointerGetAttributes(&attributes, pointer) != cudaSuccess) {
      cudaGetLastError();  // not sticky: a pointer CUDA does not know is host memory
      return false;
    }
    switch (attributes.type) {
      case cudaMemoryTypeDevice:
        if (attributes.device != device_)
          throw std::invalid_argument(runtime::concat("NCCL ", operation, " on rank ", rank_,
                                                      ": buffer is on GPU ", attributes.device,
                                                      ", the communicator on GPU ", device_));
        return true;
      case cudaMemoryTypeManaged:
        return true;
      default:
        return false;  // pageable or pinned host memory
    }
  }

  /// True when `event` completed; throws (after aborting the communicator) when the
  /// collective failed or NCCL reports an asynchronous error.
  bool query(cudaEvent_t event, const char* operation) {
    if (failed_) throw std::runtime_error(aborted_message(operation));
    const cudaError_t code = cudaEventQuery(event);
    if (code != cudaSuccess && code != cudaErrorNotReady)
      fail(operation, runtime::concat("CUDA error ", cudaGetErrorString(code)));
    // Checked also when the event completed: after an asynchronous error the data is suspect.
    ncclResult_t async = ncclSuccess;
    const ncclResult_t got = ncclCommGetAsyncError(nccl_->get(), &async);
    if (got != ncclSuccess)
      fail(operation, runtime::concat("ncclCommGetAsyncError: ", ncclGetErrorString(got)));
    if (async != ncclSuccess && async != ncclInProgress) {
      const char* last = ncclGetLastError(nccl_->get());
      fail(operation,
           runtime::concat(ncclGetErrorString(async), last != nullptr && *last != '\0' ? " (" : "",
                           last != nullptr ? last : "",
                           last != nullptr && *last != '\0' ? ")" : ""));
    }
    return code == cudaSuccess;
  }

  /// Blocks until `event` completed or the collective failed. cudaEventSynchronize would
  /// block for good when a peer died; polling lets NCCL's asynchronous error end the wait.
  /// Spins first (collectives take microseconds to milliseconds), then sleeps so the core is
  /// free while a slower rank catches up.
  void await(cudaEvent_t event, const char* operation) {
    for (int polls = 0; !query(event, operation); ++polls) {
      if (polls < 256)
        std::this_thread::yield();
      else
        std::this_thread::sleep_for(std::chrono::microseconds(polls < 10000 ? 20 : 500));
    }
  }

  /// Adds the time between two timing events of a completed collective. Collectives run one
  /// after another on the one stream, so the sum is the time at least one was in flight.
  void add_busy(cudaEvent_t start, cudaEvent_t done) {
    float milliseconds = 0;
    if (cudaEventElapsedTime(&milliseconds, start, done) == cudaSuccess)
      busy_nanoseconds_ += static_cast<std::int64_t>(static_cast<double>(milliseconds) * 1e6);
    else
      cudaGetLastError();
  }

 private:
  [[noreturn]] void fail(const char* operation, const std::string& detail) {
    failure_ = runtime::concat("NCCL ", operation, " failed on rank ", rank_, " of ", size_,
                               " (GPU ", device_, "): ", detail);
    failed_ = true;
    // Aborting ends this rank's pending NCCL kernels; peers see the broken connection and
    // fail their own waits instead of hanging.
    nccl_->abort();
    throw std::runtime_error(failure_ + "; NCCL communicator aborted");
  }

  std::string aborted_message(const char* operation) const {
    return runtime::concat("NCCL ", operation, " on rank ", rank_,
                           ": communicator aborted after an earlier failure: ", failure_);
  }

  int device_;
  int rank_ = 0;
  int size_ = 1;
  std::unique_ptr<NcclCommunicatorHandle> nccl_;
  std::unique_ptr<CudaStream> stream_;
  std::unique_ptr<CudaEvent> ready_;  // re-recorded by every collective: a wait uses its latest
  DeviceBuffer barrier_buffer_;
  DeviceBuffer scratch_;
  bool failed_ = false;
  std::string failure_;
  std::atomic<std::int64_t> busy_nanoseconds_{0};
};

class NcclCompletion final : public detail::Completion {
 public:
  NcclCompletion(std::shared_ptr<NcclState> state, const char* operation)
      : state_(std::move(state)), operation_(operation), start_(0), done_(0) {}

  cudaEvent_t start() const { return start_.get(); }
  cudaEvent_t done() const { return done_.get(); }

  void wait() override {
    if (error_) std::rethrow_exception(error_);
    if (finished_) return;
    state_->await(done_.get(), operation_);
    finish();
  }

  bool test() override {
    if (finished_ || error_) return true;
    try {
      if (!state_->query(done_.get(), operation_)) return false;
    } catch (...) {
      error_ = std::current_exception();  // wait() rethrows it
      return true;
    }
    finish();
    return true;
  }

 private:
  void finish() {
    finished_ = true;
    state_->add_busy(start_.get(), done_.get());
  }

  std::shared_ptr<NcclState> state_;
  const char* operation_;
  CudaEvent start_;  // timing events: busy_seconds() reads the time between them
  CudaEvent done_;
  bool finished_ = false;
  std::exception_ptr error_;
};

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(MPI_Comm parent, int device)
      : state_(std::make_shared<NcclState>(parent, device)) {}

  int rank() const override { return state_->rank(); }
  int size() const override { return state_->size(); }
  const char* backend_name() const override { return "NCCL"; }
  bool progresses_asynchronously() const override { return true; }
  /// GPU time of the collectives whose handles completed (timing events around each).
  double busy_seconds() const override { return state_->busy_seconds(); }

  Handle all_reduce_async(const void* send, void* recv, std::int64_t count, DataType type,
                          ReduceOp op) override {
    const std::size_t n = checked_count(count, "all_reduce");
    // Resolved before anything is enqueued: an unsupported type throws here, in the caller.
    const ncclDataType_t datatype = nccl_type(type);
    const ncclRedOp_t reduction = nccl_op(op);
    const int size = this->size();
    const std::int64_t bytes = count * static_cast<std::int64_t>(size_of(type));
    const std::int64_t moved = size > 1 ? 2 * bytes * (size - 1) / size : 0;
    this->count(Collective::AllReduce, moved, moved);
    return submit("all_reduce", send, bytes, recv, bytes,
                  [=](const void* s, void* r, ncclComm_t comm, cudaStream_t stream) {
                    if (n > 0)
                      ZT_NCCL_CHECK(ncclAllReduce(s, r, n, datatype, reduction, comm, stream));
                  });
  }

  Handle reduce_scatter_async(const void* send, void* recv, std::int64_t count_per_rank,
                              DataType type, ReduceOp op) override {
    const std::size_t n = checked_count(count_per_rank, "reduce_scatter");
    const ncclDataType_t datatype = nccl_type(type);
    const ncclRedOp_t reduction = nccl_op(op);
    const int size = this->size();
    const std::int64_t element = static_cast<std::int64_t>(size_of(type));
    const std::int64_t bytes = count_per_rank * size * element;
    const std::int64_t moved = bytes * (size - 1) / size;
    this->count(Collective::ReduceScatter, moved, moved);
    const std::size_t own_offset = static_cast<std::size_t>(rank() * count_per_rank * element);
    return submit(
        "reduce_scatter", send, bytes, recv, count_per_rank * element,
        [=](const void* s, void* r, ncclComm_t comm, cudaStream_t stream) {
          if (n == 0) return;
          if (s != r) {
            ZT_NCCL_CHECK(ncclReduceScatter(s, r, n, datatype, reduction, comm, stream));
            return;
          }
          // The interface's in-place form (as MPI_IN_PLACE) leaves the result at the
          // start of the buffer; NCCL's wants it at this rank's block, so reduce
          // there and move it.
          char* block = static_cast<char*>(r) + own_offset;
          ZT_NCCL_CHECK(ncclReduceScatter(s, block, n, datatype, reduction, comm, stream));
          if (own_offset > 0)
            ZT_CUDA_CHECK(
                cudaMemcpyAsync(r, block, n * size_of(type), cudaMemcpyDeviceToDevice, stream));
        });
  }

  Handle all_gather_async(const void* send, void* recv, std::int64_t count_per_rank,
                          DataType type) override {
    const std::size_t n = checked_count(count_per_rank, "all_gather");
    const ncclDataType_t datatype = nccl_type(type);
    const int size = this->size();
    const std::int64_t element = static_cast<std::int64_t>(size_of(type));
    const std::int64_t bytes = count_per_rank * size * element;
    const std::int64_t moved = bytes * (size - 1) / size;
    this->count(Collective::AllGather, moved, moved);
    // NCCL recognises the in-place form itself (send == recv + rank * count_per_rank).
    return submit("all_gather", send, count_per_rank * element, recv, bytes,
                  [=](const void* s, void* r, ncclComm_t comm, cudaStream_t stream) {
                    if (n > 0) ZT_NCCL_CHECK(ncclAllGather(s, r, n, datatype, comm, stream));
                  });
  }

  Handle broadcast_async(void* buffer, std::int64_t count, DataType type, int root) override {
    const std::size_t n = checked_count(count, "broadcast");
    const ncclDataType_t datatype = nccl_type(type);
    const int size = this->size();
    if (root < 0 || root >= size)
      throw std::invalid_argument(
          runtime::concat("NCCL broadcast: root ", root, " outside ", size, " ranks"));
    const std::int64_t bytes = count * static_cast<std::int64_t>(size_of(type));
    const bool is_root = rank() == root;
    if (size > 1) this->count(Collective::Broadcast, is_root ? bytes : 0, is_root ? 0 : bytes);
    return submit("broadcast", buffer, bytes, buffer, bytes,
                  [=](const void* s, void* r, ncclComm_t comm, cudaStream_t stream) {
                    if (n > 0) ZT_NCCL_CHECK(ncclBroadcast(s, r, n, datatype, root, comm, stream));
                  });
  }

  /// One ncclReduce per rank (root r reduces block r into its recv), grouped so NCCL runs
  /// them as one launch; blocks of zero elements are skipped on every rank alike.
  Handle reduce_scatter_v_async(const void* send, void* recv,
                                const std::vector<std::int64_t>& counts, DataType type,
                                ReduceOp op) override {
    const VLayout layout = v_layout(counts, "reduce_scatter_v");
    const ncclDataType_t datatype = nccl_type(type);
    const ncclRedOp_t reduction = nccl_op(op);
    const int size = this->size();
    // The grouped ncclReduce calls below read every block of send while the root's result is
    // written to recv: in place, one rank's result would overwrite blocks still being read.
    // The MPI backend does it in place (MPI_IN_PLACE); here it is refused rather than corrupt.
    if (send == recv && size > 1 && layout.total > 0)
      throw std::invalid_argument("NCCL reduce_scatter_v: in place is not supported");
    const int rank = this->rank();
    const std::size_t element = size_of(type);
    const std::size_t own = layout.counts[static_cast<std::size_t>(rank)];
    const std::int64_t moved = static_cast<std::int64_t>((layout.total - own) * element);
    this->count(Collective::ReduceScatter, size > 1 ? moved : 0, size > 1 ? moved : 0);
    return submit(
        "reduce_scatter_v", send, static_cast<std::int64_t>(layout.total * element), recv,
        static_cast<std::int64_t>(own * element),
        [=](const void* s, void* r, ncclComm_t comm, cudaStream_t stream) {
          NcclGroup group;
          for (int root = 0; root < size; ++root) {
            const std::size_t n = layout.counts[static_cast<std::size_t>(root)];
            if (n == 0) continue;
            const char* block = static_cast<const char*>(s) +
                                layout.displacements[static_cast<std::size_t>(root)] * element;
            // recvbuff is read only on the root; elsewhere NCCL ignores it, and the
            // block itself is a valid pointer where recv may be null (own count 0).
            void* target = root == rank ? r : const_cast<char*>(block);
            ZT_NCCL_CHECK(ncclReduce(block, target, n, datatype, reduction, root, comm, stream));
          }
          group.end();
        });
  }

  /// One ncclBroadcast per rank (root r sends its block into recv at r's displacement),
  /// grouped; blocks of zero elements are skipped on every rank alike.
  Handle all_gather_v_async(const void* send, void* recv, const std::vector<std::int64_t>& counts,
                            DataType type) override {
    const VLayout layout = v_layout(counts, "all_gather_v");
    const ncclDataType_t datatype = nccl_type(type);
    const int size = this->size();
    const int rank = this->rank();
    const std::size_t element = size_of(type);
    const std::size_t own = layout.counts[static_cast<std::size_t>(rank)];
    const std::int64_t moved = static_cast<std::int64_t>((layout.total - own) * element);
    this->count(Collective::AllGather, size > 1 ? moved : 0, size > 1 ? moved : 0);
    return submit("all_gather_v", send, static_cast<std::int64_t>(own * element), recv,
                  static_cast<std::int64_t>(layout.total * element),
                  [=](const void* s, void* r, ncclComm_t comm, cudaStream_t stream) {
                    NcclGroup group;
                    for (int root = 0; root < size; ++root) {
                      const std::size_t n = layout.counts[static_cast<std::size_t>(root)];
                      if (n == 0) continue;
                      char* block = static_cast<char*>(r) +
                                    layout.displacements[static_cast<std::size_t>(root)] * element;
                      // In place when send already is this rank's block; NCCL reads sendbuff
                      // only on the root.
                      const void* source = root == rank ? s : block;
                      ZT_NCCL_CHECK(ncclBroadcast(source, block, n, datatype, root, comm, stream));
                    }
                    group.end();
                  });
  }

  void barrier() override {
    this->count(Collective::Barrier, 0, 0);
    // NCCL has no barrier: an all-reduce of one int is one, and waiting for it on the host
    // makes it one for the calling threads too.
    void* flag = state_->barrier_buffer();
    submit("barrier", flag, sizeof(std::int32_t), flag, sizeof(std::int32_t),
           [](const void* s, void* r, ncclComm_t comm, cudaStream_t stream) {
             ZT_NCCL_CHECK(ncclAllReduce(s, r, 1, ncclInt32, ncclSum, comm, stream));
           })
        .wait();
  }

 private:
  struct VLayout {
    std::vector<std::size_t> counts;
    std::vector<std::size_t> displacements;
    std::size_t total = 0;
  };

  VLayout v_layout(const std::vector<std::int64_t>& counts, const char* operation) const {
    if (counts.size() != static_cast<std::size_t>(size()))
      throw std::invalid_argument(runtime::concat("NCCL ", operation, ": ", counts.size(),
                                                  " counts for ", size(), " ranks"));
    VLayout layout;
    for (const std::int64_t count : counts) {
      layout.counts.push_back(checked_count(count, operation));
      layout.displacements.push_back(layout.total);
      layout.total += layout.counts.back();
    }
    return layout;
  }

  /// Starts `launch` on the caller's buffers, or on device copies of those in host memory.
  Handle submit(const char* operation, const void* send, std::int64_t send_bytes, void* recv,
                std::int64_t recv_bytes, const Launch& launch) {
    DeviceGuard guard(state_->device());
    state_->comm(operation);  // throws when an earlier failure aborted the communicator
    const bool send_host = send_bytes > 0 && !state_->on_device(send, operation);
    const bool recv_host = recv_bytes > 0 && !state_->on_device(recv, operation);
    if (!send_host && !recv_host) return enqueue(operation, send, recv, launch);
    return staged(operation, send, static_cast<std::size_t>(send_bytes), send_host, recv,
                  static_cast<std::size_t>(recv_bytes), recv_host, launch);
  }

  /// Issues the collective on the communication stream after the default stream's work.
  Handle enqueue(const char* operation, const void* send, void* recv, const Launch& launch) {
    ncclComm_t comm = state_->comm(operation);
    const cudaStream_t stream = state_->stream();
    auto completion = std::make_unique<NcclCompletion>(state_, operation);
    // The producers of the buffers run on the legacy default stream; recording there orders
    // the collective after them (and after the blocking streams the legacy stream waits for).
    ZT_CUDA_CHECK(cudaEventRecord(state_->ready(), cudaStreamLegacy));
    ZT_CUDA_CHECK(cudaStreamWaitEvent(stream, state_->ready(), 0));
    ZT_CUDA_CHECK(cudaEventRecord(completion->start(), stream));
    launch(send, recv, comm, stream);
    ZT_CUDA_CHECK(cudaEventRecord(completion->done(), stream));
    return Handle(std::move(completion));
  }

  /// Host buffers (the loss scalar, the run report) go through device scratch and complete
  /// before this returns. Buffers that overlap (the in-place forms) are staged as one region
  /// so the device copies keep their relative position.
  Handle staged(const char* operation, const void* send, std::size_t send_bytes, bool send_host,
                void* recv, std::size_t recv_bytes, bool recv_host, const Launch& launch) {
    const char* send_bytes_at = static_cast<const char*>(send);
    char* recv_bytes_at = static_cast<char*>(recv);
    const bool overlap = send_bytes > 0 && recv_bytes > 0 &&
                         send_bytes_at < recv_bytes_at + recv_bytes &&
                         recv_bytes_at < send_bytes_at + send_bytes;
    const void* device_send = send;
    void* device_recv = recv;
    if (overlap) {
      const char* begin = std::min<const char*>(send_bytes_at, recv_bytes_at);
      const char* end =
          std::max<const char*>(send_bytes_at + send_bytes, recv_bytes_at + recv_bytes);
      char* scratch = state_->scratch(static_cast<std::size_t>(end - begin));
      ZT_CUDA_CHECK(cudaMemcpy(scratch, begin, static_cast<std::size_t>(end - begin),
                               cudaMemcpyHostToDevice));
      device_send = scratch + (send_bytes_at - begin);
      device_recv = scratch + (recv_bytes_at - begin);
    } else {
      constexpr std::size_t kAlign = 256;
      const std::size_t send_room = send_host ? (send_bytes + kAlign - 1) / kAlign * kAlign : 0;
      char* scratch = state_->scratch(send_room + (recv_host ? recv_bytes : 0));
      if (send_host) {
        ZT_CUDA_CHECK(cudaMemcpy(scratch, send, send_bytes, cudaMemcpyHostToDevice));
        device_send = scratch;
      }
      if (recv_host) device_recv = scratch + send_room;  // output only: nothing to copy in
    }
    enqueue(operation, device_send, device_recv, launch).wait();
    if (recv_host) ZT_CUDA_CHECK(cudaMemcpy(recv, device_recv, recv_bytes, cudaMemcpyDeviceToHost));
    return Handle();
  }

  std::shared_ptr<NcclState> state_;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(MPI_Comm parent, int device) {
  return std::make_unique<NcclCommunicator>(parent, device);
}

}  // namespace zt::comm
