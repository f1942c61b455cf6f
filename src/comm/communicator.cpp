// SPDX-License-Identifier: Apache-2.0
#include "comm/communicator.hpp"

#include <algorithm>
#include <stdexcept>

namespace zt::comm {

std::size_t size_of(DataType type) {
  switch (type) {
    case DataType::Float32:
      return 4;
    case DataType::Float64:
      return 8;
    case DataType::Int32:
      return 4;
    case DataType::Int64:
      return 8;
    case DataType::Float16:
    case DataType::BFloat16:
      return 2;
  }
  return 0;
}

const char* data_type_name(DataType type) {
  switch (type) {
    case DataType::Float32:
      return "fp32";
    case DataType::Float64:
      return "fp64";
    case DataType::Int32:
      return "int32";
    case DataType::Int64:
      return "int64";
    case DataType::Float16:
      return "fp16";
    case DataType::BFloat16:
      return "bf16";
  }
  return "?";
}

const char* collective_name(Collective collective) {
  switch (collective) {
    case Collective::AllReduce:
      return "all_reduce";
    case Collective::ReduceScatter:
      return "reduce_scatter";
    case Collective::AllGather:
      return "all_gather";
    case Collective::Broadcast:
      return "broadcast";
    case Collective::Barrier:
      return "barrier";
  }
  return "?";
}

Handle::~Handle() {
  if (completion_ == nullptr) return;
  try {
    completion_->wait();
  } catch (...) {
    // A destructor cannot report; the error surfaces where the operation's result is used.
  }
}

Handle& Handle::operator=(Handle&& other) noexcept {
  if (this != &other) {
    if (completion_ != nullptr) {
      try {
        completion_->wait();
      } catch (...) {
      }
    }
    completion_ = std::move(other.completion_);
  }
  return *this;
}

void Handle::wait() {
  if (completion_ == nullptr) return;
  auto completion = std::move(completion_);
  completion->wait();
}

bool Handle::test() {
  if (completion_ == nullptr) return true;
  return completion_->test();
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

std::vector<std::int64_t> split_range_by_rank(std::int64_t begin, std::int64_t end,
                                              std::int64_t slice, int ranks) {
  if (begin < 0 || end < begin || slice < 1 || ranks < 1 || end > slice * ranks)
    throw std::invalid_argument("split_range_by_rank: range outside the partitioned buffer");
  std::vector<std::int64_t> counts(static_cast<std::size_t>(ranks), 0);
  for (int r = 0; r < ranks; ++r) {
    const std::int64_t first = std::max(begin, r * slice);
    const std::int64_t last = std::min(end, (r + 1) * slice);
    counts[static_cast<std::size_t>(r)] = std::max<std::int64_t>(0, last - first);
  }
  return counts;
}

}  // namespace zt::comm
