// SPDX-License-Identifier: Apache-2.0
// Writes the seed files of corpus/fuzz_hdf5_tokens: small token files in the layouts, types,
// filters and format versions a token file may come in (h5py, other tools, zerotrain's own
// writer), plus a few that the reader must refuse. The fuzzer mutates from these, so each one
// opens a region of HDF5's parser that random bytes would not reach.
//
//   cmake --build build-fuzz --target fuzz_make_hdf5_seeds
//   build-fuzz/tests/fuzz/fuzz_make_hdf5_seeds tests/fuzz/corpus/fuzz_hdf5_tokens
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "io/hdf5_handle.hpp"
#include "io/token_writer.hpp"

namespace {

using namespace zt::io;

std::vector<std::int32_t> sample_tokens(int count, int vocab) {
  std::vector<std::int32_t> tokens(static_cast<std::size_t>(count));
  for (int i = 0; i < count; ++i) tokens[static_cast<std::size_t>(i)] = (i * 7 + 3) % vocab;
  return tokens;
}

struct Layout {
  enum Kind { kContiguous, kCompact, kChunked } kind = kContiguous;
  hsize_t chunk = 0;
  bool unlimited = false;  // maxdims unlimited (extensible-array index in the latest format)
  bool shuffle = false, fletcher32 = false, deflate = false, scaleoffset = false, nbit = false;
};

struct Options {
  std::string dataset = "tokens";
  hid_t file_type = H5T_STD_U16LE;
  std::vector<hsize_t> dims = {100};
  Layout layout;
  bool latest_format = false;
  int dataset_vocab = 0;  // 0 = no attribute
  int file_vocab = 0;
  hsize_t chunks_written = 0;  // 0 = all of them
  bool float_data = false;
};

void write_file(const std::string& path, const Options& options) {
  H5FileScope scope(path);
  H5PropertyList access{ZT_H5_CHECK(H5Pcreate(H5P_FILE_ACCESS))};
  if (options.latest_format)
    ZT_H5_CHECK(H5Pset_libver_bounds(access.get(), H5F_LIBVER_LATEST, H5F_LIBVER_LATEST));
  H5File file{ZT_H5_CHECK(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, access.get()))};
  H5PropertyList link{ZT_H5_CHECK(H5Pcreate(H5P_LINK_CREATE))};
  ZT_H5_CHECK(H5Pset_create_intermediate_group(link.get(), 1));

  std::vector<hsize_t> maxdims = options.dims;
  if (options.layout.unlimited) maxdims.assign(maxdims.size(), H5S_UNLIMITED);
  const int rank = static_cast<int>(options.dims.size());
  H5Dataspace space{ZT_H5_CHECK(H5Screate_simple(rank, options.dims.data(), maxdims.data()))};
  H5PropertyList creation{ZT_H5_CHECK(H5Pcreate(H5P_DATASET_CREATE))};
  const Layout& layout = options.layout;
  if (layout.kind == Layout::kCompact) ZT_H5_CHECK(H5Pset_layout(creation.get(), H5D_COMPACT));
  if (layout.kind == Layout::kChunked) {
    const std::vector<hsize_t> chunk(options.dims.size(), layout.chunk);
    ZT_H5_CHECK(H5Pset_chunk(creation.get(), rank, chunk.data()));
    if (layout.shuffle) ZT_H5_CHECK(H5Pset_shuffle(creation.get()));
    if (layout.nbit) ZT_H5_CHECK(H5Pset_nbit(creation.get()));
    if (layout.scaleoffset)
      ZT_H5_CHECK(H5Pset_scaleoffset(creation.get(), H5Z_SO_INT, H5Z_SO_INT_MINBITS_DEFAULT));
    if (layout.deflate) ZT_H5_CHECK(H5Pset_deflate(creation.get(), 6));
    if (layout.fletcher32) ZT_H5_CHECK(H5Pset_fletcher32(creation.get()));
    const int fill = 0;
    ZT_H5_CHECK(H5Pset_fill_value(creation.get(), H5T_NATIVE_INT, &fill));
  }
  H5Dataset dataset{ZT_H5_CHECK(H5Dcreate2(file.get(), options.dataset.c_str(), options.file_type,
                                           space.get(), link.get(), creation.get(), H5P_DEFAULT))};
  hsize_t total = 1;
  for (const hsize_t d : options.dims) total *= d;
  const std::vector<std::int32_t> tokens = sample_tokens(static_cast<int>(total), 200);
  if (options.float_data) {
    std::vector<float> values(tokens.begin(), tokens.end());
    ZT_H5_CHECK(
        H5Dwrite(dataset.get(), H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()));
  } else if (options.chunks_written == 0) {
    ZT_H5_CHECK(
        H5Dwrite(dataset.get(), H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, tokens.data()));
  } else {
    // Only the first chunks: the rest reads as the fill value, as after an interrupted write.
    H5Dataspace file_space{ZT_H5_CHECK(H5Dget_space(dataset.get()))};
    const hsize_t start = 0, count = options.chunks_written * layout.chunk;
    ZT_H5_CHECK(
        H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, &start, nullptr, &count, nullptr));
    H5Dataspace memory_space{ZT_H5_CHECK(H5Screate_simple(1, &count, nullptr))};
    ZT_H5_CHECK(H5Dwrite(dataset.get(), H5T_NATIVE_INT32, memory_space.get(), file_space.get(),
                         H5P_DEFAULT, tokens.data()));
  }
  auto integer_attribute = [](hid_t object, const char* name, int value) {
    H5Dataspace scalar{ZT_H5_CHECK(H5Screate(H5S_SCALAR))};
    H5Attribute attribute{ZT_H5_CHECK(
        H5Acreate2(object, name, H5T_STD_I32LE, scalar.get(), H5P_DEFAULT, H5P_DEFAULT))};
    ZT_H5_CHECK(H5Awrite(attribute.get(), H5T_NATIVE_INT, &value));
  };
  if (options.dataset_vocab) integer_attribute(dataset.get(), "vocab_size", options.dataset_vocab);
  if (options.file_vocab) integer_attribute(file.get(), "vocab_size", options.file_vocab);
}

