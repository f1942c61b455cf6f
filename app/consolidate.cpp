// SPDX-License-Identifier: Apache-2.0
// `zerotrain consolidate CKPT_DIR OUT_DIR`: the weights of a sharded checkpoint as one Hugging
// Face GPT-2 model (model.safetensors, model.h5, config.json), DeepSpeed's zero_to_fp32 for
// zerotrain. Serial and without MPI, so that it runs on a login node: checkpoint::Reader reads
// any tensor's range from the rank files directly. One tensor is held at a time, so memory
// follows the largest tensor, not the model.
#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "app/commands.hpp"
#include "build_info.hpp"
#include "checkpoint/checkpoint.hpp"
#include "files/files.hpp"
#include "git_revision.hpp"
#include "io/hdf5_handle.hpp"
#include "io/safetensors_writer.hpp"
#include "kernels/ops/dtype.hpp"
#include "memory/format.hpp"
#include "model/gpt_config.hpp"
#include "model/hf_gpt2.hpp"
#include "model/parameters.hpp"
#include "runtime/environment.hpp"
#include "runtime/error.hpp"

namespace zt::app {
namespace {

namespace fs = std::filesystem;
using files::quote;
using io::H5Attribute;
using io::H5Dataset;
using io::H5Dataspace;
using io::H5Datatype;
using io::H5File;
using io::IoError;
using kernels::DType;
using runtime::concat;
using zero::StateArray;

DType dtype_of_name(const std::string& name) {
  if (name == "fp32") return DType::F32;
  if (name == "bf16") return DType::BF16;
  if (name == "fp16") return DType::F16;
  throw runtime::UserError("--dtype " + quote(name) + ": must be fp32, bf16 or fp16");
}

const char* torch_dtype_of(DType dtype) {
  return dtype == DType::F32 ? "float32" : dtype == DType::BF16 ? "bfloat16" : "float16";
}

// ---- which weights ---------------------------------------------------------------------------

/// Where the weights come from: the fp32 values gather_parameter returns (the master copy in
/// 16-bit runs), or, for a 16-bit output of a run trained in that dtype, the parameters as
/// stored (the engine wrote them as the master rounded to nearest even, so they are the same
/// bits, read at half the size).
struct Source {
  StateArray array = StateArray::Parameters;
  std::string dtype;  // as stored: "fp32", "bf16", "fp16"
  std::string description;
};

Source choose_source(const checkpoint::Reader& reader, DType output) {
  const std::string wanted = kernels::dtype_name(output);
  Source source;
  if (output != DType::F32 && reader.has_array(StateArray::Parameters) &&
      reader.dtype_of(StateArray::Parameters) == wanted) {
    source.array = StateArray::Parameters;
    source.dtype = wanted;
    source.description = concat("parameters (", wanted, "), written as stored");
    return source;
  }
  source.array = reader.has_array(StateArray::Master) ? StateArray::Master : StateArray::Parameters;
  source.dtype = reader.dtype_of(source.array);
  const std::string where = concat("checkpoint ", quote(reader.info().directory));
  if (!reader.has_array(source.array))
    throw IoError(concat(where, " holds neither fp32_master nor parameters"));
  if (source.dtype != "fp32")
    throw IoError(concat(where, " holds no fp32 weights: its parameters are ", source.dtype,
                         " and it has no fp32_master array (a damaged engine state)"));
  source.description =
      concat(zero::state_array_name(source.array), " (fp32), ",
             output == DType::F32 ? std::string("written as fp32")
                                  : concat("rounded to ", wanted, " (nearest even)"));
  return source;
}

// ---- the model -------------------------------------------------------------------------------

struct Model {
  model::GptConfig config;
  model::HfConfigOptions hf;
  std::vector<model::ParamInfo> params;
};

/// The model from the engine state's model_config (the run's Hugging Face config.json), checked
/// against the checkpoint's tensor list: the transposes and names depend on it, so a config
/// that does not describe these tensors must not be used to lay them out.
Model model_of(const checkpoint::CheckpointInfo& info) {
  const std::string where = concat("checkpoint ", quote(info.directory));
  const std::string& text = info.run.model_config_json;
  if (text.empty())
    throw IoError(concat(where,
                         ": its engine state records no model_config (the model's "
                         "config.json), so its tensors cannot be laid out for transformers"));
  Model model;
  std::vector<std::string> warnings;  // ignored dropout is training's concern, not ours
  try {
    model.config = model::parse_gpt_config(text, where + " model_config",
                                           model::ConfigFormat::HuggingFaceJson, &warnings);
    model.config.check_shape(where + " model_config");
  } catch (const model::ConfigError& error) {
    throw IoError(error.what());
  }
  // The run's token ids carry over (hf_config_json otherwise picks GPT-2's defaults).
  const auto json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  const auto token_id = [&](const char* key) -> std::optional<int> {
    if (!json.is_object() || !json.contains(key) || !json[key].is_number_integer())
      return std::nullopt;
    const auto id = json[key].get<std::int64_t>();
    if (id < 0 || id >= model.config.vocab_size) return std::nullopt;
    return static_cast<int>(id);
  };
  model.hf.bos_token_id = token_id("bos_token_id");
  model.hf.eos_token_id = token_id("eos_token_id");
  model.params = model::build_parameter_registry(model.config);

  if (model.params.size() != info.tensors.size())
    throw IoError(concat(where, " holds ", info.tensors.size(), " tensors, its model_config (",
                         model.config.n_layer, " layers) has ", model.params.size(),
                         ": a damaged engine state"));
  for (std::size_t t = 0; t < info.tensors.size(); ++t) {
    const auto& stored = info.tensors[t];
    const auto& param = model.params[t];
    if (stored.name != param.name || stored.shape != param.shape || stored.numel != param.numel)
      throw IoError(concat(where, ": tensor ", t, " is ", quote(stored.name), " ",
                           model::shape_text(stored.shape), ", its model_config has ",
                           quote(param.name), " ", model::shape_text(param.shape),
                           ": a damaged engine state"));
  }
  return model;
}

// ---- where the outputs go --------------------------------------------------------------------

bool is_checkpoint_tag_directory(const fs::path& directory) {
  std::ifstream manifest(directory / "manifest.txt");
  std::string first;
  return manifest && std::getline(manifest, first) &&
         first.rfind("zerotrain checkpoint manifest", 0) == 0;
}

/// OUT_DIR may be anywhere the checkpoints are not overwritten or swept away: not the
/// checkpoint directory itself (its `latest` and tags belong to the training run), not inside
/// any checkpoint's tag directory (a later save of that tag replaces the directory whole, and a
/// model.h5 there would look like part of the checkpoint), and not inside the staging
/// directories a save creates and the next save removes. A folder beside the tags
/// (CKPT_DIR/hf) is fine.
void check_output_place(const std::string& checkpoint_dir, const std::string& output_dir) {
  const std::string what = "OUT_DIR " + quote(output_dir);
  struct stat status {};
  if (::stat(output_dir.c_str(), &status) == 0 && !S_ISDIR(status.st_mode))
    throw files::FileError(
        files::FileError::Cause::kBadPath,
        concat(what, " is ", files::describe_file_type(status.st_mode), ", not a directory"));
  // Compared after resolving links and dots: CKPT_DIR/./ and a link to it are CKPT_DIR.
  const auto resolved = [](const std::string& path, const std::string& name) {
    std::error_code error;
    fs::path result = fs::weakly_canonical(fs::absolute(path), error);
    if (error)
      throw files::FileError(
          files::FileError::Cause::kBadPath,
          concat(name, " ", quote(path), ": cannot resolve the path: ", error.message()));
    return result;
  };
  const fs::path out = resolved(output_dir, "OUT_DIR");
  const fs::path root = resolved(checkpoint_dir, "CKPT_DIR");
  if (out == root)
    throw files::FileError(files::FileError::Cause::kBadPath,
                           concat(what,
                                  " is the checkpoint directory itself; give a directory "
                                  "outside its checkpoints (e.g. ",
                                  quote((root / "hf").string()), ")"));
  for (fs::path at = out; !at.empty(); at = at.parent_path()) {
    const std::string name = at.filename().string();
    if (name.size() > 1 && name[0] == '.' &&
        (name.find(".partial-") != std::string::npos ||
         name.find(".replaced-") != std::string::npos))
      throw files::FileError(
          files::FileError::Cause::kBadPath,
          concat(what, " lies in ", quote(at.string()),
                 ", a checkpoint save's staging directory (the next save removes it)"));
    if (is_checkpoint_tag_directory(at))
      throw files::FileError(files::FileError::Cause::kBadPath,
                             concat(what, " lies in checkpoint ", quote(at.string()),
                                    "; give a directory outside its checkpoints"));
    if (at == at.root_path()) break;
  }
}

// ---- values in memory ------------------------------------------------------------------------

/// 16-bit values at the start of `buffer` widened to fp32 over the whole buffer, from the end,
/// so that no value is overwritten before it is read: one buffer serves both sizes.
void widen_in_place(void* buffer, std::int64_t count, const std::string& dtype) {
  auto* bytes = static_cast<unsigned char*>(buffer);
  for (std::int64_t i = count - 1; i >= 0; --i) {
    std::uint16_t bits = 0;
    std::memcpy(&bits, bytes + 2 * i, 2);
    const float value = dtype == "bf16" ? kernels::to_float(kernels::bf16{bits})
                                        : kernels::to_float(kernels::fp16{bits});
    std::memcpy(bytes + 4 * i, &value, 4);
  }
}

/// fp32 values rounded to `dtype` into the first half of their own buffer, from the start.
void narrow_in_place(void* buffer, std::int64_t count, DType dtype) {
  auto* bytes = static_cast<unsigned char*>(buffer);
  for (std::int64_t i = 0; i < count; ++i) {
    float value = 0;
    std::memcpy(&value, bytes + 4 * i, 4);
    const std::uint16_t bits = dtype == DType::BF16
                                   ? kernels::from_float<kernels::bf16>(value).bits
                                   : kernels::from_float<kernels::fp16>(value).bits;
    std::memcpy(bytes + 2 * i, &bits, 2);
  }
}

/// Uninitialised, so that only the pages a tensor fills become resident.
std::unique_ptr<float[]> allocate_floats(std::int64_t count, const char* what) {
  try {
    return std::unique_ptr<float[]>(
        new float[static_cast<std::size_t>(std::max<std::int64_t>(1, count))]);
  } catch (const std::bad_alloc&) {
    throw std::runtime_error(
        concat("cannot allocate ", memory::format_bytes(count * 4), " for ", what));
  }
}

// ---- model.h5 --------------------------------------------------------------------------------

/// transformers' float16 as HDF5 stores it: HDF5 1.14.4 has the type built in; before it, the
/// IEEE layout is described by hand, as h5py does, and h5py reads it back as numpy's float16.
H5Datatype half_type() {
#if defined(H5T_IEEE_F16LE)
  return H5Datatype{ZT_H5_CHECK(H5Tcopy(H5T_IEEE_F16LE))};
#else
  H5Datatype type{ZT_H5_CHECK(H5Tcopy(H5T_IEEE_F32LE))};
  ZT_H5_CHECK(H5Tset_fields(type.get(), 15, 10, 5, 0, 10));
  ZT_H5_CHECK(H5Tset_size(type.get(), 2));
  ZT_H5_CHECK(H5Tset_ebias(type.get(), 15));
  return type;
#endif
}

void write_string_attribute(hid_t object, const char* name, const std::string& value) {
  H5Datatype type{ZT_H5_CHECK(H5Tcopy(H5T_C_S1))};
  ZT_H5_CHECK(H5Tset_size(type.get(), std::max<std::size_t>(1, value.size())));
  ZT_H5_CHECK(H5Tset_strpad(type.get(), H5T_STR_NULLPAD));
  ZT_H5_CHECK(H5Tset_cset(type.get(), H5T_CSET_UTF8));
  H5Dataspace space{ZT_H5_CHECK(H5Screate(H5S_SCALAR))};
  H5Attribute attribute{
      ZT_H5_CHECK(H5Acreate2(object, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT))};
  const std::string padded = value.empty() ? std::string(1, '\0') : value;
  ZT_H5_CHECK(H5Awrite(attribute.get(), type.get(), padded.data()));
}

void write_int_attribute(hid_t object, const char* name, std::int64_t value) {
  H5Dataspace space{ZT_H5_CHECK(H5Screate(H5S_SCALAR))};
  H5Attribute attribute{
      ZT_H5_CHECK(H5Acreate2(object, name, H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT))};
  ZT_H5_CHECK(H5Awrite(attribute.get(), H5T_NATIVE_INT64, &value));
}

/// One dataset per tensor under its transformers name and shape, written whole; the file is
/// created in a private staging directory and appears under its name only at commit().
class Hdf5Weights {
 public:
  Hdf5Weights(const std::string& target, DType dtype)
      : staged_(target, "model.h5"), scope_(target), dtype_(dtype) {
    file_ = H5File{
        ZT_H5_CHECK(H5Fcreate(staged_.path().c_str(), H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT))};
    // bf16 has no HDF5 type that numpy reads: its bit patterns go as uint16, marked dtype=bf16.
    if (dtype_ == DType::F32)
      type_ = H5Datatype{ZT_H5_CHECK(H5Tcopy(H5T_IEEE_F32LE))};
    else if (dtype_ == DType::F16)
      type_ = half_type();
    else
      type_ = H5Datatype{ZT_H5_CHECK(H5Tcopy(H5T_STD_U16LE))};
  }

