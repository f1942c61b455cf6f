// SPDX-License-Identifier: Apache-2.0
#include "runtime/subprocess.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

#include "runtime/error.hpp"

extern char** environ;

namespace zt::runtime {
namespace {

bool is_launcher_variable(const char* entry) {
  for (const char* prefix : {"OMPI_", "PMIX_", "PMI_", "SLURM_"})
    if (std::strncmp(entry, prefix, std::strlen(prefix)) == 0) return true;
  return false;
}

// Closes a pipe end on every path out.
struct Descriptor {
  int fd = -1;
  ~Descriptor() {
    if (fd >= 0) ::close(fd);
  }
};

}  // namespace

std::string own_executable() {
  char path[4096];
  const ssize_t length = ::readlink("/proc/self/exe", path, sizeof path - 1);
  if (length <= 0) throw std::runtime_error("cannot find this executable (/proc/self/exe)");
  return std::string(path, static_cast<std::size_t>(length));
}

ProcessResult run_helper_process(const std::vector<std::string>& arguments,
                                 double timeout_seconds) {
  if (arguments.empty()) throw std::logic_error("run_helper_process: no executable");
  int pipe_ends[2];
  if (::pipe2(pipe_ends, O_CLOEXEC) != 0)
    throw std::runtime_error(concat("cannot create a pipe: ", std::strerror(errno)));
  Descriptor reader{pipe_ends[0]};
  Descriptor writer{pipe_ends[1]};

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, writer.fd, 2);

  std::vector<char*> argv;
  for (const auto& argument : arguments) argv.push_back(const_cast<char*>(argument.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (char** entry = environ; *entry != nullptr; ++entry)
    if (!is_launcher_variable(*entry)) envp.push_back(*entry);
  envp.push_back(nullptr);

  // The helper starts with no signal blocked (a training run blocks its stop signals).
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attributes, &none);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK);
  pid_t child = 0;
  const int spawned =
      ::posix_spawn(&child, argv[0], &actions, &attributes, argv.data(), envp.data());
  posix_spawnattr_destroy(&attributes);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0)
    throw std::runtime_error(concat("cannot start ", arguments[0], ": ", std::strerror(spawned)));
  ::close(writer.fd);
  writer.fd = -1;

  ProcessResult result;
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                            std::chrono::duration<double>(timeout_seconds));
  char buffer[4096];
  bool open = true;
  while (open) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) break;
    pollfd watch{reader.fd, POLLIN, 0};
    const int ready = ::poll(&watch, 1, static_cast<int>(std::min<long long>(left, 1000)));
    if (ready < 0 && errno != EINTR) break;
    if (ready <= 0) continue;
    const ssize_t got = ::read(reader.fd, buffer, sizeof buffer);
    if (got > 0) {
      result.error_output.append(buffer, static_cast<std::size_t>(got));
      if (result.error_output.size() > (64u << 10))
        result.error_output.erase(0, result.error_output.size() - (64u << 10));
    } else if (got == 0 || errno != EINTR) {
      open = false;  // the helper closed stderr: it is exiting
    }
  }
  int status = 0;
  pid_t waited = 0;
  // stderr closed does not mean exited yet; give it the rest of the time.
  while ((waited = ::waitpid(child, &status, WNOHANG)) == 0 &&
         std::chrono::steady_clock::now() < deadline)
    ::usleep(10000);
  if (waited == 0) {
    ::kill(child, SIGKILL);
    ::waitpid(child, &status, 0);
    return result;  // not finished
  }
  result.finished = true;
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) result.signal = WTERMSIG(status);
  return result;
}

}  // namespace zt::runtime
