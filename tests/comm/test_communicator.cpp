// SPDX-License-Identifier: Apache-2.0
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "comm/communicator.hpp"

using zt::comm::Collective;
using zt::comm::DataType;
using zt::comm::ReduceOp;

// Every test runs with collectives driven by the progress thread and started inline.
class CommunicatorTest : public ::testing::TestWithParam<zt::comm::MpiProgress> {
 protected:
  std::unique_ptr<zt::comm::Communicator> comm =
      zt::comm::make_mpi_communicator(MPI_COMM_WORLD, GetParam());
  int rank = comm->rank();
  int size = comm->size();
};

TEST_P(CommunicatorTest, AllReduceSumsInPlaceAndOutOfPlace) {
  std::vector<float> values(1000);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(rank + 1) * i;
  std::vector<float> result(values.size());
  comm->all_reduce(values.data(), result.data(), values.size(), DataType::Float32, ReduceOp::Sum);
  comm->all_reduce(values.data(), values.data(), values.size(), DataType::Float32, ReduceOp::Sum);
  const float ranks_sum = size * (size + 1) / 2.0f;
  for (std::size_t i = 0; i < values.size(); ++i) {
    EXPECT_FLOAT_EQ(result[i], ranks_sum * i);
    EXPECT_FLOAT_EQ(values[i], ranks_sum * i);
  }
}

TEST_P(CommunicatorTest, ReduceScatterGivesEachRankItsSlice) {
  const int per_rank = 7;
  std::vector<double> full(per_rank * size);
  for (int i = 0; i < per_rank * size; ++i) full[i] = i + 100.0 * rank;
  std::vector<double> mine(per_rank);
  comm->reduce_scatter(full.data(), mine.data(), per_rank, DataType::Float64, ReduceOp::Sum);
  for (int i = 0; i < per_rank; ++i) {
    const int global = rank * per_rank + i;
    EXPECT_DOUBLE_EQ(mine[i], size * global + 100.0 * size * (size - 1) / 2);
  }
}

TEST_P(CommunicatorTest, AllGatherConcatenatesInRankOrderAlsoInPlace) {
  const int per_rank = 5;
  std::vector<std::int64_t> mine(per_rank, rank);
  std::vector<std::int64_t> all(per_rank * size, -1);
  comm->all_gather(mine.data(), all.data(), per_rank, DataType::Int64);
  for (int i = 0; i < per_rank * size; ++i) EXPECT_EQ(all[i], i / per_rank);
  std::vector<std::int64_t> in_place(per_rank * size, -1);
  for (int i = 0; i < per_rank; ++i) in_place[rank * per_rank + i] = 10 + rank;
  comm->all_gather(in_place.data() + rank * per_rank, in_place.data(), per_rank, DataType::Int64);
  for (int i = 0; i < per_rank * size; ++i) EXPECT_EQ(in_place[i], 10 + i / per_rank);
}

TEST_P(CommunicatorTest, BroadcastAndAsyncHandles) {
  std::vector<std::int32_t> data(3, rank == 0 ? 42 : 0);
  auto handle = comm->broadcast_async(data.data(), 3, DataType::Int32, 0);
  handle.wait();
  EXPECT_FALSE(handle.pending());
  for (int v : data) EXPECT_EQ(v, 42);
  EXPECT_DOUBLE_EQ(comm->all_reduce_scalar(rank, ReduceOp::Max), size - 1);
}

TEST_P(CommunicatorTest, CountsRingVolumes) {
  comm->reset_traffic();
  const std::int64_t n = 1024 * size;
  std::vector<float> buffer(n, 1.0f);
  comm->all_reduce(buffer.data(), buffer.data(), n, DataType::Float32, ReduceOp::Sum);
  const auto& traffic = comm->traffic(Collective::AllReduce);
  EXPECT_EQ(traffic.calls, 1);
  EXPECT_EQ(traffic.bytes_sent, size > 1 ? 2 * n * 4 * (size - 1) / size : 0);
  EXPECT_EQ(traffic.bytes_received, traffic.bytes_sent);
  std::vector<float> slice(n / size);
  comm->reduce_scatter(buffer.data(), slice.data(), n / size, DataType::Float32, ReduceOp::Sum);
  EXPECT_EQ(comm->traffic(Collective::ReduceScatter).bytes_sent, n * 4 * (size - 1) / size);
}

