// SPDX-License-Identifier: Apache-2.0
#include "memory/planner.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace zt::memory {

const char* offload_name(Offload device) {
  switch (device) {
    case Offload::None:
      return "none";
    case Offload::Cpu:
      return "cpu";
    case Offload::Nvme:
      return "nvme";
  }
  return "?";
}

std::string PlanRow::name() const {
  std::string text = "stage " + std::to_string(stage);
  if (optimizer != Offload::None) text += std::string(" + optimizer on ") + offload_name(optimizer);
  if (parameters != Offload::None)
    text += std::string(" + parameters on ") + offload_name(parameters);
  return text;
}

Precision mixed_precision(double communication_bytes) {
  Precision precision;
  precision.training_bytes = 2;
  precision.communication_bytes = communication_bytes;
  precision.master_copy = true;
  return precision;
}

namespace {

std::string byte_count_text(double bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", bytes);
  return text;
}

// Adam's two fp32 moments, and the fp32 master copy when the parameters are 16-bit: per
// element of the optimizer's range.
double optimizer_state_bytes(const Precision& precision) {
  return 8 + (precision.master_copy ? 4 : 0);
}

}  // namespace

std::string bytes_per_parameter_text(const Precision& precision) {
  return byte_count_text(precision.training_bytes) + " + " +
         byte_count_text(precision.training_bytes) + " + " +
         byte_count_text(optimizer_state_bytes(precision)) + " bytes per parameter";
}

PlanSettings plan_settings(const ModelShape& model) {
  PlanSettings settings;
  // One layer per bucket: reductions start as soon as a layer's backward ends, and a landing
  // window never holds more than a layer. Likewise stage 3 prefetches one layer ahead.
  settings.reduce_bucket_size = std::max(model.layer, 1.0);
  settings.prefetch_bucket_size = std::max(model.gathered_layer, 1.0);
  return settings;
}

namespace {

struct Combination {
  int stage;
  Offload optimizer;
  Offload parameters;
};

// Fastest first, as DeepSpeed's and Hugging Face's guides order them.
constexpr Combination kCombinations[] = {
    {0, Offload::None, Offload::None}, {1, Offload::None, Offload::None},
    {2, Offload::None, Offload::None}, {2, Offload::Cpu, Offload::None},
    {3, Offload::None, Offload::None}, {3, Offload::Cpu, Offload::None},
    {3, Offload::Cpu, Offload::Cpu},   {3, Offload::Nvme, Offload::Cpu},
    {3, Offload::Nvme, Offload::Nvme},
};

// Stage 3 prefetch: elements gathered ahead for a bucket of `bucket` elements when blocks of
// `block` gathered elements lie ahead. Whole tensors are gathered until the bucket is reached:
// at most one tensor (the largest is `tensor`) past it, and never past the block boundary
// after it. An upper bound; exact when the bucket is a whole number of blocks.
double whole_tensors_ahead(double bucket, double block, double tensor) {
  if (!(bucket > 0)) return 0;
  double ahead = bucket + tensor;
  if (block > 0) ahead = std::min(ahead, std::ceil(bucket / block) * block);
  return ahead;
}

// Stage 3: the most non-persistent elements gathered at once, by the coordinator's rules
// (zero/parameter_coordinator.hpp) on the trace forward 0..L+1, backward L+1..0.
double stage3_gathered(const ModelShape& model, const PlanSettings& settings, double persistent) {
  const double block = model.gathered_layer;
  const double head = model.gathered_last;
  // Every non-persistent element is gathered at some point; never more than those at once.
  const double all = std::max(0.0, model.parameters - persistent);
  // The running layer at the busiest moment: a block, or the embedding layer or the head,
  // which sit next to blocks in the trace.
  const double running = std::max({block, model.gathered_first, head});
  // Prefetch gathers none that would take the live elements past max_live_parameters.
  const double room = std::max(0.0, settings.max_live_parameters - running);
  const double bucket = settings.prefetch_bucket_size;
  const double between_blocks =
      std::min(room, whole_tensors_ahead(bucket, block, model.largest_module));
  // From the last block the prefetch walks through the head into the backward's blocks.
  const double through_head =
      !(bucket > 0)    ? 0
      : head >= bucket ? head
                       : head + whole_tensors_ahead(bucket - head, block, model.largest_module);
  double live = std::max(running + between_blocks, block + std::min(room, through_head));
  // Reuse: after a layer's forward, its parameters stay gathered when fewer than
  // max_reuse_distance elements are used before their next use, its backward: twice the
  // elements of the layers after it (forward, then backward again).
  const double distance = settings.max_reuse_distance;
  if (distance > 0) {
    const double head_elements = model.tied;  // the head reads wte (and the small ln_f)
    double kept_blocks = 0;
    if (model.layer > 0 && distance / 2 > head_elements)
      kept_blocks = std::min(model.layers, std::ceil((distance / 2 - head_elements) / model.layer));
    // The head is used again right after its forward (distance 0): always kept.
    double kept = kept_blocks * block + head;
    if (2 * (model.layers * model.layer + head_elements) < distance) kept += model.gathered_first;
    // At the turn the backward prefetch goes past the kept blocks only with a larger bucket.
    const double extra = std::max(0.0, between_blocks - kept_blocks * block);
    live = std::max(live, kept + extra);
  }
  return std::min(live, all);
}

}  // namespace

