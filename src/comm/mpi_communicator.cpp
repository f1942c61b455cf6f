// SPDX-License-Identifier: Apache-2.0
// MPI backend. Open MPI advances nonblocking collectives only inside MPI calls, so a
// collective started before a layer's compute would sit idle until the next wait. With
// MpiProgress::Thread one thread per communicator starts and tests every collective, which
// lets reductions and gathers run while the ranks compute; it sleeps between tests so it does
// not take a core from the compute threads while it waits for slower ranks.
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <limits>
#include <mutex>
#include <numeric>
#include <stdexcept>
#include <thread>
#include <utility>

#include "comm/communicator.hpp"
#include "comm/reduction.hpp"
#include "runtime/error.hpp"
#include "runtime/log.hpp"

namespace zt::comm {
namespace {

MPI_Datatype mpi_type(DataType type) {
  switch (type) {
    case DataType::Float32:
      return MPI_FLOAT;
    case DataType::Float64:
      return MPI_DOUBLE;
    case DataType::Int32:
      return MPI_INT32_T;
    case DataType::Int64:
      return MPI_INT64_T;
    case DataType::Float16:
    case DataType::BFloat16:
      // MPI has no 16-bit floats: a 2-byte integer type moves them bit for bit, and the
      // user-defined operations (HalfOperations) give them arithmetic.
      return MPI_UINT16_T;
  }
  throw std::invalid_argument("MPI communicator: unknown data type");
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum:
      return MPI_SUM;
    case ReduceOp::Max:
      return MPI_MAX;
    case ReduceOp::Min:
      return MPI_MIN;
  }
  throw std::invalid_argument("MPI communicator: unknown reduction");
}

/// Owns one user-defined MPI_Op. Freed unless MPI is already finalised (a communicator that
/// outlived runtime::Environment, which owns MPI_Finalize: freeing then would be an error, and
/// the process is ending). The communicator's destructor completes its collectives first.
class UserOperation {
 public:
  UserOperation() = default;
  UserOperation(MPI_User_function* function, bool commutative) {
    ZT_MPI_CHECK(MPI_Op_create(function, commutative ? 1 : 0, &op_));
  }
  ~UserOperation() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (op_ != MPI_OP_NULL && !finalized) MPI_Op_free(&op_);
  }
  UserOperation(UserOperation&& other) noexcept : op_(std::exchange(other.op_, MPI_OP_NULL)) {}
  UserOperation& operator=(UserOperation&& other) noexcept {
    std::swap(op_, other.op_);
    return *this;
  }
  UserOperation(const UserOperation&) = delete;
  UserOperation& operator=(const UserOperation&) = delete;
  MPI_Op get() const { return op_; }

 private:
  MPI_Op op_ = MPI_OP_NULL;
};

/// Sum, Max and Min of fp16 and bf16 as MPI_Ops (comm/reduction.cpp has the loops). Declared
/// commutative, which they are bit for bit, so MPI may pick its ring and recursive-halving
/// algorithms rather than the order-preserving ones.
class HalfOperations {
 public:
  HalfOperations() {
    for (const DataType type : {DataType::Float16, DataType::BFloat16})
      for (const ReduceOp op : {ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min})
        ops_[index(type, op)] = UserOperation(detail::mpi_user_function(type, op), true);
  }
  MPI_Op get(DataType type, ReduceOp op) const { return ops_[index(type, op)].get(); }

 private:
  static std::size_t index(DataType type, ReduceOp op) {
    return (type == DataType::BFloat16 ? 3 : 0) + static_cast<std::size_t>(op);
  }
  std::array<UserOperation, 6> ops_;
};

int checked_count(std::int64_t count) {
  // MPI counts are int; larger messages are the caller's to split into buckets.
  if (count < 0 || count > std::numeric_limits<int>::max())
    throw std::invalid_argument(
        runtime::concat("collective of ", count, " elements exceeds MPI's int count"));
  return static_cast<int>(count);
}

/// Completion of a request waited for in the caller's thread (MpiProgress::Inline).
class RequestCompletion final : public detail::Completion {
 public:
  RequestCompletion(MPI_Request request, std::shared_ptr<const void> arguments)
      : request_(request), arguments_(std::move(arguments)) {}
  ~RequestCompletion() override {
    if (request_ != MPI_REQUEST_NULL) MPI_Wait(&request_, MPI_STATUS_IGNORE);
  }
  void wait() override {
    if (request_ != MPI_REQUEST_NULL) ZT_MPI_CHECK(MPI_Wait(&request_, MPI_STATUS_IGNORE));
  }
  bool test() override {
    if (request_ == MPI_REQUEST_NULL) return true;
    int done = 0;
    ZT_MPI_CHECK(MPI_Test(&request_, &done, MPI_STATUS_IGNORE));
    return done != 0;
  }

