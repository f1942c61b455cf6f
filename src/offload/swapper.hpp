// SPDX-License-Identifier: Apache-2.0
// The NVMe swapper (DESIGN §5, ZeRO-Infinity): model states that live in files under a
// user's nvme_path, streamed through a few host buffers by the aio engine.
// - SwapFolder: <nvme_path>/zerotrain-<job>/rank<R>/, one per rank and job, removed with its
//   files at exit, also after an error and (best effort) when the job is killed by a signal.
// - SubGroupSwapper: arrays of fp32 values (a sub-group's master weights and moments) stored
//   sub-group by sub-group; a pass over the sub-groups reads sub-group k+1 and writes k-1 while
//   the caller updates k (pipeline_read / pipeline_write, as DeepSpeed's pipelined optimizer
//   swapper does), through `buffer_sets` sets of host buffers.
// - DenseSwapFile: one array in a file, element i at byte i x element size, read and written
//   by arbitrary element ranges (the stage-3 parameter slice): O_DIRECT's alignment is met with
//   bounce buffers and read-modify-write of the edge blocks.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "memory/tracker.hpp"
#include "offload/aio.hpp"

namespace zt::offload {

/// A rank's folder of swap files. The constructor checks `nvme_path` (it must be an existing,
/// writable directory; `key` names the config key in messages) and creates
/// <nvme_path>/zerotrain-<tag>/rank<rank>. Files named through file() are removed, and the
/// folders if empty, by the destructor and by a handler of SIGTERM, SIGINT, SIGHUP and SIGQUIT
/// (what mpirun and Slurm send when a job is brought down), which then re-raises the signal.
class SwapFolder {
 public:
  SwapFolder(const std::string& nvme_path, const std::string& tag, int rank,
             const std::string& key);
  ~SwapFolder();
  SwapFolder(const SwapFolder&) = delete;
  SwapFolder& operator=(const SwapFolder&) = delete;

  const std::string& path() const { return path_; }
  /// The path of swap file `name` in this folder, registered for removal.
  std::string file(const std::string& name);
  /// Bytes free on the folder's file system.
  std::int64_t free_bytes() const;

 private:
  std::string job_path_;
  std::string path_;
  std::vector<std::string> files_;
  int registry_slot_ = -1;
};

/// Creates (truncating) the swap file `path` and reserves `bytes` for it with fallocate, so
/// that a disk too small fails here, by name, rather than in the middle of a step. `rank`
/// names the rank in messages.
AioFile create_swap_file(const std::string& path, std::int64_t bytes, int rank);

/// A Fletcher-style checksum of `bytes` (a multiple of 4) at `data`, at memory speed: what the
/// swapper keeps of every region it writes, to check what it reads back. A file truncated,
/// overwritten or corrupted underneath the run reads back as zeros or other bytes, never as
/// short only; the checksum turns that into an error instead of a wrong result.
std::uint64_t swap_checksum(const void* data, std::int64_t bytes);

/// Host memory for transfers: a tracked buffer (pinned when the tracker's host allocator pins)
/// aligned to kDirectAlignment.
class TransferBuffer {
 public:
  TransferBuffer() = default;
  TransferBuffer(std::int64_t bytes, memory::Kind kind);
  std::byte* data() const { return aligned_; }
  std::int64_t bytes() const { return bytes_; }

 private:
  memory::TrackedBuffer<std::byte> storage_;
  std::byte* aligned_ = nullptr;
  std::int64_t bytes_ = 0;
};

struct SubGroupLayout {
  std::int64_t elements = 0;        // values per array
  std::int64_t group_elements = 0;  // per sub-group (the last one may be shorter)
  std::vector<std::string> arrays;  // one file each: "fp32", "exp_avg", "exp_avg_sq"
};

struct SubGroupSwapSettings {
  int buffer_sets = 1;  // sub-groups in host memory at once
  bool pipeline_read = false;
  bool pipeline_write = false;
};

class SubGroupSwapper {
 public:
  /// Creates one swap file per array in `folder`, laid out sub-group by sub-group at aligned
  /// offsets, and `settings.buffer_sets` sets of host buffers (one buffer per array, of one
  /// sub-group). std::invalid_argument when the pipeline asks for more sets than given.
  SubGroupSwapper(AioEngine& engine, SwapFolder& folder, const SubGroupLayout& layout,
                  const SubGroupSwapSettings& settings, int rank);
  ~SubGroupSwapper();
  SubGroupSwapper(const SubGroupSwapper&) = delete;
  SubGroupSwapper& operator=(const SubGroupSwapper&) = delete;

