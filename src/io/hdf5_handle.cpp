// SPDX-License-Identifier: Apache-2.0
#include "io/hdf5_handle.hpp"

#include <sstream>
#include <vector>

namespace zt::io {
namespace {

thread_local std::vector<std::string> file_scopes;

struct ErrorFrame {
  std::string function;
  std::string description;
  std::string minor_message;
};

herr_t collect_frame(unsigned /*depth*/, const H5E_error2_t* error, void* frames_pointer) {
  auto& frames = *static_cast<std::vector<ErrorFrame>*>(frames_pointer);
  char minor[256] = {0};
  // H5Eget_msg clears the thread's default stack, which is why we walk a copy of it.
  if (H5Eget_msg(error->min_num, nullptr, minor, sizeof minor) < 0) minor[0] = '\0';
  frames.push_back(
      {error->func_name ? error->func_name : "", error->desc ? error->desc : "", minor});
  return 0;
}

// The outermost frame says what the API call was trying to do, the innermost frame why it
// could not (for opens it carries errno's text); the frames between repeat both.
std::string describe_error_stack() {
  const hid_t stack = H5Eget_current_stack();
  if (stack < 0) return "";
  std::vector<ErrorFrame> frames;
  H5Ewalk2(stack, H5E_WALK_DOWNWARD, collect_frame, &frames);
  H5Eclose_stack(stack);
  if (frames.empty()) return "";
  std::ostringstream text;
  const ErrorFrame& outer = frames.front();
  text << outer.description;
  if (frames.size() > 1) {
    const ErrorFrame& inner = frames.back();
    text << "; " << inner.function << ": " << inner.description;
    if (!inner.minor_message.empty() && inner.minor_message != inner.description)
      text << " (" << inner.minor_message << ")";
  } else if (!outer.minor_message.empty() && outer.minor_message != outer.description) {
    text << " (" << outer.minor_message << ")";
  }
  return text.str();
}

}  // namespace

void silence_hdf5_error_printing() {
  thread_local bool silenced = false;
  if (silenced) return;
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  silenced = true;
}

H5FileScope::H5FileScope(std::string path) {
  silence_hdf5_error_printing();
  file_scopes.push_back(std::move(path));
}

H5FileScope::~H5FileScope() {
  file_scopes.pop_back();
}

std::string current_hdf5_file() {
  return file_scopes.empty() ? std::string() : file_scopes.back();
}

namespace detail {

void throw_hdf5_error(const char* call, const char* source_file, int source_line) {
  const std::string reason = describe_error_stack();
  std::ostringstream message;
  const std::string file = current_hdf5_file();
  if (!file.empty()) message << "'" << file << "': ";
  message << "HDF5 call " << call << " failed";
  if (!reason.empty()) message << ": " << reason;
  message << " [" << source_file << ":" << source_line << "]";
  throw IoError(message.str());
}

}  // namespace detail
}  // namespace zt::io