// Soft and external links next to the dataset: the reader lists only hard-linked datasets.
void add_links(const std::string& path) {
  H5FileScope scope(path);
  H5File file{ZT_H5_CHECK(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT))};
  ZT_H5_CHECK(H5Lcreate_soft("/tokens", file.get(), "alias", H5P_DEFAULT, H5P_DEFAULT));
  ZT_H5_CHECK(
      H5Lcreate_external("other.h5", "/tokens", file.get(), "elsewhere", H5P_DEFAULT, H5P_DEFAULT));
  H5Group group{
      ZT_H5_CHECK(H5Gcreate2(file.get(), "group", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT))};
  ZT_H5_CHECK(
      H5Lcreate_hard(file.get(), "/tokens", group.get(), "again", H5P_DEFAULT, H5P_DEFAULT));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTPUT_DIRECTORY\n", argv[0]);
    return 2;
  }
  const std::string out = std::string(argv[1]) + "/";
  try {
    // zerotrain's own writer: chunked, deflate, attributes vocab_size/tokenizer/source.
    write_token_file(out + "writer_uint8.h5", sample_tokens(64, 256), TokenStorage::kUint8, 256,
                     "bytes", "input.txt");
    write_token_file(out + "writer_uint16.h5", sample_tokens(64, 1000), TokenStorage::kUint16,
                     1000);
    write_token_file(out + "writer_int32.h5", sample_tokens(64, 70000), TokenStorage::kInt32, 70000,
                     "gpt2");
    write_token_file(out + "writer_int64.h5", sample_tokens(64, 50257), TokenStorage::kInt64,
                     50257);

    Options options;
    write_file(out + "contiguous_uint16.h5", options);  // h5py's default: no attributes
    options.file_type = H5T_STD_I32BE;
    options.file_vocab = 256;
    write_file(out + "contiguous_int32be_file_vocab.h5", options);
    options = {};
    options.file_type = H5T_STD_I8LE;
    options.layout.kind = Layout::kCompact;
    options.dataset_vocab = 128;
    write_file(out + "compact_int8.h5", options);
    options = {};
    options.file_type = H5T_STD_U32LE;
    options.layout = {Layout::kChunked, 16, false, true, true, false, false, false};
    options.dataset_vocab = 256;
    write_file(out + "chunked_shuffle_fletcher_uint32.h5", options);
    options.layout = {Layout::kChunked, 32, false, false, false, false, true, false};
    options.file_type = H5T_STD_U16LE;
    write_file(out + "chunked_scaleoffset_uint16.h5", options);
    options.layout = {Layout::kChunked, 32, false, false, false, false, false, true};
    write_file(out + "chunked_nbit_uint16.h5", options);
    options.layout = {Layout::kChunked, 25, false, false, false, false, false, false};
    options.chunks_written = 1;
    write_file(out + "refused_partly_written.h5", options);

    // The latest file format: superblock v3, compact/dense groups, new chunk indexes.
    options = {};
    options.latest_format = true;
    options.layout = {Layout::kChunked, 16, true, false, false, true, false, false};
    options.file_type = H5T_STD_I64LE;
    options.dataset_vocab = 300;
    write_file(out + "latest_extensible_array_int64.h5", options);
    options.layout = {Layout::kChunked, 16, false, false, false, false, false, false};
    write_file(out + "latest_fixed_array_int64.h5", options);
    options.layout = {Layout::kChunked, 100, false, false, false, false, false, false};
    write_file(out + "latest_single_chunk_int64.h5", options);
    options.layout = {};
    write_file(out + "latest_contiguous_int64.h5", options);

    // Files the reader must refuse, each for another reason.
    options = {};
    options.dims = {10, 10};
    write_file(out + "refused_2d.h5", options);
    options = {};
    options.file_type = H5T_IEEE_F32LE;
    options.float_data = true;
    write_file(out + "refused_float.h5", options);
    options = {};
    options.dataset = "/data/train";
    write_file(out + "refused_other_name.h5", options);
    options = {};
    options.dims = {1};
    write_file(out + "refused_one_token.h5", options);

    write_file(out + "links.h5", Options{});
    add_links(out + "links.h5");
  } catch (const IoError& error) {
    std::fprintf(stderr, "%s\n", error.what());
    return 1;
  }
  return 0;
}
