// SPDX-License-Identifier: Apache-2.0
#include "files/files.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <system_error>

namespace zt::files {
namespace {

namespace fs = std::filesystem;
using Cause = FileError::Cause;

std::string describe(const std::string& what, const std::string& path) {
  return what.empty() ? quote(path) : what + " " + quote(path);
}

[[noreturn]] void fail(Cause cause, const std::string& what, const std::string& path,
                       const std::string& problem) {
  throw FileError(cause, describe(what, path) + ": " + problem);
}

[[noreturn]] void fail_errno(Cause cause, const std::string& what, const std::string& path,
                             const std::string& action, int error) {
  fail(cause, what, path, action + ": " + std::strerror(error));
}

// Failures that mean "this path cannot be used" rather than "the system failed".
Cause cause_of(int error) {
  switch (error) {
    case ENOENT:
    case ENOTDIR:
    case EACCES:
    case EPERM:
    case EROFS:
    case EISDIR:
    case ELOOP:
    case ENAMETOOLONG:
    case EEXIST:
    case ENXIO:
      return Cause::kBadPath;
    default:
      return Cause::kIoFailure;
  }
}

std::string directory_of(const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

std::string random_suffix() {
  unsigned char bytes[8];
  std::size_t filled = 0;
  while (filled < sizeof bytes) {
    const ssize_t got = getrandom(bytes + filled, sizeof bytes - filled, 0);
    if (got < 0) {
      if (errno == EINTR) continue;
      // No getrandom (very old kernel): a clock-and-pid mix still defeats guessing a name in
      // advance, and O_EXCL makes a guessed name fail rather than redirect the write.
      const auto mix = static_cast<std::uint64_t>(std::time(nullptr)) * 0x9E3779B97F4A7C15ull ^
                       static_cast<std::uint64_t>(getpid()) << 32 ^
                       static_cast<std::uint64_t>(clock());
      std::memcpy(bytes, &mix, sizeof bytes);
      break;
    }
    filled += static_cast<std::size_t>(got);
  }
  static const char* const kHex = "0123456789abcdef";
  std::string text;
  for (unsigned char b : bytes) {
    text.push_back(kHex[b >> 4]);
    text.push_back(kHex[b & 15]);
  }
  return text;
}

// ".<name>.zt-<random>" next to the target: hidden, clearly ours, never a name a user chose.
std::string temporary_name_for(const std::string& target) {
  const fs::path path(target);
  return (path.parent_path() / ("." + path.filename().string() + ".zt-" + random_suffix()))
      .string();
}

// Throws unless the target is absent or a regular file. A link is refused rather than
// followed (the write would land outside the path given) or replaced (a user's link is theirs).
void check_target(const std::string& target, const std::string& what) {
  if (target.empty()) throw FileError(Cause::kBadPath, what + ": the path is empty");
  if (fs::path(target).filename().empty() || target.back() == '/')
    fail(Cause::kBadPath, what, target, "names a directory, not a file");
  struct stat status {};
  if (lstat(target.c_str(), &status) != 0) {
    if (errno == ENOENT) return;
    fail_errno(cause_of(errno), what, target, "cannot check it", errno);
  }
  if (S_ISLNK(status.st_mode)) {
    std::error_code error;
    const fs::path destination = fs::read_symlink(target, error);
    fail(Cause::kBadPath, what, target,
         "is a symbolic link" + (error ? std::string() : " to " + quote(destination.string())) +
             "; zerotrain writes outputs atomically and neither follows nor replaces a link: give "
             "the real path");
  }
  if (!S_ISREG(status.st_mode))
    fail(Cause::kBadPath, what, target,
         "is " + describe_file_type(status.st_mode) +
             ", not a regular file; zerotrain will not write to or replace it");
}

void create_directory_for(const std::string& target, const std::string& what) {
  const std::string directory = directory_of(target);
  std::error_code error;
  fs::create_directories(directory, error);
  if (error)
    fail(cause_of(error.value()), what, target,
         "cannot create its directory " + quote(directory) + ": " + error.message());
  if (!fs::is_directory(directory, error))
    fail(Cause::kBadPath, what, target, quote(directory) + " is not a directory");
}

// O_EXCL|O_NOFOLLOW: a file or link already at the name (planted or not) makes this fail
// instead of redirecting the write; a fresh random name is then tried.
int create_exclusive(const std::string& target, const std::string& what, std::string* name) {
  for (int attempt = 0; attempt < 16; ++attempt) {
    *name = temporary_name_for(target);
    const int fd =
        ::open(name->c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
    if (fd >= 0) return fd;
    if (errno == EEXIST || errno == EINTR) continue;
    fail_errno(cause_of(errno), what, target,
               "cannot create a file in " + quote(directory_of(target)), errno);
  }
  fail(Cause::kIoFailure, what, target, "cannot find a free temporary name next to it");
}

void write_all(int fd, const void* bytes, std::size_t count, const std::string& what,
               const std::string& path) {
  const char* next = static_cast<const char*>(bytes);
  while (count > 0) {
    const ssize_t written = ::write(fd, next, count);
    if (written < 0) {
      if (errno == EINTR) continue;
      fail_errno(Cause::kIoFailure, what, path, "write failed", errno);
    }
    if (written == 0) fail(Cause::kIoFailure, what, path, "write failed: no progress");
    next += written;
    count -= static_cast<std::size_t>(written);
  }
}

// Makes a rename durable. Some file systems cannot fsync a directory (EINVAL); the rename
// itself has happened then, so that is no failure of ours.
void sync_directory(const std::string& directory, const std::string& what,
                    const std::string& target) {
  const int fd = ::open(directory.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;
  const int result = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  if (result != 0 && error != EINVAL && error != EROFS && error != ENOTSUP)
    fail_errno(Cause::kIoFailure, what, target, "cannot sync its directory", error);
}

void sync_and_close(int fd, const std::string& what, const std::string& target) {
  if (::fsync(fd) != 0) {
    const int error = errno;
    ::close(fd);
    fail_errno(Cause::kIoFailure, what, target, "cannot flush it to disk", error);
  }
  if (::close(fd) != 0) fail_errno(Cause::kIoFailure, what, target, "close failed", errno);
}

void rename_into_place(const std::string& from, const std::string& target,
                       const std::string& what) {
  // The target may have changed since the run began (a link or a device put there).
  check_target(target, what);
  if (::rename(from.c_str(), target.c_str()) != 0)
    fail_errno(cause_of(errno), what, target, "cannot move " + quote(from) + " into place", errno);
  sync_directory(directory_of(target), what, target);
}

std::int64_t nanoseconds(const struct timespec& time) {
  return static_cast<std::int64_t>(time.tv_sec) * 1000000000 + time.tv_nsec;
}

FileIdentity identity_from(const struct stat& status) {
  FileIdentity identity;
  identity.device = status.st_dev;
  identity.inode = status.st_ino;
  identity.size = static_cast<std::int64_t>(status.st_size);
  identity.modified_ns = nanoseconds(status.st_mtim);
  return identity;
}

std::string absolute_lexical(const std::string& path) {
  std::error_code error;
  fs::path absolute = fs::absolute(path, error);
  if (error) return path;
  const fs::path canonical = fs::weakly_canonical(absolute, error);
  return (error ? absolute.lexically_normal() : canonical).string();
}

}  // namespace

std::string escaped(std::string_view text, bool keep_newlines) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    const bool control = byte < 0x20 || byte == 0x7f;
    if (!control || (keep_newlines && (c == '\n' || c == '\t'))) {
      out.push_back(c);
      continue;
    }
    char code[5];
    std::snprintf(code, sizeof code, "\\x%02x", byte);
    out += code;
  }
  return out;
}

std::string quote(std::string_view path) {
  return "'" + escaped(path) + "'";
}

std::string describe_file_type(mode_t mode) {
  if (S_ISREG(mode)) return "a regular file";
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISLNK(mode)) return "a symbolic link";
  if (S_ISFIFO(mode)) return "a FIFO (named pipe)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a regular file";
}

FileIdentity identity_of(const std::string& path, const std::string& what) {
  struct stat status {};
  if (::stat(path.c_str(), &status) != 0)
    fail_errno(cause_of(errno), what, path, "cannot check it", errno);
  return identity_from(status);
}

FileIdentity check_input_file(const std::string& path, const std::string& what) {
  if (path.empty()) throw FileError(Cause::kBadPath, what + ": the path is empty");
  struct stat status {};
  if (::stat(path.c_str(), &status) != 0) {
    if (errno == ENOENT) fail(Cause::kBadPath, what, path, "does not exist");
    fail_errno(cause_of(errno), what, path, "cannot read it", errno);
  }
  if (!S_ISREG(status.st_mode))
    fail(Cause::kBadPath, what, path,
         "is " + describe_file_type(status.st_mode) + ", not a regular file");
  if (::access(path.c_str(), R_OK) != 0)
    fail_errno(cause_of(errno), what, path, "cannot read it", errno);
  return identity_from(status);
}

std::string read_input_file(const std::string& path, const std::string& what,
                            std::int64_t max_bytes) {
  check_input_file(path, what);
  // O_NONBLOCK: should the path have become a FIFO since the check, open returns at once.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) fail_errno(cause_of(errno), what, path, "cannot open it", errno);
  struct stat status {};
  if (::fstat(fd, &status) != 0 || !S_ISREG(status.st_mode)) {
    ::close(fd);
    fail(Cause::kBadPath, what, path, "is not a regular file");
  }
  if (status.st_size > max_bytes) {
    ::close(fd);
    fail(Cause::kBadPath, what, path,
         "is " + std::to_string(status.st_size) + " bytes, more than the " +
             std::to_string(max_bytes) + " such a file can sensibly be; is it the right file?");
  }
  std::string text;
  text.resize(static_cast<std::size_t>(status.st_size));
  std::size_t filled = 0;
  while (true) {
    if (filled == text.size()) {
      // The file may have grown since fstat; read on, within the limit.
      if (static_cast<std::int64_t>(text.size()) >= max_bytes) {
        char probe;
        const ssize_t more = ::read(fd, &probe, 1);
        if (more > 0) {
          ::close(fd);
          fail(Cause::kBadPath, what, path, "grew past the limit while it was read");
        }
        break;
      }
      text.resize(std::min<std::size_t>(static_cast<std::size_t>(max_bytes),
                                        std::max<std::size_t>(4096, 2 * text.size())));
    }
    const ssize_t got = ::read(fd, &text[filled], text.size() - filled);
    if (got < 0) {
      if (errno == EINTR) continue;
      const int error = errno;
      ::close(fd);
      fail_errno(Cause::kIoFailure, what, path, "read failed", error);
    }
    if (got == 0) break;
    filled += static_cast<std::size_t>(got);
  }
  ::close(fd);
  text.resize(filled);
  return text;
}

void check_output_file(const std::string& path, const std::string& what) {
  check_target(path, what);
  create_directory_for(path, what);
  std::string probe;
  const int fd = create_exclusive(path, what, &probe);
  ::close(fd);
  ::unlink(probe.c_str());
}

void check_output_directory(const std::string& path, const std::string& what) {
  if (path.empty()) throw FileError(Cause::kBadPath, what + ": the path is empty");
  struct stat status {};
  if (::stat(path.c_str(), &status) == 0 && !S_ISDIR(status.st_mode))
    fail(Cause::kBadPath, what, path,
         "is " + describe_file_type(status.st_mode) + ", not a directory");
  std::error_code error;
  fs::create_directories(path, error);
  if (error) fail(cause_of(error.value()), what, path, "cannot create it: " + error.message());
  std::string probe;
  const int fd = create_exclusive((fs::path(path) / "probe").string(), what, &probe);
  ::close(fd);
  ::unlink(probe.c_str());
}

void check_outputs_are_not_inputs(const std::vector<NamedPath>& outputs,
                                  const std::vector<NamedPath>& inputs) {
  struct Known {
    const NamedPath* named;
    bool exists;
    FileIdentity identity;
    std::string absolute;
  };
  auto know = [](const NamedPath& named) {
    Known known{&named, false, {}, absolute_lexical(named.path)};
    struct stat status {};
    if (::stat(named.path.c_str(), &status) == 0) {
      known.exists = true;
      known.identity = identity_from(status);
    }
    return known;
  };
  std::vector<Known> checked_outputs;
  for (const auto& output : outputs) {
    if (output.path.empty()) continue;
    const Known mine = know(output);
    auto same = [&](const Known& other) {
      return (mine.exists && other.exists && mine.identity.same_file(other.identity)) ||
             mine.absolute == other.absolute;
    };
    for (const auto& input : inputs) {
      if (input.path.empty()) continue;
      if (same(know(input)))
        fail(Cause::kBadPath, output.what, output.path,
             "is also an input (" + describe(input.what, input.path) +
                 "); refusing to overwrite it");
    }
    for (const auto& other : checked_outputs)
      if (same(other))
        fail(Cause::kBadPath, output.what, output.path,
             "is also " + describe(other.named->what, other.named->path) +
                 "; give each output its own file");
    checked_outputs.push_back(mine);
  }
}

// --- AtomicFile -------------------------------------------------------------------------------

AtomicFile::AtomicFile(std::string target, std::string what)
    : target_(std::move(target)), what_(std::move(what)) {
  check_target(target_, what_);
  create_directory_for(target_, what_);
  fd_ = create_exclusive(target_, what_, &temporary_);
  // An output that replaces a file keeps that file's permissions.
  struct stat existing {};
  if (::stat(target_.c_str(), &existing) == 0 && S_ISREG(existing.st_mode))
    ::fchmod(fd_, existing.st_mode & 07777);
}

AtomicFile::~AtomicFile() {
  if (fd_ >= 0) ::close(fd_);
  if (!committed_ && !temporary_.empty()) ::unlink(temporary_.c_str());
}

void AtomicFile::write(const void* bytes, std::size_t count) {
  if (fd_ < 0) throw std::logic_error("AtomicFile::write after commit");
  write_all(fd_, bytes, count, what_, target_);
}

void AtomicFile::commit() {
  if (fd_ < 0) throw std::logic_error("AtomicFile::commit twice");
  const int fd = fd_;
  fd_ = -1;
  sync_and_close(fd, what_, target_);
  rename_into_place(temporary_, target_, what_);
  committed_ = true;
}

void write_file_atomically(const std::string& path, std::string_view text,
                           const std::string& what) {
  AtomicFile file(path, what);
  file.write(text);
  file.commit();
}

// --- StagedFile -------------------------------------------------------------------------------

StagedFile::StagedFile(std::string target, std::string what)
    : target_(std::move(target)), what_(std::move(what)) {
  check_target(target_, what_);
  create_directory_for(target_, what_);
  for (int attempt = 0; attempt < 16 && directory_.empty(); ++attempt) {
    const std::string candidate = temporary_name_for(target_);
    if (::mkdir(candidate.c_str(), 0700) == 0) {
      directory_ = candidate;
    } else if (errno != EEXIST && errno != EINTR) {
      fail_errno(cause_of(errno), what_, target_,
                 "cannot create a directory in " + quote(directory_of(target_)), errno);
    }
  }
  if (directory_.empty())
    fail(Cause::kIoFailure, what_, target_, "cannot find a free temporary name next to it");
  staged_ = (fs::path(directory_) / fs::path(target_).filename()).string();
}

StagedFile::~StagedFile() {
  if (directory_.empty()) return;
  std::error_code ignored;
  if (!committed_) ::unlink(staged_.c_str());
  fs::remove_all(directory_, ignored);
}

void StagedFile::commit() {
  struct stat status {};
  if (::lstat(staged_.c_str(), &status) != 0 || !S_ISREG(status.st_mode))
    fail(Cause::kIoFailure, what_, target_, "the staged file " + quote(staged_) + " is missing");
  const int fd = ::open(staged_.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) fail_errno(Cause::kIoFailure, what_, target_, "cannot reopen the staged file", errno);
  sync_and_close(fd, what_, target_);
  rename_into_place(staged_, target_, what_);
  committed_ = true;
  ::rmdir(directory_.c_str());
  directory_.clear();
}

// --- AppendFile -------------------------------------------------------------------------------

AppendFile::AppendFile(std::string path, std::string what)
    : path_(std::move(path)), what_(std::move(what)) {
  check_target(path_, what_);
  create_directory_for(path_, what_);
  // O_NOFOLLOW: no link; O_NONBLOCK: a FIFO put there since the check cannot block the open.
  fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0666);
  if (fd_ < 0) fail_errno(cause_of(errno), what_, path_, "cannot open it for writing", errno);
  struct stat status {};
  if (::fstat(fd_, &status) != 0 || !S_ISREG(status.st_mode)) {
    ::close(fd_);
    fd_ = -1;
    fail(Cause::kBadPath, what_, path_, "is not a regular file");
  }
  // Truncated only once known to be a regular file (never a device's contents).
  if (::ftruncate(fd_, 0) != 0 || ::fcntl(fd_, F_SETFL, O_APPEND) != 0) {
    const int error = errno;
    ::close(fd_);
    fd_ = -1;
    fail_errno(Cause::kIoFailure, what_, path_, "cannot start it", error);
  }
}

