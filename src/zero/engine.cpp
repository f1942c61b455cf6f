// SPDX-License-Identifier: Apache-2.0
#include "zero/engine.hpp"

#include <Kokkos_Core.hpp>

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "optim/gradient_clipping.hpp"
#include "runtime/error.hpp"
#include "runtime/timer.hpp"

namespace zt::zero {

PhaseTimes& PhaseTimes::operator+=(const PhaseTimes& other) {
  forward += other.forward;
  backward += other.backward;
  reduction += other.reduction;
  optimizer += other.optimizer;
  total += other.total;
  return *this;
}

namespace {

std::vector<FlatEntry> entries_of(const model::Gpt& model) {
  std::vector<FlatEntry> entries;
  for (const auto& info : model.parameters())
    entries.push_back(FlatEntry{info.name, info.shape, info.numel, 0, info.layer});
  return entries;
}

void fill_zero(float* values, std::int64_t n) {
  Kokkos::parallel_for(
      "zt::zero::fill_zero", Kokkos::RangePolicy<Kokkos::DefaultHostExecutionSpace>(0, n),
      KOKKOS_LAMBDA(const std::int64_t i) { values[i] = 0.0f; });
}

}  // namespace

Engine::Engine(model::Gpt& model, comm::Communicator& comm, const EngineSettings& settings)
    : model_(model), comm_(comm), settings_(settings), layout_(entries_of(model), comm.size()) {
  if (settings_.stage != 0)
    throw runtime::UserError(runtime::concat("not supported yet: zero_optimization.stage ",
                                             settings_.stage, " (this release trains at stage 0)"));
  if (settings_.micro_batch < 1 || settings_.gradient_accumulation_steps < 1 ||
      settings_.seq_len < 1)
    throw std::invalid_argument("engine: micro batch, accumulation steps and seq_len must be >= 1");

  const std::int64_t n = layout_.padded_elements();
  params_ = memory::TrackedBuffer<float>(n, memory::Place::Device, memory::Kind::Parameters);
  grads_ = memory::TrackedBuffer<float>(n, memory::Place::Device, memory::Kind::Gradients);
  const auto& parameters = model_.parameters();
  for (std::size_t p = 0; p < parameters.size(); ++p) {
    const auto& entry = layout_.entries()[p];
    model::init_parameter_range(parameters[p], static_cast<int>(p), settings_.seed, 0,
                                entry.numel, params_.data() + entry.offset);
    param_table_.push_back(params_.data() + entry.offset);
    grad_table_.push_back(grads_.data() + entry.offset);
    segments_.push_back(optim::TensorSegment{entry.offset, entry.numel,
                                             static_cast<std::int64_t>(p), true});
  }
  // Stage 0: every rank steps the whole model (DeepSpeed keeps the optimizer unpartitioned).
  optimizer_ = optim::make_optimizer(settings_.optimizer, n);
  schedule_ = optim::make_schedule(settings_.schedule, settings_.optimizer.lr);

  const std::int64_t tokens = static_cast<std::int64_t>(settings_.micro_batch) * settings_.seq_len;
  inputs_ = memory::TrackedBuffer<std::int32_t>(tokens, memory::Place::Host, memory::Kind::Activations);
  targets_ = memory::TrackedBuffer<std::int32_t>(tokens, memory::Place::Host, memory::Kind::Activations);
}

void Engine::reduce_gradients() {
  if (comm_.size() == 1) return;
  const std::int64_t n = layout_.padded_elements();
  // Buckets bound the size of one MPI message (and MPI's int count).
  const std::int64_t bucket =
      std::clamp<std::int64_t>(settings_.reduce_bucket_size, 1 << 16, 1 << 30);
  std::vector<comm::Handle> pending;
  for (std::int64_t begin = 0; begin < n; begin += bucket) {
    const std::int64_t count = std::min(bucket, n - begin);
    pending.push_back(comm_.all_reduce_async(grads_.data() + begin, grads_.data() + begin, count,
                                             comm::DataType::Float32, comm::ReduceOp::Sum));
  }
  for (auto& handle : pending) handle.wait();
  if (settings_.average_gradients) optim::scale(grads_.data(), n, 1.0f / comm_.size());
}

double Engine::clip_gradients(bool& clipped) {
  // Stage 0: every rank holds the whole reduced gradient, so the norm needs no communication.
  const std::int64_t n = layout_.padded_elements();
  const double norm =
      optim::global_norm_from_sum_of_squares(optim::sum_of_squares(grads_.data(), n));
  const double coefficient = optim::clip_coefficient(norm, settings_.gradient_clipping);
  clipped = coefficient < 1.0;
  if (clipped) optim::scale(grads_.data(), n, static_cast<float>(coefficient));
  return norm;
}

StepResult Engine::train_step(const BatchFiller& fill) {
  runtime::Stopwatch step_watch;
  StepResult result;
  const int accumulation = settings_.gradient_accumulation_steps;
  const int B = settings_.micro_batch;
  const int T = settings_.seq_len;

  fill_zero(grads_.data(), layout_.padded_elements());
  double loss_sum = 0;
  for (int micro = 0; micro < accumulation; ++micro) {
    fill(micro, inputs_.data(), targets_.data());
    {
      runtime::ScopedTimer timer(result.phases.forward);
      loss_sum += model_.forward(param_table_, inputs_.data(), targets_.data(), B, T);
    }
    runtime::ScopedTimer timer(result.phases.backward);
    model_.backward(param_table_, grad_table_, 1.0f / static_cast<float>(accumulation));
  }
  {
    runtime::ScopedTimer timer(result.phases.reduction);
    reduce_gradients();
    result.loss = comm_.all_reduce_scalar(loss_sum / accumulation, comm::ReduceOp::Sum) /
                  comm_.size();
  }
  {
    runtime::ScopedTimer timer(result.phases.optimizer);
    result.grad_norm = clip_gradients(result.clipped);
    const auto hyper = optim::step_hyper(*schedule_, settings_.optimizer, applied_steps_ + 1);
    optimizer_->step(params_.data(), grads_.data(), layout_.padded_elements(), segments_, hyper);
    result.lr = hyper.lr;
  }
  ++applied_steps_;
  result.step = applied_steps_;
  result.phases.total = step_watch.seconds();
  return result;
}

}  // namespace zt::zero
