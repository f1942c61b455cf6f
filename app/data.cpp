// SPDX-License-Identifier: Apache-2.0
// `zerotrain data from-text IN OUT.h5`: byte-level tokens of a text file. Serial, no MPI.
#include <cstdio>

#include "app/commands.hpp"
#include "io/hdf5_tokens.hpp"
#include "io/token_writer.hpp"

namespace zt::app {

int run_data_from_text(const std::string& input, const std::string& output) {
  try {
    io::text_to_hdf5(input, output);
    io::Hdf5TokenDataset written(output);
    std::printf("wrote %s\n", written.describe().c_str());
    return 0;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "zerotrain: error: %s\n", error.what());
    return 2;
  }
}

}  // namespace zt::app
