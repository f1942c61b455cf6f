// SPDX-License-Identifier: Apache-2.0
// Token data in an HDF5 file: one 1-D dataset of any integer type.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "files/files.hpp"
#include "io/hdf5_handle.hpp"
#include "io/token_source.hpp"

namespace zt::io {

/// A 1-D integer dataset read by hyperslab and converted to int32 by HDF5 (so uint8, uint16,
/// int32, int64... files all work). The file stays open read-only for the object's lifetime;
/// every rank opens its own. Not for concurrent use from several threads (HDF5 is built without
/// thread safety on Debian).
class Hdf5TokenDataset final : public TokenSource {
 public:
  /// Opens path and its dataset; throws IoError naming the file when it is missing, has no such
  /// dataset (the message lists those it has), or the dataset is not 1-D, not integer, or
  /// shorter than 2 tokens (one target needs one input).
  explicit Hdf5TokenDataset(const std::string& path, const std::string& dataset_name = "tokens");

  std::int64_t size() const override { return size_; }
  void read(std::int64_t offset, std::int64_t count, std::int32_t* out) const override;
  std::string describe() const override;
  /// The dataset's (or else the file's) integer attribute "vocab_size"; 0 when absent.
  int vocab_size_hint() const override { return vocab_size_hint_; }
  /// Reads as int64, so values that do not fit int32 are reported as they are in the file.
  using TokenSource::validate;
  void validate(int vocab_size, std::int64_t begin, std::int64_t end) const override;
  /// Compares the file's device, inode, size and modification time with those at open.
  void check_unchanged() const override;

  const std::string& path() const { return path_; }
  const std::string& dataset_name() const { return dataset_name_; }
  /// "uint8", "int32", ...: the type stored in the file.
  const std::string& stored_type() const { return stored_type_; }

 private:
  void read_as(hid_t memory_type, std::int64_t offset, std::int64_t count, void* out) const;

  std::string path_;
  std::string dataset_name_;
  H5File file_;
  H5Dataset dataset_;
  std::int64_t size_ = 0;
  int vocab_size_hint_ = 0;
  std::string stored_type_;
  files::FileIdentity opened_;  // what the path named when it was opened
};

/// Full paths ("/tokens", "/group/more") of every dataset in an open file, sorted.
std::vector<std::string> list_datasets(hid_t file);

/// "uint16", "int64", "float32", "string"...: a short name for an HDF5 datatype.
std::string describe_hdf5_type(hid_t type);

}  // namespace zt::io
