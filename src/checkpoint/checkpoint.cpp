// SPDX-License-Identifier: Apache-2.0
#include "checkpoint/checkpoint.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>
#include <sstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "checkpoint/checksum.hpp"
#include "files/files.hpp"
#include "io/hdf5_handle.hpp"
#include "kernels/ops/dtype.hpp"
#include "memory/format.hpp"
#include "runtime/agreement.hpp"
#include "runtime/error.hpp"
#include "runtime/log.hpp"

namespace zt::checkpoint {

using io::H5Attribute;
using io::H5Dataset;
using io::H5Dataspace;
using io::H5Datatype;
using io::H5File;
using io::H5Group;
using io::IoError;
using runtime::concat;
using zero::StateArray;

namespace {

constexpr const char* kFormatName = "zerotrain checkpoint";
constexpr const char* kEngineStateFile = "engine_state.h5";
constexpr const char* kManifestFile = "manifest.txt";
constexpr const char* kManifestHeader = "zerotrain checkpoint manifest 1";

const StateArray kAllArrays[] = {StateArray::Parameters, StateArray::Master, StateArray::ExpAvg,
                                 StateArray::ExpAvgSq};

std::string dtype_text(backend::DType dtype) {
  return kernels::dtype_name(dtype);
}

std::int64_t bytes_of_dtype(const std::string& dtype) {
  return dtype == "fp32" ? 4 : 2;
}

// ---- HDF5 attributes ---------------------------------------------------------------------

void write_string(hid_t object, const char* name, const std::string& value) {
  // Variable-length UTF-8: what h5py reads as str (fixed-length strings come back as bytes).
  H5Datatype type{ZT_H5_CHECK(H5Tcopy(H5T_C_S1))};
  ZT_H5_CHECK(H5Tset_size(type.get(), H5T_VARIABLE));
  ZT_H5_CHECK(H5Tset_cset(type.get(), H5T_CSET_UTF8));
  H5Dataspace space{ZT_H5_CHECK(H5Screate(H5S_SCALAR))};
  H5Attribute attribute{
      ZT_H5_CHECK(H5Acreate2(object, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT))};
  const char* text = value.c_str();
  ZT_H5_CHECK(H5Awrite(attribute.get(), type.get(), &text));
}

template <class T>
void write_scalars(hid_t object, const char* name, const T* values, std::size_t count,
                   hid_t file_type, hid_t memory_type) {
  const hsize_t extent = count;
  H5Dataspace space{
      ZT_H5_CHECK(count == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &extent, nullptr))};
  H5Attribute attribute{
      ZT_H5_CHECK(H5Acreate2(object, name, file_type, space.get(), H5P_DEFAULT, H5P_DEFAULT))};
  ZT_H5_CHECK(H5Awrite(attribute.get(), memory_type, values));
}

void write_int(hid_t object, const char* name, std::int64_t value) {
  write_scalars(object, name, &value, 1, H5T_STD_I64LE, H5T_NATIVE_INT64);
}
void write_uint(hid_t object, const char* name, std::uint64_t value) {
  write_scalars(object, name, &value, 1, H5T_STD_U64LE, H5T_NATIVE_UINT64);
}
void write_double(hid_t object, const char* name, double value) {
  write_scalars(object, name, &value, 1, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE);
}
void write_ints(hid_t object, const char* name, const std::vector<std::int64_t>& values) {
  if (values.empty()) {
    // A rank-0 tensor: an empty shape, stored as an empty dataspace.
    H5Dataspace space{ZT_H5_CHECK(H5Screate(H5S_NULL))};
    H5Attribute attribute{ZT_H5_CHECK(
        H5Acreate2(object, name, H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT))};
    return;
  }
  const hsize_t extent = values.size();
  H5Dataspace space{ZT_H5_CHECK(H5Screate_simple(1, &extent, nullptr))};
  H5Attribute attribute{
      ZT_H5_CHECK(H5Acreate2(object, name, H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT))};
  ZT_H5_CHECK(H5Awrite(attribute.get(), H5T_NATIVE_INT64, values.data()));
}

H5Attribute open_attribute(hid_t object, const char* name) {
  if (ZT_H5_CHECK(H5Aexists(object, name)) <= 0)
    throw IoError(concat(files::quote(io::current_hdf5_file()), ": attribute '", name,
                         "' is missing (not a zerotrain checkpoint file, or a damaged one)"));
  return H5Attribute{ZT_H5_CHECK(H5Aopen(object, name, H5P_DEFAULT))};
}

std::string read_string(hid_t object, const char* name) {
  H5Attribute attribute = open_attribute(object, name);
  H5Datatype type{ZT_H5_CHECK(H5Aget_type(attribute.get()))};
  H5Dataspace space{ZT_H5_CHECK(H5Aget_space(attribute.get()))};
  if (H5Tget_class(type.get()) != H5T_STRING ||
      ZT_H5_CHECK(H5Sget_simple_extent_npoints(space.get())) != 1)
    throw IoError(
        concat(files::quote(io::current_hdf5_file()), ": attribute '", name, "' is not a string"));
  if (ZT_H5_CHECK(H5Tis_variable_str(type.get())) > 0) {
    H5Datatype memory{ZT_H5_CHECK(H5Tcopy(H5T_C_S1))};
    ZT_H5_CHECK(H5Tset_size(memory.get(), H5T_VARIABLE));
    ZT_H5_CHECK(H5Tset_cset(memory.get(), H5Tget_cset(type.get())));
    char* text = nullptr;
    ZT_H5_CHECK(H5Aread(attribute.get(), memory.get(), &text));
    std::string value = text != nullptr ? text : "";
    H5free_memory(text);
    return value;
  }
  const std::size_t size = H5Tget_size(type.get());
  std::string value(size, '\0');
  ZT_H5_CHECK(H5Aread(attribute.get(), type.get(), value.data()));
  value.resize(std::strlen(value.c_str()));
  return value;
}

template <class T>
T read_scalar(hid_t object, const char* name, hid_t memory_type) {
  H5Attribute attribute = open_attribute(object, name);
  H5Dataspace space{ZT_H5_CHECK(H5Aget_space(attribute.get()))};
  if (ZT_H5_CHECK(H5Sget_simple_extent_npoints(space.get())) != 1)
    throw IoError(concat(files::quote(io::current_hdf5_file()), ": attribute '", name,
                         "' is not a single value"));
  T value{};
  ZT_H5_CHECK(H5Aread(attribute.get(), memory_type, &value));
  return value;
}
std::vector<std::int64_t> read_ints(hid_t object, const char* name) {
  H5Attribute attribute = open_attribute(object, name);
  H5Dataspace space{ZT_H5_CHECK(H5Aget_space(attribute.get()))};
  if (ZT_H5_CHECK(H5Sget_simple_extent_type(space.get())) == H5S_NULL) return {};
  const auto count = ZT_H5_CHECK(H5Sget_simple_extent_npoints(space.get()));
  if (count > 64)
    throw IoError(concat(files::quote(io::current_hdf5_file()), ": attribute '", name, "' has ",
                         count, " values (a damaged file)"));
  std::vector<std::int64_t> values(static_cast<std::size_t>(count));
  ZT_H5_CHECK(H5Aread(attribute.get(), H5T_NATIVE_INT64, values.data()));
  return values;
}

std::int64_t read_int(hid_t object, const char* name) {
  return read_scalar<std::int64_t>(object, name, H5T_NATIVE_INT64);
}
std::uint64_t read_uint(hid_t object, const char* name) {
  return read_scalar<std::uint64_t>(object, name, H5T_NATIVE_UINT64);
}
double read_double(hid_t object, const char* name) {
  return read_scalar<double>(object, name, H5T_NATIVE_DOUBLE);
}

// ---- files and checksums -----------------------------------------------------------------

CheckpointInfo::FileRecord checksum_file(const std::string& path, const std::string& what) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0)
    throw IoError(
        concat(what, " ", files::quote(path), ": cannot open it: ", std::strerror(errno)));
  std::vector<unsigned char> buffer(std::size_t{4} << 20);
  Checksum sum;
  CheckpointInfo::FileRecord record;
  for (;;) {
    const ssize_t got = ::read(fd, buffer.data(), buffer.size());
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      const int error = errno;
      ::close(fd);
      throw IoError(concat(what, " ", files::quote(path), ": read failed: ", std::strerror(error)));
    }
    if (got == 0) break;
    sum.update(buffer.data(), static_cast<std::size_t>(got));
    record.size += got;
  }
  ::close(fd);
  record.checksum = sum.value();
  return record;
}

