// SPDX-License-Identifier: Apache-2.0
// The planner behind `zerotrain plan`: for every ZeRO stage and offload combination, fastest
// first (stage 0 > 1 > 2 > 2 + CPU optimizer > 3 > 3 + CPU optimizer > 3 + CPU optimizer and
// parameters > 3 + NVMe optimizer > 3 + NVMe optimizer and parameters), what each GPU, each
// node's CPU memory and its NVMe must hold, and the traffic of a step; the fastest that fits.
//
// Model-state bytes follow zerotrain's engine in fp32 (parameters 4, gradients 4, Adam moments
// 8 bytes per element), including its landing windows, the tied embedding's whole gradient and
// stage 3's gathered layers, so a plan can be checked against the memory tracker of a real run.
// The same arithmetic (model_states) gives a run's footprint (footprint.hpp) with the run's own
// zero_optimization settings instead of the recommended ones.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace zt::memory {

/// What the planner needs to know of a model. From a model description these are exact
/// (model::Gpt::memory_shape); from bare counts (--params/--largest-layer-params) the app
/// estimates the rest. Counts are doubles so that no model, however absurd, overflows them.
struct ModelShape {
  double parameters = 0;      // total (tied weights once)
  double largest_module = 0;  // DeepSpeed's largest_layer_params (also: the largest tensor)
  double layer = 0;           // elements of one transformer block (the engine's unit of work)
  double layers = 0;          // number of blocks
  double tied = 0;            // elements of the tied embedding (whole gradient during backward)
  double persistent = 0;      // elements below stage3_param_persistence_threshold
  // Stage 3 gathers only non-persistent tensors: their elements in a block, in the embedding
  // layer (wte, wpe) and in the head (ln_f, wte).
  double gathered_layer = 0;
  double gathered_first = 0;
  double gathered_last = 0;
  /// Own (untied) elements of the largest layer: a landing window is never smaller. 0: `layer`.
  double largest_own_layer = 0;
  /// Registered tensors (each costs the engine some host bookkeeping); 0 when unknown.
  double tensors = 0;
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
  double gpu_comm_buffers = 0;  // reduce-scatter scratch with gradient accumulation (stage 2-3)
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

/// The zero_optimization settings that decide what a rank holds, in elements as DeepSpeed
/// counts them. The defaults are those of the configs `zerotrain plan` recommends (buckets of
/// one layer come from plan_settings); a run passes its config's values instead.
struct PlanSettings {
  double reduce_bucket_size = 0;     // elements; the recommended configs' value
  bool overlap_comm = true;          // two landing windows, reductions in flight
  bool contiguous_gradients = true;  // windows reused; false: one per bucket
  bool reduce_scatter = true;        // false: all-reduce in place (no scratch)
  double gradient_accumulation_steps = 1;
  double prefetch_bucket_size = 0;  // elements
  double persistence_threshold = 1e5;
  double model_persistence_threshold = 9.2e18;  // DeepSpeed's default: sys.maxsize
  double max_live_parameters = 1e9;
  /// The recommended configs release every layer after use (0); DeepSpeed's default is 1e9,
  /// which keeps a small model's layers gathered from forward to backward.
  double max_reuse_distance = 0;
  double sub_group_size = 1e9;
  /// Smaller pieces when states stream from NVMe: each piece needs pinned staging buffers.
  double nvme_sub_group_size = 1e8;
};

/// The settings the recommended configs use for this model: buckets of one layer.
PlanSettings plan_settings(const ModelShape& model);

/// A ZeRO stage and where the optimizer states and the parameters live.
struct Placement {
  int stage = 0;
  Offload optimizer = Offload::None;
  Offload parameters = Offload::None;
};

/// fp32 model states of one rank, bytes, as zerotrain's engine allocates them.
struct ModelStates {
  // On the device (a GPU; on a CPU-only run the tracked device arena in host memory).
  double parameters = 0;        // whole, or (stage 3) slice + gathered + persistent
  double gradients = 0;         // whole (+ slice), or slice + landing windows + tied gradient
  double optimizer_states = 0;  // Adam's two moments
  double comm_buffers = 0;      // reduce-scatter scratch while gradients accumulate
  double device() const { return parameters + gradients + optimizer_states + comm_buffers; }
  // Offloaded.
  double host = 0;  // pinned host memory (CPU offload, NVMe staging)
  double nvme = 0;
};

/// The arithmetic behind every plan row and the run footprint: one rank of `ranks` at this
/// placement with these settings. Stage 3's gathered parameters follow the coordinator's rules
/// (the running layer, a prefetch of prefetch_bucket_size up to max_live_parameters, and what
/// max_reuse_distance keeps from forward to backward); an estimate, exact for the recommended
/// settings.
ModelStates model_states(const ModelShape& model, const Placement& placement, double ranks,
                         const PlanSettings& settings);

std::vector<PlanRow> make_plan(const ModelShape& model, const Machine& machine,
                               const PlanSettings& settings);

/// Index of the first (fastest) row that fits, or -1.
int fastest_fitting(const std::vector<PlanRow>& rows);

}  // namespace zt::memory
