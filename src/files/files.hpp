// SPDX-License-Identifier: Apache-2.0
// Files that cannot destroy anything: inputs checked before they are opened, outputs written
// to an unpredictable temporary name and renamed into place, log files whose every write is
// checked, and a lock that keeps two runs out of one output directory.
//
// Every writer of the project (summaries, weights, token files, CSV logs, and the checkpoints,
// offload and swap files to come) goes through this folder, so the rules live in one place:
// - an output, if it exists, must be a regular file: a symbolic link, directory, FIFO or device
//   node at the target is refused, never followed or replaced;
// - temporary files are created with O_CREAT|O_EXCL|O_NOFOLLOW under a random name next to the
//   target, so a planted link cannot redirect the write;
// - every write's result is checked; fsync, rename, fsync of the directory;
// - an input is stat()ed before it is opened: a FIFO would block, a device could have side
//   effects, a directory is a mistake.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace zt::files {

/// A path that cannot be used as asked, or a read or write that failed. The message names the
/// path and what it was for ("--summary-json 'out/s.json': ...").
class FileError : public std::runtime_error {
 public:
  enum class Cause {
    kBadPath,    // what the user gave is unusable (missing, a directory, a link, an input...)
    kIoFailure,  // the system failed us (disk full, I/O error) while the path was fine
  };
  FileError(Cause cause, const std::string& message) : std::runtime_error(message), cause_(cause) {}
  Cause cause() const { return cause_; }
  /// True for problems with what was given (exit status 2 like other input errors).
  bool is_input_problem() const { return cause_ == Cause::kBadPath; }

 private:
  Cause cause_;
};

/// What a path names, as a phrase for messages: "a directory", "a FIFO", "a character device",
/// "a block device", "a socket", "a symbolic link", "a regular file".
std::string describe_file_type(mode_t mode);

/// Enough of a file to tell whether it is the same file, unchanged: device and inode, size,
/// modification time.
struct FileIdentity {
  dev_t device = 0;
  ino_t inode = 0;
  std::int64_t size = 0;
  std::int64_t modified_ns = 0;
  bool same_file(const FileIdentity& other) const {
    return device == other.device && inode == other.inode;
  }
  bool operator==(const FileIdentity& other) const {
    return same_file(other) && size == other.size && modified_ns == other.modified_ns;
  }
  bool operator!=(const FileIdentity& other) const { return !(*this == other); }
};

/// Identity of what `path` names now (following links); throws FileError when it cannot be
/// stat()ed.
FileIdentity identity_of(const std::string& path, const std::string& what);

/// Checks that `path` names a readable regular file (links are followed) without opening it.
/// `what` names it in messages ("--config", "token file"). Throws FileError(kBadPath) naming
/// the path and what it is instead.
FileIdentity check_input_file(const std::string& path, const std::string& what);

/// Reads a whole input file after check_input_file, refusing files over `max_bytes` (a config
/// of gigabytes is the wrong file, and reading it would only end in bad_alloc).
std::string read_input_file(const std::string& path, const std::string& what,
                            std::int64_t max_bytes = std::int64_t{64} << 20);

/// Pre-flight of an output file before any work is done: the target is absent or a regular
/// file (not a link, directory or device), its directory exists or can be created, and a file
/// can be created there (a probe is created and removed). Throws FileError(kBadPath).
void check_output_file(const std::string& path, const std::string& what);

/// Pre-flight of an output directory: creates it (and its parents) if needed; it must be a
/// directory one can create files in.
void check_output_directory(const std::string& path, const std::string& what);

/// One input of a run, for check_outputs_are_not_inputs.
struct NamedPath {
  std::string what;  // "--data", "--save-weights"
  std::string path;
};

/// Refuses an output that is also an input (the same file, by device and inode, or the same
/// path once made absolute) and two outputs that are the same file. Throws FileError(kBadPath)
/// naming both.
void check_outputs_are_not_inputs(const std::vector<NamedPath>& outputs,
                                  const std::vector<NamedPath>& inputs);

