// SPDX-License-Identifier: Apache-2.0
#include "io/token_writer.hpp"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "files/files.hpp"
#include "io/hdf5_handle.hpp"

namespace zt::io {
namespace {

namespace fs = std::filesystem;

constexpr hsize_t kChunkTokens = hsize_t{1} << 20;
constexpr std::int64_t kTextBlockBytes = std::int64_t{16} << 20;

hid_t file_type_of(TokenStorage storage) {
  switch (storage) {
    case TokenStorage::kUint8:
      return H5T_STD_U8LE;
    case TokenStorage::kUint16:
      return H5T_STD_U16LE;
    case TokenStorage::kInt32:
      return H5T_STD_I32LE;
    case TokenStorage::kInt64:
      return H5T_STD_I64LE;
  }
  return H5T_STD_I64LE;
}

std::int64_t largest_value(TokenStorage storage) {
  switch (storage) {
    case TokenStorage::kUint8:
      return std::numeric_limits<std::uint8_t>::max();
    case TokenStorage::kUint16:
      return std::numeric_limits<std::uint16_t>::max();
    case TokenStorage::kInt32:
      return std::numeric_limits<std::int32_t>::max();
    case TokenStorage::kInt64:
      return std::numeric_limits<std::int64_t>::max();
  }
  return 0;
}

void write_string_attribute(hid_t object, const char* name, const std::string& value) {
  H5Datatype type{ZT_H5_CHECK(H5Tcopy(H5T_C_S1))};
  ZT_H5_CHECK(H5Tset_size(type.get(), std::max<std::size_t>(value.size(), 1)));
  ZT_H5_CHECK(H5Tset_strpad(type.get(), H5T_STR_NULLTERM));
  H5Dataspace space{ZT_H5_CHECK(H5Screate(H5S_SCALAR))};
  H5Attribute attribute{
      ZT_H5_CHECK(H5Acreate2(object, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT))};
  ZT_H5_CHECK(H5Awrite(attribute.get(), type.get(), value.c_str()));
}

void write_integer_attribute(hid_t object, const char* name, int value) {
  H5Dataspace space{ZT_H5_CHECK(H5Screate(H5S_SCALAR))};
  H5Attribute attribute{
      ZT_H5_CHECK(H5Acreate2(object, name, H5T_STD_I32LE, space.get(), H5P_DEFAULT, H5P_DEFAULT))};
  ZT_H5_CHECK(H5Awrite(attribute.get(), H5T_NATIVE_INT, &value));
}

// Builds one token file in a private staging directory (HDF5 creates files by name, so the
// name must lie where nobody can plant a link); commit() moves it into place, and destroying
// an uncommitted writer (an exception on the way) removes it.
class TokenFileWriter {
 public:
  TokenFileWriter(const std::string& output_path, const std::string& dataset_name,
                  TokenStorage storage, std::int64_t length)
      : staged_(output_path, "output"), scope_(output_path) {
    create(dataset_name, storage, length);
  }

  TokenFileWriter(const TokenFileWriter&) = delete;
  TokenFileWriter& operator=(const TokenFileWriter&) = delete;

  void write(std::int64_t offset, std::int64_t count, hid_t memory_type, const void* data) {
    H5Dataspace file_space{ZT_H5_CHECK(H5Dget_space(dataset_.get()))};
    const hsize_t start = static_cast<hsize_t>(offset);
    const hsize_t length = static_cast<hsize_t>(count);
    ZT_H5_CHECK(
        H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, &start, nullptr, &length, nullptr));
    H5Dataspace memory_space{ZT_H5_CHECK(H5Screate_simple(1, &length, nullptr))};
    ZT_H5_CHECK(H5Dwrite(dataset_.get(), memory_type, memory_space.get(), file_space.get(),
                         H5P_DEFAULT, data));
  }

  void set_attributes(int vocab_size, const std::string& tokenizer, const std::string& source) {
    write_integer_attribute(dataset_.get(), "vocab_size", vocab_size);
    if (!tokenizer.empty()) write_string_attribute(dataset_.get(), "tokenizer", tokenizer);
    if (!source.empty()) write_string_attribute(dataset_.get(), "source", source);
  }

  void commit() {
    ZT_H5_CHECK(dataset_.close());
    ZT_H5_CHECK(file_.close());
    // Data on disk before the name: after a crash the real name holds the old file or the
    // complete new one.
    staged_.commit();
  }

