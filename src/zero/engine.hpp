// SPDX-License-Identifier: Apache-2.0
// The ZeRO training engine, stages 0-3 (DESIGN §4). It owns this rank's parameter, gradient
// and optimizer buffers, runs forward/backward over the micro-batches of a step, reduces
// gradients across ranks, clips, and steps the optimizer on the rank's slice.
//
//   stage  parameters         gradients                      optimizer states
//   0      full               full, all-reduced              full
//   1      full               full, reduce-scattered at the  slice
//                             end of the step into a slice
//   2      full               slice + landing windows,       slice
//                             reduce-scattered in backward
//   3      slice + gathered   as stage 2                     slice
//          layers (cached)
//
// Mixed precision (DESIGN §4): parameters, activations and gradients in the model's dtype (fp32,
// fp16 or bf16); with a 16-bit dtype the optimizer steps an fp32 master copy of the rank's slice
// and writes the rounded result back, gradients are reduced in communication_dtype, and fp16
// runs scale the loss by DeepSpeed's dynamic loss scaler, skipping steps whose gradients
// overflowed (agreed across ranks).
//
// Nothing here reads the config file: the application translates the config into
// EngineSettings.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.hpp"
#include "comm/communicator.hpp"
#include "memory/tracker.hpp"
#include "model/gpt.hpp"
#include "offload/aio.hpp"
#include "optim/lr_schedule.hpp"
#include "optim/optimizer.hpp"
#include "zero/flat_layout.hpp"
#include "zero/layer_map.hpp"
#include "zero/loss_scaler.hpp"

namespace zt::offload {
class SwapFolder;
class SubGroupSwapper;
class DenseSwapFile;
}  // namespace zt::offload

namespace zt::zero {

class GradientReducer;
class ParameterCoordinator;

/// ZeRO-Offload to host memory (DeepSpeed's offload_optimizer / offload_param with device cpu).
struct OffloadSettings {
  /// The optimizer's fp32 master weights, both moments and the reduced gradient slice live in
  /// host memory; the CPU optimizer steps them sub-group by sub-group and the new parameters
  /// stream back to the device. Stages 1-3.
  bool optimizer = false;
  /// Share of the sub-groups stepped on the host; DeepSpeed offloads the first
  /// int(ratio x sub-groups) and keeps the rest (and their states) on the device. Stage 3.
  double ratio = 1.0;
  /// Stage 3: the parameter slice lives in host memory and reaches the device per gather
  /// through at most `parameter_buffer_count` staging buffers of `parameter_buffer_size`
  /// elements; a slice larger than `parameter_max_in_cpu` elements is refused.
  bool parameters = false;
  int parameter_buffer_count = 5;
  std::int64_t parameter_buffer_size = 100'000'000;
  std::int64_t parameter_max_in_cpu = 1'000'000'000;
  /// Page-locked host memory when the rank has a GPU (plain aligned memory otherwise).
  bool pin_memory = true;

