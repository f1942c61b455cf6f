// SPDX-License-Identifier: Apache-2.0
// A scratch file for targets whose reader takes a path (HDF5, safetensors): one private
// directory per process, in /dev/shm when it is writable (no disk traffic per input), removed
// at exit; write() replaces the file's contents with the next input.
#pragma once

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

#include "tests/fuzz/fuzz_input.hpp"

namespace zt::fuzz {

class ScratchFile {
 public:
  /// `tag` names the directory (zt_fuzz_<tag>.XXXXXX), `file_name` the file in it.
  ScratchFile(const std::string& tag, const std::string& file_name) {
    std::error_code error;
    std::string base = "/dev/shm";
    if (!std::filesystem::is_directory(base, error) || ::access(base.c_str(), W_OK) != 0) {
      const char* tmpdir = std::getenv("TMPDIR");
      base = tmpdir && *tmpdir ? tmpdir : "/tmp";
    }
    std::string pattern = base + "/zt_fuzz_" + tag + ".XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) invariant_failed("cannot create a temp directory");
    directory_ = pattern;
    path_ = directory_ + "/" + file_name;
  }
  ~ScratchFile() {
    std::error_code ignored;
    std::filesystem::remove_all(directory_, ignored);
  }
  ScratchFile(const ScratchFile&) = delete;
  ScratchFile& operator=(const ScratchFile&) = delete;

  const std::string& write(const std::uint8_t* data, std::size_t size) {
    const int descriptor = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (descriptor < 0) invariant_failed("cannot write the scratch file");
    for (std::size_t done = 0; done < size;) {
      const ssize_t written = ::write(descriptor, data + done, size - done);
      if (written <= 0) invariant_failed("cannot write the scratch file");
      done += static_cast<std::size_t>(written);
    }
    ::close(descriptor);
    return path_;
  }

 private:
  std::string directory_;
  std::string path_;
};

}  // namespace zt::fuzz