AppendFile::AppendFile(AppendFile&& other) noexcept
    : path_(std::move(other.path_)), what_(std::move(other.what_)), fd_(other.fd_) {
  other.fd_ = -1;
}

AppendFile::~AppendFile() {
  if (fd_ >= 0) ::close(fd_);
}

void AppendFile::write(std::string_view text) {
  if (fd_ < 0) throw std::logic_error("AppendFile::write after close");
  write_all(fd_, text.data(), text.size(), what_, path_);
}

void AppendFile::close() {
  if (fd_ < 0) return;
  const int fd = fd_;
  fd_ = -1;
  sync_and_close(fd, what_, path_);
}

// --- DirectoryLock ----------------------------------------------------------------------------

DirectoryLock::DirectoryLock(const std::string& directory, const std::string& what,
                             const std::string& holder)
    : lock_path_((fs::path(directory) / ".zerotrain.lock").string()) {
  check_target(lock_path_, what + " lock");
  fd_ = ::open(lock_path_.c_str(), O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0644);
  if (fd_ < 0)
    fail_errno(cause_of(errno), what, directory, "cannot create the lock file " + quote(lock_path_),
               errno);
  struct stat status {};
  if (::fstat(fd_, &status) != 0 || !S_ISREG(status.st_mode)) {
    ::close(fd_);
    fd_ = -1;
    fail(Cause::kBadPath, what, directory, quote(lock_path_) + " is not a regular file");
  }
  bool busy = false;
  if (::flock(fd_, LOCK_EX | LOCK_NB) == 0) {
    held_ = true;
  } else if (errno == EWOULDBLOCK) {
    busy = true;
  } else {
    // Some network file systems (Lustre without -o flock, old NFS) refuse flock but honour
    // POSIX record locks.
    struct flock record {};
    record.l_type = F_WRLCK;
    record.l_whence = SEEK_SET;
    if (::fcntl(fd_, F_SETLK, &record) == 0)
      held_ = true;
    else if (errno == EACCES || errno == EAGAIN)
      busy = true;
  }
  if (busy) {
    char text[512] = {0};
    const ssize_t got = ::pread(fd_, text, sizeof text - 1, 0);
    ::close(fd_);
    fd_ = -1;
    std::string who(text, got > 0 ? static_cast<std::size_t>(got) : 0);
    while (!who.empty() && (who.back() == '\n' || who.back() == ' ')) who.pop_back();
    who = escaped(who);
    fail(Cause::kBadPath, what, directory,
         "is in use by another zerotrain run (" + (who.empty() ? "holder unknown" : who) +
             "; lock " + quote(lock_path_) +
             "): wait for it to finish, or give this run its own directory");
  }
  if (held_) {
    const std::string line = holder + "\n";
    if (::ftruncate(fd_, 0) != 0 ||
        ::pwrite(fd_, line.data(), line.size(), 0) != static_cast<ssize_t>(line.size()))
      fail_errno(Cause::kIoFailure, what, directory, "cannot write the lock file", errno);
  }
}

