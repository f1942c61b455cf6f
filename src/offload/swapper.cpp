// SPDX-License-Identifier: Apache-2.0
#include "offload/swapper.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <mutex>
#include <sstream>
#include <stdexcept>

namespace zt::offload {
namespace {

template <class... Parts>
std::string concat(const Parts&... parts) {
  std::ostringstream stream;
  (stream << ... << parts);
  return stream.str();
}

std::string gigabytes(std::int64_t bytes) {
  std::ostringstream stream;
  stream.precision(3);
  stream << static_cast<double>(bytes) / 1e9 << " GB";
  return stream.str();
}

// What the signal handler removes. A handler may only call async-signal-safe functions, so the
// paths live in fixed arrays filled before the handler can see them (a slot's `ready` flag is
// set last and cleared first).
constexpr int kSlots = 8;
constexpr int kFilesPerSlot = 8;
constexpr std::size_t kPathBytes = 4096;
struct CleanupSlot {
  std::atomic<bool> ready{false};
  int files = 0;
  char file[kFilesPerSlot][kPathBytes];
  char folder[kPathBytes];
  char job_folder[kPathBytes];
};
CleanupSlot g_slots[kSlots];
std::mutex g_slots_mutex;
std::once_flag g_handlers_installed;
constexpr int kCleanupSignals[] = {SIGTERM, SIGINT, SIGHUP, SIGQUIT};

void remove_slot_files(CleanupSlot& slot) {
  for (int f = 0; f < slot.files; ++f) unlink(slot.file[f]);
  rmdir(slot.folder);
  rmdir(slot.job_folder);  // fails while other ranks' folders are still in it
}

extern "C" void remove_swap_files_and_reraise(int signal_number) {
  for (auto& slot : g_slots)
    if (slot.ready.load()) remove_slot_files(slot);
  std::signal(signal_number, SIG_DFL);
  std::raise(signal_number);
}

void install_cleanup_handlers() {
  std::call_once(g_handlers_installed, [] {
    for (const int signal_number : kCleanupSignals) {
      struct sigaction previous {};
      sigaction(signal_number, nullptr, &previous);
      // Keep a handler someone else installed (or an ignored signal) in charge.
      if (previous.sa_handler != SIG_DFL) continue;
      struct sigaction action {};
      action.sa_handler = remove_swap_files_and_reraise;
      sigemptyset(&action.sa_mask);
      sigaction(signal_number, &action, nullptr);
    }
  });
}

void copy_path(char* target, const std::string& path) {
  const std::size_t n = std::min(path.size(), kPathBytes - 1);
  std::memcpy(target, path.data(), n);
  target[n] = '\0';
}

void make_folder(const std::string& path, const std::string& key, int rank) {
  if (mkdir(path.c_str(), 0700) == 0) return;
  const int error = errno;
  struct stat info {};
  if (error == EEXIST && lstat(path.c_str(), &info) == 0 && S_ISDIR(info.st_mode)) return;
  throw IoError(concat(key, " '", path, "': cannot create rank ", rank,
                       "'s swap folder: ", std::strerror(error)));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// SwapFolder

SwapFolder::SwapFolder(const std::string& nvme_path, const std::string& tag, int rank,
                       const std::string& key) {
  struct stat info {};
  if (nvme_path.empty()) throw IoError(concat(key, " is not set"));
  if (stat(nvme_path.c_str(), &info) != 0)
    throw IoError(concat(key, " '", nvme_path, "' (rank ", rank, "): ", std::strerror(errno)));
  if (!S_ISDIR(info.st_mode))
    throw IoError(concat(key, " '", nvme_path, "' (rank ", rank, ") is not a directory"));
  if (access(nvme_path.c_str(), W_OK | X_OK) != 0)
    throw IoError(concat(key, " '", nvme_path, "' (rank ", rank,
                         ") is not writable: ", std::strerror(errno)));
  job_path_ = nvme_path + "/zerotrain-" + tag;
  path_ = job_path_ + "/rank" + std::to_string(rank);
  make_folder(job_path_, key, rank);
  make_folder(path_, key, rank);

  install_cleanup_handlers();
  std::lock_guard<std::mutex> lock(g_slots_mutex);
  for (int s = 0; s < kSlots; ++s) {
    if (g_slots[s].ready.load()) continue;
    CleanupSlot& slot = g_slots[s];
    slot.files = 0;
    copy_path(slot.folder, path_);
    copy_path(slot.job_folder, job_path_);
    registry_slot_ = s;
    slot.ready.store(true);
    break;
  }
}

SwapFolder::~SwapFolder() {
  if (registry_slot_ >= 0) {
    std::lock_guard<std::mutex> lock(g_slots_mutex);
    g_slots[registry_slot_].ready.store(false);
  }
  for (const auto& file : files_) unlink(file.c_str());
  rmdir(path_.c_str());
  rmdir(job_path_.c_str());
}

std::string SwapFolder::file(const std::string& name) {
  std::string path = path_ + "/" + name;
  files_.push_back(path);
  if (registry_slot_ >= 0) {
    std::lock_guard<std::mutex> lock(g_slots_mutex);
    CleanupSlot& slot = g_slots[registry_slot_];
    if (slot.files < kFilesPerSlot) {
      // Publish the path before the count that makes the handler read it.
      copy_path(slot.file[slot.files], path);
      std::atomic_signal_fence(std::memory_order_seq_cst);
      ++slot.files;
    }
  }
  return path;
}

std::int64_t SwapFolder::free_bytes() const {
  struct statvfs info {};
  if (statvfs(path_.c_str(), &info) != 0) return -1;
  return static_cast<std::int64_t>(info.f_bavail) * static_cast<std::int64_t>(info.f_frsize);
}

AioFile create_swap_file(const std::string& path, std::int64_t bytes, int rank) {
  AioFile file = open_swap_file(path, /*create=*/true);
  if (bytes > 0) {
    const int error = posix_fallocate(file.fd(), 0, bytes);
    if (error == ENOSPC || error == EDQUOT) {
      struct statvfs info {};
      std::string free_text;
      if (fstatvfs(file.fd(), &info) == 0)
        free_text = concat(", ",
                           gigabytes(static_cast<std::int64_t>(info.f_bavail) *
                                     static_cast<std::int64_t>(info.f_frsize)),
                           " free");
      throw IoError(concat("swap file '", path, "' (rank ", rank,
                           "): not enough space: ", gigabytes(bytes), " needed", free_text, " (",
                           std::strerror(error), ")"));
    }
    if (error == EFBIG)
      throw IoError(concat("swap file '", path, "' (rank ", rank, "): ", gigabytes(bytes),
                           " exceed the file size limit (ulimit -f)"));
    // EOPNOTSUPP / EINVAL: a file system without fallocate; space is then claimed by the writes,
    // whose errors name the file too.
    if (error != 0 && error != EOPNOTSUPP && error != EINVAL)
      throw IoError(concat("swap file '", path, "' (rank ", rank,
                           "): cannot reserve space: ", std::strerror(error)));
    // Reads of blocks not written yet (edges of a partial write) then see zeros, not the end.
    if (ftruncate(file.fd(), bytes) != 0)
      throw IoError(concat("swap file '", path, "' (rank ", rank,
                           "): cannot set its size: ", std::strerror(errno)));
  }
  return file;
}

std::uint64_t swap_checksum(const void* data, std::int64_t bytes) {
  // Eight independent Fletcher lanes over 32-bit words (so the loop vectorises), combined with
  // odd multipliers; a zeroed region sums to 0.
  constexpr int kLanes = 8;
  std::uint64_t sum[kLanes] = {};
  std::uint64_t weighted[kLanes] = {};
  const auto* words = static_cast<const std::uint32_t*>(data);
  const std::int64_t count = bytes / 4;
  std::int64_t i = 0;
  for (; i + kLanes <= count; i += kLanes)
    for (int lane = 0; lane < kLanes; ++lane) {
      sum[lane] += words[i + lane];
      weighted[lane] += sum[lane];
    }
  for (; i < count; ++i) {
    sum[0] += words[i];
    weighted[0] += sum[0];
  }
  std::uint64_t total = 0;
  for (int lane = 0; lane < kLanes; ++lane)
    total = total * 0x9E3779B97F4A7C15ull + (sum[lane] ^ (weighted[lane] * 0xC2B2AE3D27D4EB4Full));
  return total;
}

// ---------------------------------------------------------------------------------------------
// TransferBuffer

TransferBuffer::TransferBuffer(std::int64_t bytes, memory::Kind kind)
    : storage_(static_cast<std::size_t>(align_up(bytes, kDirectAlignment) + kDirectAlignment),
               memory::Place::Host, kind),
      bytes_(align_up(bytes, kDirectAlignment)) {
  // Tracked buffers are aligned to a cache line; O_DIRECT wants a block.
  const auto address = reinterpret_cast<std::uintptr_t>(storage_.data());
  const auto aligned =
      static_cast<std::uintptr_t>(align_up(static_cast<std::int64_t>(address), kDirectAlignment));
  aligned_ = storage_.data() + (aligned - address);
}

// ---------------------------------------------------------------------------------------------
// SubGroupSwapper

SubGroupSwapper::SubGroupSwapper(AioEngine& engine, SwapFolder& folder,
                                 const SubGroupLayout& layout, const SubGroupSwapSettings& settings,
                                 int rank)
    : engine_(engine), layout_(layout), settings_(settings), rank_(rank) {
  if (layout_.elements <= 0 || layout_.group_elements <= 0 || layout_.arrays.empty())
    throw std::invalid_argument("SubGroupSwapper: empty layout");
  groups_ =
      static_cast<int>((layout_.elements + layout_.group_elements - 1) / layout_.group_elements);
  const int needed_sets =
      1 + (settings_.pipeline_read ? 1 : 0) + (settings_.pipeline_write ? 1 : 0);
  if (settings_.buffer_sets < needed_sets)
    throw std::invalid_argument(concat("the NVMe optimizer swapper needs ", needed_sets,
                                       " buffer sets with pipeline_read=", settings_.pipeline_read,
                                       " and pipeline_write=", settings_.pipeline_write, ", has ",
                                       settings_.buffer_sets));
  // More sets than sub-groups would never be used.
  const int sets = std::max(1, std::min(settings_.buffer_sets, groups_));
  // Each worker's share of a transfer must stay aligned: pad a sub-group's region to
  // alignment x workers.
  const std::int64_t granule =
      kDirectAlignment * std::max(1, engine_.settings().intra_op_parallelism);
  const std::int64_t group_bytes =
      std::min(layout_.group_elements, layout_.elements) * std::int64_t{sizeof(float)};
  stride_ = align_up(group_bytes, granule);
  const std::int64_t file_bytes =
      file_offset(groups_ - 1) + align_up(group_size(groups_ - 1) * 4, granule);
  for (const auto& name : layout_.arrays)
    files_.push_back(create_swap_file(folder.file(name + ".swp"), file_bytes, rank));
  memory::Tracker::instance().add(memory::Place::Nvme, memory::Kind::OptimizerStates,
                                  file_bytes * static_cast<std::int64_t>(files_.size()));
  checksums_.assign(static_cast<std::size_t>(groups_) * files_.size(), 0);
  written_.assign(checksums_.size(), 0);
  sets_.resize(static_cast<std::size_t>(sets));
  for (auto& set : sets_) {
    for (std::size_t a = 0; a < layout_.arrays.size(); ++a) {
      set.buffers.emplace_back(stride_, memory::Kind::OptimizerStates);
      set.arrays.push_back(reinterpret_cast<float*>(set.buffers.back().data()));
    }
  }
}

SubGroupSwapper::~SubGroupSwapper() {
  // Nothing may still write into or read from the buffers being freed.
  try {
    for (auto& set : sets_) {
      for (auto& ticket : set.reads) engine_.wait(ticket);
      for (auto& ticket : set.writes) engine_.wait(ticket);
    }
  } catch (...) {
  }
  if (!files_.empty()) {
    const std::int64_t file_bytes =
        file_offset(groups_ - 1) +
        align_up(group_size(groups_ - 1) * 4,
                 kDirectAlignment * std::max(1, engine_.settings().intra_op_parallelism));
    memory::Tracker::instance().remove(memory::Place::Nvme, memory::Kind::OptimizerStates,
                                       file_bytes * static_cast<std::int64_t>(files_.size()));
  }
}

std::int64_t SubGroupSwapper::group_size(int group) const {
  return std::min(layout_.group_elements, layout_.elements - group_begin(group));
}

std::int64_t SubGroupSwapper::transfer_bytes(int group) const {
  const std::int64_t granule =
      kDirectAlignment * std::max(1, engine_.settings().intra_op_parallelism);
  return align_up(group_size(group) * std::int64_t{sizeof(float)}, granule);
}

void SubGroupSwapper::wait_reads(BufferSet& set) {
  if (set.reads.empty()) return;
  for (auto& ticket : set.reads) engine_.wait(ticket);
  set.reads.clear();
  const int group = set.group;
  const std::int64_t bytes = group_size(group) * std::int64_t{sizeof(float)};
  for (std::size_t a = 0; a < files_.size(); ++a) {
    const std::size_t slot = static_cast<std::size_t>(group) * files_.size() + a;
    if (!written_[slot] || swap_checksum(set.buffers[a].data(), bytes) == checksums_[slot])
      continue;
    const std::int64_t offset = file_offset(group);
    throw IoError(concat("swap file '", files_[a].path(), "' (rank ", rank_, "): bytes [", offset,
                         ", ", offset + bytes, ") of sub-group ", group,
                         " read back differently from how they were written: the file was "
                         "changed underneath the run (truncated or overwritten) or the disk "
                         "corrupted it"));
  }
}

void SubGroupSwapper::wait_writes(BufferSet& set) {
  for (auto& ticket : set.writes) engine_.wait(ticket);
  set.writes.clear();
}

void SubGroupSwapper::start_read(int group) {
  BufferSet& set = set_of(group);
  wait_reads(set);
  wait_writes(set);  // the buffers still hold the values of an earlier group being written
  set.group = group;
  const std::int64_t bytes = transfer_bytes(group);
  for (std::size_t a = 0; a < files_.size(); ++a)
    set.reads.push_back(engine_.read(files_[a], set.buffers[a].data(), bytes, file_offset(group)));
}

const std::vector<float*>& SubGroupSwapper::acquire(int group, bool read) {
  if (group < 0 || group >= groups_) throw std::out_of_range("SubGroupSwapper::acquire");
  if (group == 0) check_files();
  BufferSet& set = set_of(group);
  if (!read) {
    wait_reads(set);
    wait_writes(set);
    set.group = group;
  } else {
    // Already on its way when the previous acquire prefetched it.
    if (set.group != group) start_read(group);
    wait_reads(set);
  }
  // DeepSpeed's pipeline_read: the next sub-group's states are on their way while this one
  // updates (its buffer set must be another one, or there is nothing to overlap).
  if (read && settings_.pipeline_read && group + 1 < groups_ && sets_.size() > 1)
    start_read(group + 1);
  return set.arrays;
}

void SubGroupSwapper::release(int group, unsigned dirty) {
  BufferSet& set = set_of(group);
  if (set.group != group) throw std::logic_error("SubGroupSwapper::release of a group not held");
  const std::int64_t bytes = transfer_bytes(group);
  for (std::size_t a = 0; a < files_.size(); ++a) {
    if (!(dirty & (1u << a))) continue;
    const std::size_t slot = static_cast<std::size_t>(group) * files_.size() + a;
    checksums_[slot] =
        swap_checksum(set.buffers[a].data(), group_size(group) * std::int64_t{sizeof(float)});
    written_[slot] = 1;
    set.writes.push_back(
        engine_.write(files_[a], set.buffers[a].data(), bytes, file_offset(group)));
  }
  if (!settings_.pipeline_write) wait_writes(set);
}

void SubGroupSwapper::finish() {
  for (auto& set : sets_) {
    wait_reads(set);
    wait_writes(set);
    // A buffer prefetched past the end of a pass is not trusted by the next one.
    set.group = -1;
  }
}

void SubGroupSwapper::read_range(int array, std::int64_t begin, std::int64_t end, float* out) {
  if (begin < 0 || end > layout_.elements || begin > end)
    throw std::out_of_range("SubGroupSwapper::read_range");
  finish();
  // Whole sub-groups, so that what comes back is checked against its checksum.
  for (std::int64_t at = begin; at < end;) {
    const int group = static_cast<int>(at / layout_.group_elements);
    const std::int64_t last = std::min(end, group_begin(group) + group_size(group));
    BufferSet& set = set_of(group);
    start_read(group);
    wait_reads(set);
    std::memcpy(out + (at - begin),
                set.arrays[static_cast<std::size_t>(array)] + (at - group_begin(group)),
                static_cast<std::size_t>(last - at) * sizeof(float));
    at = last;
    set.group = -1;
  }
}

void SubGroupSwapper::check_files() const {
  for (const auto& file : files_) file.check_still_linked();
}

std::int64_t SubGroupSwapper::buffer_bytes() const {
  std::int64_t total = 0;
  for (const auto& set : sets_)
    for (const auto& buffer : set.buffers) total += buffer.bytes();
  return total;
}

// ---------------------------------------------------------------------------------------------
// DenseSwapFile

DenseSwapFile::DenseSwapFile(AioEngine& engine, SwapFolder& folder, const std::string& name,
                             std::int64_t elements, int element_bytes,
                             std::int64_t largest_transfer, int rank)
    : engine_(engine), elements_(elements), element_bytes_(element_bytes), rank_(rank) {
  const std::int64_t file_bytes = align_up(elements * element_bytes, kDirectAlignment);
  file_ = create_swap_file(folder.file(name), file_bytes, rank);
  block_checksums_.assign(static_cast<std::size_t>(file_bytes / kDirectAlignment),
                          swap_checksum(nullptr, 0));
  memory::Tracker::instance().add(memory::Place::Nvme, memory::Kind::Parameters, file_bytes);
  // A range of n elements touches at most n x size + 2 blocks (its unaligned edges). Larger
  // ranges go through in windows: past 64 MiB a bigger bounce buffer only costs memory (an
  // embedding's part would otherwise double it), the requests are as large either way.
  constexpr std::int64_t kMostBounceBytes = std::int64_t{64} << 20;
  const std::int64_t bounce =
      std::min(align_up(std::min(largest_transfer, elements) * element_bytes, kDirectAlignment),
               kMostBounceBytes) +
      2 * kDirectAlignment;
  read_bounce_ = TransferBuffer(bounce, memory::Kind::Parameters);
  write_bounce_ = TransferBuffer(bounce, memory::Kind::Parameters);
}

DenseSwapFile::~DenseSwapFile() {
  try {
    flush();
  } catch (...) {
  }
  memory::Tracker::instance().remove(memory::Place::Nvme, memory::Kind::Parameters,
                                     align_up(elements_ * element_bytes_, kDirectAlignment));
}

void DenseSwapFile::verify_blocks(const std::byte* data, std::int64_t first_block,
                                  std::int64_t blocks) const {
  for (std::int64_t b = 0; b < blocks; ++b) {
    if (swap_checksum(data + b * kDirectAlignment, kDirectAlignment) ==
        block_checksums_[static_cast<std::size_t>(first_block + b)])
      continue;
    const std::int64_t offset = (first_block + b) * kDirectAlignment;
    throw IoError(concat("swap file '", file_.path(), "' (rank ", rank_, "): bytes [", offset, ", ",
                         offset + kDirectAlignment,
                         ") read back differently from how they were written: the file was "
                         "changed underneath the run (truncated or overwritten) or the disk "
                         "corrupted it"));
  }
}

void DenseSwapFile::flush() {
  if (pending_write_.valid()) engine_.wait(pending_write_);
  pending_write_ = AioTicket();
}

void DenseSwapFile::read(std::int64_t begin, std::int64_t end, void* out) {
  if (begin < 0 || end > elements_ || begin > end) throw std::out_of_range("DenseSwapFile::read");
  flush();
  // The bounce buffer holds the range's bytes plus its two unaligned edge blocks.
  const std::int64_t most = (read_bounce_.bytes() - 2 * kDirectAlignment) / element_bytes_;
  auto* target = static_cast<std::byte*>(out);
  for (std::int64_t at = begin; at < end;) {
    const std::int64_t last = std::min(end, at + most);
    const std::int64_t first_byte = at * element_bytes_;
    const std::int64_t window_begin = first_byte / kDirectAlignment * kDirectAlignment;
    const std::int64_t window_end = align_up(last * element_bytes_, kDirectAlignment);
    auto ticket = engine_.read(file_, read_bounce_.data(), window_end - window_begin, window_begin);
    engine_.wait(ticket);
    verify_blocks(read_bounce_.data(), window_begin / kDirectAlignment,
                  (window_end - window_begin) / kDirectAlignment);
    std::memcpy(target + (at - begin) * element_bytes_,
                read_bounce_.data() + (first_byte - window_begin),
                static_cast<std::size_t>((last - at) * element_bytes_));
    at = last;
  }
}

void DenseSwapFile::write(std::int64_t begin, std::int64_t end, const void* values) {
  if (begin < 0 || end > elements_ || begin > end) throw std::out_of_range("DenseSwapFile::write");
  // The previous write may share an edge block with this one: it must be on disk before the
  // edges are read back.
  flush();
  const std::int64_t most = (write_bounce_.bytes() - 2 * kDirectAlignment) / element_bytes_;
  const auto* source = static_cast<const std::byte*>(values);
  for (std::int64_t at = begin; at < end;) {
    const std::int64_t last = std::min(end, at + most);
    const std::int64_t first_byte = at * element_bytes_;
    const std::int64_t last_byte = last * element_bytes_;
    const std::int64_t window_begin = first_byte / kDirectAlignment * kDirectAlignment;
    const std::int64_t window_end = align_up(last_byte, kDirectAlignment);
    std::byte* bounce = write_bounce_.data();
    // Read-modify-write of partial edge blocks keeps the neighbours' bytes.
    const bool partial_head = first_byte != window_begin;
    const std::int64_t tail_block = window_end - kDirectAlignment;
    if (partial_head) {
      auto head = engine_.read(file_, bounce, kDirectAlignment, window_begin);
      engine_.wait(head);
      verify_blocks(bounce, window_begin / kDirectAlignment, 1);
    }
    if (last_byte != window_end && !(partial_head && tail_block == window_begin)) {
      auto tail =
          engine_.read(file_, bounce + (tail_block - window_begin), kDirectAlignment, tail_block);
      engine_.wait(tail);
      verify_blocks(bounce + (tail_block - window_begin), tail_block / kDirectAlignment, 1);
    }
    std::memcpy(bounce + (first_byte - window_begin), source + (at - begin) * element_bytes_,
                static_cast<std::size_t>(last_byte - first_byte));
    for (std::int64_t block = window_begin; block < window_end; block += kDirectAlignment)
      block_checksums_[static_cast<std::size_t>(block / kDirectAlignment)] =
          swap_checksum(bounce + (block - window_begin), kDirectAlignment);
    pending_write_ = engine_.write(file_, bounce, window_end - window_begin, window_begin);
    at = last;
    if (at < end) flush();  // the bounce buffer is reused for the next window
  }
}

}  // namespace zt::offload
