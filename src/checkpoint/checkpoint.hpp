// SPDX-License-Identifier: Apache-2.0
// Checkpoints (DESIGN §7): sharded HDF5 save, exact resume, and resume on another world size,
// stage or offload setting by reading only the overlapping ranges of each tensor.
//
//   <dir>/latest                       the newest tag (no newline), replaced atomically, last
//   <dir>/global_step<N>/
//     zero_rank_<RRRRR>_states.h5      rank R's partition of the flat buffer, per tensor
//     engine_state.h5                  counters, loss scaler, sampler, config, model, layout
//     manifest.txt                     every file's size and checksum
//
// Every stage writes the same partitions: rank R of W writes flat elements
// [R*S, (R+1)*S), S = padded / W, of each array (parameters in the training dtype,
// fp32_master in 16-bit runs, exp_avg, exp_avg_sq), whatever it holds at run time (stage 0
// holds all of them, offloaded states are read back from host memory or NVMe). In a rank file,
// dataset /<array>/<tensor name> holds the tensor's elements (row-major, zerotrain's layout)
// that fall in the partition, with attributes global_shape, offset (first element in the
// tensor), length, flat_offset, dtype ("fp32", "bf16", "fp16"; 16-bit values are stored as
// uint16 bit patterns) and checksum (zerotrain's 64-bit checksum of the dataset's bytes).
//
// A checkpoint appears whole or not at all: ranks write into <dir>/.global_step<N>.partial-<id>,
// which is renamed to global_step<N> after every rank's file was written and fsynced, and only
// then is `latest` replaced (temporary name, fsync, rename). Loading verifies the size and
// checksum of each file it opens against the manifest before HDF5 reads it, so a truncated or
// damaged file is refused by name rather than read.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "io/sampler.hpp"
#include "zero/engine.hpp"

namespace zt::checkpoint {

constexpr int kFormatVersion = 1;

/// What a run records beside the engine's arrays, and what a resume checks against.
struct RunRecord {
  std::string zerotrain_version;
  std::string precision;  // "fp32", "bf16", "fp16"
  std::string optimizer;  // "Adam", "Lamb"
  int stage = 0;
  int world_size = 1;
  std::string offload;            // a description, for people
  std::string config_text;        // the resolved (effective) config
  std::string model_config_json;  // the model as a Hugging Face config.json
  std::string data;               // the data source's description
  std::uint64_t seed = 0;
  std::int64_t synthetic_tokens = 0;  // the synthetic stream's length (0: a token file)
  io::SamplerState sampler;
  std::string rng = "none";  // zerotrain draws no random numbers after initialisation
};

/// One tensor of the flat buffer, as the engine-state file lists them.
struct TensorRecord {
  std::string name;
  std::vector<std::int64_t> shape;
  std::int64_t numel = 0;
  std::int64_t flat_offset = 0;
};

/// The engine-state file and manifest of one checkpoint.
struct CheckpointInfo {
  std::string directory;  // <dir>/<tag>
  std::string tag;
  RunRecord run;
  zero::EngineCounters counters;
  std::int64_t padded_elements = 0;
  std::vector<TensorRecord> tensors;
  std::vector<std::string> arrays;  // state_array_name()s present
  std::string parameter_dtype;      // of the "parameters" array
  struct FileRecord {
    std::int64_t size = 0;
    std::uint64_t checksum = 0;
  };
  std::map<std::string, FileRecord> files;  // by name, from the manifest
};

/// Name of rank R's file.
std::string rank_file_name(int rank);

struct SaveSettings {
  std::string directory;                // --save-dir
  std::string tag_validation = "Warn";  // checkpoint.tag_validation: Ignore, Warn, Fail
  /// checkpoint.use_node_local_storage: the first rank of each node (not rank 0 alone) writes
  /// engine state, manifest and `latest` into its node's directory.
  bool node_local = false;
  int local_rank = 0;
  /// Collective, when set: writes more files into the checkpoint's (still partial) directory
  /// before it is published, e.g. the 16-bit model stage3_gather_16bit_weights_on_model_save
  /// asks for. The files the leader finds there are listed in the manifest with the others.
  std::function<void(const std::string& directory)> extra_outputs;
};

/// Collective: writes the checkpoint `tag` of `engine` and then replaces `latest`. Returns the
/// checkpoint's directory. A failure on any rank fails every rank with its message, leaving the
/// previous checkpoints and `latest` as they were.
std::string save(zero::Engine& engine, MPI_Comm comm, const RunRecord& run,
                 const SaveSettings& settings, const std::string& tag);

/// The tag `latest` names in `directory` (throws io::IoError naming the file when absent).
std::string read_latest(const std::string& directory);

/// Reads one checkpoint's files without MPI (resume, consolidate). Rank files are opened on
/// first use, after their size and checksum have been verified against the manifest.
class Reader {
 public:
  /// `tag` empty: the one `latest` names.
  Reader(const std::string& directory, const std::string& tag);
  ~Reader();
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  const CheckpointInfo& info() const { return info_; }
  bool has_array(zero::StateArray array) const;
  /// The stored dtype of an array ("fp32", "bf16", "fp16").
  std::string dtype_of(zero::StateArray array) const;
  /// Elements [begin, end) of tensor `tensor` (index into info().tensors) of `array`, in the
  /// stored dtype, into `out`; reads the ranges of every rank file that holds a part.
  void read(zero::StateArray array, int tensor, std::int64_t begin, std::int64_t end, void* out);
  /// Reads every rank file whole once, checking its checksum (consolidate does; a resume checks
  /// only the files it opens).
  void verify_all_files();

 private:
  class RankFile;
  RankFile& rank_file(int rank);

  CheckpointInfo info_;
  int world_size_ = 1;
  std::set<std::string> verified_;  // files whose size and checksum were checked
  std::map<int, std::unique_ptr<RankFile>> open_;
};

/// What a resume must match; a mismatch is a UserError naming the checkpoint and both values.
void check_compatible(const CheckpointInfo& info, const RunRecord& run,
                      const zero::FlatLayout& layout);

/// Collective: loads the arrays of `reader`'s checkpoint into `engine` (any world size, stage
/// and offload setting wrote it) and its counters. Each rank reads only the ranges it holds.
void load(zero::Engine& engine, MPI_Comm comm, Reader& reader);

}  // namespace zt::checkpoint