/// The size and checksum of `path` against the manifest's; throws IoError naming the file.
void verify_file(const CheckpointInfo& info, const std::string& name) {
  const std::string path = info.directory + "/" + name;
  const auto listed = info.files.find(name);
  if (listed == info.files.end())
    throw IoError(concat("checkpoint ", files::quote(info.directory), ": ", name,
                         " is not in its manifest (a damaged manifest, or another checkpoint's "
                         "file)"));
  struct stat status {};
  if (::stat(path.c_str(), &status) != 0)
    throw IoError(concat("checkpoint ", files::quote(info.directory), ": ", name, " is missing (",
                         std::strerror(errno), ")"));
  if (status.st_size != listed->second.size)
    throw IoError(concat("checkpoint file ", files::quote(path), " is ", status.st_size,
                         " bytes, the checkpoint wrote ", listed->second.size,
                         status.st_size < listed->second.size ? " (truncated)" : "",
                         ": refusing to load it"));
  const auto found = checksum_file(path, "checkpoint file");
  if (found.checksum != listed->second.checksum)
    throw IoError(concat("checkpoint file ", files::quote(path), ": its checksum is ",
                         checksum_text(found.checksum), ", the manifest says ",
                         checksum_text(listed->second.checksum),
                         ": the file was changed or damaged after it was written; refusing to "
                         "load it"));
}

std::string manifest_text(
    const std::vector<std::pair<std::string, CheckpointInfo::FileRecord>>& files) {
  std::string text = std::string(kManifestHeader) + "\n";
  for (const auto& [name, record] : files)
    text += concat(name, " ", record.size, " ", checksum_text(record.checksum), "\n");
  return text;
}

std::map<std::string, CheckpointInfo::FileRecord> parse_manifest(const std::string& path) {
  const std::string text = files::read_input_file(path, "checkpoint manifest", 1 << 24);
  std::istringstream lines(text);
  std::string line;
  const auto bad = [&](const std::string& why) {
    return IoError(concat("checkpoint manifest ", files::quote(path), ": ", why,
                          " (a damaged or foreign file)"));
  };
  if (!std::getline(lines, line) || line != kManifestHeader) throw bad("wrong first line");
  std::map<std::string, CheckpointInfo::FileRecord> files;
  while (std::getline(lines, line)) {
    std::istringstream fields(line);
    std::string name;
    std::string checksum;
    CheckpointInfo::FileRecord record;
    if (!(fields >> name >> record.size >> checksum) || checksum.size() != 16 ||
        checksum.find_first_not_of("0123456789abcdef") != std::string::npos || record.size < 0)
      throw bad(concat("malformed line '", files::escaped(line), "'"));
    record.checksum = std::stoull(checksum, nullptr, 16);
    files[name] = record;
  }
  return files;
}

// ---- the rank files ------------------------------------------------------------------------

