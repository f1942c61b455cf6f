// SPDX-License-Identifier: Apache-2.0
// HDF5 token datasets: round trips of every integer type, and the error messages.
#include <gtest/gtest.h>

#include <fstream>
#include <vector>

#include "io/hdf5_handle.hpp"
#include "io/hdf5_tokens.hpp"
#include "io/token_writer.hpp"
#include "tests/io/temp_directory.hpp"

namespace zt::io {
namespace {

using testing::TempDirectory;

// Writes `values` (any numeric memory type) as dataset `name` of `file_type` and shape `dims`,
// creating intermediate groups, into a new or existing file.
void write_raw_dataset(const std::string& path, const std::string& name, hid_t file_type,
                       const std::vector<hsize_t>& dims, hid_t memory_type, const void* values,
                       bool create_file = true) {
  H5FileScope scope(path);
  H5File file{create_file
                  ? ZT_H5_CHECK(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT))
                  : ZT_H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT))};
  H5PropertyList link_creation{ZT_H5_CHECK(H5Pcreate(H5P_LINK_CREATE))};
  ZT_H5_CHECK(H5Pset_create_intermediate_group(link_creation.get(), 1));
  H5Dataspace space{ZT_H5_CHECK(
      dims.empty() ? H5Screate(H5S_SCALAR)
                   : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr))};
  H5Dataset dataset{ZT_H5_CHECK(H5Dcreate2(file.get(), name.c_str(), file_type, space.get(),
                                           link_creation.get(), H5P_DEFAULT, H5P_DEFAULT))};
  ZT_H5_CHECK(H5Dwrite(dataset.get(), memory_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, values));
}

std::vector<std::int32_t> read_all(const TokenSource& source) {
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(source.size()));
  source.read(0, source.size(), tokens.data());
  return tokens;
}

template <class Callable>
std::string error_message(Callable&& callable) {
  try {
    callable();
  } catch (const std::exception& error) {
    return error.what();
  }
  ADD_FAILURE() << "expected an exception";
  return "";
}

struct StorageCase {
  TokenStorage storage;
  const char* type_name;
  std::int32_t largest_token;
};

class TokenRoundTrip : public ::testing::TestWithParam<StorageCase> {};

TEST_P(TokenRoundTrip, WritesAndReadsBack) {
  TempDirectory directory;
  const std::string path = directory.file("tokens.h5");
  std::vector<std::int32_t> tokens;
  for (std::int32_t i = 0; i < 5000; ++i)
    tokens.push_back((i * 7919) % (GetParam().largest_token + 1));
  tokens.back() = GetParam().largest_token;
  write_token_file(path, tokens, GetParam().storage, GetParam().largest_token + 1, "test", "src");

  const Hdf5TokenDataset dataset(path);
  EXPECT_EQ(dataset.size(), 5000);
  EXPECT_EQ(dataset.stored_type(), GetParam().type_name);
  EXPECT_EQ(dataset.vocab_size_hint(), GetParam().largest_token + 1);
  EXPECT_EQ(read_all(dataset), tokens);
  std::vector<std::int32_t> middle(100);
  dataset.read(1234, 100, middle.data());
  EXPECT_TRUE(std::equal(middle.begin(), middle.end(), tokens.begin() + 1234));
  EXPECT_NO_THROW(dataset.validate(GetParam().largest_token + 1));
  EXPECT_NE(dataset.describe().find(path), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(AllStorages, TokenRoundTrip,
                         ::testing::Values(StorageCase{TokenStorage::kUint8, "uint8", 255},
                                           StorageCase{TokenStorage::kUint16, "uint16", 65535},
                                           StorageCase{TokenStorage::kInt32, "int32", 1 << 30},
                                           StorageCase{TokenStorage::kInt64, "int64", 50256}),
                         [](const auto& info) { return std::string(info.param.type_name); });

TEST(Hdf5TokenDataset, ReadsBigEndianAndSignedTypesAndNestedPaths) {
  TempDirectory directory;
  const std::string path = directory.file("nested.h5");
  const std::vector<std::int64_t> values{3, 1, 4, 1, 5, 9, 2, 6};
  write_raw_dataset(path, "/corpus/train", H5T_STD_I16BE, {values.size()}, H5T_NATIVE_INT64,
                    values.data());
  const Hdf5TokenDataset dataset(path, "corpus/train");
  EXPECT_EQ(dataset.stored_type(), "int16");
  EXPECT_EQ(dataset.vocab_size_hint(), 0);
  EXPECT_EQ(read_all(dataset), (std::vector<std::int32_t>{3, 1, 4, 1, 5, 9, 2, 6}));
}

TEST(Hdf5TokenDataset, MissingFileNamesIt) {
  TempDirectory directory;
  const std::string path = directory.file("absent.h5");
  const std::string message = error_message([&] { Hdf5TokenDataset{path}; });
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("does not exist"), std::string::npos) << message;
}

TEST(Hdf5TokenDataset, NonHdf5FileIsRejected) {
  TempDirectory directory;
  const std::string path = directory.file("text.h5");
  std::ofstream(path) << "hello, not hdf5";
  const std::string message = error_message([&] { Hdf5TokenDataset{path}; });
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("not an HDF5 file"), std::string::npos) << message;
}

