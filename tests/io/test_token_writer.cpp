// SPDX-License-Identifier: Apache-2.0
// The byte-level text converter and the token file writer.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "io/hdf5_handle.hpp"
#include "io/hdf5_tokens.hpp"
#include "io/token_writer.hpp"
#include "tests/io/temp_directory.hpp"

namespace zt::io {
namespace {

using testing::TempDirectory;

std::string string_attribute(const std::string& path, const char* name) {
  H5FileScope scope(path);
  H5File file{ZT_H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT))};
  H5Dataset dataset{ZT_H5_CHECK(H5Dopen2(file.get(), "tokens", H5P_DEFAULT))};
  H5Attribute attribute{ZT_H5_CHECK(H5Aopen(dataset.get(), name, H5P_DEFAULT))};
  H5Datatype type{ZT_H5_CHECK(H5Aget_type(attribute.get()))};
  std::string value(H5Tget_size(type.get()), '\0');
  ZT_H5_CHECK(H5Aread(attribute.get(), type.get(), value.data()));
  return value.substr(0, value.find('\0'));
}

std::vector<std::string> files_in(const std::filesystem::path& directory) {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(directory))
    names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

template <class Callable>
std::string error_message(Callable&& callable) {
  try {
    callable();
  } catch (const IoError& error) {
    return error.what();
  }
  ADD_FAILURE() << "expected an IoError";
  return "";
}

TEST(TextToHdf5, RoundTripsEveryByte) {
  TempDirectory directory;
  const std::string input = directory.file("corpus.txt");
  std::string text = "To be, or not to be: that is the question.\n";
  for (int byte = 0; byte < 256; ++byte) text.push_back(static_cast<char>(byte));
  std::ofstream(input, std::ios::binary) << text;
  const std::string output = directory.file("corpus.h5");
  text_to_hdf5(input, output);

  const Hdf5TokenDataset dataset(output);
  ASSERT_EQ(dataset.size(), static_cast<std::int64_t>(text.size()));
  EXPECT_EQ(dataset.stored_type(), "uint8");
  EXPECT_EQ(dataset.vocab_size_hint(), 256);
  std::vector<std::int32_t> tokens(text.size());
  dataset.read(0, dataset.size(), tokens.data());
  for (std::size_t i = 0; i < text.size(); ++i)
    ASSERT_EQ(tokens[i], static_cast<unsigned char>(text[i])) << i;
  EXPECT_NO_THROW(dataset.validate(256));
  EXPECT_EQ(string_attribute(output, "tokenizer"), "bytes");
  EXPECT_EQ(string_attribute(output, "source"), "corpus.txt");
  EXPECT_EQ(files_in(directory.path()), (std::vector<std::string>{"corpus.h5", "corpus.txt"}));
}

TEST(TextToHdf5, ReplacesAnExistingOutput) {
  TempDirectory directory;
  const std::string input = directory.file("a.txt");
  const std::string output = directory.file("a.h5");
  std::ofstream(input) << "first version";
  text_to_hdf5(input, output);
  std::ofstream(input) << "second";
  text_to_hdf5(input, output);
  EXPECT_EQ(Hdf5TokenDataset(output).size(), 6);
}

TEST(TextToHdf5, MissingInput) {
  TempDirectory directory;
  const std::string input = directory.file("absent.txt");
  const std::string message = error_message([&] { text_to_hdf5(input, directory.file("out.h5")); });
  EXPECT_NE(message.find(input), std::string::npos) << message;
  EXPECT_NE(message.find("does not exist"), std::string::npos) << message;
  EXPECT_TRUE(files_in(directory.path()).empty());
}

TEST(TextToHdf5, EmptyInput) {
  TempDirectory directory;
  const std::string input = directory.file("empty.txt");
  std::ofstream{input};
  const std::string message = error_message([&] { text_to_hdf5(input, directory.file("out.h5")); });
  EXPECT_NE(message.find("empty"), std::string::npos) << message;
  EXPECT_EQ(files_in(directory.path()), std::vector<std::string>{"empty.txt"});
}

TEST(TextToHdf5, UnwritableOutputs) {
  TempDirectory directory;
  const std::string input = directory.file("in.txt");
  std::ofstream(input) << "some text";
  std::filesystem::create_directory(directory.file("existing"));
  std::string message = error_message([&] { text_to_hdf5(input, directory.file("existing")); });
  EXPECT_NE(message.find("is a directory"), std::string::npos) << message;

  message = error_message([&] { text_to_hdf5(input, input); });
  EXPECT_NE(message.find("is also an input"), std::string::npos) << message;
  ASSERT_EQ(symlink(input.c_str(), directory.file("link.h5").c_str()), 0);
  message = error_message([&] { text_to_hdf5(input, directory.file("link.h5")); });
  EXPECT_NE(message.find("is also an input"), std::string::npos) << message;
  std::ifstream kept(input);
  EXPECT_EQ(std::string(std::istreambuf_iterator<char>(kept), {}), "some text");
  EXPECT_EQ(files_in(directory.path()),
            (std::vector<std::string>{"existing", "in.txt", "link.h5"}));
  EXPECT_TRUE(std::filesystem::is_empty(directory.file("existing")));

  // Like every output, missing directories are created.
  text_to_hdf5(input, directory.file("no/such/dir/out.h5"));
  EXPECT_TRUE(std::filesystem::exists(directory.file("no/such/dir/out.h5")));
}

TEST(WriteTokenFile, RejectsTokensThatDoNotFitAndLeavesNothing) {
  TempDirectory directory;
  const std::string output = directory.file("t.h5");
  const std::string message = error_message([&] {
    write_token_file(output, {1, 2, 300}, TokenStorage::kUint8, 256);
  });
  EXPECT_NE(message.find("offset 2"), std::string::npos) << message;
  EXPECT_TRUE(files_in(directory.path()).empty());
  // A failure inside HDF5 after the temporary file exists (an empty dataset name) removes it.
  EXPECT_THROW(write_token_file(output, {1, 2}, TokenStorage::kUint8, 256, "", "", ""), IoError);
  EXPECT_TRUE(files_in(directory.path()).empty());
  EXPECT_EQ(storage_for_vocab(256), TokenStorage::kUint8);
  EXPECT_EQ(storage_for_vocab(50257), TokenStorage::kUint16);
  EXPECT_EQ(storage_for_vocab(70000), TokenStorage::kInt32);
}

}  // namespace
}  // namespace zt::io
