// SPDX-License-Identifier: Apache-2.0
#include "memory/planner.hpp"

#include <algorithm>

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

}  // namespace

std::vector<PlanRow> make_plan(const ModelShape& model, const Machine& machine,
                               const PlanSettings& settings) {
  const double ranks = static_cast<double>(machine.gpus_per_node) * machine.nodes;
  const double P = model.parameters;
  const double slice = P / ranks;
  const double own = std::max(0.0, P - model.tied);  // what lands in windows
  // The engine's landing window: a bucket (at most the model), never less than a layer.
  const double window = std::max(std::min(settings.reduce_bucket_size, own), model.layer);
  // Stage 3 gathers the running layer and prefetches the next one (the recommended prefetch is
  // one block's gathered elements); next to a block is another block, the embedding layer or
  // the head.
  const double live = model.gathered_layer +
                      std::max({model.gathered_layer, model.gathered_first, model.gathered_last});
  std::vector<PlanRow> rows;
  for (const auto& combination : kCombinations) {
    PlanRow row;
    row.stage = combination.stage;
    row.optimizer = combination.optimizer;
    row.parameters = combination.parameters;
    const int stage = combination.stage;
    const bool offload_optimizer = combination.optimizer != Offload::None;
    const bool offload_parameters = combination.parameters != Offload::None;
    // Two alternating windows with overlap_comm (on in the recommended configs), unless one
    // holds everything.
    const double windows = (window < own ? 2 : 1) * window;
    const double landing = windows + model.tied;

    // Parameters.
    if (stage < 3) {
      row.gpu_parameters = 4 * P;
    } else {
      const double persistent = std::min(model.persistent, P);
      row.gpu_parameters = 4 * (live + persistent) + (offload_parameters ? 0 : 4 * slice);
    }
    // Gradients.
    if (stage == 0)
      row.gpu_gradients = 4 * P;
    else if (stage == 1)
      row.gpu_gradients = 4 * P + 4 * slice;
    else
      row.gpu_gradients = 4 * landing + (offload_optimizer ? 0 : 4 * slice);
    // Optimizer states (Adam's two moments).
    row.gpu_optimizer_states = offload_optimizer ? 0 : 8 * (stage == 0 ? P : slice);

    // CPU and NVMe, per node. Offloaded: fp32 parameter slice (the master copy), gradient
    // slice and the two moments, 16 bytes per element of the slice.
    const double per_rank_states = 16 * slice;
    const double per_node = static_cast<double>(machine.gpus_per_node);
    // NVMe staging: the optimizer swapper keeps buffer_count (4) pinned buffers of one
    // sub-group's tensor each per rank.
    const double staging = 4 * 4 * std::min(settings.nvme_sub_group_size, slice);
    if (combination.optimizer == Offload::Cpu) row.cpu_per_node = per_node * per_rank_states;
    if (combination.optimizer == Offload::Nvme) {
      row.nvme_per_node = per_node * 12 * slice;  // gradients and moments
      row.cpu_per_node =
          per_node * (staging + (combination.parameters == Offload::Nvme ? 0 : 4 * slice));
      if (combination.parameters == Offload::Nvme) row.nvme_per_node += per_node * 4 * slice;
    }
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

    const double gpu_need = row.gpu_model_states() + row.gpu_activations;
    if (gpu_need > machine.usable_share * machine.gpu_bytes) {
      row.limit = "GPU";
    } else if (row.cpu_per_node > machine.usable_share * machine.cpu_bytes) {
      row.limit = "CPU";
    } else if (combination.optimizer == Offload::Nvme && machine.nvme_bandwidth <= 0) {
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
