// SPDX-License-Identifier: Apache-2.0
#include "memory/tracker.hpp"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <new>
#include <sstream>

#include "memory/format.hpp"

namespace zt::memory {

const char* place_name(Place place) {
  switch (place) {
    case Place::Device: return "device";
    case Place::Host: return "host";
    case Place::Nvme: return "nvme";
  }
  return "?";
}

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::Parameters: return "parameters";
    case Kind::Gradients: return "gradients";
    case Kind::OptimizerStates: return "optimizer_states";
    case Kind::Activations: return "activations";
    case Kind::CommBuffers: return "comm_buffers";
    case Kind::Other: return "other";
  }
  return "?";
}

Tracker& Tracker::instance() {
  static Tracker tracker;
  return tracker;
}

void Tracker::add(Place place, Kind kind, std::int64_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto& in_place = by_place_[static_cast<int>(place)];
  if (place == Place::Device && device_limit_ > 0 && in_place.current + bytes > device_limit_) {
    std::ostringstream text;
    text << "out of device memory: asked for " << format_bytes(bytes) << " of "
         << kind_name(kind) << " with " << format_bytes(in_place.current) << " in use of the "
         << format_bytes(device_limit_) << " limit (";
    const char* separator = "";
    for (int k = 0; k < kNumKinds; ++k) {
      const auto used = by_kind_[static_cast<int>(place)][k].current;
      if (used == 0) continue;
      text << separator << kind_name(static_cast<Kind>(k)) << " " << format_bytes(used);
      separator = ", ";
    }
    text << ")";
    throw OutOfMemory(text.str());
  }
  auto& usage = by_kind_[static_cast<int>(place)][static_cast<int>(kind)];
  usage.current += bytes;
  if (usage.current > usage.peak) usage.peak = usage.current;
  in_place.current += bytes;
  if (in_place.current > in_place.peak) in_place.peak = in_place.current;
}

void Tracker::remove(Place place, Kind kind, std::int64_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  by_kind_[static_cast<int>(place)][static_cast<int>(kind)].current -= bytes;
  by_place_[static_cast<int>(place)].current -= bytes;
}

Usage Tracker::usage(Place place, Kind kind) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return by_kind_[static_cast<int>(place)][static_cast<int>(kind)];
}

Usage Tracker::total(Place place) const {
  std::lock_guard<std::mutex> lock(mutex_);
  return by_place_[static_cast<int>(place)];
}

void Tracker::set_device_limit(std::int64_t bytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  device_limit_ = bytes;
}

std::int64_t Tracker::device_limit() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return device_limit_;
}

void Tracker::reset_peaks() {
  std::lock_guard<std::mutex> lock(mutex_);
  for (auto& place : by_kind_)
    for (auto& usage : place) usage.peak = usage.current;
  for (auto& usage : by_place_) usage.peak = usage.current;
}

void* aligned_zeroed_alloc(std::size_t bytes) {
  const std::size_t rounded = (bytes + kBufferAlignment - 1) / kBufferAlignment * kBufferAlignment;
  void* pointer = std::aligned_alloc(kBufferAlignment, rounded);
  if (pointer == nullptr) throw std::bad_alloc();
  std::memset(pointer, 0, rounded);
  return pointer;
}

void aligned_free(void* pointer) { std::free(pointer); }

namespace {
const HostAllocator kDefaultHostAllocator{aligned_zeroed_alloc, aligned_free,
                                          "aligned host memory"};
std::atomic<const HostAllocator*> installed_host_allocator{&kDefaultHostAllocator};
}  // namespace

const HostAllocator& default_host_allocator() { return kDefaultHostAllocator; }
const HostAllocator& host_allocator() { return *installed_host_allocator.load(); }
void set_host_allocator(const HostAllocator* allocator) {
  installed_host_allocator.store(allocator != nullptr ? allocator : &kDefaultHostAllocator);
}

}  // namespace zt::memory
