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

// Stage 3, max_reuse_distance > 0: the non-persistent elements a layer's forward leaves
// gathered for its backward (the coordinator keeps a parameter when fewer than
// max_reuse_distance elements are used before its next use: after a block's forward twice the
// elements of the layers after it, forward and then backward again).
double stage3_kept(const ModelShape& model, const PlanSettings& settings, double* kept_blocks) {
  const double distance = settings.max_reuse_distance;
  double blocks = 0;
  double kept = 0;
  if (distance > 0) {
    const double head_elements = model.tied;  // the head reads wte (and the small ln_f)
    if (model.layer > 0 && distance / 2 > head_elements)
      blocks = std::min(model.layers, std::ceil((distance / 2 - head_elements) / model.layer));
    // The head is used again right after its forward (distance 0): always kept.
    kept = blocks * model.gathered_layer + model.gathered_last;
    if (2 * (model.layers * model.layer + head_elements) < distance) kept += model.gathered_first;
  }
  if (kept_blocks != nullptr) *kept_blocks = blocks;
  return kept;
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
  if (settings.max_reuse_distance > 0) {
    double kept_blocks = 0;
    const double kept = stage3_kept(model, settings, &kept_blocks);
    // At the turn the backward prefetch goes past the kept blocks only with a larger bucket.
    const double extra = std::max(0.0, between_blocks - kept_blocks * block);
    live = std::max(live, kept + extra);
  }
  return std::min(live, all);
}

// The elements of a rank's range stepped in host memory: DeepSpeed offloads the first
// int(ratio x sub-groups) (ratio < 1 only at stage 3, where the engine allows it).
double host_range(double range, int stage, const PlanSettings& settings) {
  const double ratio = settings.offload_ratio;
  if (!(ratio < 1) || stage != 3) return range;
  const double piece = std::max(settings.sub_group_size, 1.0);
  const double sub_groups = std::ceil(range / piece);
  return std::min(range, std::floor(std::max(ratio, 0.0) * sub_groups) * piece);
}

}  // namespace

