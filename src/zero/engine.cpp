// SPDX-License-Identifier: Apache-2.0
#include "zero/engine.hpp"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>

#include "memory/format.hpp"
#include "offload/host_memory.hpp"
#include "offload/swapper.hpp"
#include "optim/gradient_clipping.hpp"
#include "runtime/error.hpp"
#include "runtime/timer.hpp"
#include "zero/gradient_reducer.hpp"
#include "zero/parameter_coordinator.hpp"
#include "zero/range_gather.hpp"

namespace zt::zero {

using backend::Buffer;
using backend::ConstView;
using backend::DType;
using backend::Place;
using backend::View;

PhaseTimes& PhaseTimes::operator+=(const PhaseTimes& other) {
  forward += other.forward;
  backward += other.backward;
  reduction += other.reduction;
  optimizer += other.optimizer;
  gather += other.gather;
  communication += other.communication;
  exposed += other.exposed;
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

std::vector<std::vector<int>> layer_parameters(const model::Gpt& model) {
  std::vector<std::vector<int>> layers;
  for (int layer = 0; layer < model.num_layers_with_hooks(); ++layer)
    layers.push_back(model.parameters_of_layer(layer));
  return layers;
}

std::int64_t clamp_bucket(std::int64_t elements) {
  // MPI counts are int; a bucket of zero elements would never finish.
  return std::clamp<std::int64_t>(elements, 1, INT_MAX / 2);
}

}  // namespace

/// Routes the model's per-layer hooks to the parameter coordinator (stage 3) and the gradient
/// reducer (stages 2-3 always, stage 1 in the last micro-step with overlap_comm).
class Engine::Hooks final : public model::LayerHooks {
 public:
  explicit Hooks(Engine& engine) : engine_(engine) {}
  bool reduce_in_backward = false;

  void before_forward(int layer) override {
    if (engine_.coordinator_)
      engine_.coordinator_->before_layer(layer, false, engine_.param_table_);
  }
  void after_forward(int layer) override {
    if (engine_.coordinator_) engine_.coordinator_->after_layer(layer, false);
  }
  void before_backward(int layer) override {
    if (engine_.coordinator_) engine_.coordinator_->before_layer(layer, true, engine_.param_table_);
    if (reduce_in_backward) engine_.reducer_->before_backward(layer, engine_.grad_table_);
  }
  void after_backward(int layer) override {
    if (reduce_in_backward) engine_.reducer_->after_backward(layer);
    if (engine_.coordinator_) engine_.coordinator_->after_layer(layer, true);
  }

