// SPDX-License-Identifier: Apache-2.0
// Per-rank accounting of bytes by place (device, host, NVMe) and kind (parameters,
// gradients, ...), with current and peak values and an optional device cap.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <exception>
#include <string>
#include <utility>

namespace zt::memory {

enum class Place : int { Device = 0, Host = 1, Nvme = 2 };
enum class Kind : int {
  Parameters = 0,
  Gradients = 1,
  OptimizerStates = 2,
  Activations = 3,
  CommBuffers = 4,
  Other = 5
};
inline constexpr int kNumPlaces = 3;
inline constexpr int kNumKinds = 6;

const char* place_name(Place place);
const char* kind_name(Kind kind);

struct Usage {
  std::int64_t current = 0;
  std::int64_t peak = 0;
};

/// Thrown when a tracked allocation would exceed the device cap; says what was asked,
/// what is in use and by which kind.
struct OutOfMemory : std::exception {
  explicit OutOfMemory(std::string message) : text(std::move(message)) {}
  const char* what() const noexcept override { return text.c_str(); }
  std::string text;
};

/// One tracker per process (a rank). Thread-safe.
class Tracker {
 public:
  static Tracker& instance();

  void add(Place place, Kind kind, std::int64_t bytes);  // throws OutOfMemory past the cap
  void remove(Place place, Kind kind, std::int64_t bytes);

  Usage usage(Place place, Kind kind) const;
  /// Current and peak of the sum over kinds (the peak of the sum, not the sum of peaks).
  Usage total(Place place) const;

  /// Cap on device bytes (0 = none). On a CPU-only run "device" is a separately
  /// tracked host arena, so the cap makes offload measurable without a GPU.
  void set_device_limit(std::int64_t bytes);
  std::int64_t device_limit() const;

  void reset_peaks();

 private:
  Tracker() = default;
  mutable std::mutex mutex_;
  std::array<std::array<Usage, kNumKinds>, kNumPlaces> by_kind_{};
  std::array<Usage, kNumPlaces> by_place_{};
  std::int64_t device_limit_ = 0;
};

/// How Place::Host buffers get their memory. The default is aligned_zeroed_alloc; with a GPU,
/// src/offload installs page-locked (pinned) memory, which asynchronous device copies need.
/// Each buffer remembers the allocator that made it, so installing another one later is safe.
struct HostAllocator {
  void* (*allocate)(std::size_t bytes) = nullptr;  // zeroed, kBufferAlignment-aligned; throws
  void (*release)(void* pointer) = nullptr;
  const char* name = "aligned host memory";
};
/// The allocator new Place::Host buffers use from now on (nullptr: the default). Not
/// thread-safe against concurrent allocation: set it before the engine allocates.
void set_host_allocator(const HostAllocator* allocator);
const HostAllocator& host_allocator();
const HostAllocator& default_host_allocator();

/// Owns an aligned, zero-initialised array of T on the host, counted against (place, kind).
/// On CPU-only builds Place::Device is host memory in the tracked "device" arena.
template <class T>
class TrackedBuffer {
 public:
  TrackedBuffer() = default;
  TrackedBuffer(std::size_t count, Place place, Kind kind);
  ~TrackedBuffer() { release(); }
  TrackedBuffer(const TrackedBuffer&) = delete;
  TrackedBuffer& operator=(const TrackedBuffer&) = delete;
  TrackedBuffer(TrackedBuffer&& other) noexcept { *this = std::move(other); }
  TrackedBuffer& operator=(TrackedBuffer&& other) noexcept;

  T* data() { return data_; }
  const T* data() const { return data_; }
  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  T& operator[](std::size_t i) { return data_[i]; }
  const T& operator[](std::size_t i) const { return data_[i]; }
  T* begin() { return data_; }
  T* end() { return data_ + size_; }
  const T* begin() const { return data_; }
  const T* end() const { return data_ + size_; }
  Place place() const { return place_; }
  Kind kind() const { return kind_; }

  void release();

 private:
  T* data_ = nullptr;
  std::size_t size_ = 0;
  Place place_ = Place::Host;
  Kind kind_ = Kind::Other;
  const HostAllocator* allocator_ = nullptr;
};

/// Alignment of every tracked buffer: a cache line, an AVX-512 vector, and a divisor of
/// the 4 KiB O_DIRECT block.
inline constexpr std::size_t kBufferAlignment = 64;

void* aligned_zeroed_alloc(std::size_t bytes);  // throws std::bad_alloc
void aligned_free(void* pointer);


template <class T>
TrackedBuffer<T>::TrackedBuffer(std::size_t count, Place place, Kind kind)
    : size_(count), place_(place), kind_(kind) {
  if (count == 0) return;
  const auto bytes = static_cast<std::int64_t>(count * sizeof(T));
  Tracker::instance().add(place, kind, bytes);
  allocator_ = place == Place::Host ? &host_allocator() : &default_host_allocator();
  try {
    data_ = static_cast<T*>(allocator_->allocate(count * sizeof(T)));
  } catch (...) {
    Tracker::instance().remove(place, kind, bytes);
    throw;
  }
}

template <class T>
TrackedBuffer<T>& TrackedBuffer<T>::operator=(TrackedBuffer&& other) noexcept {
  if (this != &other) {
    release();
    data_ = other.data_;
    size_ = other.size_;
    place_ = other.place_;
    kind_ = other.kind_;
    allocator_ = other.allocator_;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

template <class T>
void TrackedBuffer<T>::release() {
  if (data_ != nullptr) {
    allocator_->release(data_);
    Tracker::instance().remove(place_, kind_, static_cast<std::int64_t>(size_ * sizeof(T)));
  }
  data_ = nullptr;
  size_ = 0;
}

}  // namespace zt::memory