ModelStates model_states(const ModelShape& model, const Placement& placement, double ranks,
                         const PlanSettings& plan_settings_in) {
  // States streamed from NVMe are stepped in sub-groups of nvme_sub_group_size (the size the
  // recommended NVMe configs write; a run passes its own sub_group_size as both).
  PlanSettings settings = plan_settings_in;
  if (placement.optimizer == Offload::Nvme) settings.sub_group_size = settings.nvme_sub_group_size;
  ModelStates states;
  ranks = std::max(ranks, 1.0);
  const int stage = placement.stage;
  // The engine offloads from stage 1 on (stage 0 refuses offload, as DeepSpeed has none).
  const bool offload_optimizer = placement.optimizer != Offload::None && stage >= 1;
  const bool offload_parameters = placement.parameters != Offload::None && stage == 3;
  const bool cpu_optimizer = offload_optimizer && placement.optimizer == Offload::Cpu;
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
  // What the optimizer steps: the whole model at stage 0, the slice from stage 1 on; of it,
  // the first h elements in host memory when the optimizer is offloaded (ratio < 1: whole
  // sub-groups), the rest on the device.
  const double range = stage == 0 ? P : slice;
  const double h = offload_optimizer ? host_range(range, stage, settings) : 0;
  const double on_device = range - h;
  const double piece = std::max(settings.sub_group_size, 1.0);

  // Parameters.
  const double persistent =
      stage == 3 ? std::min({model.persistent, P, settings.model_persistence_threshold}) : 0;
  if (stage < 3) {
    states.parameters = e * P;
  } else {
    const double gathered = stage3_gathered(model, settings, persistent);
    states.parameters = e * (gathered + persistent);
    if (!offload_parameters) {
      states.parameters += e * slice;
    } else {
      // Gathers from host memory stage this rank's part of each tensor on the device, at most
      // buffer_count at once, until the gather is waited for: a prefetch's until its layer
      // runs, so at the busiest moment those of up to buffer_count gathered tensors (of the
      // next layer and of the one the prefetch reaches after it). A bound: a rank's part of a
      // tensor depends on where the tensor falls across the slices.
      const double count = std::max(settings.parameter_buffer_count, 1.0);
      states.parameters +=
          e * std::min({count * std::min(model.largest_module, slice), slice, gathered});
    }
  }
  // Gradients.
  if (stage == 0)
    states.gradients = a * P + micro_step;
  else if (stage == 1)
    states.gradients = a * P + micro_step + (offload_optimizer ? 0 : a * slice);
  else
    states.gradients = e * landing + (offload_optimizer ? 0 : e * slice);
  // The device's sub-groups read their gradients from host memory through one sub-group.
  if (offload_optimizer && on_device > 0) states.gradients += a * std::min(piece, on_device);

  // Communication buffers.
  const bool staged = c != a;
  // The largest bucket one reduction converts and reduces: of the full buffer at stage 1, of
  // a window or the tied gradient at stages 2-3.
  const double largest_bucket =
      std::min(settings.reduce_bucket_size, stage == 1 ? P : std::max(window, model.tied));
  if (stage == 0) {
    // Stage 0 all-reduces bucket after bucket through one staging buffer (one rank reduces
    // nothing).
    if (staged && ranks > 1) states.comm_buffers = c * std::min(settings.reduce_bucket_size, P);
  } else if (staged || offload_optimizer) {
    // Every bucket is converted into a staging buffer of its own, kept until its reduction
    // completed, and this rank's part is received into a scratch buffer; with the gradient
    // slice in host memory every part is received into scratch (in the training dtype too),
    // and copied out as its reduction completes. Without overlap_comm one bucket at a time.
    // With it, stage 1 reduces in backward and completes nothing before the end of backward:
    // all of the gradient is in flight. Stages 2-3 complete a window's buckets when the window
    // is reused: with two alternating windows those of both and the tied gradient's; with a
    // window per bucket (or one holding every layer's gradients) all.
    const double in_flight = !settings.overlap_comm ? largest_bucket
                             : stage == 1           ? P
                                                    : std::min(landing, P);
    const double received = settings.reduce_scatter ? std::min(in_flight, slice) : 0;
    states.comm_buffers = c * ((staged ? in_flight : 0) + received);
  } else if (stage >= 2 && settings.gradient_accumulation_steps > 1 && settings.reduce_scatter) {
    // Reductions after the first micro-step add to the slice through a scratch buffer: one
    // bucket's share at a time, or (overlap_comm) all that is in flight, at most the slice.
    states.comm_buffers =
        c * std::min(slice, settings.overlap_comm ? landing : settings.reduce_bucket_size);
  }

  // Optimizer states of the device's part of the range: Adam's two moments, and in 16 bits
  // the fp32 master copy and the optimizer's fp32 view of one sub-group of unscaled gradients
  // (DeepSpeed's fp32 partition gradient), which the engine keeps for its lifetime and counts
  // as optimizer memory.
  states.optimizer_states = optimizer_state_bytes(precision) * on_device;
  if (precision.master_copy && on_device > 0)
    states.optimizer_states += 4 * std::min(piece, on_device);

  // Host memory and the copies of a step.
  const double gas = std::max(settings.gradient_accumulation_steps, 1.0);
  if (offload_optimizer) {
    // Each reduced part of the slice lands in host memory (one buffer of the largest part)
    // and is added into the slice there: every micro-step at stages 2-3, once (the last
    // micro-step's reduction) at stage 1.
    states.host_gradients = a * slice;
    states.host_comm_buffers = c * std::min(largest_bucket, slice);
    states.bytes_to_host = c * slice * (stage >= 2 ? gas : 1);
    // The device's sub-groups copy their gradients over before their update.
    states.bytes_to_device = a * on_device;
  }
  if (offload_optimizer && placement.optimizer == Offload::Nvme) {
    // ZeRO-Infinity: the fp32 master weights and both moments of the host range (Adam's and
    // Lamb's alike, 12 bytes per element) live in swap files, read and written back every
    // step through buffer sets of three sub-group arrays in host memory (buffer_count / 3 of
    // them; the config reader refuses fewer than one).
    const double sets = std::max(1.0, std::floor(settings.optimizer_buffer_count / 3));
    states.host_optimizer_states = sets * 3 * 4 * std::min(piece, h);
    states.nvme += 12 * h;
    states.nvme_traffic += 2 * 12 * h;
  } else if (cpu_optimizer) {
    // The CPU optimizer's fp32 master weights (in fp32 too) and Adam's moments.
    states.host_optimizer_states = (4 + 8) * h;
  }
  if (offload_parameters) {
    // The slice itself; each gather copies this rank's part of its tensor to the device:
    // every use a forward or backward gathers (those kept for reuse once) per micro-step,
    // and the persistent parameters after each step (a rank's share of them).
    const double uses =
        2 * (model.gathered_first + model.layers * model.gathered_layer + model.gathered_last) -
        stage3_kept(model, settings, nullptr);
    const double gathered_per_step = (gas * std::max(0.0, uses) + persistent) / ranks;
    states.bytes_to_device += e * gathered_per_step;
    states.host_parameters = e * slice;
    if (placement.parameters == Offload::Nvme) {
      // Beyond max_in_cpu elements the slice lives in a swap file (in the training dtype),
      // read through buffer_count buffers of buffer_size elements by each gather of its part,
      // and written back after the step.
      const double on_nvme = std::max(0.0, slice - std::max(settings.parameter_max_in_cpu, 0.0));
      if (on_nvme > 0) {
        const double count = std::max(settings.parameter_buffer_count, 1.0);
        const double buffer = std::max(settings.parameter_buffer_size, 1.0);
        states.host_parameters = e * (slice - on_nvme) + e * count * std::min(buffer, on_nvme);
        states.nvme += e * on_nvme;
        states.nvme_traffic += e * on_nvme * (1 + gathered_per_step / std::max(slice, 1.0));
      }
    }
  } else if (offload_optimizer && h > 0) {
    // New parameters stream to the device through two buffers of a sub-group (one when a
    // single sub-group is offloaded), once per step.
    states.host_parameters = (h > piece ? 2 : 1) * e * std::min(piece, h);
    states.bytes_to_device += e * h;
  }
  return states;
}

