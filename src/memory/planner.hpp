// SPDX-License-Identifier: Apache-2.0
// The planner behind `zerotrain plan`: for every ZeRO stage and offload combination, fastest
// first (stage 0 > 1 > 2 > 2 + CPU optimizer > 3 > 3 + CPU optimizer > 3 + CPU optimizer and
// parameters > 3 + NVMe optimizer > 3 + NVMe optimizer and parameters), what each GPU, each
// node's CPU memory and its NVMe must hold, and the traffic of a step; the fastest that fits.
//
// Model-state bytes follow zerotrain's engine in the run's precision (Precision: fp32 keeps
// parameters 4, gradients 4, Adam moments 8 bytes per element; 16-bit training keeps parameters
// and gradients in 2 and adds the fp32 master copy to the optimizer states, 2 + 2 + 12),
// including its landing windows, the tied embedding's whole gradient, stage 3's gathered layers
// and the staging buffers of a reduction in another dtype, so a plan can be checked against the
// memory tracker of a real run. With the optimizer offloaded to CPU memory (ZeRO-Offload) the
// device keeps parameters and landing windows, the host the optimizer's fp32 master weights and
// moments, the reduced gradient slice and the buffers the engine stages them through, and
// offload_bytes is what the engine copies between the two per step. With the optimizer on NVMe
// (ZeRO-Infinity) the fp32 master weights and moments move to swap files and the host keeps
// the swap buffers (buffer_count / 3 sets of three sub-group arrays) instead; with the
// parameters on NVMe the slice beyond max_in_cpu is there too, read through buffer_count
// buffers of buffer_size elements; nvme_traffic is what a step reads and writes. The same
// arithmetic (model_states) gives a run's footprint (footprint.hpp) with the run's own
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
  double gpu_comm_buffers = 0;  // reduction scratch and staging (ModelStates::comm_buffers)
  double gpu_activations = 0;
  // Per GPU (rank), bytes of CPU memory (ModelStates' host_*), by the tracker's kinds.
  double cpu_parameters = 0;
  double cpu_gradients = 0;
  double cpu_optimizer_states = 0;
  double cpu_comm_buffers = 0;
  // Per node, bytes.
  double cpu_per_node = 0;  // gpus_per_node x the four above
  double nvme_per_node = 0;
  // Per rank per step.
  // Collective traffic (ring volumes): gradients in the communication dtype, parameters in the
  // training dtype.
  double network_bytes = 0;
  // GPU<->CPU copies (ModelStates::bytes_to_host, bytes_to_device).
  double bytes_to_host = 0;
  double bytes_to_device = 0;
  double offload_bytes = 0;  // GPU<->CPU (the two above) and CPU<->NVMe
  double nvme_seconds = 0;   // NVMe streaming time per step (0 without NVMe)
  bool fits = false;
  std::string limit;  // why it does not fit ("GPU", "CPU", "no NVMe"), empty when it fits
  std::string name() const;
};

/// Bytes per element of what the engine keeps, from the config's fp16/bf16 and
/// communication_data_type. The default is fp32, the engine's precision without either.
struct Precision {
  double training_bytes = 4;       // parameters, gradients and activations (the training dtype)
  double communication_bytes = 4;  // gradient reductions (communication_data_type)
  /// 16-bit training: the optimizer steps an fp32 master copy of its range (4 bytes per
  /// element, counted with the optimizer states as DeepSpeed does) from one sub-group of fp32
  /// unscaled gradients at a time (the optimizer's working memory, counted with its states).
  bool master_copy = false;
  /// Gradients accumulate in data_types.grad_accum_dtype at stages 0-1: in another dtype than
  /// the training dtype, a whole gradient buffer of it besides one of a micro-step's gradients
  /// in the training dtype, and its slice (stage 1) and reductions in it. From stage 2 on the
  /// engine accumulates in the training dtype. 0: the training dtype.
  double accumulation_bytes = 0;
  /// The same at stage 0, where DeepSpeed's default (grad_accum_dtype unset) differs for bf16:
  /// fp32 without ZeRO. 0: accumulation_bytes.
  double stage0_accumulation_bytes = 0;
};

