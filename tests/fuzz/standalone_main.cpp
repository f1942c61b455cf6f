// SPDX-License-Identifier: Apache-2.0
// A main() for a fuzz target built without libFuzzer (the normal GCC build): runs the target
// once on every file named on the command line, or in a directory named there, in name order.
// ctest uses it to replay tests/fuzz/regressions/<target> and corpus/<target>, so every crash
// ever found stays a unit test in the ordinary build. A finding aborts, which fails the test;
// so does an input that allocates without bound (the address-space cap below turns it into
// std::bad_alloc instead of the machine running out of memory) or hangs (ctest's timeout).
#include <sys/resource.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

std::vector<std::filesystem::path> inputs_in(const std::filesystem::path& argument) {
  std::vector<std::filesystem::path> files;
  if (std::filesystem::is_directory(argument)) {
    for (const auto& entry : std::filesystem::directory_iterator(argument))
      if (entry.is_regular_file() && entry.path().filename().string().front() != '.')
        files.push_back(entry.path());
    std::sort(files.begin(), files.end());
  } else if (std::filesystem::exists(argument)) {
    files.push_back(argument);
  }
  return files;
}

#if defined(__SANITIZE_ADDRESS__)
#define ZT_FUZZ_UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ZT_FUZZ_UNDER_ASAN 1
#endif
#endif

// Like the libFuzzer runs' -rss_limit_mb, roughly: a reader that needs gigabytes for a small
// file is a finding. Not under ASan, which reserves terabytes of address space for itself.
void cap_address_space() {
#ifndef ZT_FUZZ_UNDER_ASAN
  constexpr rlim_t kLimit = rlim_t{4} << 30;
  rlimit limit{};
  if (getrlimit(RLIMIT_AS, &limit) == 0 &&
      (limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur > kLimit)) {
    limit.rlim_cur = kLimit;
    setrlimit(RLIMIT_AS, &limit);
  }
#endif
}

}  // namespace

int main(int argc, char** argv) {
  cap_address_space();
  int ran = 0;
  for (int i = 1; i < argc; ++i) {
    for (const std::filesystem::path& file : inputs_in(argv[i])) {
      std::ifstream stream(file, std::ios::binary);
      if (!stream) {
        std::fprintf(stderr, "cannot read %s\n", file.c_str());
        return 1;
      }
      const std::vector<char> bytes((std::istreambuf_iterator<char>(stream)),
                                    std::istreambuf_iterator<char>());
      std::fprintf(stderr, "running %s (%zu bytes)\n", file.c_str(), bytes.size());
      LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
      ++ran;
    }
  }
  std::fprintf(stderr, "%d input(s) ran without a finding\n", ran);
  return ran > 0 ? 0 : 1;
}
