// SPDX-License-Identifier: Apache-2.0
// Owners for HDF5 identifiers and the ZT_H5_CHECK macro.
//
// Every HDF5 call whose result matters goes through ZT_H5_CHECK. On failure it throws IoError
// with the file being worked on (from the innermost H5FileScope of this thread), the call, the
// useful lines of HDF5's error stack and where in our sources it happened. HDF5's own habit of
// printing its whole error stack to stderr is switched off: the message carries what matters.
#pragma once

#include <hdf5.h>

#include "runtime/error.hpp"

#include <stdexcept>
#include <string>
#include <utility>

namespace zt::io {

/// A file that cannot be read or written as asked: missing, malformed, wrong shape or type,
/// changed while read. A problem with the user's input (exit status 2), like a bad flag.
struct IoError : runtime::UserError {
  using runtime::UserError::UserError;
};

/// Turns off HDF5's automatic error-stack printing for the calling thread. Idempotent and
/// cheap; every H5FileScope calls it, so code using this header never needs to.
void silence_hdf5_error_printing();

/// Names the file that the HDF5 calls in this scope work on, so that ZT_H5_CHECK can put it in
/// its message. Scopes nest per thread; the innermost wins.
class H5FileScope {
 public:
  explicit H5FileScope(std::string path);
  ~H5FileScope();
  H5FileScope(const H5FileScope&) = delete;
  H5FileScope& operator=(const H5FileScope&) = delete;
};

namespace detail {
/// Builds the IoError message for a failed call and throws it. Reads (and clears) HDF5's
/// error stack of the calling thread.
[[noreturn]] void throw_hdf5_error(const char* call, const char* source_file, int source_line);

/// Negative results mean failure for every HDF5 return type (herr_t, hid_t, htri_t, hssize_t).
template <class Result>
Result check_hdf5(Result result, const char* call, const char* source_file, int source_line) {
  if (result < 0) throw_hdf5_error(call, source_file, source_line);
  return result;
}
}  // namespace detail

/// The file named by the innermost H5FileScope of this thread, or "" when there is none.
std::string current_hdf5_file();

/// Move-only owner of one HDF5 identifier, closed with Close when it goes out of scope.
/// Predefined identifiers (H5T_NATIVE_INT, H5P_DEFAULT, H5S_ALL) must never be owned.
template <herr_t (*Close)(hid_t)>
class H5Handle {
 public:
  H5Handle() = default;
  explicit H5Handle(hid_t id) : id_(id) {}
  ~H5Handle() { reset(); }
  H5Handle(H5Handle&& other) noexcept : id_(std::exchange(other.id_, H5I_INVALID_HID)) {}
  H5Handle& operator=(H5Handle&& other) noexcept {
    if (this != &other) {
      reset();
      id_ = std::exchange(other.id_, H5I_INVALID_HID);
    }
    return *this;
  }
  H5Handle(const H5Handle&) = delete;
  H5Handle& operator=(const H5Handle&) = delete;

  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  explicit operator bool() const { return valid(); }

  /// Closes now. Errors on close are ignored here: a destructor cannot report them, and the
  /// paths where a close failure matters (flushing a written file) call close() explicitly.
  void reset() {
    if (id_ >= 0) Close(id_);
    id_ = H5I_INVALID_HID;
  }

  /// Closes now and reports failure (through ZT_H5_CHECK by the caller's choice of message).
  herr_t close() { return Close(std::exchange(id_, H5I_INVALID_HID)); }

 private:
  hid_t id_ = H5I_INVALID_HID;
};

using H5File = H5Handle<H5Fclose>;
using H5Group = H5Handle<H5Gclose>;
using H5Dataset = H5Handle<H5Dclose>;
using H5Dataspace = H5Handle<H5Sclose>;
using H5PropertyList = H5Handle<H5Pclose>;
using H5Datatype = H5Handle<H5Tclose>;
using H5Attribute = H5Handle<H5Aclose>;

}  // namespace zt::io

/// Runs an HDF5 call; a negative result throws zt::io::IoError naming the current file (see
/// H5FileScope), the call, HDF5's reason, and this source location. Yields the call's result,
/// so it wraps creating calls too: `H5File file{ZT_H5_CHECK(H5Fopen(...))};`.
#define ZT_H5_CHECK(call) ::zt::io::detail::check_hdf5((call), #call, __FILE__, __LINE__)
