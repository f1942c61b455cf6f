// SPDX-License-Identifier: Apache-2.0
#include "runtime/stop_request.hpp"

#include <pthread.h>
#include <signal.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <stdexcept>

namespace zt::runtime {
namespace {

sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  sigaddset(&set, SIGTERM);
  return set;
}

}  // namespace

void StopRequest::block_stop_signals() {
  const sigset_t set = stop_signals();
  if (const int error = pthread_sigmask(SIG_BLOCK, &set, nullptr); error != 0)
    throw std::runtime_error(std::string("cannot block SIGUSR1 and SIGTERM: ") +
                             std::strerror(error));
}

StopRequest::StopRequest() {
  sigset_t current;
  pthread_sigmask(SIG_BLOCK, nullptr, &current);
  if (sigismember(&current, SIGUSR1) != 1 || sigismember(&current, SIGTERM) != 1)
    throw std::logic_error("StopRequest: block_stop_signals() must run first");
}

int StopRequest::poll() {
  const sigset_t set = stop_signals();
  const timespec now{0, 0};
  for (;;) {
    const int signal_number = sigtimedwait(&set, nullptr, &now);
    if (signal_number > 0) {
      if (received_ == 0) received_ = signal_number;
      continue;  // take every pending one
    }
    if (errno == EINTR) continue;
    break;  // EAGAIN: none pending
  }
  return received_;
}

std::string StopRequest::signal_name(int signal_number) {
  switch (signal_number) {
    case SIGUSR1:
      return "SIGUSR1";
    case SIGTERM:
      return "SIGTERM";
    default:
      return "signal " + std::to_string(signal_number);
  }
}

}  // namespace zt::runtime
