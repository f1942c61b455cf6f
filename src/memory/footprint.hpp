// SPDX-License-Identifier: Apache-2.0
// What a training run will allocate on each rank, known before it allocates anything, and the
// check of that against the memory the machine has. The model states come from the planner's
// arithmetic (planner.hpp) with the run's own zero_optimization settings and precision;
// activations and the data source's bytes are inputs (this library knows neither the model nor
// the data).
//
// Everything is double: a model, batch or token count from the command line may be absurd,
// and the answer must then be a huge number of bytes, never an overflowed one.
#pragma once

#include <string>

#include "memory/host_memory.hpp"
#include "memory/planner.hpp"

namespace zt::memory {

/// Host bytes the engine and the model keep per registered tensor besides its values: the
/// parameter registry and the flat layout (name, shape), the layer map, the parameter and
/// gradient tables, stage 3's per-tensor state. Measured as resident memory on x86-64 Linux
/// (glibc, libstdc++) for 1e4-4e5 layers of 4 channels: the model's registry 256, the engine
/// 150-200 more at stages 0-2 and 450 more at stage 3; rounded up. It matters only for models
/// of millions of tiny layers, which it keeps from exhausting memory unannounced.
inline constexpr double kBookkeepingBytesPerTensor = 768;

/// One rank's run, as the footprint needs it.
struct RunDescription {
  /// The model, with activation_bytes for the run's micro-batch in the run's training dtype
  /// (model::Gpt::memory_shape).
  ModelShape model;
  Placement placement;
  double ranks = 1;  // world size
  /// The config's zero_optimization values (and gradient_accumulation_steps), and in
  /// settings.precision its fp16/bf16 and communication_data_type.
  PlanSettings settings;
  double micro_batch = 1;  // sequences per micro-batch
  double seq_len = 1;      // tokens per sequence
  /// Host bytes of the token source on this rank: the synthetic source's stream and tables
  /// (io::SyntheticMarkovSource::bytes_needed); about 0 for an HDF5 file, read on demand.
  double data_bytes = 0;
  /// Anything else the caller keeps in host memory (per-step records, ...).
  double other_host_bytes = 0;
  /// On a CPU-only run the "device" is a tracked arena in host memory.
  bool device_is_host = true;
  /// --device-memory-limit in bytes (0: none): the tracked device arena never exceeds it (the
  /// engine refuses with OutOfMemory first), so no more of host memory is needed for it.
  double device_limit = 0;
};

/// One rank's bytes by category.
struct RunFootprint {
  // On the device.
  double parameters = 0;
  double gradients = 0;
  double optimizer_states = 0;
  double comm_buffers = 0;
  double activations = 0;
  // In host memory.
  // Offloaded model states (ModelStates::host()): the CPU optimizer's master weights and
  // moments, the gradient slice, parameters or their staging, the reductions' landing buffer;
  // NVMe staging.
  double offloaded = 0;
  double data = 0;         // the token source
  double bookkeeping = 0;  // per-tensor tables and the engine's micro-batch token buffers
  double other = 0;        // RunDescription::other_host_bytes
  double nvme = 0;         // on NVMe (not memory)

  double micro_batch = 0;  // for the description
  double seq_len = 0;
  bool device_is_host = true;
  double device_limit = 0;

  double model_states() const { return parameters + gradients + optimizer_states + comm_buffers; }
  double device() const { return model_states() + activations; }
  /// Host memory: what lives there, plus the device arena on a CPU-only run (at most the
  /// device-memory cap when one is set).
  double host() const;
};

RunFootprint run_footprint(const RunDescription& run);

/// "activations 7.98 GiB for micro-batch 20000 x 64 tokens, model states 512.00 KiB, data
/// 4.00 MiB": the categories that hold host memory, largest first, without the empty ones.
std::string describe_footprint(const RunFootprint& footprint);

struct MemoryVerdict {
  bool fits = true;
  double needed_per_rank = 0;
  double needed_on_node = 0;  // ranks on this node x per rank
  double available = -1;
  /// "this run needs 8.02 GiB per rank (activations ...), 16.04 GiB for the 2 ranks on this
  /// node; 5.90 GiB is available (MemAvailable)". Worth printing whether or not it fits.
  std::string message;
};

/// Compares the host memory of ranks_on_node ranks like `per_rank` with what is available.
/// Unknown availability fits (the message says it could not be checked).
MemoryVerdict check_host_memory(const RunFootprint& per_rank, int ranks_on_node,
                                const AvailableMemory& available);

}  // namespace zt::memory
