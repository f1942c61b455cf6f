// SPDX-License-Identifier: Apache-2.0
// Writes the seed files of corpus/fuzz_safetensors: small safetensors files as zerotrain's
// writer (io::SafetensorsWriter: --save-weights, consolidate) writes them in F32, F16 and BF16,
// as other tools write them (F64, integer tensors next to float ones, scalars, empty tensors,
// no metadata, unpadded headers), plus a few that the reader must refuse. The fuzzer mutates
// from these, so each one opens a branch of the header validation that random bytes would not
// reach.
//
//   cmake --build build-fuzz --target fuzz_make_safetensors_seeds
//   build-fuzz/tests/fuzz/fuzz_make_safetensors_seeds tests/fuzz/corpus/fuzz_safetensors
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "io/safetensors_writer.hpp"

namespace {

using zt::io::SafetensorsWriter;
using zt::io::TensorDescription;
using zt::kernels::DType;

// Values with the cases a conversion can get wrong: signed zero, subnormals, infinities, NaN,
// the largest finite values of fp16 and beyond.
std::vector<float> sample_values(std::int64_t count) {
  const float specials[] = {0.0f,
                            -0.0f,
                            1.0f,
                            -2.5f,
                            std::numeric_limits<float>::denorm_min(),
                            6.1e-5f,
                            65504.0f,
                            70000.0f,
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::quiet_NaN(),
                            0.02f};
  std::vector<float> values(static_cast<std::size_t>(count));
  for (std::int64_t i = 0; i < count; ++i)
    values[static_cast<std::size_t>(i)] =
        i < 12 ? specials[i] : 0.01f * static_cast<float>((i * 37) % 101 - 50);
  return values;
}

// A tiny GPT-2 in transformers' names and layout, as --save-weights writes it.
void write_with_writer(const std::string& path, DType dtype, bool prefixed, bool metadata) {
  const std::string p = prefixed ? "transformer." : "";
  const std::vector<TensorDescription> tensors = {{p + "wte.weight", {4, 2}, dtype},
                                                  {p + "wpe.weight", {3, 2}, dtype},
                                                  {p + "h.0.ln_1.weight", {2}, dtype},
                                                  {p + "h.0.attn.c_attn.weight", {2, 6}, dtype},
                                                  {p + "h.0.attn.c_proj.weight", {2, 2}, dtype},
                                                  {p + "ln_f.bias", {2}, dtype}};
  std::vector<std::pair<std::string, std::string>> meta;
  if (metadata) meta = {{"format", "pt"}};
  SafetensorsWriter writer(path, tensors, meta, "seed");
  for (const auto& tensor : tensors) writer.write_next(sample_values(tensor.numel()).data());
  writer.finish();
}

// A file from a header text and a data area, with no padding and no checks: what other
// writers (or damage) produce.
void write_raw(const std::string& path, const std::string& header, const std::string& data,
               std::uint64_t length_field = std::numeric_limits<std::uint64_t>::max()) {
  std::FILE* file = std::fopen(path.c_str(), "wb");
  if (file == nullptr) {
    std::perror(path.c_str());
    std::exit(1);
  }
  const std::uint64_t length =
      length_field == std::numeric_limits<std::uint64_t>::max() ? header.size() : length_field;
  unsigned char bytes[8];
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<unsigned char>(length >> (8 * i));
  std::fwrite(bytes, 1, 8, file);
  std::fwrite(header.data(), 1, header.size(), file);
  std::fwrite(data.data(), 1, data.size(), file);
  std::fclose(file);
}

template <class T>
std::string bytes_of(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTPUT_DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  const auto at = [&](const char* name) { return dir + "/" + name; };

  // zerotrain's writer: --save-weights / consolidate output, and the 16-bit checkpoint model.
  write_with_writer(at("save_weights_f32.safetensors"), DType::F32, true, true);
  write_with_writer(at("consolidate_bf16.safetensors"), DType::BF16, true, true);
  write_with_writer(at("consolidate_f16.safetensors"), DType::F16, true, true);
  write_with_writer(at("gpt2model_names_f32_no_metadata.safetensors"), DType::F32, false, false);

  // Other writers: F64, integer and bool tensors beside a float one, a scalar, an empty
  // tensor, metadata with several entries, an unpadded header, whitespace around the JSON.
  const std::vector<double> f64 = {1.0, -0.0, 1e300, -1e-300, std::nan(""), 3.5};
  write_raw(at("f64_and_scalar.safetensors"),
            R"({"__metadata__":{"format":"pt","producer":"x"},)"
            R"("w":{"dtype":"F64","shape":[2,3],"data_offsets":[0,48]},)"
            R"("s":{"dtype":"F32","shape":[],"data_offsets":[48,52]}})",
            bytes_of(f64) + bytes_of(std::vector<float>{7.0f}));
  write_raw(at("integers_beside_floats.safetensors"),
            R"({"ids":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},)"
            R"("mask":{"dtype":"BOOL","shape":[2,2],"data_offsets":[16,20]},)"
            R"("q":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[20,24]},)"
            R"("h":{"dtype":"BF16","shape":[2],"data_offsets":[24,28]},)"
            R"("u":{"dtype":"U16","shape":[1],"data_offsets":[28,30]}})",
            bytes_of(std::vector<std::int64_t>{1, -1}) + std::string("\1\0\0\1", 4) +
                std::string("\x38\x40\xB8\xFF", 4) +
                bytes_of(std::vector<std::uint16_t>{0x3F80, 0x7FC0}) +
                bytes_of(std::vector<std::uint16_t>{65535}));
  write_raw(at("empty_tensors.safetensors"),
            "  {\"e\": {\"dtype\": \"F16\", \"shape\": [0, 5], \"data_offsets\": [0, 0]},\n"
            "   \"f\": {\"dtype\": \"F16\", \"shape\": [1], \"data_offsets\": [0, 2]}}   ",
            bytes_of(std::vector<std::uint16_t>{0x7C00}));
  write_raw(at("no_tensors.safetensors"), "{}", "");
  write_raw(at("metadata_only.safetensors"), R"({"__metadata__":{}})", "");

  // Refused: each names one rule of the validation.
  const std::string two_floats = bytes_of(std::vector<float>{1.0f, 2.0f});
  write_raw(at("refused_overlap.safetensors"),
            R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
            R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
            two_floats);
  write_raw(at("refused_hole.safetensors"),
            R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", two_floats);
  write_raw(at("refused_duplicate_name.safetensors"),
            R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},)"
            R"("a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
            two_floats);
  write_raw(at("refused_shape_size_mismatch.safetensors"),
            R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", two_floats);
  write_raw(at("refused_header_past_end.safetensors"),
            R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", two_floats, 1000);
  write_raw(at("refused_unknown_dtype.safetensors"),
            R"({"a":{"dtype":"F128","shape":[1],"data_offsets":[0,8]}})", two_floats);
  std::printf("wrote the seeds to %s\n", dir.c_str());
  return 0;
}