hid_t file_type_of(const std::string& dtype) {
  return dtype == "fp32" ? H5T_IEEE_F32LE : H5T_STD_U16LE;
}
hid_t memory_type_of(const std::string& dtype) {
  return dtype == "fp32" ? H5T_NATIVE_FLOAT : H5T_NATIVE_UINT16;
}

/// Streams the engine's partition into one HDF5 file, one dataset per (array, tensor).
class RankFileWriter {
 public:
  RankFileWriter(const std::string& path, const zero::Engine& engine, int rank, int world,
                 const std::string& tag)
      : scope_(path), layout_(engine.layout()), rank_(rank) {
    file_ = H5File{ZT_H5_CHECK(H5Fcreate(path.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT))};
    const hid_t root = file_.get();
    write_string(root, "format", kFormatName);
    write_int(root, "format_version", kFormatVersion);
    write_string(root, "tag", tag);
    write_int(root, "rank", rank);
    write_int(root, "world_size", world);
    write_int(root, "partition_begin", layout_.slice_begin(rank));
    write_int(root, "partition_end", layout_.slice_end(rank));
    for (const StateArray array : engine.state_arrays())
      groups_[static_cast<int>(array)] = H5Group{ZT_H5_CHECK(
          H5Gcreate2(root, zero::state_array_name(array), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT))};
  }

  void write(StateArray array, std::int64_t begin, std::int64_t end, const void* data,
             backend::DType dtype) {
    const std::string dtype_name = dtype_text(dtype);
    const std::int64_t element = kernels::size_of(dtype);
    for (const auto& piece : layout_.pieces_in(begin, end)) {
      if (!open_ || open_->array != array || open_->tensor != piece.entry)
        open_dataset(array, piece.entry, dtype_name);
      Open& open = *open_;
      if (piece.offset_in_entry != open.offset + open.written)
        throw std::logic_error("checkpoint: the engine's pieces are not in order");
      const auto* bytes =
          static_cast<const unsigned char*>(data) + (piece.global_offset - begin) * element;
      const hsize_t start = static_cast<hsize_t>(open.written);
      const hsize_t count = static_cast<hsize_t>(piece.length);
      H5Dataspace file_space{ZT_H5_CHECK(H5Dget_space(open.dataset.get()))};
      ZT_H5_CHECK(
          H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, &start, nullptr, &count, nullptr));
      H5Dataspace memory_space{ZT_H5_CHECK(H5Screate_simple(1, &count, nullptr))};
      ZT_H5_CHECK(H5Dwrite(open.dataset.get(), memory_type_of(dtype_name), memory_space.get(),
                           file_space.get(), H5P_DEFAULT, bytes));
      open.checksum.update(bytes, static_cast<std::size_t>(piece.length * element));
      open.written += piece.length;
      if (open.written == open.length) close_dataset();
    }
  }

  void finish() {
    if (open_) throw std::logic_error("checkpoint: a tensor's piece was not written in full");
    groups_.clear();
    ZT_H5_CHECK(file_.close());
  }

 private:
  struct Open {
    StateArray array;
    int tensor = -1;
    std::int64_t offset = 0;  // in the tensor
    std::int64_t length = 0;
    std::int64_t written = 0;
    H5Dataset dataset;
    Checksum checksum;
  };

  void open_dataset(StateArray array, int tensor, const std::string& dtype) {
    if (open_) throw std::logic_error("checkpoint: a tensor's piece was not written in full");
    const auto& entry = layout_.entries()[static_cast<std::size_t>(tensor)];
    const std::int64_t first = std::max(layout_.slice_begin(rank_), entry.offset);
    const std::int64_t last = std::min(layout_.slice_end(rank_), entry.offset + entry.numel);
    open_ = std::make_unique<Open>();
    open_->array = array;
    open_->tensor = tensor;
    open_->offset = first - entry.offset;
    open_->length = last - first;
    const hsize_t extent = static_cast<hsize_t>(open_->length);
    H5Dataspace space{ZT_H5_CHECK(H5Screate_simple(1, &extent, nullptr))};
    const hid_t group = groups_.at(static_cast<int>(array)).get();
    open_->dataset =
        H5Dataset{ZT_H5_CHECK(H5Dcreate2(group, entry.name.c_str(), file_type_of(dtype),
                                         space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT))};
    const hid_t dataset = open_->dataset.get();
    write_ints(dataset, "global_shape", entry.shape);
    write_int(dataset, "offset", open_->offset);
    write_int(dataset, "length", open_->length);
    write_int(dataset, "flat_offset", first);
    write_string(dataset, "dtype", dtype);
  }

  void close_dataset() {
    write_uint(open_->dataset.get(), "checksum", open_->checksum.value());
    ZT_H5_CHECK(open_->dataset.close());
    open_.reset();
  }

  io::H5FileScope scope_;
  const zero::FlatLayout& layout_;
  int rank_;
  H5File file_;
  std::map<int, H5Group> groups_;
  std::unique_ptr<Open> open_;
};