  hid_t root() const { return file_.get(); }

  /// `values`: the tensor in `dtype` (fp32 values, or 16-bit patterns).
  void write(const std::string& name, const std::vector<std::int64_t>& shape, const void* values) {
    std::vector<hsize_t> extent(shape.begin(), shape.end());
    H5Dataspace space{ZT_H5_CHECK(extent.empty() ? H5Screate(H5S_SCALAR)
                                                 : H5Screate_simple(static_cast<int>(extent.size()),
                                                                    extent.data(), nullptr))};
    H5Dataset dataset{ZT_H5_CHECK(H5Dcreate2(file_.get(), name.c_str(), type_.get(), space.get(),
                                             H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT))};
    // The memory type is the file type: no conversion, so HDF5 allocates no buffer of its own.
    ZT_H5_CHECK(H5Dwrite(dataset.get(), type_.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, values));
    write_string_attribute(dataset.get(), "dtype", kernels::dtype_name(dtype_));
    ZT_H5_CHECK(dataset.close());
  }

  /// Closes the file; commit() then puts it into place.
  void close() {
    type_.reset();
    ZT_H5_CHECK(file_.close());
  }
  void commit() { staged_.commit(); }

 private:
  files::StagedFile staged_;
  io::H5FileScope scope_;
  DType dtype_;
  H5File file_;
  H5Datatype type_;
};

// ---- the command -----------------------------------------------------------------------------

/// Consolidation is one process's work; under a launcher with several ranks each would write
/// the same files.
void refuse_several_ranks() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"})
    if (const char* value = std::getenv(name); value != nullptr && std::atoi(value) > 1)
      throw runtime::UserError(
          concat("consolidate runs as one process (it needs no MPI); it was started as one of ",
                 value, " ranks: run it without mpirun/srun, or with -n 1"));
}

double peak_rss_bytes() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) * 1024.0;  // Linux reports KiB
}