 private:
  Engine& engine_;
};

Engine::Engine(model::Gpt& model, comm::Communicator& comm, const EngineSettings& settings)
    : model_(model),
      comm_(comm),
      backend_(model.backend()),
      settings_(settings),
      layout_(entries_of(model), comm.size()),
      layers_(build_layer_map(layout_, layer_parameters(model))),
      slice_begin_(layout_.slice_begin(comm.rank())) {
  if (settings_.stage < 0 || settings_.stage > 3)
    throw runtime::UserError(
        runtime::concat("zero_optimization.stage must be 0, 1, 2 or 3, not ", settings_.stage));
  if (settings_.micro_batch < 1 || settings_.gradient_accumulation_steps < 1 ||
      settings_.seq_len < 1)
    throw std::invalid_argument("engine: micro batch, accumulation steps and seq_len must be >= 1");
  settings_.reduce_bucket_size = clamp_bucket(settings_.reduce_bucket_size);
  settings_.allgather_bucket_size = clamp_bucket(settings_.allgather_bucket_size);
  settings_.sub_group_size = std::max<std::int64_t>(1, settings_.sub_group_size);
  if (model_.dtype() != settings_.dtype)
    throw std::invalid_argument(
        runtime::concat("engine: the model computes in ", kernels::dtype_name(model_.dtype()),
                        ", the engine was set up for ", kernels::dtype_name(settings_.dtype)));
  if (settings_.dtype == DType::F16) scaler_ = std::make_unique<LossScaler>(settings_.loss_scaler);
  if (settings_.gradient_accumulation_dtype != settings_.dtype &&
      (settings_.gradient_accumulation_dtype != DType::F32 || settings_.stage > 1))
    throw runtime::UserError(runtime::concat(
        "not supported yet: gradients accumulated in ",
        kernels::dtype_name(settings_.gradient_accumulation_dtype), " while training in ",
        kernels::dtype_name(settings_.dtype), " at ZeRO stage ", settings_.stage,
        " (fp32 accumulation of 16-bit gradients is built for stages 0 and 1)"));

  const OffloadSettings& offload = settings_.offload;
  if (offload.optimizer && settings_.stage == 0)
    throw runtime::UserError(
        "zero_optimization.offload_optimizer needs ZeRO stage 1, 2 or 3 (ZeRO-Offload steps the "
        "rank's partition of the optimizer states)");
  if (offload.parameters && settings_.stage != 3)
    throw runtime::UserError(runtime::concat(
        "zero_optimization.offload_param needs ZeRO stage 3 (only stage 3 partitions the "
        "parameters), the config has stage ",
        settings_.stage));
  if (offload.ratio < 1.0 && settings_.stage != 3)
    throw runtime::UserError(
        "zero_optimization.offload_optimizer.ratio < 1: partial offloading needs ZeRO stage 3");
  // Parameters in host memory are written by the CPU optimizer; a device optimizer would have
  // to send every update through a staging buffer, which is not built.
  if (offload.parameters && !offload.optimizer)
    throw runtime::UserError(
        "not supported yet: zero_optimization.offload_param without offload_optimizer (set "
        "offload_optimizer.device to \"cpu\" as well)");
  if (offload.parameters && offload.ratio < 1.0)
    throw runtime::UserError(
        "not supported yet: zero_optimization.offload_optimizer.ratio < 1 together with "
        "offload_param (the device's sub-groups would update parameters in host memory)");
  if (offload.parameters && !offload.parameters_nvme &&
      layout_.slice_elements() > offload.parameter_max_in_cpu)
    throw runtime::UserError(runtime::concat(
        "zero_optimization.offload_param.max_in_cpu = ", offload.parameter_max_in_cpu,
        " elements, but rank ", comm_.rank(), "'s parameter slice holds ", layout_.slice_elements(),
        ": with device cpu every slice lives in host memory; raise "
        "max_in_cpu or use more ranks"));
  if (offload.optimizer_nvme && !offload.optimizer)
    throw std::invalid_argument("engine: optimizer_nvme needs offload.optimizer");
  if (offload.parameters_nvme && !offload.parameters)
    throw std::invalid_argument("engine: parameters_nvme needs offload.parameters");
  if (offload.optimizer_nvme) {
    // Three host buffers per sub-group in flight (fp32 master, exp_avg, exp_avg_sq); one set
    // more for each direction that overlaps the update.
    const int sets = offload.optimizer_buffer_count / 3;
    const int needed = 1 + (offload.pipeline_read ? 1 : 0) + (offload.pipeline_write ? 1 : 0);
    if (sets < needed)
      throw runtime::UserError(runtime::concat(
          "zero_optimization.offload_optimizer.buffer_count = ", offload.optimizer_buffer_count,
          " is too small: NVMe offload keeps 3 buffers per sub-group (fp32 master, exp_avg, "
          "exp_avg_sq) and needs ",
          needed, " sets of them", needed > 1 ? " with pipeline_read / pipeline_write" : "",
          "; set buffer_count to at least ", 3 * needed));
  }
  if (offload.optimizer || offload.parameters)
    host_memory_ = offload::configure_host_memory(offload.pin_memory).description;
  if (offload.optimizer) {
    // DeepSpeed steps the first int(ratio x sub-groups) on the CPU, the rest on the device.
    const std::int64_t range = layout_.slice_elements();
    const std::int64_t piece = settings_.sub_group_size;
    const std::int64_t sub_groups = (range + piece - 1) / piece;
    const auto host_groups =
        offload.ratio >= 1.0
            ? sub_groups
            : static_cast<std::int64_t>(offload.ratio * static_cast<double>(sub_groups));
    host_elements_ = std::min(range, host_groups * piece);
  }
  params_in_host_ = offload.parameters_nvme
                        ? std::min(layout_.slice_elements(), offload.parameter_max_in_cpu)
                        : layout_.slice_elements();
  if (offload.optimizer_nvme || offload.parameters_nvme) set_up_nvme();

  const std::int64_t n = layout_.padded_elements();
  const std::int64_t slice = layout_.slice_elements();
  const int stage = settings_.stage;
  const std::size_t count = model_.parameters().size();
  param_table_.assign(count, ConstView{});
  grad_table_.assign(count, View{});

  try {
    allocate_model_states();
  } catch (const memory::OutOfMemory& error) {
    throw memory::OutOfMemory(runtime::concat(model_state_summary(), ": ", error.what()));
  }
  initialise_parameters();

  for (std::size_t p = 0; p < count; ++p) {
    const auto& entry = layout_.entries()[p];
    if (stage < 3) param_table_[p] = params_full_.slice(entry.offset, entry.numel);
    if (stage < 2)
      grad_table_[p] =
          (micro_grads_.empty() ? grads_full_ : micro_grads_).slice(entry.offset, entry.numel);
  }

  // The optimizer sees the whole buffer at stage 0 and this rank's slice from stage 1 on.
  const std::int64_t step_begin = stage == 0 ? 0 : slice_begin_;
  const std::int64_t step_end = stage == 0 ? n : slice_begin_ + slice;
  for (const auto& piece : layout_.pieces_in(step_begin, step_end)) {
    const auto& entry = layout_.entries()[static_cast<std::size_t>(piece.entry)];
    segments_.push_back(optim::TensorSegment{piece.global_offset - step_begin, piece.length,
                                             piece.entry, piece.length == entry.numel});
  }
  try {
    const std::int64_t range = step_end - step_begin;
    const std::int64_t piece = settings_.sub_group_size;
    const std::int64_t h = host_elements_;
    optimizer_ = optim::make_optimizer(settings_.optimizer, range,
                                       optim::StatePlacement{h, offload.optimizer_nvme});
    const View params = slice_parameters();
    if (h > 0) {
      if (!offload.optimizer_nvme)
        host_master_ = Buffer(DType::F32, h, Place::Host, memory::Kind::OptimizerStates);
      // New parameters reach device-resident parameters (or the parameter swap file) through
      // two buffers, so that one sub-group's copy overlaps the next one's update.
      if (params.place != Place::Host || parameter_swap_) {
        const int buffers = h > piece ? 2 : 1;
        for (int b = 0; b < buffers; ++b)
          param_staging_[b] =
              Buffer(settings_.dtype, std::min(piece, h), Place::Host, memory::Kind::Parameters);
      }
      initialise_host_master();
    }
    if (mixed() && range > h) {
      // fp32 master weights of the optimizer's range, from the (rounded) 16-bit parameters as
      // DeepSpeed takes them; DeepSpeed counts them with the optimizer states (12 bytes per
      // parameter with Adam's moments).
      master_ =
          Buffer(DType::F32, range - h, backend_.compute_place(), memory::Kind::OptimizerStates);
      backend_.convert(params.slice(h, range - h), master_.view());
      // The optimizer's fp32 view of one sub-group's gradients (DeepSpeed's fp32 partition
      // gradient): the optimizer's working memory, so counted with its states.
      master_grads_ = Buffer(DType::F32, std::min(piece, range - h), backend_.compute_place(),
                             memory::Kind::OptimizerStates);
    }
    if (range > h && slice_gradients().place != backend_.compute_place())
      device_grad_staging_ =
          Buffer(settings_.gradient_accumulation_dtype, std::min(piece, range - h),
                 backend_.compute_place(), memory::Kind::Gradients);
  } catch (const memory::OutOfMemory& error) {
    throw memory::OutOfMemory(runtime::concat(model_state_summary(), ": ", error.what()));
  }
  schedule_ = optim::make_schedule(settings_.schedule, settings_.optimizer.lr);

  if (stage >= 1) {
    ReducerSettings reducer;
    reducer.bucket_elements = settings_.reduce_bucket_size;
    reducer.overlap_comm = settings_.overlap_comm;
    reducer.contiguous_gradients = settings_.contiguous_gradients;
    reducer.reduce_scatter = settings_.reduce_scatter;
    reducer.average = settings_.average_gradients;
    reducer.communication_dtype = settings_.communication_dtype;
    reducer_ = std::make_unique<GradientReducer>(
        stage == 1 ? GradientReducer::Source::FullBuffer : GradientReducer::Source::Windows,
        layout_, layers_, comm_, backend_, reducer, stage == 1 ? grads_full_.view() : View{},
        grads_slice_.view());
  }
  if (stage == 3) {
    CoordinatorSettings coordinator;
    coordinator.prefetch_bucket_size = settings_.prefetch_bucket_size;
    coordinator.param_persistence_threshold = settings_.param_persistence_threshold;
    coordinator.model_persistence_threshold = settings_.model_persistence_threshold;
    const std::int64_t limit = memory::Tracker::instance().device_limit();
    if (limit > 0) {
      // Persistent parameters are replicated: under a cap they must leave room for the
      // gathered layers, landing windows and activations. Every rank must agree on the set.
      const double room = static_cast<double>(
          limit - memory::Tracker::instance().total(memory::Place::Device).current);
      const double budget = comm_.all_reduce_scalar(
          std::max(0.0, room * settings_.persistent_share_of_free_device_memory /
                            kernels::size_of(settings_.dtype)),
          comm::ReduceOp::Min);
      if (budget < static_cast<double>(coordinator.model_persistence_threshold)) {
        coordinator.model_persistence_threshold = static_cast<std::int64_t>(budget);
        persistence_limited_ = true;
      }
    }
    coordinator.max_live_parameters = settings_.max_live_parameters;
    coordinator.max_reuse_distance = settings_.max_reuse_distance;
    coordinator.staging_buffers = offload.parameter_buffer_count;
    coordinator.staging_elements = offload.parameter_buffer_size;
    View slice_view = params_slice_.view();
    if (parameter_swap_) {
      // The slice's first params_in_host_ elements are in host memory, the rest swapped.
      slice_view = View{slice_view.data, params_in_host_, settings_.dtype, Place::Host};
      coordinator.swapped_elements = layout_.slice_elements() - params_in_host_;
      coordinator.read_swapped = [this](std::int64_t begin, std::int64_t end, void* out) {
        runtime::ScopedTimer waiting(nvme_waited_);
        parameter_swap_->read(begin - params_in_host_, end - params_in_host_, out);
      };
    }
    coordinator_ = std::make_unique<ParameterCoordinator>(layout_, layers_, comm_, backend_,
                                                          coordinator, slice_view);
    coordinator_->refresh_persistent();
    reducer_->set_memory_relief([this] { return coordinator_->release_one_cached(); });
  }
  hooks_ = std::make_unique<Hooks>(*this);

  const std::int64_t tokens = static_cast<std::int64_t>(settings_.micro_batch) * settings_.seq_len;
  inputs_ = memory::TrackedBuffer<std::int32_t>(static_cast<std::size_t>(tokens),
                                                memory::Place::Host, memory::Kind::Activations);
  targets_ = memory::TrackedBuffer<std::int32_t>(static_cast<std::size_t>(tokens),
                                                 memory::Place::Host, memory::Kind::Activations);
}

Engine::~Engine() = default;

void Engine::allocate_model_states() {
  const std::int64_t n = layout_.padded_elements();
  const std::int64_t slice = layout_.slice_elements();
  const int stage = settings_.stage;
  const DType dtype = settings_.dtype;
  const auto place = backend_.compute_place();
  const OffloadSettings& offload = settings_.offload;
  if (stage < 3)
    params_full_ = Buffer(dtype, n, place, memory::Kind::Parameters);
  else
    params_slice_ = Buffer(dtype, params_in_host_, offload.parameters ? Place::Host : place,
                           memory::Kind::Parameters);
  const DType accumulation = settings_.gradient_accumulation_dtype;
  if (stage < 2) grads_full_ = Buffer(accumulation, n, place, memory::Kind::Gradients);
  if (stage < 2 && accumulation != dtype)
    micro_grads_ = Buffer(dtype, n, place, memory::Kind::Gradients);
  // Offloaded, reduced gradients stream into host memory, where the CPU optimizer reads them.
  if (stage >= 1)
    grads_slice_ = Buffer(accumulation, slice, offload.optimizer ? Place::Host : place,
                          memory::Kind::Gradients);
}

std::string Engine::model_state_summary() const {
  // Model states per rank (bytes per element: parameters and gradients 4 in fp32, 2 in 16 bits;
  // Adam moments 8, plus a 4-byte fp32 master copy in 16 bits), without buckets, gathered
  // layers and activations.
  const double n = static_cast<double>(layout_.padded_elements());
  const double ranks = comm_.size();
  const double element = kernels::size_of(settings_.dtype);
  const double state = mixed() ? 12 : 8;
  // Offloaded to host memory: the optimizer's states and gradient slice, and (offload_param)
  // the parameter slice.
  const bool host_states = settings_.offload.optimizer;
  const bool host_parameters = settings_.offload.parameters;
  auto per_rank = [&](int stage) {
    const double parameters =
        stage == 3 ? (host_parameters ? 0.0 : element * n / ranks) : element * n;
    const double slice_gradients = host_states && stage >= 1 ? 0.0 : element * n / ranks;
    const double gradients = stage == 0   ? element * n
                             : stage == 1 ? element * n + slice_gradients
                                          : slice_gradients;
    const double states = host_states && stage >= 1 ? 0.0
                          : stage == 0              ? state * n
                                                    : state * n / ranks;
    return static_cast<std::int64_t>(parameters + gradients + states);
  };
  std::string text = runtime::concat(
      "ZeRO stage ", settings_.stage, " on ", comm_.size(), " ranks keeps ",
      memory::format_bytes(per_rank(settings_.stage)), " of ",
      mixed() ? "mixed-precision (" + std::string(kernels::dtype_name(settings_.dtype)) + ")"
              : std::string("fp32"),
      " model states per rank on the device for ", layout_.unpadded_elements(), " parameters",
      host_parameters ? " (optimizer states, gradient and parameter slices offloaded)"
      : host_states   ? " (optimizer states and gradient slice offloaded)"
                      : "");
  if (settings_.stage < 3 && !host_states)
    text += runtime::concat(" (stage 3 would keep ", memory::format_bytes(per_rank(3)), ")");
  return text;
}

void Engine::initialise_parameters() {
  const auto& parameters = model_.parameters();
  // Values in fp32 (they depend only on each element's place in its tensor), rounded once into
  // the model's dtype: memory proportional to the largest tensor piece, not the model.
  std::vector<float> values;
  auto initialise = [&](int p, std::int64_t begin, std::int64_t end, View out) {
    const auto& info = parameters[static_cast<std::size_t>(p)];
    const auto fill = [&](float* target) {
      if (settings_.initial_values)
        settings_.initial_values(p, begin, end, target);
      else
        model::init_parameter_range(info, p, settings_.seed, begin, end, target);
    };
    if (out.dtype == DType::F32) {
      fill(out.as<float>());
      return;
    }
    values.resize(static_cast<std::size_t>(end - begin));
    fill(values.data());
    // Host-memory values: a parameter slice offloaded to host memory is written in place.
    backend_.convert(ConstView{values.data(), end - begin, DType::F32, out.place}, out);
  };
  if (settings_.stage < 3) {
    for (std::size_t p = 0; p < parameters.size(); ++p) {
      const auto& entry = layout_.entries()[p];
      initialise(static_cast<int>(p), 0, entry.numel,
                 params_full_.slice(entry.offset, entry.numel));
    }
    return;
  }
  // zero_init: each rank initialises only the elements of its slice; elements beyond the host
  // part go to the parameter swap file a bounded piece at a time.
  constexpr std::int64_t kSwapPiece = std::int64_t{1} << 22;
  Buffer swap_values;
  for (const auto& piece :
       layout_.pieces_in(slice_begin_, slice_begin_ + layout_.slice_elements())) {
    const std::int64_t first = piece.global_offset - slice_begin_;
    const std::int64_t in_host = std::clamp<std::int64_t>(params_in_host_ - first, 0, piece.length);
    if (in_host > 0)
      initialise(piece.entry, piece.offset_in_entry, piece.offset_in_entry + in_host,
                 params_slice_.slice(first, in_host));
    for (std::int64_t done = in_host; done < piece.length; done += kSwapPiece) {
      const std::int64_t length = std::min(kSwapPiece, piece.length - done);
      if (swap_values.empty())
        swap_values = Buffer(settings_.dtype, kSwapPiece, Place::Host, memory::Kind::Other);
      initialise(piece.entry, piece.offset_in_entry + done, piece.offset_in_entry + done + length,
                 swap_values.slice(0, length));
      parameter_swap_->write(first + done - params_in_host_,
                             first + done + length - params_in_host_, swap_values.view().data);
    }
  }
  if (parameter_swap_) parameter_swap_->flush();
}

void Engine::set_up_nvme() {
  const OffloadSettings& offload = settings_.offload;
  const int rank = comm_.rank();
  std::string problem;
  bool input_problem = false;
  try {
    std::vector<std::string> roots;
    auto folder_for = [&](const std::string& root, const std::string& key) -> offload::SwapFolder& {
      for (std::size_t f = 0; f < roots.size(); ++f)
        if (roots[f] == root) return *swap_folders_[f];
      input_problem = true;  // a missing or unwritable nvme_path is the user's to fix
      swap_folders_.push_back(
          std::make_unique<offload::SwapFolder>(root, settings_.offload.swap_tag, rank, key));
      input_problem = false;
      roots.push_back(root);
      return *swap_folders_.back();
    };
    offload::SwapFolder* optimizer_folder = nullptr;
    offload::SwapFolder* parameter_folder = nullptr;
    if (offload.optimizer_nvme)
      optimizer_folder =
          &folder_for(offload.optimizer_nvme_path, "zero_optimization.offload_optimizer.nvme_path");
    if (offload.parameters_nvme)
      parameter_folder =
          &folder_for(offload.parameter_nvme_path, "zero_optimization.offload_param.nvme_path");
    const offload::SwapFolder& probe_folder =
        optimizer_folder != nullptr ? *optimizer_folder : *parameter_folder;
    // A probe of a few full queues: enough to rank the interfaces, short at start-up.
    const std::int64_t probe = std::clamp<std::int64_t>(
        offload.aio.block_size * offload.aio.queue_depth * offload.aio.intra_op_parallelism * 4,
        std::int64_t{1} << 20, std::int64_t{32} << 20);
    const auto choice = offload::choose_io_backend(offload.aio, probe_folder.path(), probe);
    offload::AioSettings aio = offload.aio;
    aio.backend = choice.chosen;
    aio_backend_ = choice.description;
    aio_ = std::make_unique<offload::AioEngine>(aio);

    const offload::AioFile* first_file = nullptr;
    if (optimizer_folder != nullptr && host_elements_ > 0) {
      offload::SubGroupLayout layout;
      layout.elements = host_elements_;
      layout.group_elements = std::min(settings_.sub_group_size, host_elements_);
      layout.arrays = {"fp32", "exp_avg", "exp_avg_sq"};  // DeepSpeed's names
      offload::SubGroupSwapSettings swap;
      swap.buffer_sets = offload.optimizer_buffer_count / 3;
      swap.pipeline_read = offload.pipeline_read;
      swap.pipeline_write = offload.pipeline_write;
      state_swapper_ =
          std::make_unique<offload::SubGroupSwapper>(*aio_, *optimizer_folder, layout, swap, rank);
      first_file = &state_swapper_->file(0);
    }
    const std::int64_t swapped_parameters = layout_.slice_elements() - params_in_host_;
    if (parameter_folder != nullptr && swapped_parameters > 0) {
      // The largest transfer: an optimizer sub-group's new parameters, this rank's part of a
      // tensor for a gather, or a piece of the initialisation.
      std::int64_t largest = std::min(settings_.sub_group_size, layout_.slice_elements());
      for (const auto& entry : layout_.entries())
        largest = std::max(
            largest, own_part_of(layout_, rank, entry.offset, entry.offset + entry.numel).size());
      largest = std::max(largest, std::int64_t{1} << 22);
      parameter_swap_ = std::make_unique<offload::DenseSwapFile>(
          *aio_, *parameter_folder,
          std::string(kernels::dtype_name(settings_.dtype)) + "params.swp", swapped_parameters,
          static_cast<int>(kernels::size_of(settings_.dtype)), largest, rank);
      if (first_file == nullptr) first_file = &parameter_swap_->file();
    }
    if (first_file != nullptr)
      aio_direct_ =
          first_file->direct() ? "O_DIRECT" : "buffered: " + first_file->fallback_reason();
  } catch (const std::exception& error) {
    problem = error.what();
  }
  // Every rank's verdict: one rank's full disk or missing folder stops all of them, with its
  // message, before anything else is collective.
  const double failing = comm_.all_reduce_scalar(
      problem.empty() ? std::numeric_limits<double>::max() : static_cast<double>(rank),
      comm::ReduceOp::Min);
  if (failing == std::numeric_limits<double>::max()) return;
  const int root = static_cast<int>(failing);
  std::int64_t header[2] = {static_cast<std::int64_t>(problem.size()), input_problem ? 1 : 0};
  comm_.broadcast(header, 2, comm::DataType::Int64, root);
  std::vector<std::int32_t> characters(static_cast<std::size_t>(header[0]));
  if (rank == root)
    for (std::size_t c = 0; c < characters.size(); ++c)
      characters[c] = static_cast<unsigned char>(problem[c]);
  comm_.broadcast(characters.data(), header[0], comm::DataType::Int32, root);
  std::string message(characters.size(), ' ');
  for (std::size_t c = 0; c < characters.size(); ++c) message[c] = static_cast<char>(characters[c]);
  // The same message on every rank (it names the rank and path), so it is printed once.
  state_swapper_.reset();
  parameter_swap_.reset();
  swap_folders_.clear();  // nothing of this job stays behind
  if (header[1] != 0) throw runtime::UserError(message);
  throw std::runtime_error(message);
}

void Engine::read_slice_parameters(std::int64_t begin, std::int64_t end, void* out) {
  const std::int64_t size = kernels::size_of(settings_.dtype);
  auto* bytes = static_cast<std::byte*>(out);
  const View params = slice_parameters();
  const std::int64_t host_end = std::min(end, params_in_host_);
  if (host_end > begin) {
    const View source = params.slice(begin, host_end - begin);
    backend_.copy_async(source, View{bytes, host_end - begin, settings_.dtype, Place::Host}).wait();
  }
  const std::int64_t swap_begin = std::max(begin, params_in_host_);
  if (end > swap_begin)
    parameter_swap_->read(swap_begin - params_in_host_, end - params_in_host_,
                          bytes + (swap_begin - begin) * size);
}

void Engine::store_slice_parameters(std::int64_t begin, std::int64_t end, const void* values) {
  const std::int64_t size = kernels::size_of(settings_.dtype);
  const auto* bytes = static_cast<const std::byte*>(values);
  const std::int64_t host_end = std::min(end, params_in_host_);
  if (host_end > begin)
    std::memcpy(params_slice_.slice(begin, host_end - begin).data, bytes,
                static_cast<std::size_t>((host_end - begin) * size));
  const std::int64_t swap_begin = std::max(begin, params_in_host_);
  if (end > swap_begin)
    parameter_swap_->write(swap_begin - params_in_host_, end - params_in_host_,
                           bytes + (swap_begin - begin) * size);
}

View Engine::slice_parameters() {
  if (settings_.stage == 3) return params_slice_.view();
  if (settings_.stage == 0) return params_full_.view();
  return params_full_.slice(slice_begin_, layout_.slice_elements());
}

View Engine::slice_gradients() {
  return settings_.stage == 0 ? grads_full_.view() : grads_slice_.view();
}

double Engine::loss_scale() const {
  return scaler_ ? scaler_->scale() : 1.0;
}

void Engine::reduce_gradients_stage0() {
  if (comm_.size() == 1) return;
  const std::int64_t n = layout_.padded_elements();
  const DType wire = settings_.communication_dtype;
  const bool staged = wire != grads_full_.dtype();
  const std::int64_t bucket = std::min(settings_.reduce_bucket_size, n);
  // In another dtype than the gradients', buckets go through a staging buffer one at a time.
  Buffer staging;
  if (staged) staging = Buffer(wire, bucket, backend_.compute_place(), memory::Kind::CommBuffers);
  std::vector<comm::Handle> pending;
  for (std::int64_t begin = 0; begin < n; begin += bucket) {
    const std::int64_t count = std::min(bucket, n - begin);
    View grads = grads_full_.slice(begin, count);
    if (!staged) {
      pending.push_back(comm_.all_reduce_async(grads.data, grads.data, count, comm_type(wire),
                                               comm::ReduceOp::Sum));
      continue;
    }
    View wire_view = staging.slice(0, count);
    backend_.convert(grads, wire_view);
    {
      runtime::ScopedTimer waiting(engine_waited_);
      comm_.all_reduce(wire_view.data, wire_view.data, count, comm_type(wire), comm::ReduceOp::Sum);
    }
    backend_.convert(wire_view, grads);
  }
  {
    runtime::ScopedTimer waiting(engine_waited_);
    for (auto& handle : pending) handle.wait();
  }
  if (settings_.average_gradients) {
    View grads = grads_full_.view();
    if (grads.dtype == DType::F32)
      optim::scale(grads.as<float>(), n, 1.0f / comm_.size());
    else
      backend_.convert(grads, grads, 1.0f / comm_.size());
  }
}

double Engine::gradient_norm(bool& overflow) {
  const View grads = slice_gradients();
  double local = 0;
  if (grads.dtype == DType::F32) {
    local = optim::sum_of_squares(grads.as<float>(), grads.count);
  } else {
    const auto result = backend_.norm_squared(grads);
    // A non-finite element makes the sum non-finite, so the all-reduced sum tells every rank.
    local = result.finite ? result.sum_of_squares : std::numeric_limits<double>::infinity();
  }
  double sum_of_squares = local;
  if (settings_.stage > 0) {
    // Stage 0: every rank holds the whole reduced gradient, the norm needs no communication.
    runtime::ScopedTimer waiting(engine_waited_);
    sum_of_squares = comm_.all_reduce_scalar(local, comm::ReduceOp::Sum);
  }
  overflow = !std::isfinite(sum_of_squares);
  return optim::global_norm_from_sum_of_squares(sum_of_squares);
}

void Engine::initialise_host_master() {
  // The fp32 master of the offloaded sub-groups, from the (rounded) parameters as DeepSpeed
  // takes them; device-resident parameters come over through the staging buffer.
  const View params = slice_parameters();
  const std::int64_t piece = settings_.sub_group_size;
  if (state_swapper_) {
    // Swapped: each sub-group's master is written out with zeroed moments.
    Buffer staged;
    for (int group = 0; group < state_swapper_->groups(); ++group) {
      const std::int64_t begin = state_swapper_->group_begin(group);
      const std::int64_t length = state_swapper_->group_size(group);
      const auto& arrays = state_swapper_->acquire(group, /*read=*/false);
      View source;
      if (settings_.stage == 3 && (parameter_swap_ || params.place == Place::Host)) {
        if (staged.empty())
          staged = Buffer(settings_.dtype, std::min(piece, host_elements_), Place::Host,
                          memory::Kind::Other);
        read_slice_parameters(begin, begin + length, staged.view().data);
        source = staged.slice(0, length);
      } else if (params.place != Place::Host) {
        source = param_staging_[0].slice(0, length);
        backend_.copy_async(params.slice(begin, length), source).wait();
      } else {
        source = params.slice(begin, length);
      }
      backend_.convert(source, View{arrays[0], length, DType::F32, Place::Host});
      std::memset(arrays[1], 0, static_cast<std::size_t>(length) * sizeof(float));
      std::memset(arrays[2], 0, static_cast<std::size_t>(length) * sizeof(float));
      state_swapper_->release(group, 0b111u);
    }
    state_swapper_->finish();
    return;
  }
  for (std::int64_t begin = 0; begin < host_elements_; begin += piece) {
    const std::int64_t length = std::min(piece, host_elements_ - begin);
    if (parameter_swap_) {
      read_slice_parameters(begin, begin + length, param_staging_[0].view().data);
      backend_.convert(param_staging_[0].slice(0, length), host_master_.slice(begin, length));
      continue;
    }
    View source = params.slice(begin, length);
    if (source.place != Place::Host) {
      const View staged = param_staging_[0].slice(0, length);
      backend_.copy_async(source, staged).wait();
      source = staged;
    }
    backend_.convert(source, host_master_.slice(begin, length));
  }
}

void Engine::host_optimizer_pass(bool first_pass, float grad_multiplier) {
  // ZeRO-Offload's schedule: the CPU optimizer reads a sub-group's gradients in host memory,
  // updates its master weights and moments and writes the new parameters in the model's dtype
  // in the same pass (Adam; LAMB in its second); they stream to the device while the next
  // sub-group updates. ZeRO-Infinity's (state_swapper_): the sub-group's master weights and
  // moments come in from the swap files first (the next group's already on their way with
  // pipeline_read) and go back out after (overlapping the next update with pipeline_write);
  // Adam rewrites all three arrays, LAMB's first pass only the moments, its second only the
  // master weights.
  runtime::Stopwatch watch;
  const View params = slice_parameters();
  const View grads = slice_gradients();
  const std::int64_t piece = settings_.sub_group_size;
  const bool lamb = optimizer_->needs_tensor_norms();
  const bool writes = !first_pass || !lamb;
  const unsigned dirty = !lamb ? 0b111u : first_pass ? 0b110u : 0b001u;
  const bool in_place = params.place == Place::Host && !parameter_swap_;
  backend::Event copies[2];
  double computing = 0;
  int group = 0;
  for (std::int64_t begin = 0; begin < host_elements_; begin += piece, ++group) {
    const std::int64_t end = std::min(host_elements_, begin + piece);
    const std::int64_t length = end - begin;
    float* master = nullptr;
    if (state_swapper_) {
      const auto& arrays = state_swapper_->acquire(group);
      optimizer_->bind_swapped_states(begin, end, arrays[1], arrays[2]);
      master = arrays[0];
    } else {
      master = host_master_.as<float>() + begin;
    }
    runtime::Stopwatch compute;
    optim::ParameterOutput out;
    View staged;
    int slot = 0;
    if (writes && in_place) {
      out = {params.slice(begin, length).data, params.dtype};
    } else if (writes) {
      slot = param_staging_[1].empty() ? 0 : group % 2;
      copies[slot].wait();  // the copy that last read this buffer
      staged = param_staging_[slot].slice(0, length);
      out = {staged.data, staged.dtype};
    }
    if (first_pass) {
      const View g = grads.slice(begin, length);
      optimizer_->update_range(master, optim::GradientInput{g.data, g.dtype, grad_multiplier},
                               begin, end, out);
    } else {
      optimizer_->finish_range(master, begin, end, out);
    }
    computing += compute.seconds();
    if (state_swapper_) state_swapper_->release(group, dirty);
    if (staged.data == nullptr) continue;
    if (parameter_swap_)
      store_slice_parameters(begin, end, staged.data);
    else
      copies[slot] = backend_.copy_async(staged, params.slice(begin, length));
  }
  if (state_swapper_) state_swapper_->finish();
  if (parameter_swap_) parameter_swap_->flush();
  for (auto& copy : copies) copy.wait();
  if (state_swapper_ || parameter_swap_) nvme_waited_ += watch.seconds() - computing;
}

void Engine::optimizer_step(const optim::StepHyper& hyper, double grad_multiplier) {
  const std::int64_t n = optimizer_->slice_elements();
  const std::int64_t h = host_elements_;
  const std::int64_t piece = settings_.sub_group_size;
  const View params = slice_parameters();
  const View grads = slice_gradients();
  const auto multiplier = static_cast<float>(grad_multiplier);
  optimizer_->begin_step(segments_, hyper);
  if (h > 0) host_optimizer_pass(true, multiplier);
  // The device's sub-groups (all of them without offload).
  float* device_master = mixed() ? master_.as<float>() - h : params.as<float>();
  for (std::int64_t begin = h; begin < n; begin += piece) {
    const std::int64_t end = std::min(n, begin + piece);
    View g = grads.slice(begin, end - begin);
    if (g.place != backend_.compute_place()) {
      // Partial offload (ratio < 1): the reduced gradients are in host memory.
      const View staged = device_grad_staging_.slice(0, end - begin);
      backend_.copy_async(g, staged).wait();
      g = staged;
    }
    if (!mixed()) {
      optimizer_->update_range(device_master + begin, g.as<float>(), begin, end);
      continue;
    }
    // One sub-group of 16-bit gradients, unscaled and clipped into fp32 (DeepSpeed's
    // unscale_and_clip_grads), then the fp32 update of the master weights.
    const View unscaled = master_grads_.slice(0, end - begin);
    backend_.convert(g, unscaled, multiplier);
    optimizer_->update_range(device_master + begin, unscaled.as<float>(), begin, end);
  }
  if (optimizer_->needs_tensor_norms()) {
    if (settings_.stage > 0 && comm_.size() > 1) {
      // LAMB's trust ratio needs whole-tensor norms; tensors cut by slice boundaries have
      // partial sums on several ranks. Every rank joins, whether or not its slice cuts one.
      auto& sums = optimizer_->tensor_norm_sums();
      const auto tensors = static_cast<std::int64_t>(layout_.entries().size());
      auto packed = optim::pack_split_norm_sums(sums, tensors);
      {
        runtime::ScopedTimer waiting(engine_waited_);
        comm_.all_reduce(packed.data(), packed.data(), static_cast<std::int64_t>(packed.size()),
                         comm::DataType::Float64, comm::ReduceOp::Sum);
      }
      optim::unpack_split_norm_sums(packed, sums);
    }
    if (h > 0) host_optimizer_pass(false, multiplier);
    for (std::int64_t begin = h; begin < n; begin += piece)
      optimizer_->finish_range(device_master + begin, begin, std::min(n, begin + piece));
  }
  // The model computes with the master weights rounded to its dtype.
  if (mixed() && n > h) backend_.convert(master_.view(), params.slice(h, n - h));
}

void Engine::inject_overflow() {
  const auto& steps = settings_.inject_overflow_at_steps;
  if (comm_.rank() != 0 || std::find(steps.begin(), steps.end(), global_steps_ + 1) == steps.end())
    return;
  const View grads = slice_gradients();
  const float inf = std::numeric_limits<float>::infinity();
  backend_.convert(ConstView{&inf, 1, DType::F32, grads.place}, grads.slice(0, 1));
}

void Engine::all_gather_parameters() {
  // Stages 1-2: every rank updated its slice of the full parameters; share them.
  const std::int64_t n = layout_.padded_elements();
  std::vector<comm::Handle> pending;
  for (std::int64_t begin = 0; begin < n; begin += settings_.allgather_bucket_size) {
    const std::int64_t end = std::min(n, begin + settings_.allgather_bucket_size);
    pending.push_back(all_gather_range(comm_, layout_,
                                       params_full_.slice(slice_begin_, layout_.slice_elements()),
                                       begin, end, params_full_.slice(begin, end - begin)));
  }
  runtime::ScopedTimer waiting(engine_waited_);
  for (auto& handle : pending) handle.wait();
}

StepResult Engine::train_step(const BatchFiller& fill) {
  runtime::Stopwatch step_watch;
  StepResult result;
  const auto traffic_before = comm_.total_traffic();
  const auto copies_before = backend_.copy_traffic();
  const double busy_before = comm_.busy_seconds();
  auto reducer_waited = [&] { return reducer_ ? reducer_->exposed_seconds() : 0.0; };
  auto coordinator_waited = [&] { return coordinator_ ? coordinator_->exposed_seconds() : 0.0; };
  double waited_in_forward_backward_for_gathers = 0;
  double waited_in_backward_for_reductions = 0;
  const double engine_waited_before = engine_waited_;
  const double reducer_waited_before = reducer_waited();
  const double coordinator_waited_before = coordinator_waited();

  // A swap file deleted underneath the run fails the step before anything is read from it.
  if (state_swapper_) state_swapper_->check_files();
  if (parameter_swap_) parameter_swap_->check_file();
  const auto aio_before = aio_ ? aio_->counters() : offload::AioCounters{};
  const double nvme_waited_before = nvme_waited_;

  const int stage = settings_.stage;
  const int accumulation = settings_.gradient_accumulation_steps;
  const int B = settings_.micro_batch;
  const int T = settings_.seq_len;
  // Accumulating in fp32 from a micro-step buffer, stage 1 reduces after the last backward: the
  // full buffer is complete only once the micro-step's gradients were added into it.
  const bool use_hooks =
      stage >= 2 || (stage == 1 && settings_.overlap_comm && micro_grads_.empty());

  if (stage < 2) backend_.set_zero(grads_full_.view());
  const double loss_scale = scaler_ ? scaler_->scale() : 1.0;
  result.loss_scale = loss_scale;
  double loss_sum = 0;
  for (int micro = 0; micro < accumulation; ++micro) {
    const bool last = micro + 1 == accumulation;
    fill(micro, inputs_.data(), targets_.data());
    if (coordinator_) coordinator_->begin_pass();
    {
      const double gathered = coordinator_waited();
      runtime::Stopwatch watch;
      loss_sum += model_.forward(param_table_, inputs_.data(), targets_.data(), B, T,
                                 coordinator_ ? hooks_.get() : nullptr);
      const double gather_wait = coordinator_waited() - gathered;
      result.phases.forward += watch.seconds() - gather_wait;
      waited_in_forward_backward_for_gathers += gather_wait;
    }
    // Stage 1 reduces once, in the last micro-step; stages 2-3 in every one.
    const bool reduce_now = stage >= 2 || (stage == 1 && last);
    hooks_->reduce_in_backward = reduce_now && use_hooks;
    if (reduce_now && reducer_) reducer_->begin_micro_step(stage >= 2 && micro > 0);
    {
      const double gathered = coordinator_waited();
      const double reduced = reducer_waited();
      runtime::Stopwatch watch;
      if (!micro_grads_.empty()) backend_.set_zero(micro_grads_.view());
      model_.backward(param_table_, grad_table_,
                      static_cast<float>(loss_scale / static_cast<double>(accumulation)),
                      use_hooks || coordinator_ ? hooks_.get() : nullptr);
      if (!micro_grads_.empty()) backend_.add_scaled(micro_grads_.view(), grads_full_.view(), 1.0f);
      const double gather_wait = coordinator_waited() - gathered;
      const double reduce_wait = reducer_waited() - reduced;
      result.phases.backward += watch.seconds() - gather_wait - reduce_wait;
      waited_in_forward_backward_for_gathers += gather_wait;
      waited_in_backward_for_reductions += reduce_wait;
    }
    if (reduce_now && reducer_) {
      runtime::ScopedTimer timer(result.phases.reduction);
      if (!use_hooks) reducer_->reduce_everything();
      reducer_->finish_micro_step();
    }
  }
  if (coordinator_) coordinator_->release_all();
  {
    runtime::ScopedTimer timer(result.phases.reduction);
    if (stage == 0) reduce_gradients_stage0();
    runtime::ScopedTimer waiting(engine_waited_);
    result.loss =
        comm_.all_reduce_scalar(loss_sum / accumulation, comm::ReduceOp::Sum) / comm_.size();
  }
  if (!settings_.inject_overflow_at_steps.empty()) inject_overflow();
  bool overflow = false;
  {
    runtime::ScopedTimer timer(result.phases.optimizer);
    const double scaled_norm = gradient_norm(overflow);
    overflow = overflow && settings_.check_overflow;
    if (scaler_) {
      // DeepSpeed updates the scale once per step, before deciding to skip; at the minimum
      // scale it raises on every rank alike (the overflow flag is agreed).
      auto update = scaler_->update(overflow);
      if (comm_.rank() == 0)
        for (auto& line : update.messages) result.messages.push_back(std::move(line));
      // A static scale skips silently in DeepSpeed; a skipped step never goes unsaid here.
      if (overflow && update.messages.empty() && comm_.rank() == 0)
        result.messages.push_back(
            runtime::concat("[zerotrain] fp16 gradients overflowed at the static loss scale ",
                            loss_scale, ": skipping step ", global_steps_ + 1));
    } else if (overflow && comm_.rank() == 0) {
      result.messages.push_back(runtime::concat("[zerotrain] ",
                                                kernels::dtype_name(settings_.dtype),
                                                " gradients hold inf or NaN: skipping step ",
                                                global_steps_ + 1, " (bf16.check_grad_overflow)"));
    }
    // DeepSpeed reports the norm of the unscaled gradients.
    result.grad_norm = scaled_norm < 0 ? -1.0 : scaled_norm / loss_scale;
    result.skipped = overflow;
    const auto hyper = optim::step_hyper(*schedule_, settings_.optimizer, optimizer_steps_ + 1);
    result.lr = hyper.lr;
    if (!overflow) {
      if (mixed()) {
        const double multiplier =
            optim::gradient_multiplier(scaled_norm, loss_scale, settings_.gradient_clipping);
        result.clipped = multiplier * loss_scale < 1.0 - 1e-12;
        optimizer_step(hyper, multiplier);
      } else {
        // fp32: clip the gradients in place, as before mixed precision.
        const double coefficient =
            optim::clip_coefficient(scaled_norm, settings_.gradient_clipping);
        result.clipped = coefficient < 1.0;
        if (result.clipped) {
          const View grads = slice_gradients();
          optim::scale(grads.as<float>(), grads.count, static_cast<float>(coefficient));
        }
        optimizer_step(hyper, 1.0);
      }
      ++optimizer_steps_;
    }
  }
  if (!overflow) {
    runtime::ScopedTimer timer(result.phases.gather);
    if (stage == 1 || stage == 2) all_gather_parameters();
    if (coordinator_) coordinator_->refresh_persistent();
  }
  // Waits inside forward and backward were taken out of those phases; they are communication.
  result.phases.reduction += waited_in_backward_for_reductions;
  result.phases.gather += waited_in_forward_backward_for_gathers;
  // Exposed: only the time spent blocked on collectives, not the compute around them.
  result.phases.exposed = (engine_waited_ - engine_waited_before) +
                          (reducer_waited() - reducer_waited_before) +
                          (coordinator_waited() - coordinator_waited_before);
  ++global_steps_;
  result.step = global_steps_;
  result.phases.total = step_watch.seconds();
  result.phases.communication = comm_.busy_seconds() - busy_before;
  const auto traffic_after = comm_.total_traffic();
  result.bytes_sent = traffic_after.bytes_sent - traffic_before.bytes_sent;
  result.bytes_received = traffic_after.bytes_received - traffic_before.bytes_received;
  const auto copies_after = backend_.copy_traffic();
  result.bytes_to_host = copies_after.device_to_host - copies_before.device_to_host;
  result.bytes_to_device = copies_after.host_to_device - copies_before.host_to_device;
  if (aio_) {
    const auto aio_after = aio_->counters();
    result.nvme_bytes_read = aio_after.bytes_read - aio_before.bytes_read;
    result.nvme_bytes_written = aio_after.bytes_written - aio_before.bytes_written;
    result.nvme_wait_seconds = nvme_waited_ - nvme_waited_before;
  }
  return result;
}

EngineReport Engine::report() const {
  EngineReport report;
  report.stage = settings_.stage;
  report.parameters = layout_.unpadded_elements();
  report.padded_elements = layout_.padded_elements();
  report.slice_elements = layout_.slice_elements();
  if (reducer_) {
    report.landing_elements = settings_.stage >= 2 ? reducer_->landing_elements() : 0;
    report.window_elements = settings_.stage >= 2 ? reducer_->window_elements() : 0;
  }
  if (coordinator_) {
    report.persistent_parameters = coordinator_->persistent_parameters();
    report.persistent_elements = coordinator_->persistent_elements();
    report.persistence_limited_by_device_cap = persistence_limited_;
    report.peak_live_elements = coordinator_->peak_live_elements();
    report.gathers = coordinator_->gathers();
    report.prefetches = coordinator_->prefetches();
  }
  report.optimizer_state_bytes =
      optimizer_->state_bytes() + master_.bytes() + master_grads_.bytes() + host_master_.bytes();
  report.offload_optimizer = settings_.offload.optimizer;
  report.offload_parameters = settings_.offload.parameters;
  report.host_elements = host_elements_;
  report.host_sub_groups =
      (host_elements_ + settings_.sub_group_size - 1) / settings_.sub_group_size;
  report.host_memory = host_memory_;
  report.optimizer_nvme = settings_.offload.optimizer_nvme;
  report.parameters_nvme = settings_.offload.parameters_nvme;
  report.nvme_parameter_elements =
      settings_.stage == 3 && parameter_swap_ ? layout_.slice_elements() - params_in_host_ : 0;
  if (!swap_folders_.empty()) report.swap_folder = swap_folders_.front()->path();
  for (std::size_t f = 1; f < swap_folders_.size(); ++f)
    report.swap_folder += ", " + swap_folders_[f]->path();
  report.aio_backend = aio_backend_;
  report.aio_direct = aio_direct_;
  report.swap_buffer_sets = state_swapper_ ? std::min(settings_.offload.optimizer_buffer_count / 3,
                                                      state_swapper_->groups())
                                           : 0;
  report.dtype = settings_.dtype;
  report.communication_dtype = settings_.communication_dtype;
  report.skipped_steps = skipped_steps();
  report.sub_groups =
      (optimizer_->slice_elements() + settings_.sub_group_size - 1) / settings_.sub_group_size;
  return report;
}

Buffer Engine::stage_master_part(std::int64_t begin, std::int64_t end) {
  // The master weights live in up to two places: [0, host_elements_) of the optimizer's range
  // in host memory, the rest on the device (16-bit runs) or as the parameters themselves (fp32).
  const FlatRange part = own_part_of(layout_, comm_.rank(), begin, end);
  Buffer staged(DType::F32, part.size(), backend_.compute_place(), memory::Kind::Other);
  const std::int64_t first = part.begin - slice_begin_;  // in the optimizer's range
  const std::int64_t last = part.end - slice_begin_;
  const std::int64_t host_last = std::min(last, host_elements_);
  if (host_last > first && state_swapper_) {
    Buffer read(DType::F32, host_last - first, Place::Host, memory::Kind::Other);
    state_swapper_->read_range(0, first, host_last, read.as<float>());
    backend_.copy_async(read.view(), staged.slice(0, host_last - first)).wait();
  } else if (host_last > first) {
    backend_
        .copy_async(host_master_.slice(first, host_last - first),
                    staged.slice(0, host_last - first))
        .wait();
  }
  const std::int64_t device_first = std::max(first, host_elements_);
  if (last > device_first) {
    const View target = staged.slice(device_first - first, last - device_first);
    if (mixed()) {
      backend_.convert(master_.slice(device_first - host_elements_, last - device_first), target);
    } else {
      const View source = slice_parameters().slice(device_first, last - device_first);
      if (source.place == target.place)
        backend_.convert(source, target);
      else
        backend_.copy_async(source, target).wait();
    }
  }
  return staged;
}

void Engine::gather_parameter(int index, float* out) {
  const auto& entry = layout_.entries().at(static_cast<std::size_t>(index));
  const View widened{out, entry.numel, DType::F32, backend_.compute_place()};
  if (settings_.stage == 0) {
    // The fp32 master weights (what DeepSpeed's zero_to_fp32 exports), not their 16-bit copy.
    if (mixed())
      backend_.convert(master_.slice(entry.offset, entry.numel), widened);
    else
      backend_.convert(params_full_.slice(entry.offset, entry.numel), widened);
    return;
  }
  if (!mixed() && settings_.stage < 3) {
    backend_.convert(params_full_.slice(entry.offset, entry.numel), widened);
    return;
  }
  // One slice per rank: this rank's part of the master weights (in fp32 the parameters, which
  // equal them), staged where the collective reads, then gathered.
  Buffer part = stage_master_part(entry.offset, entry.offset + entry.numel);
  all_gather_part(comm_, layout_, part.view(), entry.offset, entry.offset + entry.numel, widened)
      .wait();
}

std::vector<float> Engine::gather_all_parameters() {
  std::vector<float> all;
  all.reserve(static_cast<std::size_t>(layout_.unpadded_elements()));
  for (std::size_t p = 0; p < layout_.entries().size(); ++p) {
    std::vector<float> values(static_cast<std::size_t>(layout_.entries()[p].numel));
    gather_parameter(static_cast<int>(p), values.data());
    all.insert(all.end(), values.begin(), values.end());
  }
  return all;
}

}  // namespace zt::zero