/// fp16 or bf16 training (2 bytes, fp32 master copy), gradients reduced in
/// communication_bytes: 2 when communication_data_type is unset (it follows the training dtype).
Precision mixed_precision(double communication_bytes = 2);

/// "2 + 2 + 12 bytes per parameter": parameters, gradients and optimizer states (Adam's
/// moments and the master copy) of the unpartitioned model, the ZeRO paper's way of counting.
std::string bytes_per_parameter_text(const Precision& precision);

/// The zero_optimization settings that decide what a rank holds, in elements as DeepSpeed
/// counts them, and the precision they are held in. The defaults are those of the configs
/// `zerotrain plan` recommends (buckets of one layer come from plan_settings); a run passes its
/// config's values instead.
struct PlanSettings {
  Precision precision;               // fp32 unless the run trains in 16 bits
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
  double sub_group_size = 1e9;  // also the 16-bit runs' buffer of fp32 unscaled gradients
  /// Smaller pieces when states stream from NVMe: each piece needs pinned staging buffers.
  double nvme_sub_group_size = 1e8;
  /// offload_optimizer.ratio (stage 3): the first int(ratio x sub-groups) of a rank's range
  /// are stepped on the CPU, the rest (and their states) stay on the device.
  double offload_ratio = 1;
  /// offload_param.buffer_count: gathers from host memory in flight, each staging this rank's
  /// part of its tensor on the device; with the parameters on NVMe also the buffers their
  /// reads go through.
  double parameter_buffer_count = 5;
  /// offload_param.buffer_size (elements of one NVMe read buffer) and max_in_cpu (slice
  /// elements kept in host memory; the rest is on NVMe).
  double parameter_buffer_size = 1e8;
  double parameter_max_in_cpu = 1e9;
  /// offload_optimizer.buffer_count: host buffers of one sub-group's array; three make a set.
  double optimizer_buffer_count = 4;
};

/// The settings the recommended configs use for this model: buckets of one layer.
PlanSettings plan_settings(const ModelShape& model);

/// A ZeRO stage and where the optimizer states and the parameters live.
struct Placement {
  int stage = 0;
  Offload optimizer = Offload::None;
  Offload parameters = Offload::None;
};

/// Model states of one rank, bytes, as zerotrain's engine allocates them in the settings'
/// precision, and what it copies between the device and host memory per step.
struct ModelStates {
  // On the device (a GPU; on a CPU-only run the tracked device arena in host memory).
  // Whole, or (stage 3) slice + gathered + persistent; with offload_param no slice, but the
  // staging of this rank's part of each tensor being gathered.
  double parameters = 0;
  // Whole (+ slice), or slice + landing windows + tied gradient; the slice not with the
  // optimizer offloaded (then, with ratio < 1, a staging buffer of one device sub-group).
  double gradients = 0;
  // Adam's two moments; in 16 bits also the fp32 master copy and one sub-group of fp32
  // unscaled gradients. Offloaded: only for the sub-groups left on the device (ratio < 1).
  double optimizer_states = 0;
  // Reduce-scatter scratch while gradients accumulate (or, with the gradient slice in host
  // memory, for every reduction); with communication_data_type other than the training dtype,
  // the staging copies of the buckets in flight and their received parts.
  double comm_buffers = 0;
  double device() const { return parameters + gradients + optimizer_states + comm_buffers; }
  // Offloaded to host memory (pinned with a GPU), by the memory tracker's kinds.
  double host_parameters = 0;        // offload_param's slice, or the new parameters' staging
  double host_gradients = 0;         // the reduced gradient slice
  double host_optimizer_states = 0;  // fp32 master weights and moments (NVMe: swap buffers)
  double host_comm_buffers = 0;      // where a reduced part lands on its way into the slice
  double host() const {
    return host_parameters + host_gradients + host_optimizer_states + host_comm_buffers;
  }
  // On NVMe: the optimizer's fp32 master weights and moments of the offloaded range (12 bytes
  // per element), and with offload_param the slice beyond max_in_cpu (training dtype).
  double nvme = 0;
  double nvme_traffic = 0;  // bytes read from and written to NVMe per step
  // GPU<->CPU copies per step: reduced gradients to the host (communication dtype),
  // parameters back to the device (training dtype; with offload_param every gather's part).
  double bytes_to_host = 0;
  double bytes_to_device = 0;
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