  // NVMe (ZeRO-Infinity; DeepSpeed's device "nvme"). `optimizer` / `parameters` above are set
  // too: the CPU optimizer steps the offloaded range, whose states live in swap files.
  /// The fp32 master weights and both moments of the offloaded range live in swap files under
  /// `optimizer_nvme_path`, streamed through `optimizer_buffer_count` host buffers of one
  /// sub-group each (three per sub-group: master, exp_avg, exp_avg_sq). Stages 1-3.
  bool optimizer_nvme = false;
  std::string optimizer_nvme_path;
  int optimizer_buffer_count = 4;
  /// Read sub-group k+1 while k updates / write k back while k+1 updates (needs two or three
  /// buffer sets: buffer_count >= 6 or 9).
  bool pipeline_read = false;
  bool pipeline_write = false;
  /// Stage 3: parameter slice elements beyond `parameter_max_in_cpu` live in a swap file under
  /// `parameter_nvme_path` and are read through the `parameter_buffer_count` buffers per
  /// gather.
  bool parameters_nvme = false;
  std::string parameter_nvme_path;
  /// The `aio` block.
  offload::AioSettings aio;
  /// Names this job's swap folders, <nvme_path>/zerotrain-<swap_tag>/rank<R>: the same on
  /// every rank (the application uses SLURM_JOB_ID, else an id rank 0 draws).
  std::string swap_tag;
};

struct EngineSettings {
  int stage = 0;
  int micro_batch = 1;
  int gradient_accumulation_steps = 1;
  int seq_len = 0;
  double gradient_clipping = 0.0;  // 0 disables
  bool average_gradients = true;   // gradient_allreduce_op "mean"; false: "sum"
  // zero_optimization, in elements as DeepSpeed counts them.
  std::int64_t reduce_bucket_size = 500'000'000;
  std::int64_t allgather_bucket_size = 500'000'000;
  bool overlap_comm = false;
  bool contiguous_gradients = true;
  bool reduce_scatter = true;
  std::int64_t sub_group_size = 1'000'000'000;
  std::int64_t prefetch_bucket_size = 50'000'000;
  std::int64_t param_persistence_threshold = 100'000;
  std::int64_t model_persistence_threshold = INT64_MAX;
  std::int64_t max_live_parameters = 1'000'000'000;
  std::int64_t max_reuse_distance = 1'000'000'000;
  /// Under a device-memory cap, stage 3 keeps at most this share of the room left after its
  /// slices and states for persistent parameters (DeepSpeed has no cap to respect).
  double persistent_share_of_free_device_memory = 0.25;
  optim::OptimizerSettings optimizer;
  optim::ScheduleSettings schedule;
  std::uint64_t seed = 42;
  /// Where the initial parameter values come from: fills out[0 .. end-begin) with elements
  /// [begin, end) of parameter `param` (registration order, zerotrain's layout) in fp32. Empty:
  /// the seeded initialisation. Called for this rank's pieces only (at stage 3 its slice).
  std::function<void(int param, std::int64_t begin, std::int64_t end, float* out)> initial_values;
  /// Parameters, activations and gradients (the model's dtype must match).
  backend::DType dtype = backend::DType::F32;
  /// Where gradients accumulate over micro-steps (data_types.grad_accum_dtype): `dtype`, or fp32
  /// at stages 0-1 (DeepSpeed's BF16_Optimizer: each micro-step's 16-bit gradients are added
  /// into an fp32 buffer).
  backend::DType gradient_accumulation_dtype = backend::DType::F32;
  /// Gradient reductions (communication_data_type); parameters are gathered in `dtype`.
  backend::DType communication_dtype = backend::DType::F32;
  /// fp16: DeepSpeed's loss scaler. Ignored for fp32 and bf16 (loss scale 1).
  LossScalerSettings loss_scaler;
  /// Skip steps whose gradients hold inf or NaN: always for fp16, bf16.check_grad_overflow for
  /// bf16; DeepSpeed never checks fp32.
  bool check_overflow = false;
  OffloadSettings offload;
  /// Test hook: on these steps (1-based, global) rank 0 writes +inf into its first gradient
  /// element after backward, so the overflow path runs end to end.
  std::vector<std::int64_t> inject_overflow_at_steps;
};

/// Seconds spent in each phase of a step (summed over micro-batches) on this rank. Compute
/// phases exclude the time spent waiting for communication inside them, which is counted in
/// `reduction` (gradients, loss) and `gather` (parameters).
struct PhaseTimes {
  double forward = 0;
  double backward = 0;
  double reduction = 0;      // waiting for gradient and loss reductions
  double optimizer = 0;      // clipping and the optimizer step
  double gather = 0;         // waiting for parameter gathers (stage 3) and the post-step all-gather
  double communication = 0;  // time collectives were in flight (busy), hidden or not
  double exposed = 0;        // time this rank was blocked waiting for collectives
  double total = 0;
  PhaseTimes& operator+=(const PhaseTimes& other);
};

struct StepResult {
  std::int64_t step = 0;  // global steps so far, this one included (skipped ones too)
  double loss = 0;        // mean over the global batch
  double grad_norm = 0;   // global norm before clipping (-1 for inf/NaN)
  double lr = 0;          // the learning rate this step used
  bool clipped = false;
  bool skipped = false;     // gradients overflowed: weights, moments and schedule untouched
  double loss_scale = 1.0;  // the scale this step's backward used
  /// Lines rank 0 prints for this step (DeepSpeed's OVERFLOW! line, hysteresis notes).
  std::vector<std::string> messages;
  PhaseTimes phases;
  std::int64_t bytes_sent = 0;  // by this rank during the step (ring volumes, see comm)
  std::int64_t bytes_received = 0;
  /// Offload's copies between the device and host memory during the step.
  std::int64_t bytes_to_host = 0;
  std::int64_t bytes_to_device = 0;
  /// NVMe: bytes this rank read from and wrote to its swap files during the step, and the
  /// seconds the optimizer step waited for them.
  std::int64_t nvme_bytes_read = 0;
  std::int64_t nvme_bytes_written = 0;
  double nvme_wait_seconds = 0;
};

/// What the engine holds and did, for banners, summaries and tests.
struct EngineReport {
  int stage = 0;
  std::int64_t parameters = 0;  // sum of numel
  std::int64_t padded_elements = 0;
  std::int64_t slice_elements = 0;         // this rank's partition
  std::int64_t landing_elements = 0;       // stage 2/3 gradient windows and shared-gradient buffers
  std::int64_t window_elements = 0;        // one landing window
  std::int64_t persistent_parameters = 0;  // stage 3
  std::int64_t persistent_elements = 0;
  bool persistence_limited_by_device_cap = false;
  std::int64_t peak_live_elements = 0;  // stage 3: most gathered non-persistent elements
  std::int64_t gathers = 0;
  std::int64_t prefetches = 0;
  std::int64_t optimizer_state_bytes = 0;  // moments, and the fp32 master copy in 16 bits
  std::int64_t sub_groups = 1;
  // Offload: sub-groups (and elements of the optimizer's range) stepped in host memory.
  bool offload_optimizer = false;
  bool offload_parameters = false;
  std::int64_t host_sub_groups = 0;
  std::int64_t host_elements = 0;
  std::string host_memory;  // pinned or pageable, and why
  // NVMe: this rank's swap folder, the I/O interface and whether O_DIRECT is used (and why not).
  bool optimizer_nvme = false;
  bool parameters_nvme = false;
  std::int64_t nvme_parameter_elements = 0;  // of the slice, beyond max_in_cpu
  std::string swap_folder;
  std::string aio_backend;   // BackendChoice::description
  std::string aio_direct;    // "O_DIRECT", or "buffered: <reason>"
  int swap_buffer_sets = 0;  // optimizer: sub-groups in host memory at once
  backend::DType dtype = backend::DType::F32;
  backend::DType communication_dtype = backend::DType::F32;
  std::int64_t skipped_steps = 0;
};

/// The arrays a checkpoint holds for the flat buffer: the parameters in the model's dtype, the
/// fp32 master weights (16-bit runs only: in fp32 the parameters are the master) and the two
/// moments of Adam and LAMB.
enum class StateArray { Parameters, Master, ExpAvg, ExpAvgSq };
/// "parameters", "fp32_master", "exp_avg", "exp_avg_sq".
const char* state_array_name(StateArray array);

/// One piece of one array, global flat offsets [begin, end), in host memory, of `dtype`.
using StateSink = std::function<void(StateArray array, std::int64_t begin, std::int64_t end,
                                     const void* data, backend::DType dtype)>;
/// Fills global flat elements [begin, end) of `array` into host memory `data` (of `dtype`).
using StateSource = std::function<void(StateArray array, std::int64_t begin, std::int64_t end,
                                       void* data, backend::DType dtype)>;

/// The engine's counters a checkpoint restores with the arrays.
struct EngineCounters {
  std::int64_t global_steps = 0;
  std::int64_t optimizer_steps = 0;
  bool has_loss_scaler = false;  // fp16
  LossScalerState loss_scaler;
};

/// Fills one micro-batch (micro_batch x seq_len inputs and targets) for micro step `micro_step`
/// of the current optimizer step.
using BatchFiller =
    std::function<void(int micro_step, std::int32_t* inputs, std::int32_t* targets)>;

class Engine {
 public:
  /// Collective: every rank of `comm` constructs its engine with the same settings.
  /// Parameters are initialised from `settings.seed` with values that depend only on each
  /// element's place in its tensor, never on the world size or stage; at stage 3 each rank
  /// initialises only its slice (no rank ever holds the whole model).
  Engine(model::Gpt& model, comm::Communicator& comm, const EngineSettings& settings);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  /// One optimizer step over gradient_accumulation_steps micro-batches. Collective. Throws
  /// LossScaleAtMinimumError on every rank when fp16 overflows at the minimum loss scale.
  StepResult train_step(const BatchFiller& fill);

