// SPDX-License-Identifier: Apache-2.0
// The safetensors writer and reader: round trips in every stored dtype, and the reader's
// refusal of every malformed file with a message naming the file and the tensor.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "io/hdf5_handle.hpp"
#include "io/safetensors_reader.hpp"
#include "io/safetensors_writer.hpp"
#include "kernels/ops/dtype.hpp"
#include "tests/io/temp_directory.hpp"

namespace zt::io {
namespace {

using testing::TempDirectory;

template <class Callable>
std::string io_error(Callable&& callable) {
  try {
    callable();
  } catch (const IoError& error) {
    return error.what();
  }
  ADD_FAILURE() << "expected an IoError";
  return "";
}

std::vector<float> random_values(std::int64_t count, unsigned seed) {
  std::mt19937 generator(seed);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> values(static_cast<std::size_t>(count));
  for (auto& value : values) value = normal(generator);
  return values;
}

// A file from a header text and data bytes, as a hostile or damaged writer would make it.
void write_raw(const std::string& path, const std::string& header, std::size_t data_bytes,
               std::int64_t claimed_header_length = -1) {
  std::ofstream out(path, std::ios::binary);
  const std::uint64_t length = claimed_header_length >= 0
                                   ? static_cast<std::uint64_t>(claimed_header_length)
                                   : header.size();
  for (int i = 0; i < 8; ++i) out.put(static_cast<char>(length >> (8 * i)));
  out << header;
  out << std::string(data_bytes, '\0');
}

std::string open_error(const std::string& path) {
  return io_error([&] { SafetensorsReader reader(path, "--init-weights"); });
}

TEST(Safetensors, RoundTripsEveryStoredDtype) {
  TempDirectory directory;
  const std::string path = directory.file("w.safetensors");
  const std::vector<TensorDescription> tensors{
      {"a.weight", {3, 5}, kernels::DType::F32},
      {"b.weight", {7}, kernels::DType::F16},
      {"c.weight", {2, 3, 4}, kernels::DType::BF16},
      {"empty", {0, 4}, kernels::DType::F32},
  };
  std::vector<std::vector<float>> values;
  for (std::size_t i = 0; i < tensors.size(); ++i)
    values.push_back(random_values(tensors[i].numel(), static_cast<unsigned>(i + 1)));
  values[1][0] = 1e6f;         // beyond fp16: inf
  values[1][1] = 1e-7f;        // an fp16 subnormal
  values[2][0] = 1.00390625f;  // a tie in bf16: rounds to even (1.0)
  {
    SafetensorsWriter writer(path, tensors, {{"format", "pt"}}, "test");
    for (const auto& v : values) writer.write_next(v.data());
    writer.finish();
  }
  SafetensorsReader reader(path);
  ASSERT_EQ(reader.tensors().size(), tensors.size());
  EXPECT_EQ(reader.metadata().at("format"), "pt");
  EXPECT_EQ(reader.dtype_summary(), "BF16, F16, F32");
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const SafetensorsTensor* tensor = reader.find(tensors[i].name);
    ASSERT_NE(tensor, nullptr) << tensors[i].name;
    EXPECT_EQ(tensor->shape, tensors[i].shape);
    EXPECT_EQ(tensor->numel, tensors[i].numel());
    const std::size_t index = static_cast<std::size_t>(tensor - reader.tensors().data());
    std::vector<float> back(values[i].size());
    reader.read(index, 0, tensor->numel, back.data());
    for (std::size_t j = 0; j < back.size(); ++j) {
      float expected = values[i][j];
      if (tensors[i].dtype == kernels::DType::F16)
        expected = kernels::to_float(kernels::from_float<kernels::fp16>(expected));
      if (tensors[i].dtype == kernels::DType::BF16)
        expected = kernels::to_float(kernels::from_float<kernels::bf16>(expected));
      EXPECT_EQ(std::memcmp(&back[j], &expected, 4), 0) << tensors[i].name << "[" << j << "]";
    }
  }
  EXPECT_TRUE(std::isinf(kernels::to_float(kernels::from_float<kernels::fp16>(1e6f))));
  std::vector<float> one(1);
  reader.read(static_cast<std::size_t>(reader.find("c.weight") - reader.tensors().data()), 0, 1,
              one.data());
  EXPECT_EQ(one[0], 1.0f);
  // A range in the middle.
  const std::size_t a = static_cast<std::size_t>(reader.find("a.weight") - reader.tensors().data());
  std::vector<float> middle(6);
  reader.read(a, 4, 10, middle.data());
  for (int j = 0; j < 6; ++j) EXPECT_EQ(middle[j], values[0][4 + j]);
  EXPECT_THROW(reader.read(a, 10, 16, middle.data()), std::out_of_range);
  EXPECT_EQ(reader.find("missing"), nullptr);
}

TEST(Safetensors, ReadsLargeSixteenBitTensorsInPieces) {
  TempDirectory directory;
  const std::string path = directory.file("big.safetensors");
  const std::int64_t n = (std::int64_t{1} << 16) * 3 + 17;  // several conversion chunks
  const auto values = random_values(n, 7);
  {
    SafetensorsWriter writer(path, {{"x", {n}, kernels::DType::BF16}});
    writer.write_next(values.data());
    writer.finish();
  }
  SafetensorsReader reader(path);
  std::vector<float> back(static_cast<std::size_t>(n - 5));
  reader.read(0, 5, n, back.data());
  for (std::int64_t i = 5; i < n; ++i)
    ASSERT_EQ(back[i - 5], kernels::to_float(kernels::from_float<kernels::bf16>(values[i]))) << i;
}

TEST(Safetensors, ReadsF64AndRefusesToReadIntegers) {
  TempDirectory directory;
  const std::string path = directory.file("mixed.safetensors");
  const std::string header = R"({"d":{"dtype":"F64","shape":[2],"data_offsets":[0,16]},)"
                             R"("i":{"dtype":"I64","shape":[1],"data_offsets":[16,24]}})";
  {
    std::ofstream out(path, std::ios::binary);
    const std::uint64_t length = header.size();
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>(length >> (8 * i)));
    out << header;
    const double d[2] = {0.1, -2.5};
    out.write(reinterpret_cast<const char*>(d), sizeof d);
    const std::int64_t i = 3;
    out.write(reinterpret_cast<const char*>(&i), sizeof i);
  }
  SafetensorsReader reader(path, "--init-weights");
  float back[2];
  reader.read(0, 0, 2, back);
  EXPECT_EQ(back[0], 0.1f);
  EXPECT_EQ(back[1], -2.5f);
  const std::string message = io_error([&] { reader.read(1, 0, 1, back); });
  EXPECT_NE(message.find("tensor 'i' holds I64"), std::string::npos) << message;
  EXPECT_NE(message.find("--init-weights '" + path + "'"), std::string::npos) << message;
}