ModelStates model_states(const ModelShape& model, const Placement& placement, double ranks,
                         const PlanSettings& settings) {
  ModelStates states;
  ranks = std::max(ranks, 1.0);
  const int stage = placement.stage;
  const bool offload_optimizer = placement.optimizer != Offload::None;
  const bool offload_parameters = placement.parameters != Offload::None;
  const double P = model.parameters;
  const double slice = P / ranks;
  const double own = std::max(0.0, P - model.tied);  // what lands in windows
  const double largest_own = model.largest_own_layer > 0 ? model.largest_own_layer : model.layer;
  // The engine's landing window: a bucket (at most the model), never less than a layer.
  const double window = std::max(std::min(settings.reduce_bucket_size, own), largest_own);
  double windows = 1;
  if (window < own && settings.overlap_comm) {
    if (settings.contiguous_gradients) {
      windows = 2;  // alternating: one fills while the other drains
    } else {
      // A fresh window per bucket, each kept until the micro-step's reductions completed. A
      // window takes blocks until it holds a bucket or the next block does not fit; the
      // head's and the embedding layer's own parameters (ln_f, wpe) may need one each.
      const double layer = std::max(model.layer, 1.0);
      const double blocks_per_window = std::max(
          1.0,
          std::min(std::floor(window / layer), std::ceil(settings.reduce_bucket_size / layer)));
      const double outside_blocks = own > model.layers * model.layer ? 2 : 0;
      windows = std::min(model.layers + outside_blocks,
                         std::ceil(model.layers / blocks_per_window) + outside_blocks);
      windows = std::max(windows, 1.0);
    }
  }
  const double landing = windows * window + model.tied;

  const Precision& precision = settings.precision;
  const double e = precision.training_bytes;
  const double c = precision.communication_bytes;
  // The gradients' dtype while they accumulate, which reductions convert from.
  double a = e;
  if (stage < 2 && precision.accumulation_bytes > 0) a = precision.accumulation_bytes;
  if (stage == 0 && precision.stage0_accumulation_bytes > 0)
    a = precision.stage0_accumulation_bytes;
  // Accumulating in another dtype, backward writes a micro-step's gradients into a buffer of
  // the training dtype, which is then added into the accumulated ones.
  const double micro_step = a != e ? e * P : 0;
  // What the optimizer steps: the whole model at stage 0, the slice from stage 1 on.
  const double range = stage == 0 ? P : slice;

  // Parameters.
  if (stage < 3) {
    states.parameters = e * P;
  } else {
    const double persistent = std::min({model.persistent, P, settings.model_persistence_threshold});
    states.parameters = e * (stage3_gathered(model, settings, persistent) + persistent) +
                        (offload_parameters ? 0 : e * slice);
  }
  // Gradients.
  if (stage == 0)
    states.gradients = a * P + micro_step;
  else if (stage == 1)
    states.gradients = a * P + micro_step + a * slice;
  else
    states.gradients = e * landing + (offload_optimizer ? 0 : e * slice);

  // Communication buffers.
  const bool staged = c != a;
  if (!staged) {
    // Reductions after the first micro-step add to the slice through a scratch buffer: one
    // bucket's share at a time, or (overlap_comm) all that is in flight, at most the slice.
    if (stage >= 2 && settings.gradient_accumulation_steps > 1 && settings.reduce_scatter)
      states.comm_buffers =
          c * std::min(slice, settings.overlap_comm ? landing : settings.reduce_bucket_size);
  } else if (stage == 0) {
    // Stage 0 all-reduces bucket after bucket through one staging buffer (one rank reduces
    // nothing).
    if (ranks > 1) states.comm_buffers = c * std::min(settings.reduce_bucket_size, P);
  } else {
    // Every bucket is converted into a staging buffer of its own, kept until its reduction
    // completed, and this rank's part is received into a scratch buffer. Without overlap_comm
    // one bucket at a time. With it, stage 1 reduces in backward and completes nothing before
    // the end of backward: all of the gradient is in flight. Stages 2-3 complete a window's
    // buckets when the window is reused: with two alternating windows those of both and the
    // tied gradient's; with a window per bucket (or one holding every layer's gradients) all.
    const double largest_bucket =
        std::min(settings.reduce_bucket_size, stage == 1 ? P : std::max(window, model.tied));
    const double in_flight = !settings.overlap_comm ? largest_bucket
                             : stage == 1           ? P
                                                    : std::min(landing, P);
    const double received = settings.reduce_scatter ? std::min(in_flight, slice) : 0;
    states.comm_buffers = c * (in_flight + received);
  }

  // Optimizer states: Adam's two moments, and in 16 bits the fp32 master copy and the
  // optimizer's fp32 view of one sub-group of unscaled gradients (DeepSpeed's fp32 partition
  // gradient), which the engine keeps for its lifetime and counts as optimizer memory.
  if (!offload_optimizer) {
    states.optimizer_states = optimizer_state_bytes(precision) * range;
    if (precision.master_copy)
      states.optimizer_states += 4 * std::min(std::max(settings.sub_group_size, 1.0), range);
  }

  // Offloaded: the fp32 master copy (in fp32 the parameters themselves), the fp32 gradient
  // slice and the two moments, 16 bytes per element of the slice. In 16 bits, offloaded
  // parameters are a 16-bit copy besides the master. NVMe staging: the optimizer swapper
  // keeps buffer_count (4) pinned buffers of one sub-group's tensor each.
  const double half_parameters = precision.master_copy && offload_parameters ? e * slice : 0;
  const double staging = 4 * 4 * std::min(settings.nvme_sub_group_size, slice);
  if (placement.optimizer == Offload::Cpu) states.host = 16 * slice + half_parameters;
  if (placement.optimizer == Offload::Nvme) {
    states.nvme = 12 * slice;  // gradients and moments
    states.host = staging + (placement.parameters == Offload::Nvme ? 0 : 4 * slice);
    if (placement.parameters == Offload::Nvme)
      states.nvme += 4 * slice + half_parameters;
    else
      states.host += half_parameters;
  }
  return states;
}