namespace zt::zero {

const char* state_array_name(StateArray array) {
  switch (array) {
    case StateArray::Parameters:
      return "parameters";
    case StateArray::Master:
      return "fp32_master";
    case StateArray::ExpAvg:
      return "exp_avg";
    case StateArray::ExpAvgSq:
      return "exp_avg_sq";
  }
  return "unknown";
}

namespace {

// The swapper's arrays, in SubGroupSwapper's layout order.
constexpr int kSwappedMaster = 0;
constexpr int kSwappedExpAvg = 1;
constexpr int kSwappedExpAvgSq = 2;

int swapped_index(StateArray array) {
  return array == StateArray::ExpAvg     ? kSwappedExpAvg
         : array == StateArray::ExpAvgSq ? kSwappedExpAvgSq
                                         : kSwappedMaster;
}

/// The optimizer's (non-swapped) view of `name` that holds range element `index`.
const optim::StateTensor& moment_view(const std::vector<optim::StateTensor>& views,
                                      const char* name, std::int64_t index) {
  for (const auto& view : views)
    if (view.name == name && view.data != nullptr && index >= view.offset &&
        index < view.offset + view.size)
      return view;
  throw std::logic_error(runtime::concat("engine: no ", name, " state holds element ", index));
}

/// Sorted, distinct cut points inside [begin, end), both ends included.
std::vector<std::int64_t> cuts_between(std::int64_t begin, std::int64_t end,
                                       std::vector<std::int64_t> points) {
  points.push_back(begin);
  points.push_back(end);
  for (auto& point : points) point = std::clamp(point, begin, end);
  std::sort(points.begin(), points.end());
  points.erase(std::unique(points.begin(), points.end()), points.end());
  return points;
}

}  // namespace

std::vector<StateArray> Engine::state_arrays() const {
  std::vector<StateArray> arrays{StateArray::Parameters};
  if (mixed()) arrays.push_back(StateArray::Master);
  arrays.push_back(StateArray::ExpAvg);
  arrays.push_back(StateArray::ExpAvgSq);
  return arrays;
}

EngineCounters Engine::counters() const {
  EngineCounters counters;
  counters.global_steps = global_steps_;
  counters.optimizer_steps = optimizer_steps_;
  counters.has_loss_scaler = scaler_ != nullptr;
  if (scaler_) counters.loss_scaler = scaler_->state();
  return counters;
}

void Engine::set_counters(const EngineCounters& counters) {
  if (counters.optimizer_steps < 0 || counters.optimizer_steps > counters.global_steps)
    throw std::invalid_argument("engine: optimizer steps must lie in [0, global steps]");
  global_steps_ = counters.global_steps;
  optimizer_steps_ = counters.optimizer_steps;
  if (scaler_ && counters.has_loss_scaler) scaler_->set_state(counters.loss_scaler);
}

void Engine::save_state(const StateSink& sink, std::int64_t piece_elements) {
  piece_elements = std::max<std::int64_t>(1, piece_elements);
  const std::int64_t begin = slice_begin_;
  const std::int64_t end = slice_begin_ + layout_.slice_elements();
  // The optimizer's range starts at 0 at stage 0 (it steps the whole buffer), else at the slice.
  const std::int64_t range_begin = settings_.stage == 0 ? 0 : slice_begin_;
  Buffer host(DType::F32, std::min(piece_elements, std::max<std::int64_t>(1, end - begin)),
              Place::Host, memory::Kind::Other);
  const auto moments = optimizer_->state();
  for (const StateArray array : state_arrays()) {
    const DType dtype = array == StateArray::Parameters ? settings_.dtype : DType::F32;
    // Cut where the array changes place, so that every piece is read from one buffer.
    std::vector<std::int64_t> points;
    if (array == StateArray::Parameters) {
      if (settings_.stage == 3) points.push_back(slice_begin_ + params_in_host_);
    } else {
      points.push_back(range_begin + host_elements_);
      for (const auto& view : moments)
        if (view.data != nullptr) points.push_back(range_begin + view.offset);
    }
    const auto cuts = cuts_between(begin, end, points);
    for (std::size_t c = 0; c + 1 < cuts.size(); ++c) {
      for (std::int64_t first = cuts[c]; first < cuts[c + 1]; first += piece_elements) {
        const std::int64_t last = std::min(cuts[c + 1], first + piece_elements);
        const std::int64_t count = last - first;
        const View out{host.view().data, count, dtype, Place::Host};
        const std::int64_t index = first - range_begin;  // in the optimizer's range
        const bool swapped = index < host_elements_ && state_swapper_;
        if (array == StateArray::Parameters) {
          if (settings_.stage == 3)
            read_slice_parameters(first - slice_begin_, last - slice_begin_, out.data);
          else
            backend_.copy_async(params_full_.slice(first, count), out).wait();
        } else if (swapped) {
          state_swapper_->read_range(swapped_index(array), index, index + count, out.as<float>());
        } else if (array == StateArray::Master && index < host_elements_) {
          std::memcpy(out.data, host_master_.slice(index, count).data,
                      static_cast<std::size_t>(count) * sizeof(float));
        } else if (array == StateArray::Master) {
          backend_.copy_async(master_.slice(index - host_elements_, count), out).wait();
        } else {
          const auto& view =
              moment_view(moments, array == StateArray::ExpAvg ? "exp_avg" : "exp_avg_sq", index);
          const ConstView from{view.data + (index - view.offset), count, DType::F32, view.place};
          backend_.copy_async(from, out).wait();
        }
        sink(array, first, last, out.data, dtype);
      }
    }
  }
}

void Engine::load_state(const StateSource& source, std::int64_t piece_elements) {
  piece_elements = std::max<std::int64_t>(1, piece_elements);
  const int stage = settings_.stage;
  // What this rank holds: the whole buffer at stage 0, its slice from stage 1 on (stages 1-2
  // hold all parameters, but load their slice and all-gather the rest).
  const std::int64_t begin = stage == 0 ? 0 : slice_begin_;
  const std::int64_t end =
      stage == 0 ? layout_.padded_elements() : slice_begin_ + layout_.slice_elements();
  const std::int64_t range_begin = begin;
  Buffer host(DType::F32, std::min(piece_elements, std::max<std::int64_t>(1, end - begin)),
              Place::Host, memory::Kind::Other);
  const auto for_pieces = [&](const std::vector<std::int64_t>& cuts, auto&& body) {
    for (std::size_t c = 0; c + 1 < cuts.size(); ++c)
      for (std::int64_t first = cuts[c]; first < cuts[c + 1]; first += piece_elements)
        body(first, std::min(cuts[c + 1], first + piece_elements));
  };

  // Parameters.
  {
    const DType dtype = settings_.dtype;
    std::vector<std::int64_t> points;
    if (stage == 3) points.push_back(slice_begin_ + params_in_host_);
    for_pieces(cuts_between(begin, end, points), [&](std::int64_t first, std::int64_t last) {
      const std::int64_t count = last - first;
      const View in{host.view().data, count, dtype, Place::Host};
      source(StateArray::Parameters, first, last, in.data, dtype);
      if (stage < 3) {
        backend_.copy_async(in, params_full_.slice(first, count)).wait();
        return;
      }
      const std::int64_t local = first - slice_begin_;
      if (local < params_in_host_) {
        backend_.copy_async(in, params_slice_.slice(local, count)).wait();
      } else {
        parameter_swap_->write(local - params_in_host_, local + count - params_in_host_, in.data);
      }
    });
    if (parameter_swap_) parameter_swap_->flush();
  }

  // The master weights and moments outside the swap files.
  const StateArray master_source = mixed() ? StateArray::Master : StateArray::Parameters;
  const auto moments = optimizer_->state();
  {
    std::vector<std::int64_t> points{range_begin + host_elements_};
    for (const auto& view : moments)
      if (view.data != nullptr) points.push_back(range_begin + view.offset);
    for_pieces(cuts_between(begin, end, points), [&](std::int64_t first, std::int64_t last) {
      const std::int64_t count = last - first;
      const std::int64_t index = first - range_begin;
      const View in{host.view().data, count, DType::F32, Place::Host};
      if (index < host_elements_ && state_swapper_) return;  // below
      if (index < host_elements_) {
        source(master_source, first, last, host_master_.slice(index, count).data, DType::F32);
      } else if (mixed()) {
        source(StateArray::Master, first, last, in.data, DType::F32);
        backend_.copy_async(in, master_.slice(index - host_elements_, count)).wait();
      }
      for (const StateArray array : {StateArray::ExpAvg, StateArray::ExpAvgSq}) {
        const auto& view =
            moment_view(moments, array == StateArray::ExpAvg ? "exp_avg" : "exp_avg_sq", index);
        source(array, first, last, in.data, DType::F32);
        backend_
            .copy_async(in, View{view.data + (index - view.offset), count, DType::F32, view.place})
            .wait();
      }
    });
  }

  // Swapped sub-groups: one pass that writes every array of every group.
  if (state_swapper_) {
    for (int group = 0; group < state_swapper_->groups(); ++group) {
      const std::int64_t first = range_begin + state_swapper_->group_begin(group);
      const std::int64_t last = first + state_swapper_->group_size(group);
      const auto& arrays = state_swapper_->acquire(group, /*read=*/false);
      source(master_source, first, last, arrays[kSwappedMaster], DType::F32);
      source(StateArray::ExpAvg, first, last, arrays[kSwappedExpAvg], DType::F32);
      source(StateArray::ExpAvgSq, first, last, arrays[kSwappedExpAvgSq], DType::F32);
      state_swapper_->release(group, 0b111u);
    }
    state_swapper_->finish();
  }
}

void Engine::finish_load() {
  if (settings_.stage == 1 || settings_.stage == 2) all_gather_parameters();
  if (coordinator_) coordinator_->refresh_persistent();
}

}  // namespace zt::zero