TEST(SplitRangeByRank, CountsTheRangeInEachSlice) {
  EXPECT_EQ(zt::comm::split_range_by_rank(5, 27, 10, 3), (std::vector<std::int64_t>{5, 10, 7}));
  EXPECT_EQ(zt::comm::split_range_by_rank(12, 18, 10, 3), (std::vector<std::int64_t>{0, 6, 0}));
  EXPECT_EQ(zt::comm::split_range_by_rank(0, 0, 10, 2), (std::vector<std::int64_t>{0, 0}));
  EXPECT_THROW(zt::comm::split_range_by_rank(0, 31, 10, 3), std::invalid_argument);
}

TEST_P(CommunicatorTest, UnevenReduceScatterAndAllGather) {
  // A range of a flat buffer that cuts the ranks' slices unevenly (rank 0 gets none).
  std::vector<std::int64_t> counts(size);
  for (int r = 0; r < size; ++r) counts[r] = r == 0 && size > 1 ? 0 : 3 + 2 * r;
  const std::int64_t total = std::accumulate(counts.begin(), counts.end(), std::int64_t{0});
  std::int64_t displacement = 0;
  for (int r = 0; r < rank; ++r) displacement += counts[r];

  std::vector<float> send(total);
  for (std::int64_t i = 0; i < total; ++i) send[i] = static_cast<float>(i + 100 * rank);
  std::vector<float> mine(std::max<std::int64_t>(1, counts[rank]), -1.0f);
  comm->reduce_scatter_v(send.data(), mine.data(), counts, DataType::Float32, ReduceOp::Sum);
  for (std::int64_t i = 0; i < counts[rank]; ++i) {
    const double expected =
        size * static_cast<double>(displacement + i) + 100.0 * size * (size - 1) / 2;
    EXPECT_DOUBLE_EQ(mine[i], expected) << "element " << i;
  }

  std::vector<float> gathered(total, -1.0f);
  for (std::int64_t i = 0; i < counts[rank]; ++i) gathered[displacement + i] = 1000.0f * rank + i;
  // In place: this rank's block already sits at its displacement.
  comm->all_gather_v(gathered.data() + displacement, gathered.data(), counts, DataType::Float32);
  std::int64_t at = 0;
  for (int r = 0; r < size; ++r)
    for (std::int64_t i = 0; i < counts[r]; ++i, ++at) EXPECT_EQ(gathered[at], 1000.0f * r + i);

  // Traffic: everything this rank does not own crosses into it once.
  comm->reset_traffic();
  comm->all_gather_v(gathered.data() + displacement, gathered.data(), counts, DataType::Float32);
  EXPECT_EQ(comm->traffic(Collective::AllGather).bytes_received,
            size > 1 ? (total - counts[rank]) * 4 : 0);
}

TEST_P(CommunicatorTest, ManyCollectivesInFlightCompleteInAnyWaitOrder) {
  const int n = 16;
  std::vector<std::vector<float>> buffers(n, std::vector<float>(1000));
  std::vector<zt::comm::Handle> handles;
  for (int k = 0; k < n; ++k) {
    std::fill(buffers[k].begin(), buffers[k].end(), static_cast<float>(k + rank));
    handles.push_back(comm->all_reduce_async(buffers[k].data(), buffers[k].data(), 1000,
                                             DataType::Float32, ReduceOp::Sum));
  }
  for (int k = n - 1; k >= 0; --k) {
    handles[k].wait();
    EXPECT_EQ(buffers[k][999], static_cast<float>(size * k + size * (size - 1) / 2));
  }
  if (GetParam() == zt::comm::MpiProgress::Thread && size > 1) {
    EXPECT_TRUE(comm->progresses_asynchronously());
    EXPECT_GT(comm->busy_seconds(), 0.0);
  }
}

INSTANTIATE_TEST_SUITE_P(Progress, CommunicatorTest,
                         ::testing::Values(zt::comm::MpiProgress::Thread,
                                           zt::comm::MpiProgress::Inline),
                         [](const auto& info) {
                           return info.param == zt::comm::MpiProgress::Thread ? "thread" : "inline";
                         });
