// SPDX-License-Identifier: Apache-2.0
#include "io/hdf5_tokens.hpp"

#include <algorithm>
#include <filesystem>
#include <sstream>

namespace zt::io {
namespace {

herr_t collect_dataset(hid_t group, const char* name, const H5L_info_t* info, void* names) {
  // Soft and external links may dangle; only hard links name objects we can list safely.
  if (info->type != H5L_TYPE_HARD) return 0;
  const hid_t object = H5Oopen(group, name, H5P_DEFAULT);
  if (object < 0) return 0;
  if (H5Iget_type(object) == H5I_DATASET)
    static_cast<std::vector<std::string>*>(names)->push_back(std::string("/") + name);
  H5Oclose(object);
  return 0;
}

std::string normalized_dataset_path(const std::string& name) {
  return name.empty() || name.front() != '/' ? "/" + name : name;
}

// Integer attribute `name` of object, or 0 when it is absent or not an integer.
int integer_attribute(hid_t object, const char* name) {
  if (ZT_H5_CHECK(H5Aexists(object, name)) <= 0) return 0;
  H5Attribute attribute{ZT_H5_CHECK(H5Aopen(object, name, H5P_DEFAULT))};
  H5Datatype type{ZT_H5_CHECK(H5Aget_type(attribute.get()))};
  H5Dataspace space{ZT_H5_CHECK(H5Aget_space(attribute.get()))};
  if (H5Tget_class(type.get()) != H5T_INTEGER) return 0;
  if (ZT_H5_CHECK(H5Sget_simple_extent_npoints(space.get())) != 1) return 0;
  int value = 0;
  ZT_H5_CHECK(H5Aread(attribute.get(), H5T_NATIVE_INT, &value));
  return value;
}

// Refuses a token dataset whose tokens are not all stored in this file as plain integers.
// HDF5 answers reads with whatever the file declares: unwritten chunks or storage as the fill
// value (0), raw data kept in other files (external storage, virtual datasets), and integers
// with padding bits or no significant bits through conversions whose int32 and int64 results
// disagree (validate() reads int64, training int32). Each would train on tokens that are not
// in the file, and a file of a few kilobytes may declare billions of fill-value tokens for
// validate() to scan.
void check_token_storage(hid_t dataset, hid_t type, hsize_t length, const std::string& what) {
  const std::size_t bytes = H5Tget_size(type);
  const std::size_t precision = H5Tget_precision(type);
  const H5T_order_t order = H5Tget_order(type);
  if ((bytes != 1 && bytes != 2 && bytes != 4 && bytes != 8) || precision != 8 * bytes ||
      H5Tget_offset(type) != 0 || (order != H5T_ORDER_LE && order != H5T_ORDER_BE)) {
    throw IoError(what + " holds " + std::to_string(8 * bytes) + "-bit integers with " +
                  std::to_string(precision) +
                  " significant bits; tokens must be plain 8, 16, 32 or 64-bit integers");
  }
  H5PropertyList creation{ZT_H5_CHECK(H5Dget_create_plist(dataset))};
  if (ZT_H5_CHECK(H5Pget_external_count(creation.get())) > 0)
    throw IoError(what + " keeps its tokens in other files (external storage); copy them " +
                  "into the file first (h5repack -l CONTI)");
  // Beyond 256 MiB a chunk is not a layout any writer chooses, only an allocation to refuse.
  constexpr hsize_t kMaxChunkBytes = hsize_t{256} << 20;
  switch (H5Pget_layout(creation.get())) {
    case H5D_COMPACT:  // stored in the object header itself
      return;
    case H5D_CONTIGUOUS: {
      H5D_space_status_t status = H5D_SPACE_STATUS_ERROR;
      ZT_H5_CHECK(H5Dget_space_status(dataset, &status));
      const hsize_t stored = H5Dget_storage_size(dataset);
      if (status != H5D_SPACE_STATUS_ALLOCATED || stored / bytes < length)
        throw IoError(what + " declares " + std::to_string(length) + " tokens but stores " +
                      std::to_string(stored / bytes) +
                      " (never written; the rest would read as the fill value)");
      // Inside the space the file says it has: HDF5 1.10 answers reads past it (a damaged
      // superblock base address, a cut file) with stale buffer contents, different per read.
      const haddr_t address = H5Dget_offset(dataset);
      H5File file{ZT_H5_CHECK(H5Iget_file_id(dataset))};
      haddr_t end = 0;
      ZT_H5_CHECK(H5Fget_eoa(file.get(), &end));
      if (address == HADDR_UNDEF || address > end || stored > end - address)
        throw IoError(what + " ends past the end of the file (bytes " + std::to_string(address) +
                      "+" + std::to_string(stored) + " of " + std::to_string(end) +
                      "); the file is cut short or damaged");
      return;
    }
    case H5D_CHUNKED: {
      hsize_t chunk = 0;
      if (H5Pget_chunk(creation.get(), 1, &chunk) != 1 || chunk == 0)
        throw IoError(what + " has a malformed chunk layout");
      if (chunk > kMaxChunkBytes / bytes)
        throw IoError(what + " has chunks of " + std::to_string(chunk) +
                      " tokens, more than 256 MiB each");
      // Chunk by chunk, in 1.10: H5Dget_space_status compares bytes, so calls every
      // compressed dataset partly allocated.
      const hsize_t expected = length / chunk + (length % chunk != 0 ? 1 : 0);
      H5Dataspace space{ZT_H5_CHECK(H5Dget_space(dataset))};
      hsize_t written = 0;
      ZT_H5_CHECK(H5Dget_num_chunks(dataset, space.get(), &written));
      if (written != expected)
        throw IoError(what + ": " + std::to_string(written) + " of its " +
                      std::to_string(expected) + " chunks of " + std::to_string(chunk) +
                      " tokens are stored; the others were never written and would read as " +
                      "the fill value");
      return;
    }
    default:
      throw IoError(what + " is a virtual dataset (its tokens live in other files); copy them " +
                    "into one file first (h5repack -l CONTI)");
  }
}

}  // namespace

std::vector<std::string> list_datasets(hid_t file) {
  std::vector<std::string> names;
  ZT_H5_CHECK(H5Lvisit(file, H5_INDEX_NAME, H5_ITER_INC, collect_dataset, &names));
  std::sort(names.begin(), names.end());
  return names;
}

std::string describe_hdf5_type(hid_t type) {
  const H5T_class_t type_class = H5Tget_class(type);
  const std::size_t bits = 8 * H5Tget_size(type);
  switch (type_class) {
    case H5T_INTEGER:
      return (H5Tget_sign(type) == H5T_SGN_NONE ? "uint" : "int") + std::to_string(bits);
    case H5T_FLOAT:
      return "float" + std::to_string(bits);
    case H5T_STRING:
      return "string";
    case H5T_COMPOUND:
      return "compound";
    case H5T_ENUM:
      return "enum";
    case H5T_ARRAY:
      return "array";
    default:
      return "non-numeric type";
  }
}

Hdf5TokenDataset::Hdf5TokenDataset(const std::string& path, const std::string& dataset_name)
    : path_(path), dataset_name_(normalized_dataset_path(dataset_name)) {
  H5FileScope scope(path_);
  // Before HDF5 opens it: a FIFO would block the open, a device could have side effects.
  try {
    opened_ = files::check_input_file(path_, "token file");
  } catch (const files::FileError& error) {
    throw IoError(error.what());
  }
  if (H5Fis_hdf5(path_.c_str()) <= 0)
    throw IoError("token file " + files::quote(path_) + " is not an HDF5 file (or cannot be read)");
  file_ = H5File{ZT_H5_CHECK(H5Fopen(path_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT))};
  // What was opened, unless the file changed between the check and the open.
  check_unchanged();

  // Opened by name; the whole tree is visited only to say what the file holds instead (that
  // visit is where libhdf5 is most fragile on a damaged file).
  const hid_t opened = H5Dopen2(file_.get(), dataset_name_.c_str(), H5P_DEFAULT);
  if (opened < 0) {
    H5Eclear2(H5E_DEFAULT);
    std::ostringstream message;
    message << "token file " << files::quote(path_) << " has no dataset "
            << files::quote(dataset_name_) << "; ";
    try {
      const std::vector<std::string> datasets = list_datasets(file_.get());
      if (datasets.empty()) {
        message << "it contains no datasets";
      } else {
        message << "its datasets are:";
        for (const std::string& name : datasets) message << " " << files::escaped(name);
      }
    } catch (const IoError& error) {
      message << "and the list of what it holds cannot be read (" << error.what() << ")";
    }
    throw IoError(message.str());
  }
  dataset_ = H5Dataset{opened};

  H5Datatype type{ZT_H5_CHECK(H5Dget_type(dataset_.get()))};
  stored_type_ = describe_hdf5_type(type.get());
  H5Dataspace space{ZT_H5_CHECK(H5Dget_space(dataset_.get()))};
  const int rank = ZT_H5_CHECK(H5Sget_simple_extent_ndims(space.get()));
  if (rank != 1) {
    std::vector<hsize_t> dims(static_cast<std::size_t>(std::max(rank, 0)));
    ZT_H5_CHECK(H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr));
    std::ostringstream message;
    message << "token file '" << path_ << "': dataset '" << dataset_name_ << "' has " << rank
            << " dimensions (shape ";
    for (std::size_t i = 0; i < dims.size(); ++i) message << (i ? "x" : "") << dims[i];
    message << (dims.empty() ? "scalar" : "") << "); tokens must be a 1-D integer dataset";
    throw IoError(message.str());
  }
  if (H5Tget_class(type.get()) != H5T_INTEGER) {
    throw IoError("token file '" + path_ + "': dataset '" + dataset_name_ + "' holds " +
                  stored_type_ + "; tokens must be a 1-D integer dataset");
  }
  hsize_t length = 0;
  ZT_H5_CHECK(H5Sget_simple_extent_dims(space.get(), &length, nullptr));
  size_ = static_cast<std::int64_t>(length);
  if (size_ < 2) {
    throw IoError("token file '" + path_ + "': dataset '" + dataset_name_ + "' has " +
                  std::to_string(size_) + " token(s); at least 2 are needed (an input and its " +
                  "target)");
  }
  check_token_storage(dataset_.get(), type.get(), length,
                      "token file '" + path_ + "': dataset '" + dataset_name_ + "'");
  vocab_size_hint_ = integer_attribute(dataset_.get(), "vocab_size");
  if (vocab_size_hint_ == 0) vocab_size_hint_ = integer_attribute(file_.get(), "vocab_size");
}

