// SPDX-License-Identifier: Apache-2.0
#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "comm/communicator.hpp"

using zt::comm::Collective;
using zt::comm::DataType;
using zt::comm::ReduceOp;

class CommunicatorTest : public ::testing::Test {
 protected:
  std::unique_ptr<zt::comm::Communicator> comm = zt::comm::make_mpi_communicator(MPI_COMM_WORLD);
  int rank = comm->rank();
  int size = comm->size();
};

TEST_F(CommunicatorTest, AllReduceSumsInPlaceAndOutOfPlace) {
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

TEST_F(CommunicatorTest, ReduceScatterGivesEachRankItsSlice) {
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

TEST_F(CommunicatorTest, AllGatherConcatenatesInRankOrderAlsoInPlace) {
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

TEST_F(CommunicatorTest, BroadcastAndAsyncHandles) {
  std::vector<std::int32_t> data(3, rank == 0 ? 42 : 0);
  auto handle = comm->broadcast_async(data.data(), 3, DataType::Int32, 0);
  handle.wait();
  EXPECT_FALSE(handle.pending());
  for (int v : data) EXPECT_EQ(v, 42);
  EXPECT_DOUBLE_EQ(comm->all_reduce_scalar(rank, ReduceOp::Max), size - 1);
}

TEST_F(CommunicatorTest, CountsRingVolumes) {
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
