// SPDX-License-Identifier: Apache-2.0
// Collective communication behind one interface: an MPI backend for host buffers (and, with
// NCCL, a device backend). Every call counts the bytes it moves so tests can compare a
// step's traffic with the ZeRO paper's volumes.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mpi.h>

namespace zt::comm {

enum class DataType { Float32, Float64, Int32, Int64 };
enum class ReduceOp { Sum, Max, Min };
enum class Collective { AllReduce = 0, ReduceScatter, AllGather, Broadcast, Barrier };
inline constexpr int kNumCollectives = 5;

std::size_t size_of(DataType type);
const char* collective_name(Collective collective);

/// Bytes sent and received by this rank, counted as a bandwidth-optimal (ring) algorithm moves
/// them: all-reduce of S bytes sends and receives 2S(n-1)/n, reduce-scatter and all-gather
/// S(n-1)/n where S is the full (unscattered) size, broadcast S from the root.
struct Traffic {
  std::int64_t bytes_sent = 0;
  std::int64_t bytes_received = 0;
  std::int64_t calls = 0;
};

/// Completion of an asynchronous collective. Waits in its destructor if still pending, so a
/// buffer is never released while a collective uses it.
class Handle {
 public:
  Handle() = default;
  explicit Handle(MPI_Request request) : request_(request) {}
  ~Handle();
  Handle(Handle&& other) noexcept : request_(other.request_) { other.request_ = MPI_REQUEST_NULL; }
  Handle& operator=(Handle&& other) noexcept;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  void wait();
  bool test();  // true when complete; also drives MPI progress
  bool pending() const { return request_ != MPI_REQUEST_NULL; }

 private:
  MPI_Request request_ = MPI_REQUEST_NULL;
};

/// Collective operations over a fixed group of ranks. Every rank of the group must make the
/// same calls in the same order (as with MPI). `send == recv` means in place.
class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;

  virtual Handle all_reduce_async(const void* send, void* recv, std::int64_t count, DataType type,
                                  ReduceOp op) = 0;
  /// `count_per_rank` elements of the reduced result land in `recv` of each rank; `send` holds
  /// size()*count_per_rank elements.
  virtual Handle reduce_scatter_async(const void* send, void* recv, std::int64_t count_per_rank,
                                      DataType type, ReduceOp op) = 0;
  /// Each rank contributes `count_per_rank` elements; `recv` gets size()*count_per_rank.
  virtual Handle all_gather_async(const void* send, void* recv, std::int64_t count_per_rank,
                                  DataType type) = 0;
  virtual Handle broadcast_async(void* buffer, std::int64_t count, DataType type, int root) = 0;
  virtual void barrier() = 0;

  void all_reduce(const void* send, void* recv, std::int64_t count, DataType type, ReduceOp op) {
    all_reduce_async(send, recv, count, type, op).wait();
  }
  void reduce_scatter(const void* send, void* recv, std::int64_t count_per_rank, DataType type,
                      ReduceOp op) {
    reduce_scatter_async(send, recv, count_per_rank, type, op).wait();
  }
  void all_gather(const void* send, void* recv, std::int64_t count_per_rank, DataType type) {
    all_gather_async(send, recv, count_per_rank, type).wait();
  }
  void broadcast(void* buffer, std::int64_t count, DataType type, int root) {
    broadcast_async(buffer, count, type, root).wait();
  }

  /// Convenience for scalars every rank contributes.
  double all_reduce_scalar(double value, ReduceOp op);

  const Traffic& traffic(Collective collective) const {
    return traffic_[static_cast<int>(collective)];
  }
  Traffic total_traffic() const;
  void reset_traffic() { traffic_ = {}; }

 protected:
  void count(Collective collective, std::int64_t sent, std::int64_t received);

 private:
  std::array<Traffic, kNumCollectives> traffic_{};
};

/// MPI backend over a duplicate of `parent` (freed when the communicator is destroyed).
std::unique_ptr<Communicator> make_mpi_communicator(MPI_Comm parent);

}  // namespace zt::comm