void write_engine_state(const std::string& path, const zero::Engine& engine, const RunRecord& run,
                        const std::string& tag) {
  io::H5FileScope scope(path);
  H5File file{ZT_H5_CHECK(H5Fcreate(path.c_str(), H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT))};
  const hid_t root = file.get();
  const auto counters = engine.counters();
  write_string(root, "format", kFormatName);
  write_int(root, "format_version", kFormatVersion);
  write_string(root, "zerotrain_version", run.zerotrain_version);
  write_string(root, "tag", tag);
  write_int(root, "global_steps", counters.global_steps);
  write_int(root, "optimizer_steps", counters.optimizer_steps);
  write_int(root, "skipped_steps", counters.global_steps - counters.optimizer_steps);
  write_int(root, "world_size", run.world_size);
  write_int(root, "stage", run.stage);
  write_string(root, "precision", run.precision);
  write_string(root, "optimizer", run.optimizer);
  write_string(root, "offload", run.offload);
  write_uint(root, "seed", run.seed);
  write_string(root, "data", run.data);
  write_int(root, "synthetic_tokens", run.synthetic_tokens);
  write_int(root, "sampler_step", run.sampler.step);
  write_uint(root, "sampler_seed", run.sampler.seed);
  write_int(root, "sampler_num_windows", run.sampler.num_windows);
  write_int(root, "sampler_seq_len", run.sampler.seq_len);
  write_int(root, "sampler_train_batch_size", run.sampler.train_batch_size);
  write_string(root, "rng", run.rng);
  // The schedule is a function of the applied steps (its parameters are in `config`); this is
  // DeepSpeed's lr_scheduler.last_batch_iteration after them.
  write_int(root, "lr_scheduler_last_batch_iteration", counters.optimizer_steps - 1);
  write_int(root, "loss_scaler", counters.has_loss_scaler ? 1 : 0);
  write_double(root, "loss_scale", counters.loss_scaler.cur_scale);
  write_int(root, "loss_scaler_cur_iter", counters.loss_scaler.cur_iter);
  write_int(root, "loss_scaler_last_overflow_iter", counters.loss_scaler.last_overflow_iter);
  write_int(root, "loss_scaler_cur_hysteresis", counters.loss_scaler.cur_hysteresis);
  write_string(root, "config", run.config_text);
  write_string(root, "model_config", run.model_config_json);
  write_int(root, "padded_elements", engine.layout().padded_elements());
  std::string arrays;
  for (const StateArray array : engine.state_arrays())
    arrays += std::string(arrays.empty() ? "" : ",") + zero::state_array_name(array);
  write_string(root, "arrays", arrays);
  write_string(root, "parameter_dtype", dtype_text(engine.settings().dtype));
  nlohmann::json tensors = nlohmann::json::array();
  for (const auto& entry : engine.layout().entries())
    tensors.push_back({{"name", entry.name},
                       {"shape", entry.shape},
                       {"numel", entry.numel},
                       {"flat_offset", entry.offset}});
  write_string(root, "tensors", tensors.dump());
  ZT_H5_CHECK(file.close());
}

CheckpointInfo read_engine_state(const std::string& directory, const std::string& tag) {
  CheckpointInfo info;
  info.directory = directory;
  info.tag = tag;
  const std::string path = directory + "/" + kEngineStateFile;
  io::H5FileScope scope(path);
  H5File file{ZT_H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT))};
  const hid_t root = file.get();
  if (read_string(root, "format") != kFormatName)
    throw IoError(concat(files::quote(path), ": not a zerotrain checkpoint"));
  const auto version = read_int(root, "format_version");
  if (version != kFormatVersion)
    throw IoError(concat(files::quote(path), ": checkpoint format version ", version,
                         ", this zerotrain reads version ", kFormatVersion));
  RunRecord& run = info.run;
  run.zerotrain_version = read_string(root, "zerotrain_version");
  const std::string stored_tag = read_string(root, "tag");
  if (stored_tag != tag)
    throw IoError(concat(files::quote(path), ": written as checkpoint '",
                         files::escaped(stored_tag), "', found as '", files::escaped(tag),
                         "' (a checkpoint directory was renamed or copied over another)"));
  info.counters.global_steps = read_int(root, "global_steps");
  info.counters.optimizer_steps = read_int(root, "optimizer_steps");
  run.world_size = static_cast<int>(read_int(root, "world_size"));
  run.stage = static_cast<int>(read_int(root, "stage"));
  run.precision = read_string(root, "precision");
  run.optimizer = read_string(root, "optimizer");
  run.offload = read_string(root, "offload");
  run.seed = read_uint(root, "seed");
  run.data = read_string(root, "data");
  run.synthetic_tokens = read_int(root, "synthetic_tokens");
  run.sampler.step = read_int(root, "sampler_step");
  run.sampler.seed = read_uint(root, "sampler_seed");
  run.sampler.num_windows = read_int(root, "sampler_num_windows");
  run.sampler.seq_len = read_int(root, "sampler_seq_len");
  run.sampler.train_batch_size = read_int(root, "sampler_train_batch_size");
  run.rng = read_string(root, "rng");
  info.counters.has_loss_scaler = read_int(root, "loss_scaler") != 0;
  info.counters.loss_scaler.cur_scale = read_double(root, "loss_scale");
  info.counters.loss_scaler.cur_iter = read_int(root, "loss_scaler_cur_iter");
  info.counters.loss_scaler.last_overflow_iter = read_int(root, "loss_scaler_last_overflow_iter");
  info.counters.loss_scaler.cur_hysteresis =
      static_cast<int>(read_int(root, "loss_scaler_cur_hysteresis"));
  run.config_text = read_string(root, "config");
  run.model_config_json = read_string(root, "model_config");
  info.padded_elements = read_int(root, "padded_elements");
  std::stringstream arrays(read_string(root, "arrays"));
  for (std::string name; std::getline(arrays, name, ',');) info.arrays.push_back(name);
  info.parameter_dtype = read_string(root, "parameter_dtype");
  try {
    for (const auto& tensor : nlohmann::json::parse(read_string(root, "tensors"))) {
      TensorRecord record;
      record.name = tensor.at("name").get<std::string>();
      record.shape = tensor.at("shape").get<std::vector<std::int64_t>>();
      record.numel = tensor.at("numel").get<std::int64_t>();
      record.flat_offset = tensor.at("flat_offset").get<std::int64_t>();
      info.tensors.push_back(std::move(record));
    }
  } catch (const nlohmann::json::exception& error) {
    throw IoError(concat(files::quote(path), ": its tensor list is malformed: ", error.what()));
  }
  // What the reader's arithmetic relies on.
  const auto bad = [&](const std::string& why) {
    return IoError(concat(files::quote(path), ": ", why, " (a damaged checkpoint)"));
  };
  if (run.world_size < 1 || info.padded_elements < 0 || info.padded_elements % run.world_size != 0)
    throw bad("world size and padded size do not fit");
  for (const auto& tensor : info.tensors)
    if (tensor.numel < 0 || tensor.flat_offset < 0 ||
        tensor.flat_offset + tensor.numel > info.padded_elements)
      throw bad(concat("tensor ", tensor.name, " lies outside the flat buffer"));
  if (info.counters.global_steps < 0 || info.counters.optimizer_steps < 0 ||
      info.counters.optimizer_steps > info.counters.global_steps)
    throw bad("its step counters are inconsistent");
  return info;
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string text = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + ")";
}