DirectoryLock::~DirectoryLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the lock; the file stays for the next run to reuse
}

void sync_path(const std::string& path, const std::string& what) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (fd < 0) fail_errno(cause_of(errno), what, path, "cannot open it to flush it", errno);
  const int result = ::fsync(fd);
  const int error = errno;
  ::close(fd);
  if (result != 0 && error != EINVAL && error != EROFS && error != ENOTSUP)
    fail_errno(Cause::kIoFailure, what, path, "cannot flush it to disk", error);
}

void make_directory(const std::string& path, const std::string& what, bool may_exist) {
  if (::mkdir(path.c_str(), 0755) == 0) return;
  const int error = errno;
  struct stat status {};
  if (error == EEXIST && may_exist && ::lstat(path.c_str(), &status) == 0 &&
      S_ISDIR(status.st_mode))
    return;
  fail_errno(cause_of(error), what, path, "cannot create the directory", error);
}

void rename_path(const std::string& from, const std::string& to, const std::string& what) {
  if (::rename(from.c_str(), to.c_str()) != 0)
    fail_errno(cause_of(errno), what, to, "cannot move " + quote(from) + " there", errno);
  sync_directory(directory_of(to), what, to);
}

void remove_tree(const std::string& path) noexcept {
  std::error_code ignored;
  fs::remove_all(path, ignored);
}

}  // namespace zt::files
