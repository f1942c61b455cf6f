// SPDX-License-Identifier: Apache-2.0
#include <limits>
#include <stdexcept>

#include "comm/communicator.hpp"
#include "runtime/error.hpp"

namespace zt::comm {

std::size_t size_of(DataType type) {
  switch (type) {
    case DataType::Float32: return 4;
    case DataType::Float64: return 8;
    case DataType::Int32: return 4;
    case DataType::Int64: return 8;
  }
  return 0;
}

const char* collective_name(Collective collective) {
  switch (collective) {
    case Collective::AllReduce: return "all_reduce";
    case Collective::ReduceScatter: return "reduce_scatter";
    case Collective::AllGather: return "all_gather";
    case Collective::Broadcast: return "broadcast";
    case Collective::Barrier: return "barrier";
  }
  return "?";
}

Handle::~Handle() {
  if (request_ != MPI_REQUEST_NULL) MPI_Wait(&request_, MPI_STATUS_IGNORE);
}

Handle& Handle::operator=(Handle&& other) noexcept {
  if (this != &other) {
    if (request_ != MPI_REQUEST_NULL) MPI_Wait(&request_, MPI_STATUS_IGNORE);
    request_ = other.request_;
    other.request_ = MPI_REQUEST_NULL;
  }
  return *this;
}

void Handle::wait() {
  if (request_ != MPI_REQUEST_NULL) ZT_MPI_CHECK(MPI_Wait(&request_, MPI_STATUS_IGNORE));
}

bool Handle::test() {
  if (request_ == MPI_REQUEST_NULL) return true;
  int done = 0;
  ZT_MPI_CHECK(MPI_Test(&request_, &done, MPI_STATUS_IGNORE));
  return done != 0;
}

void Communicator::count(Collective collective, std::int64_t sent, std::int64_t received) {
  auto& traffic = traffic_[static_cast<int>(collective)];
  traffic.bytes_sent += sent;
  traffic.bytes_received += received;
  traffic.calls += 1;
}

Traffic Communicator::total_traffic() const {
  Traffic total;
  for (const auto& traffic : traffic_) {
    total.bytes_sent += traffic.bytes_sent;
    total.bytes_received += traffic.bytes_received;
    total.calls += traffic.calls;
  }
  return total;
}

double Communicator::all_reduce_scalar(double value, ReduceOp op) {
  double result = 0;
  all_reduce(&value, &result, 1, DataType::Float64, op);
  return result;
}

namespace {

MPI_Datatype mpi_type(DataType type) {
  switch (type) {
    case DataType::Float32: return MPI_FLOAT;
    case DataType::Float64: return MPI_DOUBLE;
    case DataType::Int32: return MPI_INT32_T;
    case DataType::Int64: return MPI_INT64_T;
  }
  return MPI_DATATYPE_NULL;
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return MPI_SUM;
    case ReduceOp::Max: return MPI_MAX;
    case ReduceOp::Min: return MPI_MIN;
  }
  return MPI_OP_NULL;
}

int checked_count(std::int64_t count) {
  // MPI counts are int; larger messages are the caller's to split into buckets.
  if (count < 0 || count > std::numeric_limits<int>::max())
    throw std::invalid_argument(runtime::concat("collective of ", count,
                                                " elements exceeds MPI's int count"));
  return static_cast<int>(count);
}

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm parent) {
    ZT_MPI_CHECK(MPI_Comm_dup(parent, &comm_));
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    ZT_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    ZT_MPI_CHECK(MPI_Comm_size(comm_, &size_));
  }
  ~MpiCommunicator() override {
    if (comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  Handle all_reduce_async(const void* send, void* recv, std::int64_t count, DataType type,
                          ReduceOp op) override {
    const std::int64_t bytes = count * static_cast<std::int64_t>(size_of(type));
    const std::int64_t moved = size_ > 1 ? 2 * bytes * (size_ - 1) / size_ : 0;
    this->count(Collective::AllReduce, moved, moved);
    MPI_Request request = MPI_REQUEST_NULL;
    ZT_MPI_CHECK(MPI_Iallreduce(send == recv ? MPI_IN_PLACE : send, recv, checked_count(count),
                                mpi_type(type), mpi_op(op), comm_, &request));
    return Handle(request);
  }

  Handle reduce_scatter_async(const void* send, void* recv, std::int64_t count_per_rank,
                              DataType type, ReduceOp op) override {
    const std::int64_t bytes = count_per_rank * size_ * static_cast<std::int64_t>(size_of(type));
    const std::int64_t moved = bytes * (size_ - 1) / size_;
    this->count(Collective::ReduceScatter, moved, moved);
    MPI_Request request = MPI_REQUEST_NULL;
    ZT_MPI_CHECK(MPI_Ireduce_scatter_block(send == recv ? MPI_IN_PLACE : send, recv,
                                           checked_count(count_per_rank), mpi_type(type),
                                           mpi_op(op), comm_, &request));
    return Handle(request);
  }

  Handle all_gather_async(const void* send, void* recv, std::int64_t count_per_rank,
                          DataType type) override {
    const std::int64_t bytes = count_per_rank * size_ * static_cast<std::int64_t>(size_of(type));
    const std::int64_t moved = bytes * (size_ - 1) / size_;
    this->count(Collective::AllGather, moved, moved);
    MPI_Request request = MPI_REQUEST_NULL;
    // In place when the caller's contribution already sits at its slot of recv.
    const bool in_place =
        send == static_cast<const char*>(recv) + rank_ * count_per_rank * size_of(type);
    ZT_MPI_CHECK(MPI_Iallgather(in_place ? MPI_IN_PLACE : send, checked_count(count_per_rank),
                                mpi_type(type), recv, checked_count(count_per_rank),
                                mpi_type(type), comm_, &request));
    return Handle(request);
  }

  Handle broadcast_async(void* buffer, std::int64_t count, DataType type, int root) override {
    const std::int64_t bytes = count * static_cast<std::int64_t>(size_of(type));
    if (size_ > 1) this->count(Collective::Broadcast, rank_ == root ? bytes : 0, rank_ == root ? 0 : bytes);
    MPI_Request request = MPI_REQUEST_NULL;
    ZT_MPI_CHECK(MPI_Ibcast(buffer, checked_count(count), mpi_type(type), root, comm_, &request));
    return Handle(request);
  }

  void barrier() override {
    this->count(Collective::Barrier, 0, 0);
    ZT_MPI_CHECK(MPI_Barrier(comm_));
  }

 private:
  MPI_Comm comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(MPI_Comm parent) {
  return std::make_unique<MpiCommunicator>(parent);
}

}  // namespace zt::comm