 private:
  MPI_Request request_;
  std::shared_ptr<const void> arguments_;  // count arrays MPI reads until completion
};

/// Shared between the progress thread and the Handle.
struct OperationState {
  std::mutex mutex;
  std::condition_variable finished;
  bool done = false;
  std::exception_ptr error;

  void complete(std::exception_ptr failure) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      done = true;
      error = std::move(failure);
    }
    finished.notify_all();
  }
};

class ThreadCompletion final : public detail::Completion {
 public:
  explicit ThreadCompletion(std::shared_ptr<OperationState> state) : state_(std::move(state)) {}
  void wait() override {
    std::unique_lock<std::mutex> lock(state_->mutex);
    state_->finished.wait(lock, [&] { return state_->done; });
    if (state_->error) std::rethrow_exception(state_->error);
  }
  bool test() override {
    std::lock_guard<std::mutex> lock(state_->mutex);
    return state_->done;
  }

 private:
  std::shared_ptr<OperationState> state_;
};

/// Starts and completes the communicator's collectives in submission order (MPI requires
/// every rank to start them in the same order), several in flight at once.
class ProgressThread {
 public:
  using Start = std::function<MPI_Request()>;

  ProgressThread() : thread_([this] { run(); }) {}
  ~ProgressThread() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  ProgressThread(const ProgressThread&) = delete;
  ProgressThread& operator=(const ProgressThread&) = delete;

  std::unique_ptr<detail::Completion> submit(Start start) {
    auto state = std::make_shared<OperationState>();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(Queued{std::move(start), state, std::chrono::steady_clock::now()});
    }
    wake_.notify_one();
    return std::make_unique<ThreadCompletion>(std::move(state));
  }

  double busy_seconds() const { return busy_nanoseconds_.load() * 1e-9; }

 private:
  struct Queued {
    Start start;
    std::shared_ptr<OperationState> state;
    std::chrono::steady_clock::time_point submitted;
  };

  void run() {
    std::vector<MPI_Request> requests;
    std::vector<std::shared_ptr<OperationState>> states;
    std::vector<Start> started;  // their captures (count arrays) must outlive the requests
    std::vector<int> indices;
    int idle_polls = 0;
    auto busy_since = std::chrono::steady_clock::now();
    for (;;) {
      std::deque<Queued> starting;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        if (requests.empty()) wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (requests.empty() && queue_.empty() && stopping_) return;
        starting.swap(queue_);
      }
      // In flight from submission: a caller may wait while the request sits in the queue.
      if (requests.empty() && !starting.empty()) busy_since = starting.front().submitted;
      for (auto& queued : starting) {
        try {
          requests.push_back(queued.start());
          states.push_back(std::move(queued.state));
          started.push_back(std::move(queued.start));
        } catch (...) {
          queued.state->complete(std::current_exception());
        }
      }
      if (requests.empty()) continue;

      int completed = 0;
      indices.resize(requests.size());
      const int code = MPI_Testsome(static_cast<int>(requests.size()), requests.data(), &completed,
                                    indices.data(), MPI_STATUSES_IGNORE);
      if (code != MPI_SUCCESS) {
        // The whole batch is suspect; report the error to everyone waiting on it.
        std::exception_ptr failure;
        try {
          ZT_MPI_CHECK(code);
        } catch (...) {
          failure = std::current_exception();
        }
        add_busy_time(busy_since);
        for (auto& state : states) state->complete(failure);
        requests.clear();
        states.clear();
        started.clear();
      } else if (completed > 0 && completed != MPI_UNDEFINED) {
        std::vector<std::shared_ptr<OperationState>> finished;
        for (int i = 0; i < completed; ++i)
          finished.push_back(std::move(states[static_cast<std::size_t>(indices[i])]));
        std::size_t kept = 0;
        for (std::size_t i = 0; i < requests.size(); ++i) {
          if (requests[i] == MPI_REQUEST_NULL) continue;
          requests[kept] = requests[i];
          states[kept] = std::move(states[i]);
          started[kept] = std::move(started[i]);
          ++kept;
        }
        requests.resize(kept);
        states.resize(kept);
        started.resize(kept);
        idle_polls = 0;
        // Count the busy time before anyone waiting learns of the completion.
        if (requests.empty()) add_busy_time(busy_since);
        for (auto& state : finished) state->complete(nullptr);
      } else {
        // Spin briefly (shared-memory steps take microseconds), then back off so a rank
        // waiting for a slower one leaves the core to compute.
        ++idle_polls;
        if (idle_polls > 64)
          std::this_thread::sleep_for(std::chrono::microseconds(idle_polls > 256 ? 200 : 20));
      }
    }
  }

  void add_busy_time(std::chrono::steady_clock::time_point since) {
    busy_nanoseconds_ += std::chrono::duration_cast<std::chrono::nanoseconds>(
                             std::chrono::steady_clock::now() - since)
                             .count();
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Queued> queue_;
  bool stopping_ = false;
  std::atomic<std::int64_t> busy_nanoseconds_{0};
  std::thread thread_;  // last: starts after the members it uses exist
};