TEST(Safetensors, RefusesATruncatedFile) {
  TempDirectory directory;
  const std::string path = directory.file("w.safetensors");
  {
    SafetensorsWriter writer(path, {{"a", {4}}, {"b", {4}}});
    const float v[4] = {1, 2, 3, 4};
    writer.write_next(v);
    writer.write_next(v);
    writer.finish();
  }
  std::filesystem::resize_file(path, std::filesystem::file_size(path) - 3);
  const std::string message = open_error(path);
  EXPECT_NE(message.find("--init-weights '" + path + "': tensor 'b'"), std::string::npos)
      << message;
  EXPECT_NE(message.find("run past the end of the data area (29 bytes"), std::string::npos)
      << message;
}

TEST(Safetensors, ReportsAFileTruncatedWhileOpen) {
  TempDirectory directory;
  const std::string path = directory.file("w.safetensors");
  {
    SafetensorsWriter writer(path, {{"a", {1024}}});
    std::vector<float> v(1024, 1.0f);
    writer.write_next(v.data());
    writer.finish();
  }
  SafetensorsReader reader(path, "--init-weights");
  std::filesystem::resize_file(path, 100);
  std::vector<float> back(1024);
  const std::string message = io_error([&] { reader.read(0, 0, 1024, back.data()); });
  EXPECT_NE(message.find("truncated while in use"), std::string::npos) << message;
}