  const FlatLayout& layout() const { return layout_; }
  const EngineSettings& settings() const { return settings_; }
  /// Steps taken, skipped ones included (DeepSpeed's global_steps).
  std::int64_t applied_steps() const { return global_steps_; }
  /// Steps whose update was applied (the optimizer's and the schedule's step count).
  std::int64_t optimizer_steps() const { return optimizer_steps_; }
  std::int64_t skipped_steps() const { return global_steps_ - optimizer_steps_; }
  double loss_scale() const;
  EngineReport report() const;

  /// The arrays this run's checkpoints hold (StateArray order).
  std::vector<StateArray> state_arrays() const;
  /// Hands this rank's partition [slice_begin(rank), slice_end(rank)) of every array to `sink`,
  /// array by array in increasing offsets, in pieces of at most `piece_elements`, read from
  /// wherever they live (device, host memory, swap files). Every stage writes the same
  /// partitions, so a checkpoint does not depend on the stage that wrote it. Not collective.
  void save_state(const StateSink& sink, std::int64_t piece_elements = std::int64_t{1} << 22);
  /// Replaces every array this rank holds with values from `source`: for stage 0 the whole
  /// flat buffer, else this rank's slice (stages 1-2 hold all parameters but load their slice).
  /// Not collective, so that a rank's failure can be agreed on before finish_load().
  void load_state(const StateSource& source, std::int64_t piece_elements = std::int64_t{1} << 22);
  /// Collective, after load_state on every rank: stages 1-2 all-gather the parameters, stage 3
  /// gathers its persistent parameters again.
  void finish_load();
  EngineCounters counters() const;
  void set_counters(const EngineCounters& counters);