void Hdf5TokenDataset::read_as(hid_t memory_type, std::int64_t offset, std::int64_t count,
                               void* out) const {
  check_range(offset, count);
  if (count == 0) return;
  H5FileScope scope(path_);
  H5Dataspace file_space{ZT_H5_CHECK(H5Dget_space(dataset_.get()))};
  const hsize_t start = static_cast<hsize_t>(offset);
  const hsize_t length = static_cast<hsize_t>(count);
  ZT_H5_CHECK(
      H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, &start, nullptr, &length, nullptr));
  H5Dataspace memory_space{ZT_H5_CHECK(H5Screate_simple(1, &length, nullptr))};
  ZT_H5_CHECK(
      H5Dread(dataset_.get(), memory_type, memory_space.get(), file_space.get(), H5P_DEFAULT, out));
}

void Hdf5TokenDataset::read(std::int64_t offset, std::int64_t count, std::int32_t* out) const {
  try {
    read_as(H5T_NATIVE_INT32, offset, count, out);
  } catch (const IoError&) {
    check_unchanged();  // a file cut short fails reads: say that, rather than HDF5's words
    throw;
  }
}

void Hdf5TokenDataset::check_unchanged() const {
  files::FileIdentity now;
  try {
    now = files::identity_of(path_, "token file");
  } catch (const files::FileError& error) {
    throw IoError(std::string(error.what()) + " (it was there when training started)");
  }
  if (now == opened_) return;
  std::ostringstream message;
  message << "token file " << files::quote(path_) << " changed during training (";
  if (!now.same_file(opened_))
    message << "replaced by another file";
  else if (now.size != opened_.size)
    message << "size " << opened_.size << " -> " << now.size << " bytes";
  else
    message << "rewritten in place: modification time changed";
  message << "); stopping rather than training on data that is not what the run started with";
  throw IoError(message.str());
}

void Hdf5TokenDataset::validate(int vocab_size, std::int64_t begin, std::int64_t end) const {
  check_range(begin, end - begin);
  constexpr std::int64_t kChunk = std::int64_t{1} << 20;
  std::vector<std::int64_t> buffer(static_cast<std::size_t>(std::min(kChunk, end - begin)));
  for (std::int64_t start = begin; start < end; start += kChunk) {
    const std::int64_t count = std::min(kChunk, end - start);
    read_as(H5T_NATIVE_INT64, start, count, buffer.data());
    for (std::int64_t i = 0; i < count; ++i) {
      const std::int64_t token = buffer[static_cast<std::size_t>(i)];
      if (token < 0 || token >= vocab_size) {
        std::ostringstream message;
        message << describe() << ": token at offset " << start + i << " is " << token
                << ", outside the model's vocabulary [0, " << vocab_size << ")";
        throw IoError(message.str());
      }
    }
  }
  check_unchanged();
}

std::string Hdf5TokenDataset::describe() const {
  std::ostringstream text;
  text << "HDF5 " << files::quote(path_) << ":" << files::escaped(dataset_name_) << " (" << size_
       << " " << stored_type_ << " tokens)";
  return text.str();
}

}  // namespace zt::io
