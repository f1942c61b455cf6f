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
  std::error_code status_error;
  if (!std::filesystem::exists(path_, status_error))
    throw IoError("token file '" + path_ + "' does not exist");
  if (std::filesystem::is_directory(path_, status_error))
    throw IoError("token file '" + path_ + "' is a directory, not an HDF5 file");
  if (H5Fis_hdf5(path_.c_str()) <= 0)
    throw IoError("token file '" + path_ + "' is not an HDF5 file (or cannot be read)");
  file_ = H5File{ZT_H5_CHECK(H5Fopen(path_.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT))};

  const std::vector<std::string> datasets = list_datasets(file_.get());
  if (std::find(datasets.begin(), datasets.end(), dataset_name_) == datasets.end()) {
    std::ostringstream message;
    message << "token file '" << path_ << "' has no dataset '" << dataset_name_ << "'; ";
    if (datasets.empty()) {
      message << "it contains no datasets";
    } else {
      message << "its datasets are:";
      for (const std::string& name : datasets) message << " " << name;
    }
    throw IoError(message.str());
  }
  dataset_ = H5Dataset{ZT_H5_CHECK(H5Dopen2(file_.get(), dataset_name_.c_str(), H5P_DEFAULT))};

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
  read_as(H5T_NATIVE_INT32, offset, count, out);
}

void Hdf5TokenDataset::validate(int vocab_size) const {
  constexpr std::int64_t kChunk = std::int64_t{1} << 20;
  std::vector<std::int64_t> buffer(static_cast<std::size_t>(std::min(kChunk, size_)));
  for (std::int64_t start = 0; start < size_; start += kChunk) {
    const std::int64_t count = std::min(kChunk, size_ - start);
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
}

std::string Hdf5TokenDataset::describe() const {
  std::ostringstream text;
  text << "HDF5 '" << path_ << "':" << dataset_name_ << " (" << size_ << " " << stored_type_
       << " tokens)";
  return text.str();
}

}  // namespace zt::io