  int groups() const { return groups_; }
  std::int64_t group_begin(int group) const { return group * layout_.group_elements; }
  std::int64_t group_size(int group) const;

  /// One pass: for group in 0..groups()-1: acquire(group) ... release(group, dirty); then
  /// finish(). acquire returns the group's arrays in host memory (in layout.arrays' order),
  /// read from the files unless `read` is false (a pass that writes every value, such as the
  /// first); with pipeline_read it also starts reading group + 1.
  const std::vector<float*>& acquire(int group, bool read = true);
  /// Writes back the arrays whose bit is set in `dirty` (bit i: layout.arrays[i]); waits for
  /// the writes unless pipeline_write.
  void release(int group, unsigned dirty);
  /// Waits for every transfer of the pass.
  void finish();

  /// Reads values [begin, end) of array `array` into `out` (outside a pass; synchronous).
  void read_range(int array, std::int64_t begin, std::int64_t end, float* out);

  /// Throws IoError when a swap file was deleted or replaced since it was created.
  void check_files() const;
  std::int64_t buffer_bytes() const;
  const AioFile& file(int array) const { return files_[static_cast<std::size_t>(array)]; }

 private:
  struct BufferSet {
    std::vector<TransferBuffer> buffers;
    std::vector<float*> arrays;
    int group = -1;  // whose values the buffers hold (or are being read)
    std::vector<AioTicket> reads;
    std::vector<AioTicket> writes;
  };
  BufferSet& set_of(int group) { return sets_[static_cast<std::size_t>(group % sets_.size())]; }
  void start_read(int group);
  /// Waits for the set's reads and checks them against the checksums of the last writes.
  void wait_reads(BufferSet& set);
  void wait_writes(BufferSet& set);
  std::int64_t file_offset(int group) const { return group * stride_; }
  std::int64_t transfer_bytes(int group) const;

  AioEngine& engine_;
  SubGroupLayout layout_;
  SubGroupSwapSettings settings_;
  int groups_ = 0;
  std::int64_t stride_ = 0;
  std::vector<AioFile> files_;
  std::vector<BufferSet> sets_;
  int rank_ = 0;
  // Per group and array: the checksum of what was last written, and whether anything was.
  std::vector<std::uint64_t> checksums_;
  std::vector<char> written_;
};

/// One array of `elements` values of `element_bytes` in a swap file.
class DenseSwapFile {
 public:
  /// `largest_transfer`: elements of the largest read or write (sizes the bounce buffers, up
  /// to 64 MiB each; larger transfers go through in windows).
  DenseSwapFile(AioEngine& engine, SwapFolder& folder, const std::string& name,
                std::int64_t elements, int element_bytes, std::int64_t largest_transfer, int rank);
  ~DenseSwapFile();
  DenseSwapFile(const DenseSwapFile&) = delete;
  DenseSwapFile& operator=(const DenseSwapFile&) = delete;

  /// Reads elements [begin, end) into `out` (any host memory); synchronous.
  void read(std::int64_t begin, std::int64_t end, void* out);
  /// Writes elements [begin, end) from `values`, returning once the write is queued (the values
  /// are copied); the next write or read waits for it.
  void write(std::int64_t begin, std::int64_t end, const void* values);
  /// Waits for the write in flight.
  void flush();
  void check_file() const { file_.check_still_linked(); }
  const AioFile& file() const { return file_; }
  std::int64_t buffer_bytes() const { return read_bounce_.bytes() + write_bounce_.bytes(); }

 private:
  AioEngine& engine_;
  AioFile file_;
  std::int64_t elements_;
  int element_bytes_;
  /// Checks the blocks [first_block, first_block + blocks) now at `data` against the table.
  void verify_blocks(const std::byte* data, std::int64_t first_block, std::int64_t blocks) const;

  TransferBuffer read_bounce_;
  TransferBuffer write_bounce_;
  AioTicket pending_write_;
  int rank_ = 0;
  // One checksum per kDirectAlignment block of the file, of what was last written there (zero:
  // the reserved, never-written blocks read as zeros).
  std::vector<std::uint64_t> block_checksums_;
};

}  // namespace zt::offload