TEST(Safetensors, RefusesHeadersThatDoNotFit) {
  TempDirectory directory;
  const std::string path = directory.file("bad.safetensors");
  std::ofstream(path, std::ios::binary) << "abc";
  EXPECT_NE(open_error(path).find("3 bytes is too short"), std::string::npos);

  write_raw(path, "{}", 0, 1000);
  std::string message = open_error(path);
  EXPECT_NE(message.find("the header length 1000 runs past the end of the file (10 bytes)"),
            std::string::npos)
      << message;

  write_raw(path, "[1, 2]", 0);
  EXPECT_NE(open_error(path).find("does not start with '{'"), std::string::npos);
  write_raw(path, "{\"a\": ", 0);
  EXPECT_NE(open_error(path).find("not valid JSON"), std::string::npos);
  write_raw(
      path,
      R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
      8);
  EXPECT_NE(open_error(path).find("names 'a' twice"), std::string::npos);
  write_raw(path, R"({"__metadata__":{"format":1}})", 0);
  EXPECT_NE(open_error(path).find("__metadata__ entry 'format' is not a string"),
            std::string::npos);
  // Padding with spaces is allowed, and an empty file of tensors is valid.
  write_raw(path, "{}      ", 0);
  EXPECT_NO_THROW(SafetensorsReader{path});
}

TEST(Safetensors, RefusesBadTensorEntries) {
  TempDirectory directory;
  const std::string path = directory.file("bad.safetensors");
  const auto expect = [&](const std::string& header, std::size_t data, const std::string& text) {
    write_raw(path, header, data);
    const std::string message = open_error(path);
    EXPECT_NE(message.find(text), std::string::npos) << header << "\n" << message;
    EXPECT_NE(message.find("--init-weights '" + path + "'"), std::string::npos) << message;
  };
  expect(R"({"w":{"dtype":"F7","shape":[1],"data_offsets":[0,4]}})", 4,
         "tensor 'w': unknown dtype 'F7'");
  expect(R"({"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", 20,
         "tensor 'w': shape [2, 3] of F32 needs 24 bytes, but data_offsets [0, 20] hold 20");
  expect(R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4,
         "is not a list of non-negative integers");
  expect(R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", 4,
         "is not a pair [begin, end]");
  expect(R"({"w":{"dtype":"F32","shape":[1]}})", 4, "data_offsets missing");
  expect(R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}})", 4,
         "shape [4294967296, 4294967296] has more than 2^63 elements");
  expect(R"({"w":{"dtype":"F32","shape":[2147483648,2147483648],"data_offsets":[0,4]}})", 4,
         "of F32 needs more than 2^63 bytes");
  expect(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4,
         "tensor 'w': data_offsets [0, 8] run past the end of the data area (4 bytes");
  expect(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
         R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
         12, "tensors 'a' (bytes 0 to 8) and 'b' (bytes 4 to 12) overlap");
  expect(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
         R"("b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}})",
         12, "bytes 4 to 8 of the data area belong to no tensor");
  expect(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 12,
         "8 bytes after the last tensor's data belong to no tensor");
  expect(R"({"a":[1,2]})", 0, "tensor 'a': its header entry is not a JSON object");
}

TEST(Safetensors, RefusesWhatIsNoRegularFile) {
  TempDirectory directory;
  EXPECT_NE(open_error(directory.path().string()).find("--init-weights"), std::string::npos);
  EXPECT_NE(open_error(directory.file("absent.safetensors")).find("absent.safetensors"),
            std::string::npos);
}

TEST(Safetensors, WriterRefusesDuplicateNamesAndUnstorableDtypes) {
  TempDirectory directory;
  const std::string path = directory.file("w.safetensors");
  EXPECT_THROW(SafetensorsWriter(path, {{"a", {1}}, {"a", {2}}}), std::invalid_argument);
  EXPECT_THROW(SafetensorsWriter(path, {{"__metadata__", {1}}}), std::invalid_argument);
  EXPECT_THROW(SafetensorsWriter(path, {{"a", {1}, kernels::DType::I32}}), std::invalid_argument);
  EXPECT_FALSE(std::filesystem::exists(path));
}

}  // namespace
}  // namespace zt::io