class MpiCommunicator final : public Communicator {
 public:
  MpiCommunicator(MPI_Comm parent, MpiProgress progress) {
    ZT_MPI_CHECK(MPI_Comm_dup(parent, &comm_));
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    ZT_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    ZT_MPI_CHECK(MPI_Comm_size(comm_, &size_));
    if (progress == MpiProgress::Thread) {
      int level = MPI_THREAD_SINGLE;
      ZT_MPI_CHECK(MPI_Query_thread(&level));
      if (level >= MPI_THREAD_MULTIPLE) {
        progress_ = std::make_unique<ProgressThread>();
      } else {
        runtime::warn_once(
            "MPI does not provide MPI_THREAD_MULTIPLE: collectives progress only while a rank "
            "waits for them, so overlap_comm hides no communication");
      }
    }
  }
  ~MpiCommunicator() override {
    progress_.reset();  // completes what is in flight
    if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char* backend_name() const override { return "MPI"; }
  bool progresses_asynchronously() const override { return progress_ != nullptr; }
  double busy_seconds() const override {
    return progress_ != nullptr ? progress_->busy_seconds() : 0.0;
  }

  Handle all_reduce_async(const void* send, void* recv, std::int64_t count, DataType type,
                          ReduceOp op) override {
    const std::int64_t bytes = count * static_cast<std::int64_t>(size_of(type));
    const std::int64_t moved = size_ > 1 ? 2 * bytes * (size_ - 1) / size_ : 0;
    this->count(Collective::AllReduce, moved, moved);
    const int n = checked_count(count);
    const void* source = send == recv ? MPI_IN_PLACE : send;
    const MPI_Datatype datatype = mpi_type(type);
    const MPI_Op reduction = reduction_op(type, op);
    return start([=](MPI_Request* request) {
      return MPI_Iallreduce(source, recv, n, datatype, reduction, comm_, request);
    });
  }

  Handle reduce_scatter_async(const void* send, void* recv, std::int64_t count_per_rank,
                              DataType type, ReduceOp op) override {
    const std::int64_t bytes = count_per_rank * size_ * static_cast<std::int64_t>(size_of(type));
    const std::int64_t moved = bytes * (size_ - 1) / size_;
    this->count(Collective::ReduceScatter, moved, moved);
    const int n = checked_count(count_per_rank);
    const void* source = send == recv ? MPI_IN_PLACE : send;
    const MPI_Datatype datatype = mpi_type(type);
    const MPI_Op reduction = reduction_op(type, op);
    return start([=](MPI_Request* request) {
      return MPI_Ireduce_scatter_block(source, recv, n, datatype, reduction, comm_, request);
    });
  }

  Handle all_gather_async(const void* send, void* recv, std::int64_t count_per_rank,
                          DataType type) override {
    const std::int64_t bytes = count_per_rank * size_ * static_cast<std::int64_t>(size_of(type));
    const std::int64_t moved = bytes * (size_ - 1) / size_;
    this->count(Collective::AllGather, moved, moved);
    const int n = checked_count(count_per_rank);
    // In place when the caller's contribution already sits at its slot of recv.
    const bool in_place =
        send == static_cast<const char*>(recv) + rank_ * count_per_rank * size_of(type);
    const void* source = in_place ? MPI_IN_PLACE : send;
    const MPI_Datatype datatype = mpi_type(type);
    return start([=](MPI_Request* request) {
      return MPI_Iallgather(source, n, datatype, recv, n, datatype, comm_, request);
    });
  }

  Handle broadcast_async(void* buffer, std::int64_t count, DataType type, int root) override {
    const std::int64_t bytes = count * static_cast<std::int64_t>(size_of(type));
    if (size_ > 1)
      this->count(Collective::Broadcast, rank_ == root ? bytes : 0, rank_ == root ? 0 : bytes);
    const int n = checked_count(count);
    const MPI_Datatype datatype = mpi_type(type);
    return start([=](MPI_Request* request) {
      return MPI_Ibcast(buffer, n, datatype, root, comm_, request);
    });
  }

  Handle reduce_scatter_v_async(const void* send, void* recv,
                                const std::vector<std::int64_t>& counts, DataType type,
                                ReduceOp op) override {
    auto layout = std::make_shared<VLayout>(v_layout(counts));
    const std::int64_t own = counts[static_cast<std::size_t>(rank_)];
    const std::int64_t moved = (layout->total - own) * static_cast<std::int64_t>(size_of(type));
    this->count(Collective::ReduceScatter, size_ > 1 ? moved : 0, size_ > 1 ? moved : 0);
    // In place as reduce_scatter: send == recv holds all blocks, the result lands at its start.
    const void* source = send == recv ? MPI_IN_PLACE : send;
    const MPI_Datatype datatype = mpi_type(type);
    const MPI_Op reduction = reduction_op(type, op);
    return start(
        [=](MPI_Request* request) {
          return MPI_Ireduce_scatter(source, recv, layout->counts.data(), datatype, reduction,
                                     comm_, request);
        },
        layout);
  }

  Handle all_gather_v_async(const void* send, void* recv, const std::vector<std::int64_t>& counts,
                            DataType type) override {
    auto layout = std::make_shared<VLayout>(v_layout(counts));
    const std::int64_t own = counts[static_cast<std::size_t>(rank_)];
    const std::int64_t moved = (layout->total - own) * static_cast<std::int64_t>(size_of(type));
    this->count(Collective::AllGather, size_ > 1 ? moved : 0, size_ > 1 ? moved : 0);
    const bool in_place = send == static_cast<const char*>(recv) +
                                      static_cast<std::size_t>(
                                          layout->displacements[static_cast<std::size_t>(rank_)]) *
                                          size_of(type);
    const void* source = in_place ? MPI_IN_PLACE : send;
    const int own_count = checked_count(own);
    const MPI_Datatype datatype = mpi_type(type);
    return start(
        [=](MPI_Request* request) {
          return MPI_Iallgatherv(source, own_count, datatype, recv, layout->counts.data(),
                                 layout->displacements.data(), datatype, comm_, request);
        },
        layout);
  }

  void barrier() override {
    this->count(Collective::Barrier, 0, 0);
    start([=](MPI_Request* request) { return MPI_Ibarrier(comm_, request); }).wait();
  }

 private:
  struct VLayout {
    std::vector<int> counts;
    std::vector<int> displacements;
    std::int64_t total = 0;
  };

  /// MPI's predefined operation, or this communicator's own for the 16-bit types. Looked up in
  /// the caller's thread, so an unknown type or op throws there, not on the progress thread.
  MPI_Op reduction_op(DataType type, ReduceOp op) const {
    if (type == DataType::Float16 || type == DataType::BFloat16)
      return half_operations_.get(type, op);
    return mpi_op(op);
  }

  VLayout v_layout(const std::vector<std::int64_t>& counts) const {
    if (counts.size() != static_cast<std::size_t>(size_))
      throw std::invalid_argument(
          runtime::concat("v collective: ", counts.size(), " counts for ", size_, " ranks"));
    VLayout layout;
    for (const std::int64_t count : counts) {
      layout.counts.push_back(checked_count(count));
      layout.displacements.push_back(checked_count(layout.total));
      layout.total += count;
    }
    checked_count(layout.total);
    return layout;
  }

  /// Runs `call` (which starts a nonblocking collective) on the progress thread, or here.
  template <class Call>
  Handle start(Call call, std::shared_ptr<const void> arguments = nullptr) {
    if (progress_ != nullptr) {
      return Handle(progress_->submit([call]() {
        MPI_Request request = MPI_REQUEST_NULL;
        ZT_MPI_CHECK(call(&request));
        return request;
      }));
    }
    MPI_Request request = MPI_REQUEST_NULL;
    ZT_MPI_CHECK(call(&request));
    return Handle(std::make_unique<RequestCompletion>(request, std::move(arguments)));
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  // Before progress_: made before the thread that uses them starts, freed after it stopped.
  HalfOperations half_operations_;
  std::unique_ptr<ProgressThread> progress_;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(MPI_Comm parent, MpiProgress progress) {
  return std::make_unique<MpiCommunicator>(parent, progress);
}

}  // namespace zt::comm