  /// Collective: the full values of parameter `index` (registration order) into `out`
  /// (numel floats; in 16-bit runs the fp32 master weights) on every rank. Memory proportional
  /// to the tensor, not the model.
  void gather_parameter(int index, float* out);
  /// Collective: every parameter, back to back in registration order (no padding). For tests
  /// and small models: it allocates the whole model.
  std::vector<float> gather_all_parameters();

 private:
  class Hooks;
  void allocate_model_states();
  std::string model_state_summary() const;
  void initialise_parameters();
  void reduce_gradients_stage0();
  /// The global gradient norm (of the scaled gradients; -1 when not finite) and whether any
  /// rank's gradients overflowed.
  double gradient_norm(bool& overflow);
  void optimizer_step(const optim::StepHyper& hyper, double grad_multiplier);
  /// The offloaded sub-groups' update (first pass) or LAMB's second pass, writing the new
  /// parameters and streaming them to the device.
  void host_optimizer_pass(bool first_pass, float grad_multiplier);
  void initialise_host_master();
  /// This rank's part of [begin, end) of the fp32 master weights, staged at the compute place.
  backend::Buffer stage_master_part(std::int64_t begin, std::int64_t end);
  /// NVMe: the swap folders, the I/O interface and the aio engine; a problem on any rank is
  /// every rank's error.
  void set_up_nvme();
  /// This rank's parameter slice elements [begin, end) into host memory `out` (model dtype),
  /// from host memory or the parameter swap file.
  void read_slice_parameters(std::int64_t begin, std::int64_t end, void* out);
  /// New parameters [begin, end) of the slice, in the model's dtype in host memory: to the
  /// host part of the slice and the parameter swap file.
  void store_slice_parameters(std::int64_t begin, std::int64_t end, const void* values);
  void all_gather_parameters();
  backend::View slice_parameters();
  backend::View slice_gradients();
  void inject_overflow();

