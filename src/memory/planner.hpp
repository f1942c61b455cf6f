// SPDX-License-Identifier: Apache-2.0
// The planner behind `zerotrain plan`: for every ZeRO stage and offload combination, fastest
// first (stage 0 > 1 > 2 > 2 + CPU optimizer > 3 > 3 + CPU optimizer > 3 + CPU optimizer and
// parameters > 3 + NVMe optimizer > 3 + NVMe optimizer and parameters), what each GPU, each
// node's CPU memory and its NVMe must hold, and the traffic of a step; the fastest that fits.
//
// Model-state bytes follow zerotrain's engine in fp32 (parameters 4, gradients 4, Adam moments
// 8 bytes per element), including its landing windows, the tied embedding's whole gradient and
// stage 3's gathered layers, so a plan can be checked against the memory tracker of a real run.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace zt::memory {

/// What the planner needs to know of a model. From a model description these are exact; from
/// bare counts (--params/--largest-layer-params) the app estimates the rest.
struct ModelShape {
  double parameters = 0;      // total (tied weights once)
  double largest_module = 0;  // DeepSpeed's largest_layer_params
  double layer = 0;           // elements of one transformer block (the engine's unit of work)
  double layers = 0;          // number of blocks
  double tied = 0;            // elements of the tied embedding (whole gradient during backward)
  double persistent = 0;      // elements below stage3_param_persistence_threshold
  // Stage 3 gathers only non-persistent tensors: their elements in a block, in the embedding
  // layer (wte, wpe) and in the head (ln_f, wte).
  double gathered_layer = 0;
  double gathered_first = 0;
  double gathered_last = 0;
  double activation_bytes = 0;               // per rank, for the micro-batch and sequence
  double activation_bytes_checkpointed = 0;  // with activation checkpointing (estimate)
};

enum class Offload { None, Cpu, Nvme };
const char* offload_name(Offload device);

struct Machine {
  int gpus_per_node = 1;
  int nodes = 1;
  double gpu_bytes = 0;       // per GPU
  double cpu_bytes = 0;       // per node
  double nvme_bandwidth = 0;  // bytes/s per node; 0: no NVMe offload
  /// Share of GPU and CPU memory a plan may fill (the rest: CUDA context, allocator slack,
  /// communication buffers).
  double usable_share = 0.9;
};

struct PlanRow {
  int stage = 0;
  Offload optimizer = Offload::None;
  Offload parameters = Offload::None;
  // Per GPU (rank), bytes.
  double gpu_parameters = 0;
  double gpu_gradients = 0;
  double gpu_optimizer_states = 0;
  double gpu_model_states() const { return gpu_parameters + gpu_gradients + gpu_optimizer_states; }
  double gpu_activations = 0;
  // Per node, bytes.
  double cpu_per_node = 0;
  double nvme_per_node = 0;
  // Per rank per step.
  double network_bytes = 0;  // collective traffic (ring volumes)
  double offload_bytes = 0;  // GPU<->CPU and CPU<->NVMe
  double nvme_seconds = 0;   // NVMe streaming time per step (0 without NVMe)
  bool fits = false;
  std::string limit;  // why it does not fit ("GPU", "CPU", "no NVMe"), empty when it fits
  std::string name() const;
};

struct PlanSettings {
  double reduce_bucket_size = 0;    // elements; the recommended configs' value
  double prefetch_bucket_size = 0;  // elements
  double persistence_threshold = 1e5;
  double sub_group_size = 1e9;
  /// Smaller pieces when states stream from NVMe: each piece needs pinned staging buffers.
  double nvme_sub_group_size = 1e8;
};

/// The settings the recommended configs use for this model: buckets of one layer.
PlanSettings plan_settings(const ModelShape& model);

std::vector<PlanRow> make_plan(const ModelShape& model, const Machine& machine,
                               const PlanSettings& settings);

/// Index of the first (fastest) row that fits, or -1.
int fastest_fitting(const std::vector<PlanRow>& rows);

}  // namespace zt::memory