std::string mib(double bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f MiB", bytes / (1024.0 * 1024.0));
  return text;
}

int run(const ConsolidateOptions& options) {
  refuse_several_ranks();
  const DType output = dtype_of_name(options.dtype);
  {
    // The Reader's wording is a resume's (--load-dir, --load-tag); say it with our names.
    struct stat status {};
    if (::stat(options.checkpoint_dir.c_str(), &status) != 0 || !S_ISDIR(status.st_mode))
      throw IoError(concat("CKPT_DIR ", quote(options.checkpoint_dir), ": no such directory"));
    if (options.tag.empty() && ::stat((options.checkpoint_dir + "/latest").c_str(), &status) != 0)
      throw IoError(concat("CKPT_DIR ", quote(options.checkpoint_dir),
                           ": it has no 'latest' file (no checkpoint finished there; give --tag "
                           "to consolidate a particular one)"));
    if (options.tag.find('/') != std::string::npos || options.tag == "." || options.tag == "..")
      throw IoError(concat("--tag ", quote(options.tag), ": not a checkpoint tag"));
  }
  check_output_place(options.checkpoint_dir, options.output_dir);

  checkpoint::Reader reader(options.checkpoint_dir, options.tag);
  const auto& info = reader.info();
  // Every file whole, before anything is written: a damaged checkpoint is refused by name, not
  // half consolidated.
  reader.verify_all_files();
  std::int64_t checkpoint_bytes = 0;
  for (const auto& [name, record] : info.files) checkpoint_bytes += record.size;
  const Model model = model_of(info);
  const Source source = choose_source(reader, output);

  std::printf("consolidate: checkpoint %s (step %lld, trained in %s on %d rank%s at stage %d)\n",
              quote(info.directory).c_str(), static_cast<long long>(info.counters.global_steps),
              info.run.precision.c_str(), info.run.world_size, info.run.world_size == 1 ? "" : "s",
              info.run.stage);
  std::printf("  verified   %zu files, %s, against the manifest\n", info.files.size(),
              memory::format_bytes(checkpoint_bytes).c_str());
  std::printf("  weights    %s\n", source.description.c_str());
  std::fflush(stdout);

  files::check_output_directory(options.output_dir, "OUT_DIR");
  const fs::path out_dir(options.output_dir);

  // Two buffers at most: the tensor as read (widened to fp32), and the transpose of the
  // Conv1D weights; every other tensor is written from the first.
  std::int64_t largest = 0;
  std::int64_t largest_conv1d = 0;
  std::string largest_name;
  std::vector<io::TensorDescription> tensors;
  for (const auto& param : model.params) {
    if (param.numel > largest) {
      largest = param.numel;
      largest_name = model::hf_saved_name(param);
    }
    if (model::is_conv1d_weight(param)) largest_conv1d = std::max(largest_conv1d, param.numel);
    // The names and metadata --save-weights writes (model/hf_gpt2.hpp): save_pretrained's.
    tensors.push_back({model::hf_saved_name(param), model::hf_shape(param), output});
  }
  const auto as_read = allocate_floats(largest, "the largest tensor");
  const auto transposed = allocate_floats(largest_conv1d, "the largest transposed tensor");

  io::SafetensorsWriter safetensors((out_dir / "model.safetensors").string(), tensors,
                                    model::hf_safetensors_metadata(), "model.safetensors");
  Hdf5Weights h5((out_dir / "model.h5").string(), output);

  std::int64_t elements = 0;
  for (std::size_t t = 0; t < model.params.size(); ++t) {
    const auto& param = model.params[t];
    reader.read(source.array, static_cast<int>(t), 0, param.numel, as_read.get());
    // 16-bit as stored widens exactly; the writers' rounding then gives back the same bits.
    if (source.dtype != "fp32") widen_in_place(as_read.get(), param.numel, source.dtype);
    float* values = as_read.get();
    if (model::is_conv1d_weight(param)) {
      model::to_hf_layout(param, as_read.get(), transposed.get());
      values = transposed.get();
    }
    safetensors.write_next(values);
    if (output != DType::F32) narrow_in_place(values, param.numel, output);
    h5.write(tensors[t].name, tensors[t].shape, values);
    elements += param.numel;
  }

  const hid_t root = h5.root();
  write_string_attribute(root, "format", "zerotrain consolidated GPT-2 weights");
  write_int_attribute(root, "step", info.counters.global_steps);
  write_int_attribute(root, "optimizer_steps", info.counters.optimizer_steps);
  write_string_attribute(root, "tag", info.tag);
  write_string_attribute(root, "zerotrain_version",
                         std::string(ZT_VERSION) + " (git " + ZT_GIT_REVISION + ")");
  write_string_attribute(root, "checkpoint_zerotrain_version", info.run.zerotrain_version);
  write_string_attribute(root, "source_checkpoint", fs::absolute(info.directory).string());
  write_string_attribute(root, "source_array", zero::state_array_name(source.array));
  write_string_attribute(root, "dtype", kernels::dtype_name(output));
  write_string_attribute(root, "training_precision", info.run.precision);
  write_string_attribute(root, "layout", "transformers GPT2LMHeadModel (Conv1D weights in x out)");
  h5.close();

  model::HfConfigOptions hf = model.hf;
  hf.dtype = torch_dtype_of(output);
  const std::string config_text = model::hf_config_json(model.config, hf);
  files::AtomicFile config_file((out_dir / "config.json").string(), "config.json");
  config_file.write(config_text);

  // Nothing appears before every file is complete: a failure up to here leaves OUT_DIR as it
  // was.
  safetensors.finish();
  h5.commit();
  config_file.commit();

  const std::int64_t bytes = elements * kernels::size_of(output);
  std::printf(
      "  wrote      %zu tensors, %lld parameters, %s (%lld bytes) of %s, to %s and %s; %s\n",
      model.params.size(), static_cast<long long>(elements), memory::format_bytes(bytes).c_str(),
      static_cast<long long>(bytes), kernels::dtype_name(output),
      quote((out_dir / "model.safetensors").string()).c_str(),
      quote((out_dir / "model.h5").string()).c_str(),
      quote((out_dir / "config.json").string()).c_str());
  std::printf("  peak memory %s (largest tensor %s: %s, %lld bytes as fp32)\n",
              mib(peak_rss_bytes()).c_str(), mib(static_cast<double>(largest) * 4).c_str(),
              largest_name.c_str(), static_cast<long long>(largest * 4));
  return 0;
}

}  // namespace

int run_consolidate(const ConsolidateOptions& options) {
  try {
    return run(options);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "zerotrain: error: %s\n", files::escaped(error.what(), true).c_str());
    const bool input = dynamic_cast<const model::ConfigError*>(&error) != nullptr ||
                       dynamic_cast<const model::WeightsError*>(&error) != nullptr;
    return input ? 2 : runtime::exit_code_for(error);
  }
}

}  // namespace zt::app