std::uint64_t random_id() {
  std::random_device device;
  return (static_cast<std::uint64_t>(device()) << 32) ^ device();
}

/// Cleans up after runs that died while saving (the directory lock says no other run writes
/// here): partial checkpoints are removed; a checkpoint moved aside to be replaced goes back
/// where it was if its replacement never arrived, else it is removed.
void remove_partial_checkpoints(const std::string& directory) {
  DIR* dir = ::opendir(directory.c_str());
  if (dir == nullptr) return;
  std::vector<std::string> names;
  while (const dirent* entry = ::readdir(dir)) names.emplace_back(entry->d_name);
  ::closedir(dir);
  for (const auto& name : names) {
    if (name.size() < 2 || name[0] != '.') continue;
    const std::string path = directory + "/" + name;
    if (name.find(".partial-") != std::string::npos) {
      files::remove_tree(path);
      continue;
    }
    const auto replaced = name.find(".replaced-");
    if (replaced == std::string::npos) continue;
    const std::string original = directory + "/" + name.substr(1, replaced - 1);
    struct stat status {};
    if (::lstat(original.c_str(), &status) == 0)
      files::remove_tree(path);
    else
      ::rename(path.c_str(), original.c_str());
  }
}

/// Runs `work`, returning its exception's message ("" when it succeeded).
template <class Work>
std::string attempt(Work&& work) {
  try {
    work();
    return "";
  } catch (const std::exception& error) {
    return error.what();
  }
}

/// Throws IoError on every rank that sees too little free space under `directory` for the
/// checkpoint's files on its file system: all ranks' with shared storage, its node's with
/// node-local storage (estimated from the arrays' bytes plus HDF5's overhead per dataset).
void check_room(const zero::Engine& engine, MPI_Comm comm, bool node_local,
                const std::string& directory) {
  std::int64_t bytes = 0;
  for (const StateArray array : engine.state_arrays())
    bytes += engine.layout().slice_elements() *
             (array == StateArray::Parameters ? kernels::size_of(engine.settings().dtype) : 4);
  const auto datasets =
      static_cast<std::int64_t>(engine.layout().entries().size() * engine.state_arrays().size());
  bytes += datasets * 1024 + (std::int64_t{64} << 10);  // headers, attributes, engine state
  MPI_Comm sharing = comm;
  if (node_local)
    ZT_MPI_CHECK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &sharing));
  std::int64_t needed = 0;
  const int reduced = MPI_Allreduce(&bytes, &needed, 1, MPI_INT64_T, MPI_SUM, sharing);
  if (node_local) MPI_Comm_free(&sharing);
  ZT_MPI_CHECK(reduced);
  struct statvfs status {};
  if (::statvfs(directory.c_str(), &status) != 0) return;  // the writes will say what is wrong
  const auto available =
      static_cast<std::int64_t>(status.f_bavail) * static_cast<std::int64_t>(status.f_frsize);
  if (available < needed)
    throw IoError(concat("checkpoint ", files::quote(directory), ": No space left on device: the ",
                         "checkpoint needs about ", memory::format_bytes(needed), ", its file ",
                         "system has ", memory::format_bytes(available),
                         " free; the previous checkpoint and 'latest' stay as they are"));
}

}  // namespace

std::string rank_file_name(int rank) {
  char name[64];
  std::snprintf(name, sizeof name, "zero_rank_%05d_states.h5", rank);
  return name;
}

std::string read_latest(const std::string& directory) {
  const std::string path = directory + "/latest";
  struct stat status {};
  if (::stat(directory.c_str(), &status) != 0 || !S_ISDIR(status.st_mode))
    throw IoError(concat("checkpoint directory ", files::quote(directory), ": no such directory"));
  if (::stat(path.c_str(), &status) != 0)
    throw IoError(concat("checkpoint directory ", files::quote(directory),
                         ": it has no 'latest' file (no checkpoint finished there; name a tag "
                         "to load a particular one)"));
  std::string tag = files::read_input_file(path, "checkpoint 'latest' file", 4096);
  while (!tag.empty() && (tag.back() == '\n' || tag.back() == '\r' || tag.back() == ' '))
    tag.pop_back();
  if (tag.empty() || tag.find('/') != std::string::npos || tag == "." || tag == "..")
    throw IoError(
        concat(files::quote(path), ": '", files::escaped(tag), "' is not a checkpoint tag"));
  return tag;
}