std::vector<PlanRow> make_plan(const ModelShape& model, const Machine& machine,
                               const PlanSettings& settings) {
  const double ranks = static_cast<double>(machine.gpus_per_node) * machine.nodes;
  const double P = model.parameters;
  const double per_node = static_cast<double>(machine.gpus_per_node);
  std::vector<PlanRow> rows;
  for (const auto& combination : kCombinations) {
    PlanRow row;
    row.stage = combination.stage;
    row.optimizer = combination.optimizer;
    row.parameters = combination.parameters;
    const int stage = combination.stage;
    const auto states = model_states(
        model, Placement{stage, combination.optimizer, combination.parameters}, ranks, settings);
    row.gpu_parameters = states.parameters;
    row.gpu_gradients = states.gradients;
    row.gpu_optimizer_states = states.optimizer_states;
    row.gpu_comm_buffers = states.comm_buffers;
    row.cpu_parameters = states.host_parameters;
    row.cpu_gradients = states.host_gradients;
    row.cpu_optimizer_states = states.host_optimizer_states;
    row.cpu_comm_buffers = states.host_comm_buffers;
    row.cpu_per_node = per_node * states.host();
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
    // What the engine copies between GPU and CPU memory.
    row.bytes_to_host = states.bytes_to_host;
    row.bytes_to_device = states.bytes_to_device;
    row.offload_bytes = states.bytes_to_host + states.bytes_to_device;
    if (states.nvme_traffic > 0) {
      // Read and written back every step: the optimizer's states, the parameters' NVMe part.
      row.offload_bytes += states.nvme_traffic;
      if (machine.nvme_bandwidth > 0)
        row.nvme_seconds = per_node * states.nvme_traffic / machine.nvme_bandwidth;
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
