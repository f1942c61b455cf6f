// SPDX-License-Identifier: Apache-2.0
// `zerotrain data from-text IN OUT.h5`: byte-level tokens of a text file; `zerotrain data check
// FILE`: what training would refuse in a token file. Serial, no MPI.
#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <stdexcept>

#include "app/commands.hpp"
#include "files/files.hpp"
#include "io/hdf5_tokens.hpp"
#include "memory/format.hpp"
#include "io/token_writer.hpp"

namespace zt::app {

int run_data_from_text(const std::string& input, const std::string& output) {
  try {
    io::text_to_hdf5(input, output);
    io::Hdf5TokenDataset written(output);
    std::printf("wrote %s\n", written.describe().c_str());
    return 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "zerotrain: error: %s\n", files::escaped(error.what(), true).c_str());
    return 2;
  }
}

int run_data_check(const DataCheckOptions& options) {
  try {
    if (!options.memory_limit.empty()) {
      // A damaged file can make libhdf5 allocate without bound; fail its allocation instead
      // of taking the node's memory.
      const auto bytes = static_cast<rlim_t>(memory::parse_bytes(options.memory_limit));
      const rlimit limit{bytes, bytes};
      if (setrlimit(RLIMIT_AS, &limit) != 0)
        throw std::runtime_error("--memory-limit: cannot set the address-space limit");
    }
    io::Hdf5TokenDataset dataset(options.path, options.dataset_name);
    const int vocab = options.vocab_size > 0 ? options.vocab_size : dataset.vocab_size_hint();
    if (options.part < 0 || options.part >= options.parts)
      throw io::IoError("--part " + std::to_string(options.part) + " " +
                        std::to_string(options.parts) + ": the part must be in [0, parts)");
    // Part p of n: the same split train uses when every rank checks its share.
    const std::int64_t share = (dataset.size() + options.parts - 1) / options.parts;
    const std::int64_t begin = std::min(dataset.size(), share * options.part);
    const std::int64_t end = std::min(dataset.size(), begin + share);
    if (vocab > 0) dataset.validate(vocab, begin, end);
    std::printf("ok: %s", dataset.describe().c_str());
    if (vocab > 0)
      std::printf("; tokens [%lld, %lld) are in [0, %d)", static_cast<long long>(begin),
                  static_cast<long long>(end), vocab);
    else
      std::printf("; no vocabulary size given or stored (vocab_size attribute): values unchecked");
    std::printf("\n");
    return 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "zerotrain: error: %s\n", files::escaped(error.what(), true).c_str());
    return 2;
  }
}

}  // namespace zt::app
