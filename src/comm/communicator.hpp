// SPDX-License-Identifier: Apache-2.0
// Collective communication behind one interface: an MPI backend for host buffers (and, with
// NCCL, a device backend). Every call counts the bytes it moves so tests can compare a
// step's traffic with the ZeRO paper's volumes.
#pragma once

#include <mpi.h>
#include <array>
#include <cstdint>
#include <memory>
#include <vector>

namespace zt::comm {

/// Element types of collectives. Float16 (IEEE binary16) and BFloat16 are the storage formats
/// of kernels/ops/dtype.hpp (`kernels::fp16`, `kernels::bf16`): 2 bytes an element, reduced as
/// NCCL does, by widening each pair to float, combining and rounding once (to nearest even) per
/// hop of the reduction. Sums are exactly commutative, so every rank of an all-reduce gets the
/// same bits; NaN and inf propagate (an inf in any rank's contribution reaches the element's
/// owner; an fp16 sum past 65504 becomes inf). Max/Min return one of the inputs unchanged, a NaN
/// over any number, +0 over -0 for Max (and -0 for Min).
enum class DataType { Float32, Float64, Int32, Int64, Float16, BFloat16 };
enum class ReduceOp { Sum, Max, Min };
enum class Collective { AllReduce = 0, ReduceScatter, AllGather, Broadcast, Barrier };
inline constexpr int kNumCollectives = 5;

std::size_t size_of(DataType type);
const char* data_type_name(DataType type);  // "fp32", "fp16", ...: for messages
const char* collective_name(Collective collective);

/// One hop of a reduction on the host: inout[i] = in[i] op inout[i] for `count` elements, with
/// the semantics the collectives give `type` (16-bit: widen, combine in float, round once; NaN
/// canonical). The MPI backend's user-defined operations for the 16-bit types are this loop;
/// it vectorises and runs at memory speed. `in` and `inout` must not overlap.
void reduce_local(const void* in, void* inout, std::int64_t count, DataType type, ReduceOp op);

/// Bytes sent and received by this rank, counted as a bandwidth-optimal (ring) algorithm moves
/// them: all-reduce of S bytes sends and receives 2S(n-1)/n, reduce-scatter and all-gather
/// S(n-1)/n where S is the full (unscattered) size, broadcast S from the root. The uneven
/// (v) variants count S minus this rank's own block: every element this rank does not own
/// crosses into it once (and as much leaves it).
struct Traffic {
  std::int64_t bytes_sent = 0;
  std::int64_t bytes_received = 0;
  std::int64_t calls = 0;
};

namespace detail {
/// What a backend hands back for one asynchronous operation.
class Completion {
 public:
  virtual ~Completion() = default;
  virtual void wait() = 0;  // throws when the operation failed
  virtual bool test() = 0;  // true when complete (or failed: wait() then throws)
};
}  // namespace detail

/// Completion of an asynchronous collective. Waits in its destructor if still pending, so a
/// buffer is never released while a collective uses it.
class Handle {
 public:
  Handle() = default;
  explicit Handle(std::unique_ptr<detail::Completion> completion)
      : completion_(std::move(completion)) {}
  ~Handle();
  Handle(Handle&&) noexcept = default;
  Handle& operator=(Handle&& other) noexcept;
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;

  /// Blocks until the operation completed; rethrows its error. A waited handle is empty.
  void wait();
  bool test();  // true when complete; drives progress where the backend needs it
  bool pending() const { return completion_ != nullptr; }

 private:
  std::unique_ptr<detail::Completion> completion_;
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

  /// Reduce-scatter with a block per rank of any length: `send` holds sum(counts) elements,
  /// rank r's block starts at counts[0] + ... + counts[r-1]; the reduction of this rank's
  /// block lands in `recv` (counts[rank()] elements). ZeRO uses it to reduce a contiguous range
  /// of the flat gradient buffer, which falls across the ranks' slices unevenly.
  virtual Handle reduce_scatter_v_async(const void* send, void* recv,
                                        const std::vector<std::int64_t>& counts, DataType type,
                                        ReduceOp op) = 0;
  /// All-gather with a block per rank of any length: this rank contributes counts[rank()]
  /// elements from `send` (in place when send is recv + its displacement); `recv` gets all
  /// blocks back to back in rank order.
  virtual Handle all_gather_v_async(const void* send, void* recv,
                                    const std::vector<std::int64_t>& counts, DataType type) = 0;

  /// Seconds during which at least one collective of this communicator was in flight
  /// (0 where the backend cannot tell). With exposed wait time it gives the hidden share.
  virtual double busy_seconds() const { return 0.0; }
  /// True when asynchronous collectives progress while the caller computes (a progress
  /// thread or a communication stream); false when they progress only inside wait().
  virtual bool progresses_asynchronously() const { return false; }
  virtual const char* backend_name() const = 0;

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
  void reduce_scatter_v(const void* send, void* recv, const std::vector<std::int64_t>& counts,
                        DataType type, ReduceOp op) {
    reduce_scatter_v_async(send, recv, counts, type, op).wait();
  }
  void all_gather_v(const void* send, void* recv, const std::vector<std::int64_t>& counts,
                    DataType type) {
    all_gather_v_async(send, recv, counts, type).wait();
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

/// How the MPI backend progresses asynchronous collectives.
enum class MpiProgress {
  /// A progress thread owns every MPI call of the communicator, so nonblocking collectives
  /// advance while the caller computes (the CPU analogue of a communication stream). Needs
  /// MPI_THREAD_MULTIPLE; falls back to Inline (with a warning) when MPI does not provide it.
  Thread,
  /// Collectives start in the caller's thread and progress only when it tests or waits.
  Inline,
};

/// MPI backend over a duplicate of `parent` (freed when the communicator is destroyed).
std::unique_ptr<Communicator> make_mpi_communicator(MPI_Comm parent,
                                                    MpiProgress progress = MpiProgress::Thread);

/// Element counts of the parts of [begin, end) that fall in each of `ranks` equal slices of
/// `slice` elements (rank r owns [r*slice, (r+1)*slice)): the counts argument of the v
/// collectives for a range of a flat, evenly partitioned buffer.
std::vector<std::int64_t> split_range_by_rank(std::int64_t begin, std::int64_t end,
                                              std::int64_t slice, int ranks);

}  // namespace zt::comm
