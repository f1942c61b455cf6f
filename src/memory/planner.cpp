// SPDX-License-Identifier: Apache-2.0
#include "memory/planner.hpp"

#include <algorithm>
#include <cmath>

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

  // Parameters.
  if (stage < 3) {
    states.parameters = 4 * P;
  } else {
    const double persistent = std::min({model.persistent, P, settings.model_persistence_threshold});
    states.parameters = 4 * (stage3_gathered(model, settings, persistent) + persistent) +
                        (offload_parameters ? 0 : 4 * slice);
  }
  // Gradients.
  if (stage == 0)
    states.gradients = 4 * P;
  else if (stage == 1)
    states.gradients = 4 * P + 4 * slice;
  else
    states.gradients = 4 * landing + (offload_optimizer ? 0 : 4 * slice);
  // Reductions after the first micro-step add to the slice through a scratch buffer: one
  // bucket's share at a time, or (overlap_comm) all that is in flight, at most the slice.
  if (stage >= 2 && settings.gradient_accumulation_steps > 1 && settings.reduce_scatter)
    states.comm_buffers =
        4 * std::min(slice, settings.overlap_comm ? landing : settings.reduce_bucket_size);
  // Optimizer states (Adam's two moments).
  states.optimizer_states = offload_optimizer ? 0 : 8 * (stage == 0 ? P : slice);

  // Offloaded: fp32 parameter slice (the master copy), gradient slice and the two moments, 16
  // bytes per element of the slice. NVMe staging: the optimizer swapper keeps buffer_count (4)
  // pinned buffers of one sub-group's tensor each.
  const double staging = 4 * 4 * std::min(settings.nvme_sub_group_size, slice);
  if (placement.optimizer == Offload::Cpu) states.host = 16 * slice;
  if (placement.optimizer == Offload::Nvme) {
    states.nvme = 12 * slice;  // gradients and moments
    states.host = staging + (placement.parameters == Offload::Nvme ? 0 : 4 * slice);
    if (placement.parameters == Offload::Nvme) states.nvme += 4 * slice;
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
    row.network_bytes = (stage == 3 ? 3 : 2) * 4 * P * (ranks - 1) / ranks;
    if (offload_optimizer) row.offload_bytes = 4 * slice * 2;  // gradients out, parameters back
    if (combination.optimizer == Offload::Nvme) {
      // Read and write the moments and master slice every step.
      const double nvme_per_rank = 2 * (combination.parameters == Offload::Nvme ? 16 : 12) * slice;
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