 private:
  void create(const std::string& dataset_name, TokenStorage storage, std::int64_t length) {
    file_ = H5File{
        ZT_H5_CHECK(H5Fcreate(staged_.path().c_str(), H5F_ACC_EXCL, H5P_DEFAULT, H5P_DEFAULT))};
    const hsize_t extent = static_cast<hsize_t>(length);
    H5Dataspace space{ZT_H5_CHECK(H5Screate_simple(1, &extent, nullptr))};
    H5PropertyList creation{ZT_H5_CHECK(H5Pcreate(H5P_DATASET_CREATE))};
    const hsize_t chunk = std::min(extent, kChunkTokens);
    ZT_H5_CHECK(H5Pset_chunk(creation.get(), 1, &chunk));
    // Compression is a bonus: an HDF5 built without zlib still writes a valid file.
    if (H5Zfilter_avail(H5Z_FILTER_DEFLATE) > 0) ZT_H5_CHECK(H5Pset_deflate(creation.get(), 4));
    dataset_ =
        H5Dataset{ZT_H5_CHECK(H5Dcreate2(file_.get(), dataset_name.c_str(), file_type_of(storage),
                                         space.get(), H5P_DEFAULT, creation.get(), H5P_DEFAULT))};
  }

  files::StagedFile staged_;  // first member: the HDF5 handles below close before it goes
  H5FileScope scope_;
  H5File file_;
  H5Dataset dataset_;
};

}  // namespace

TokenStorage storage_for_vocab(std::int64_t vocab_size) {
  if (vocab_size <= 256) return TokenStorage::kUint8;
  if (vocab_size <= 65536) return TokenStorage::kUint16;
  if (vocab_size <= std::int64_t{std::numeric_limits<std::int32_t>::max()} + 1)
    return TokenStorage::kInt32;
  return TokenStorage::kInt64;
}

void write_token_file(const std::string& output_path, const std::vector<std::int32_t>& tokens,
                      TokenStorage storage, int vocab_size, const std::string& tokenizer,
                      const std::string& source, const std::string& dataset_name) {
  if (tokens.empty()) throw IoError("cannot write '" + output_path + "': no tokens to write");
  const std::int64_t largest = largest_value(storage);
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    if (tokens[i] < 0 || tokens[i] > largest) {
      std::ostringstream message;
      message << "cannot write '" << output_path << "': token " << tokens[i] << " at offset " << i
              << " does not fit the storage type (0.." << largest << ")";
      throw IoError(message.str());
    }
  }
  TokenFileWriter writer(output_path, dataset_name, storage,
                         static_cast<std::int64_t>(tokens.size()));
  writer.write(0, static_cast<std::int64_t>(tokens.size()), H5T_NATIVE_INT32, tokens.data());
  writer.set_attributes(vocab_size, tokenizer, source);
  writer.commit();
}

namespace {
void convert_text(const std::string& input_path, const std::string& output_path);
}  // namespace

void text_to_hdf5(const std::string& input_path, const std::string& output_path) {
  try {
    convert_text(input_path, output_path);
  } catch (const files::FileError& error) {
    throw IoError(error.what());
  }
}

namespace {
void convert_text(const std::string& input_path, const std::string& output_path) {
  const files::FileIdentity input = files::check_input_file(input_path, "text file");
  if (input.size == 0)
    throw IoError("text file " + files::quote(input_path) + " is empty: nothing to convert");
  files::check_outputs_are_not_inputs({{"output", output_path}}, {{"text file", input_path}});
  std::ifstream input_stream(input_path, std::ios::binary);
  if (!input_stream)
    throw IoError("cannot open text file " + files::quote(input_path) + " for reading");

  const std::int64_t length = input.size;
  TokenFileWriter writer(output_path, "tokens", TokenStorage::kUint8, length);
  std::vector<char> block(static_cast<std::size_t>(std::min(length, kTextBlockBytes)));
  for (std::int64_t offset = 0; offset < length;) {
    const std::int64_t count = std::min(length - offset, kTextBlockBytes);
    input_stream.read(block.data(), count);
    if (input_stream.gcount() != count)
      throw IoError("short read from text file '" + input_path + "' at byte " +
                    std::to_string(offset + input_stream.gcount()) +
                    " (the file changed while read?)");
    writer.write(offset, count, H5T_NATIVE_UCHAR, block.data());
    offset += count;
  }
  writer.set_attributes(256, "bytes", fs::path(input_path).filename().string());
  writer.commit();
}
}  // namespace

}  // namespace zt::io