std::string save(zero::Engine& engine, MPI_Comm comm, const RunRecord& run,
                 const SaveSettings& settings, const std::string& tag) {
  int rank = 0;
  int world = 1;
  ZT_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  ZT_MPI_CHECK(MPI_Comm_size(comm, &world));

  // checkpoint.tag_validation: DeepSpeed compares a digest of the tag across ranks.
  std::uint64_t digest = runtime::digest(tag);
  std::uint64_t low = 0;
  std::uint64_t high = 0;
  ZT_MPI_CHECK(MPI_Allreduce(&digest, &low, 1, MPI_UINT64_T, MPI_MIN, comm));
  ZT_MPI_CHECK(MPI_Allreduce(&digest, &high, 1, MPI_UINT64_T, MPI_MAX, comm));
  if (low != high) {
    const std::string message =
        concat("[rank=", rank, "] The checkpoint tag name '", tag,
               "' is not consistent across all ranks. Including rank unique information in "
               "checkpoint tag could cause issues when restoring with different world sizes.");
    if (settings.tag_validation == "Fail") throw runtime::UserError(message);
    if (settings.tag_validation == "Warn") runtime::warn(message);
  }

  const bool leader = settings.node_local ? settings.local_rank == 0 : rank == 0;
  std::uint64_t id = rank == 0 ? random_id() : 0;
  ZT_MPI_CHECK(MPI_Bcast(&id, 1, MPI_UINT64_T, 0, comm));
  const std::string& directory = settings.directory;
  const std::string partial = concat(directory, "/.", tag, ".partial-", checksum_text(id));
  const std::string final_directory = directory + "/" + tag;

  runtime::agree_on_problem(comm, leader ? attempt([&] {
                              files::make_directory(directory, "--save-dir", /*may_exist=*/true);
                              remove_partial_checkpoints(directory);
                              files::make_directory(partial, "checkpoint directory");
                            })
                                         : "");
  const auto fail_together = [&](const std::string& problem) {
    try {
      runtime::agree_on_problem(comm, problem);
    } catch (...) {
      if (leader) files::remove_tree(partial);
      throw;
    }
  };

  // Room first: HDF5 that runs out of space mid-file leaves an open file behind that its own
  // clean-up at exit trips over, and a save must fail cleanly, naming the numbers.
  fail_together(attempt([&] { check_room(engine, comm, settings.node_local, partial); }));

  // Every rank's partition.
  CheckpointInfo::FileRecord mine;
  const std::string my_file = partial + "/" + rank_file_name(rank);
  fail_together(attempt([&] {
    RankFileWriter writer(my_file, engine, rank, world, tag);
    engine.save_state([&](StateArray array, std::int64_t begin, std::int64_t end, const void* data,
                          backend::DType dtype) { writer.write(array, begin, end, data, dtype); });
    writer.finish();
    files::sync_path(my_file, "checkpoint file");
    mine = checksum_file(my_file, "checkpoint file");
  }));
  if (settings.extra_outputs) fail_together(attempt([&] { settings.extra_outputs(partial); }));
  std::vector<std::int64_t> sizes(static_cast<std::size_t>(world));
  std::vector<std::uint64_t> sums(static_cast<std::size_t>(world));
  ZT_MPI_CHECK(MPI_Allgather(&mine.size, 1, MPI_INT64_T, sizes.data(), 1, MPI_INT64_T, comm));
  ZT_MPI_CHECK(MPI_Allgather(&mine.checksum, 1, MPI_UINT64_T, sums.data(), 1, MPI_UINT64_T, comm));

  // The engine state and the manifest; then the directory goes into place, then `latest`.
  fail_together(leader ? attempt([&] {
    const std::string state_path = partial + "/" + kEngineStateFile;
    write_engine_state(state_path, engine, run, tag);
    files::sync_path(state_path, "checkpoint engine state");
    std::vector<std::pair<std::string, CheckpointInfo::FileRecord>> listed;
    listed.emplace_back(kEngineStateFile, checksum_file(state_path, "checkpoint engine state"));
    for (int r = 0; r < world; ++r)
      listed.emplace_back(rank_file_name(r),
                          CheckpointInfo::FileRecord{sizes[static_cast<std::size_t>(r)],
                                                     sums[static_cast<std::size_t>(r)]});
    // What extra_outputs wrote (the leader sees it: it is written on rank 0's node).
    if (DIR* dir = ::opendir(partial.c_str())) {
      std::vector<std::string> extra;
      while (const dirent* entry = ::readdir(dir)) {
        const std::string name = entry->d_name;
        if (name == "." || name == ".." || name == kEngineStateFile ||
            name.rfind("zero_rank_", 0) == 0)
          continue;
        extra.push_back(name);
      }
      ::closedir(dir);
      std::sort(extra.begin(), extra.end());
      for (const auto& name : extra)
        listed.emplace_back(name, checksum_file(partial + "/" + name, "checkpoint file"));
    }
    files::write_file_atomically(partial + "/" + kManifestFile, manifest_text(listed),
                                 "checkpoint manifest");
    files::sync_path(partial, "checkpoint directory");
    // A checkpoint of the same tag (a run resumed before it and saving again) is replaced
    // whole: moved aside, the new one renamed in, the old one removed.
    struct stat status {};
    std::string replaced;
    if (::lstat(final_directory.c_str(), &status) == 0) {
      replaced = concat(directory, "/.", tag, ".replaced-", checksum_text(id));
      files::rename_path(final_directory, replaced, "checkpoint directory");
    }
    files::rename_path(partial, final_directory, "checkpoint directory");
    files::write_file_atomically(directory + "/latest", tag, "checkpoint 'latest' file");
    if (!replaced.empty()) files::remove_tree(replaced);
  })
                       : "");
  return final_directory;
}

// ---- reading -------------------------------------------------------------------------------

class Reader::RankFile {
 public:
  RankFile(const CheckpointInfo& info, int rank, bool verified)
      : path_(info.directory + "/" + rank_file_name(rank)) {
    if (!verified) verify_file(info, rank_file_name(rank));
    io::H5FileScope scope(path_);
    file_ = H5File{ZT_H5_CHECK(H5Fopen(path_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT))};
    const hid_t root = file_.get();
    if (read_string(root, "format") != kFormatName || read_int(root, "rank") != rank ||
        read_int(root, "world_size") != info.run.world_size || read_string(root, "tag") != info.tag)
      throw IoError(concat(files::quote(path_), ": not rank ", rank, " of ", info.run.world_size,
                           " of checkpoint '", info.tag, "' (a file from another checkpoint)"));
  }