std::vector<PlanRow> make_plan(const ModelShape& model, const Machine& machine,
                               const PlanSettings& settings) {
  const double ranks = static_cast<double>(machine.gpus_per_node) * machine.nodes;
  const double P = model.parameters;
  const double slice = P / ranks;
  const double per_node = static_cast<double>(machine.gpus_per_node);
  std::vector<PlanRow> rows;
  for (const auto& combination : kCombinations) {
    PlanRow row;
    row.stage = combination.stage;
    row.optimizer = combination.optimizer;
    row.parameters = combination.parameters;
    const int stage = combination.stage;
    const bool offload_optimizer = combination.optimizer != Offload::None;
    const auto states = model_states(
        model, Placement{stage, combination.optimizer, combination.parameters}, ranks, settings);
    row.gpu_parameters = states.parameters;
    row.gpu_gradients = states.gradients;
    row.gpu_optimizer_states = states.optimizer_states;
    row.gpu_comm_buffers = states.comm_buffers;
    row.cpu_per_node = per_node * states.host;
    row.nvme_per_node = per_node * states.nvme;
    row.gpu_activations = model.activation_bytes;

    // Traffic per rank per step: the ZeRO paper's volumes (stage 3 with layers released after
    // forward, as the recommended config sets), plus the offload copies.
    // Gradients are reduced in the communication dtype (stage 0 all-reduces: twice), parameters
    // gathered in the training dtype (stages 1-2 once after the step, stage 3 in forward and
    // backward).
    const double e = settings.precision.training_bytes;
    const double c = settings.precision.communication_bytes;
    const double bytes = stage == 0 ? 2 * c : c + (stage == 3 ? 2 : 1) * e;
    row.network_bytes = bytes * P * (ranks - 1) / ranks;
    // Gradients out, parameters back, in the training dtype.
    if (offload_optimizer) row.offload_bytes = 2 * e * slice;
    if (combination.optimizer == Offload::Nvme) {
      // Read and write what lives there (moments, gradients, master slice) every step.
      const double nvme_per_rank = 2 * states.nvme;
      row.offload_bytes += nvme_per_rank;
      if (machine.nvme_bandwidth > 0)
        row.nvme_seconds = per_node * nvme_per_rank / machine.nvme_bandwidth;
    }

    // Written so that a NaN anywhere (a shape the app should have refused) never fits.
    const double gpu_need = states.device() + row.gpu_activations;
    if (!(gpu_need <= machine.usable_share * machine.gpu_bytes)) {
      row.limit = "GPU";
    } else if (!(row.cpu_per_node <= machine.usable_share * machine.cpu_bytes)) {
      row.limit = "CPU";
    } else if (combination.optimizer == Offload::Nvme && !(machine.nvme_bandwidth > 0)) {
      row.limit = "no NVMe (--nvme-bandwidth)";
    }
    row.fits = row.limit.empty();
    rows.push_back(row);
  }
  return rows;
}

int fastest_fitting(const std::vector<PlanRow>& rows) {
  for (std::size_t i = 0; i < rows.size(); ++i)
    if (rows[i].fits) return static_cast<int>(i);
  return -1;
}

}  // namespace zt::memory