TEST(Hdf5TokenDataset, MissingDatasetListsTheOthers) {
  TempDirectory directory;
  const std::string path = directory.file("other.h5");
  const std::vector<std::int64_t> values{1, 2, 3};
  write_raw_dataset(path, "/ids", H5T_STD_I32LE, {3}, H5T_NATIVE_INT64, values.data());
  write_raw_dataset(path, "/group/more", H5T_STD_I32LE, {3}, H5T_NATIVE_INT64, values.data(),
                    /*create_file=*/false);
  const std::string message = error_message([&] { Hdf5TokenDataset{path}; });
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("no dataset '/tokens'"), std::string::npos) << message;
  EXPECT_NE(message.find("/ids"), std::string::npos) << message;
  EXPECT_NE(message.find("/group/more"), std::string::npos) << message;
}

TEST(Hdf5TokenDataset, TwoDimensionalDatasetIsRejectedWithItsShape) {
  TempDirectory directory;
  const std::string path = directory.file("matrix.h5");
  const std::vector<std::int64_t> values(12, 1);
  write_raw_dataset(path, "tokens", H5T_STD_I32LE, {3, 4}, H5T_NATIVE_INT64, values.data());
  const std::string message = error_message([&] { Hdf5TokenDataset{path}; });
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("2 dimensions"), std::string::npos) << message;
  EXPECT_NE(message.find("3x4"), std::string::npos) << message;
}

TEST(Hdf5TokenDataset, FloatDatasetIsRejected) {
  TempDirectory directory;
  const std::string path = directory.file("float.h5");
  const std::vector<float> values{1.5f, 2.5f, 3.5f};
  write_raw_dataset(path, "tokens", H5T_IEEE_F32LE, {3}, H5T_NATIVE_FLOAT, values.data());
  const std::string message = error_message([&] { Hdf5TokenDataset{path}; });
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("float32"), std::string::npos) << message;
  EXPECT_NE(message.find("integer"), std::string::npos) << message;
}

TEST(Hdf5TokenDataset, TooShortDatasetIsRejected) {
  TempDirectory directory;
  const std::string path = directory.file("short.h5");
  const std::vector<std::int64_t> values{7};
  write_raw_dataset(path, "tokens", H5T_STD_U8LE, {1}, H5T_NATIVE_INT64, values.data());
  const std::string message = error_message([&] { Hdf5TokenDataset{path}; });
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("at least 2"), std::string::npos) << message;
}

TEST(Hdf5TokenDataset, ValidateNamesFirstBadOffsetWithItsTrueValue) {
  TempDirectory directory;
  const std::string path = directory.file("wide.h5");
  std::vector<std::int64_t> values(20, 3);
  values[7] = std::int64_t{1} << 40;  // would be clipped if read as int32
  values[12] = 99;
  write_raw_dataset(path, "tokens", H5T_STD_I64LE, {values.size()}, H5T_NATIVE_INT64,
                    values.data());
  const Hdf5TokenDataset dataset(path);
  const std::string message = error_message([&] { dataset.validate(50); });
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("offset 7"), std::string::npos) << message;
  EXPECT_NE(message.find("1099511627776"), std::string::npos) << message;
  EXPECT_NE(message.find("[0, 50)"), std::string::npos) << message;
}

TEST(Hdf5TokenDataset, ReadOutsideRangeThrows) {
  TempDirectory directory;
  const std::string path = directory.file("range.h5");
  write_token_file(path, {1, 2, 3, 4}, TokenStorage::kUint8, 8);
  const Hdf5TokenDataset dataset(path);
  std::vector<std::int32_t> buffer(8);
  EXPECT_THROW(dataset.read(2, 3, buffer.data()), IoError);
  EXPECT_THROW(dataset.read(-1, 1, buffer.data()), IoError);
  EXPECT_NO_THROW(dataset.read(4, 0, buffer.data()));
}

TEST(InMemoryTokens, ValidateNamesFirstBadOffset) {
  const InMemoryTokens tokens({0, 1, 2, -4, 9});
  const std::string message = error_message([&] { tokens.validate(3); });
  EXPECT_NE(message.find("offset 3"), std::string::npos) << message;
  EXPECT_NE(message.find("-4"), std::string::npos) << message;
}

TEST(Hdf5Check, MessageNamesFileCallSourceAndReasonWithoutPrinting) {
  TempDirectory directory;
  const std::string path = directory.file("nothing-here.h5");
  ::testing::internal::CaptureStderr();
  const std::string message = error_message([&] {
    H5FileScope scope(path);
    H5File file{ZT_H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT))};
  });
  const std::string printed = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find("H5Fopen"), std::string::npos) << message;
  EXPECT_NE(message.find("test_hdf5_tokens.cpp:"), std::string::npos) << message;
  EXPECT_NE(message.find("No such file"), std::string::npos) << message;
  EXPECT_EQ(printed, "") << "HDF5 printed its error stack";
  EXPECT_EQ(current_hdf5_file(), "");
}

}  // namespace
}  // namespace zt::io