  /// Elements [begin, end) of `tensor` (in the tensor) of `array`, in the stored dtype.
  void read(StateArray array, const TensorRecord& tensor, const std::string& dtype,
            std::int64_t begin, std::int64_t end, void* out) {
    io::H5FileScope scope(path_);
    const std::string name = concat(zero::state_array_name(array), "/", tensor.name);
    if (ZT_H5_CHECK(H5Lexists(file_.get(), zero::state_array_name(array), H5P_DEFAULT)) <= 0 ||
        ZT_H5_CHECK(H5Lexists(file_.get(), name.c_str(), H5P_DEFAULT)) <= 0)
      throw IoError(concat(files::quote(path_), ": dataset /", name, " is missing"));
    H5Dataset dataset{ZT_H5_CHECK(H5Dopen2(file_.get(), name.c_str(), H5P_DEFAULT))};
    const hid_t d = dataset.get();
    const std::int64_t offset = read_int(d, "offset");
    const std::int64_t length = read_int(d, "length");
    if (read_int(d, "flat_offset") != tensor.flat_offset + offset ||
        read_ints(d, "global_shape") != tensor.shape)
      throw IoError(concat(files::quote(path_), ": /", name,
                           " does not match the tensor the engine state describes (shape ",
                           shape_text(tensor.shape), " at flat offset ", tensor.flat_offset,
                           "): a file from another checkpoint"));
    const std::string stored = read_string(d, "dtype");
    if (stored != dtype)
      throw IoError(concat(files::quote(path_), ": /", name, " is ", stored,
                           ", the checkpoint's engine state says ", dtype));
    H5Dataspace file_space{ZT_H5_CHECK(H5Dget_space(d))};
    if (ZT_H5_CHECK(H5Sget_simple_extent_npoints(file_space.get())) != length || begin < offset ||
        end > offset + length)
      throw IoError(concat(files::quote(path_), ": /", name, " holds elements [", offset, ", ",
                           offset + length, ") of the tensor, not [", begin, ", ", end, ")"));
    {
      H5Datatype type{ZT_H5_CHECK(H5Dget_type(d))};
      if (static_cast<std::int64_t>(H5Tget_size(type.get())) != bytes_of_dtype(dtype))
        throw IoError(concat(files::quote(path_), ": /", name, " has elements of ",
                             H5Tget_size(type.get()), " bytes, ", dtype, " needs ",
                             bytes_of_dtype(dtype)));
    }
    const hsize_t start = static_cast<hsize_t>(begin - offset);
    const hsize_t count = static_cast<hsize_t>(end - begin);
    if (count == 0) return;
    ZT_H5_CHECK(
        H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, &start, nullptr, &count, nullptr));
    H5Dataspace memory_space{ZT_H5_CHECK(H5Screate_simple(1, &count, nullptr))};
    ZT_H5_CHECK(
        H5Dread(d, memory_type_of(dtype), memory_space.get(), file_space.get(), H5P_DEFAULT, out));
    if (begin == offset && end == offset + length) {
      const std::uint64_t expected = read_uint(d, "checksum");
      const std::uint64_t found =
          checksum_of(out, static_cast<std::size_t>(length * bytes_of_dtype(dtype)));
      if (found != expected)
        throw IoError(concat(files::quote(path_), ": /", name, " reads back with checksum ",
                             checksum_text(found), ", it was written with ",
                             checksum_text(expected), ": the file is damaged"));
    }
  }

 private:
  std::string path_;
  H5File file_;
};

Reader::Reader(const std::string& directory, const std::string& tag_or_empty) {
  const std::string tag = tag_or_empty.empty() ? read_latest(directory) : tag_or_empty;
  const std::string checkpoint = directory + "/" + tag;
  struct stat status {};
  if (::stat(checkpoint.c_str(), &status) != 0 || !S_ISDIR(status.st_mode)) {
    // A save that died between moving a checkpoint of the same tag aside and renaming its
    // replacement in leaves the old one under a hidden name (the next save puts it back).
    std::string aside;
    if (DIR* dir = ::opendir(directory.c_str())) {
      const std::string prefix = "." + tag + ".replaced-";
      while (const dirent* entry = ::readdir(dir))
        if (std::string(entry->d_name).rfind(prefix, 0) == 0) aside = entry->d_name;
      ::closedir(dir);
    }
    throw IoError(concat("checkpoint ", files::quote(checkpoint), " does not exist",
                         tag_or_empty.empty() ? " ('latest' names it)" : "",
                         aside.empty()
                             ? ""
                             : concat(": a save replacing it was interrupted; the previous one is ",
                                      files::quote(directory + "/" + aside), ": rename it to ",
                                      files::quote(checkpoint))));
  }
  CheckpointInfo partial;
  partial.directory = checkpoint;
  partial.files = parse_manifest(checkpoint + "/" + kManifestFile);
  verify_file(partial, kEngineStateFile);
  verified_.insert(kEngineStateFile);
  info_ = read_engine_state(checkpoint, tag);
  info_.files = std::move(partial.files);
  world_size_ = info_.run.world_size;
  for (int r = 0; r < world_size_; ++r)
    if (info_.files.count(rank_file_name(r)) == 0)
      throw IoError(concat("checkpoint ", files::quote(checkpoint), ": its manifest lists no ",
                           rank_file_name(r), " of its ", world_size_, " ranks"));
}

Reader::~Reader() = default;

bool Reader::has_array(StateArray array) const {
  return std::find(info_.arrays.begin(), info_.arrays.end(), zero::state_array_name(array)) !=
         info_.arrays.end();
}

std::string Reader::dtype_of(StateArray array) const {
  return array == StateArray::Parameters ? info_.parameter_dtype : "fp32";
}