  bool mixed() const { return settings_.dtype != backend::DType::F32; }

  model::Gpt& model_;
  comm::Communicator& comm_;
  backend::Backend& backend_;
  EngineSettings settings_;
  FlatLayout layout_;
  LayerMap layers_;
  std::int64_t slice_begin_ = 0;
  backend::Buffer params_full_;   // stages 0-2, model dtype
  backend::Buffer params_slice_;  // stage 3, model dtype
  backend::Buffer grads_full_;    // stages 0-1, gradient accumulation dtype
  backend::Buffer grads_slice_;   // stages 1-3, gradient accumulation dtype
  backend::Buffer micro_grads_;   // stages 0-1 accumulating in fp32: one micro-step, model dtype
  backend::Buffer master_;        // 16-bit runs: fp32 copy of the range's device part
  backend::Buffer master_grads_;  // 16-bit runs: one sub-group of unscaled fp32 gradients
  // Offload: the optimizer's range [0, host_elements_) is stepped in host memory.
  std::int64_t host_elements_ = 0;
  backend::Buffer host_master_;          // fp32 master weights of [0, host_elements_)
  backend::Buffer param_staging_[2];     // host: new parameters on their way to the device
  backend::Buffer device_grad_staging_;  // device sub-groups' gradients from host memory
  std::string host_memory_;
  // NVMe. Destroyed in reverse: swappers (closing their files), folders (removing them), aio.
  std::unique_ptr<offload::AioEngine> aio_;
  std::vector<std::unique_ptr<offload::SwapFolder>> swap_folders_;
  std::unique_ptr<offload::SubGroupSwapper> state_swapper_;  // fp32 master, exp_avg, exp_avg_sq
  std::unique_ptr<offload::DenseSwapFile> parameter_swap_;   // slice [params_in_host_, slice)
  std::int64_t params_in_host_ = 0;  // stage 3: slice elements in params_slice_
  std::string aio_backend_;
  std::string aio_direct_;
  double nvme_waited_ = 0;              // seconds the optimizer waited for swap transfers
  std::unique_ptr<LossScaler> scaler_;  // fp16 only
  model::ParamTable param_table_;
  model::GradTable grad_table_;
  std::vector<optim::TensorSegment> segments_;
  std::unique_ptr<optim::Optimizer> optimizer_;
  std::unique_ptr<optim::LrSchedule> schedule_;
  std::unique_ptr<GradientReducer> reducer_;
  std::unique_ptr<ParameterCoordinator> coordinator_;
  std::unique_ptr<Hooks> hooks_;
  memory::TrackedBuffer<std::int32_t> inputs_;
  memory::TrackedBuffer<std::int32_t> targets_;
  std::int64_t global_steps_ = 0;
  std::int64_t optimizer_steps_ = 0;
  bool persistence_limited_ = false;
  double engine_waited_ = 0;  // seconds blocked on collectives issued here (not in hooks)
};

}  // namespace zt::zero