/// An output file written under a temporary name in the target's directory and renamed into
/// place by commit(): readers see the old file or the whole new one, never a part, and a run
/// that fails leaves the old file as it was. Destroying an uncommitted AtomicFile removes the
/// temporary file.
class AtomicFile {
 public:
  /// Checks the target (absent or a regular file), creates its directory if needed and the
  /// temporary file. `what` names the output in messages.
  AtomicFile(std::string target, std::string what);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  /// Writes all of `bytes` (partial writes and EINTR are retried); throws FileError naming the
  /// target on any failure.
  void write(const void* bytes, std::size_t count);
  void write(std::string_view text) { write(text.data(), text.size()); }
  /// fsync, close, check the target is still absent or a regular file, rename, fsync the
  /// directory. After a throw the target is untouched.
  void commit();

  const std::string& target() const { return target_; }

 private:
  std::string target_;
  std::string what_;
  std::string temporary_;
  int fd_ = -1;
  bool committed_ = false;
};

/// AtomicFile for a whole text at once.
void write_file_atomically(const std::string& path, std::string_view text, const std::string& what);

/// An output file that a library writes by name (HDF5 creates its own files): the name lies in
/// a private directory (mode 0700, random name) next to the target, where nobody else can plant
/// anything; commit() fsyncs it and renames it into place. Destroying an uncommitted StagedFile
/// removes the staging directory with whatever is in it.
class StagedFile {
 public:
  StagedFile(std::string target, std::string what);
  ~StagedFile();
  StagedFile(const StagedFile&) = delete;
  StagedFile& operator=(const StagedFile&) = delete;

  /// Where the library should create the file.
  const std::string& path() const { return staged_; }
  const std::string& target() const { return target_; }
  /// Call after the library closed the file.
  void commit();

 private:
  std::string target_;
  std::string what_;
  std::string directory_;
  std::string staged_;
  bool committed_ = false;
};

/// fsync of a file or directory by name (what a library such as HDF5 wrote and closed), so
/// that a rename that follows publishes durable contents. Throws FileError naming `what`.
void sync_path(const std::string& path, const std::string& what);
/// mkdir (mode 0755 less the umask); an existing directory is fine when `may_exist`.
void make_directory(const std::string& path, const std::string& what, bool may_exist = false);
/// rename(2) of a file or directory, then fsync of the target's directory.
void rename_path(const std::string& from, const std::string& to, const std::string& what);
/// Removes a directory tree we created (best effort: errors are ignored, links not followed).
void remove_tree(const std::string& path) noexcept;

/// A log that grows during a run (csv_monitor): created or truncated at open (a regular file,
/// never through a link), every write checked, fsynced at close.
class AppendFile {
 public:
  AppendFile(std::string path, std::string what);
  ~AppendFile();
  AppendFile(const AppendFile&) = delete;
  AppendFile& operator=(const AppendFile&) = delete;
  AppendFile(AppendFile&& other) noexcept;
  AppendFile& operator=(AppendFile&&) = delete;

  void write(std::string_view text);
  /// fsync and close; throws FileError if the data did not reach the disk.
  void close();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::string what_;
  int fd_ = -1;
};

/// An exclusive lock on a directory for the lifetime of the object, held through
/// `<dir>/.zerotrain.lock` (flock, or POSIX record locks where flock is not supported), with
/// the holder's host, pid, start time and job written in it. A second run that asks for the
/// same directory gets FileError(kBadPath) naming the holder. A crashed holder's lock goes with
/// its process.
class DirectoryLock {
 public:
  /// `holder` is what a refused run is told about us ("pid 123 on node07, Slurm job 55").
  DirectoryLock(const std::string& directory, const std::string& what, const std::string& holder);
  ~DirectoryLock();
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;

  const std::string& lock_path() const { return lock_path_; }
  /// False when the file system supports no kind of lock (the run goes on, unprotected).
  bool held() const { return held_; }

 private:
  std::string lock_path_;
  int fd_ = -1;
  bool held_ = false;
};

/// `text` with every byte a terminal would act on (control characters, DEL, and with
/// `keep_newlines` false also newline and tab) written as \xNN, so a name read from a file can
/// be echoed in a message without clearing the screen or forging a line.
std::string escaped(std::string_view text, bool keep_newlines = false);

/// A path or name as shown in messages: in single quotes, escaped ("'a\x1b[2Jb'").
std::string quote(std::string_view path);

}  // namespace zt::files