Reader::RankFile& Reader::rank_file(int rank) {
  auto& slot = open_[rank];
  if (!slot)
    slot = std::make_unique<RankFile>(info_, rank, verified_.count(rank_file_name(rank)) > 0);
  return *slot;
}

void Reader::read(StateArray array, int tensor, std::int64_t begin, std::int64_t end, void* out) {
  const TensorRecord& record = info_.tensors.at(static_cast<std::size_t>(tensor));
  if (!has_array(array))
    throw IoError(concat("checkpoint ", files::quote(info_.directory), " holds no ",
                         zero::state_array_name(array)));
  if (begin < 0 || end > record.numel || begin > end)
    throw std::out_of_range("checkpoint reader: range outside the tensor");
  const std::string dtype = dtype_of(array);
  const std::int64_t element = bytes_of_dtype(dtype);
  const std::int64_t partition = info_.padded_elements / world_size_;
  auto* bytes = static_cast<unsigned char*>(out);
  std::int64_t position = begin;
  while (position < end) {
    const std::int64_t flat = record.flat_offset + position;
    const int rank = static_cast<int>(flat / partition);
    const std::int64_t rank_end =
        (static_cast<std::int64_t>(rank) + 1) * partition - record.flat_offset;
    const std::int64_t last = std::min(end, rank_end);
    rank_file(rank).read(array, record, dtype, position, last,
                         bytes + (position - begin) * element);
    position = last;
  }
}

void Reader::verify_all_files() {
  for (const auto& [name, record] : info_.files) {
    if (verified_.count(name) > 0) continue;
    verify_file(info_, name);
    verified_.insert(name);
  }
}

void check_compatible(const CheckpointInfo& info, const RunRecord& run,
                      const zero::FlatLayout& layout) {
  const std::string where = concat("checkpoint ", files::quote(info.directory));
  const auto& entries = layout.entries();
  for (std::size_t t = 0; t < std::max(entries.size(), info.tensors.size()); ++t) {
    if (t >= info.tensors.size())
      throw runtime::UserError(concat(where, " has no tensor ", entries[t].name,
                                      " of the model (it holds ", info.tensors.size(),
                                      " tensors, the model ", entries.size(),
                                      "): it is another model's checkpoint"));
    if (t >= entries.size())
      throw runtime::UserError(concat(where, " holds tensor ", info.tensors[t].name,
                                      ", which the model does not have (it holds ",
                                      info.tensors.size(), " tensors, the model ", entries.size(),
                                      "): it is another model's checkpoint"));
    const auto& stored = info.tensors[t];
    if (stored.name != entries[t].name || stored.shape != entries[t].shape)
      throw runtime::UserError(concat(where, ": tensor ", stored.name, " ",
                                      shape_text(stored.shape), " where the model (--model) has ",
                                      entries[t].name, " ", shape_text(entries[t].shape),
                                      ": it is another model's checkpoint"));
  }
  if (info.run.precision != run.precision)
    throw runtime::UserError(concat(
        where, " was trained in ", info.run.precision, ", this run trains in ", run.precision,
        ": a resume keeps the precision (to start a run in another precision from its weights: "
        "zerotrain consolidate, then --init-weights)"));
  if (info.parameter_dtype != run.precision)
    throw runtime::UserError(concat(where, ": its parameters are ", info.parameter_dtype,
                                    ", this run's are ", run.precision));
  if (info.run.optimizer != run.optimizer)
    throw runtime::UserError(concat(where, " holds ", info.run.optimizer,
                                    " optimizer states, the config asks for ", run.optimizer));
  const auto& a = info.run.sampler;
  const auto& b = run.sampler;
  const auto differs = [&](const char* what, auto stored, auto now) {
    if (stored != now)
      throw runtime::UserError(concat(where, ": ", what, " was ", stored, ", this run's is ", now,
                                      ": the resumed run would not continue the same data "
                                      "sequence"));
  };
  differs("train_batch_size", a.train_batch_size, b.train_batch_size);
  differs("the sequence length", a.seq_len, b.seq_len);
  differs("the data seed (--seed)", a.seed, b.seed);
  differs("the number of training windows in the data", a.num_windows, b.num_windows);
}

void load(zero::Engine& engine, MPI_Comm comm, Reader& reader) {
  const auto& layout = engine.layout();
  const zero::StateSource source = [&](StateArray array, std::int64_t begin, std::int64_t end,
                                       void* data, backend::DType dtype) {
    const std::string want = dtype_text(dtype);
    const std::string have = reader.dtype_of(array);
    if (want != have)
      throw runtime::UserError(concat("checkpoint ", files::quote(reader.info().directory), ": ",
                                      zero::state_array_name(array), " are ", have,
                                      ", this run needs ", want));
    const std::int64_t element = kernels::size_of(dtype);
    auto* bytes = static_cast<unsigned char*>(data);
    // The tensors are read; the padding between them (and after the last) is zero.
    std::int64_t filled = begin;
    const auto zero_until = [&](std::int64_t until) {
      if (until > filled)
        std::memset(bytes + (filled - begin) * element, 0,
                    static_cast<std::size_t>((until - filled) * element));
    };
    for (const auto& piece : layout.pieces_in(begin, end)) {
      zero_until(piece.global_offset);
      reader.read(array, piece.entry, piece.offset_in_entry, piece.offset_in_entry + piece.length,
                  bytes + (piece.global_offset - begin) * element);
      filled = piece.global_offset + piece.length;
    }
    zero_until(end);
  };
  // Reading is local; a rank that fails must not leave the others in finish_load's collectives.
  runtime::agree_on_problem(comm, attempt([&] { engine.load_state(source); }));
  engine.finish_load();
  engine.set_counters(reader.info().counters);
}

}  // namespace zt::checkpoint
