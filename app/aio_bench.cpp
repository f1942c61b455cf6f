// SPDX-License-Identifier: Apache-2.0
// `zerotrain aio-bench --path DIR`: sweeps the aio settings of NVMe offload (block size, queue
// depth, intra_op_parallelism, single_submit, overlap_events) on one folder. Writes a test file
// of --size once, then for every combination times one write and one read of the whole file
// through the offload engine (src/offload/aio.hpp), prints a table of GB/s, the best setting as
// an `aio` block ready to paste into a DeepSpeed config, and optionally CSV and JSON.
//
// Unlike DeepSpeed's ds_nvme_tune (reference/deepspeed.md §4.4), the printed block has real
// JSON booleans and integers and the thread key the runtime reads (intra_op_parallelism).
// Serial, no MPI: a job array runs one per node (jobscripts/slurm/aio-sweep.sbatch).
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <new>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "app/commands.hpp"
#include "files/files.hpp"
#include "memory/format.hpp"
#include "offload/aio.hpp"

namespace zt::app {
namespace {

using offload::AioSettings;
using offload::IoBackend;

// A bad flag or an unusable --path: exit 2, as the other subcommands' usage errors.
struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ---- the test file, removed on every way out ----

// The run works in a folder of its own inside --path (the test file and the engine's backend
// probe files), removed when the run ends, normally or by an exception. SIGINT and SIGTERM
// (Ctrl-C, scancel, a time limit) remove it too, best effort: a signal handler may only unlink
// names it knows, so it holds them ready in plain arrays (std::string is not async-signal-safe).
constexpr int kCleanupNames = 3;
char g_cleanup_files[kCleanupNames][4096] = {};
char g_cleanup_folder[4096] = {};

extern "C" void clean_up_and_reraise(int signal_number) {
  for (auto& name : g_cleanup_files)
    if (name[0] != '\0') ::unlink(name);
  if (g_cleanup_folder[0] != '\0') ::rmdir(g_cleanup_folder);
  std::signal(signal_number, SIG_DFL);
  std::raise(signal_number);
}

void keep_name(char (&slot)[4096], const std::string& path) {
  if (path.size() < sizeof slot) std::memcpy(slot, path.c_str(), path.size() + 1);
}

class WorkFolder {
 public:
  /// Creates `folder`; throws UsageError (naming --path) when that is impossible.
  WorkFolder(const std::string& folder, const std::string& path_flag,
             const std::vector<std::string>& files)
      : folder_(folder) {
    if (::mkdir(folder.c_str(), 0700) != 0)
      throw UsageError("--path " + files::quote(path_flag) + ": cannot create a folder there (" +
                       std::strerror(errno) + ")");
    for (std::size_t i = 0; i < files.size() && i < kCleanupNames; ++i)
      keep_name(g_cleanup_files[i], files[i]);
    keep_name(g_cleanup_folder, folder);
    previous_int_ = std::signal(SIGINT, clean_up_and_reraise);
    previous_term_ = std::signal(SIGTERM, clean_up_and_reraise);
  }
  ~WorkFolder() {
    std::signal(SIGINT, previous_int_);
    std::signal(SIGTERM, previous_term_);
    std::error_code ignored;
    std::filesystem::remove_all(folder_, ignored);
    for (auto& name : g_cleanup_files) name[0] = '\0';
    g_cleanup_folder[0] = '\0';
  }
  WorkFolder(const WorkFolder&) = delete;
  WorkFolder& operator=(const WorkFolder&) = delete;

 private:
  std::string folder_;
  void (*previous_int_)(int) = SIG_DFL;
  void (*previous_term_)(int) = SIG_DFL;
};

// ---- parsing ----

std::vector<std::string> split_list(const std::string& flag, const std::string& text) {
  std::vector<std::string> items;
  std::stringstream stream(text);
  std::string item;
  while (std::getline(stream, item, ',')) {
    item.erase(std::remove_if(item.begin(), item.end(),
                              [](unsigned char c) { return std::isspace(c) != 0; }),
               item.end());
    if (item.empty()) throw UsageError(flag + ": empty item in " + files::quote(text));
    items.push_back(item);
  }
  if (items.empty()) throw UsageError(flag + ": needs at least one value");
  return items;
}

template <class T>
void drop_duplicates(std::vector<T>& values) {
  std::vector<T> unique;
  for (const T& value : values)
    if (std::find(unique.begin(), unique.end(), value) == unique.end()) unique.push_back(value);
  values.swap(unique);
}

std::int64_t parse_size(const std::string& flag, const std::string& text) {
  std::int64_t bytes = 0;
  try {
    bytes = memory::parse_bytes(text);
  } catch (const std::exception& error) {
    throw UsageError(flag + ": " + error.what());
  }
  if (bytes <= 0) throw UsageError(flag + ": must be positive, got " + files::quote(text));
  return bytes;
}

std::vector<std::int64_t> parse_block_sizes(const std::string& text) {
  std::vector<std::int64_t> sizes;
  for (const auto& item : split_list("--block-sizes", text)) {
    const std::int64_t bytes = parse_size("--block-sizes", item);
    if (bytes % offload::kDirectAlignment != 0)
      throw UsageError("--block-sizes: " + item + " is not a multiple of " +
                       std::to_string(offload::kDirectAlignment) + " bytes (O_DIRECT alignment)");
    sizes.push_back(bytes);
  }
  drop_duplicates(sizes);
  return sizes;
}

std::vector<int> parse_counts(const std::string& flag, const std::string& text, int most) {
  std::vector<int> counts;
  for (const auto& item : split_list(flag, text)) {
    const bool digits =
        std::all_of(item.begin(), item.end(), [](unsigned char c) { return std::isdigit(c) != 0; });
    const long value = digits && item.size() <= 9 ? std::stol(item) : -1;
    if (value < 1 || value > most)
      throw UsageError(flag + ": " + files::quote(item) + " is not an integer from 1 to " +
                       std::to_string(most));
    counts.push_back(static_cast<int>(value));
  }
  drop_duplicates(counts);
  return counts;
}

std::vector<bool> parse_bools(const std::string& flag, const std::string& text) {
  std::vector<bool> values;
  for (auto item : split_list(flag, text)) {
    std::transform(item.begin(), item.end(), item.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (item != "true" && item != "false")
      throw UsageError(flag + ": " + files::quote(item) + " is not true or false");
    values.push_back(item == "true");
  }
  drop_duplicates(values);
  return values;
}

// "128K", "1M", "8M", "1536K", "12288" (bytes): the table's block sizes.
std::string size_label(std::int64_t bytes) {
  const char* units[] = {"", "K", "M", "G", "T"};
  int unit = 0;
  while (unit < 4 && bytes % 1024 == 0 && bytes >= 1024) {
    bytes /= 1024;
    ++unit;
  }
  return std::to_string(bytes) + units[unit];
}

const char* bool_text(bool value) {
  return value ? "true" : "false";
}

std::string short_hostname() {
  char name[256] = {0};
  if (::gethostname(name, sizeof name - 1) != 0) return "unknown";
  std::string host = name;
  return host.substr(0, host.find('.'));
}

void check_folder(const std::string& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0)
    throw UsageError("--path " + files::quote(path) + ": " + std::strerror(errno));
  if (!S_ISDIR(info.st_mode))
    throw UsageError("--path " + files::quote(path) + ": not a directory");
  if (::access(path.c_str(), W_OK | X_OK) != 0)
    throw UsageError("--path " + files::quote(path) + ": not writable (" + std::strerror(errno) +
                     ")");
}

// ---- measuring ----

struct Row {
  AioSettings settings;
  double read_gb_per_s = 0;
  double write_gb_per_s = 0;
};

// A cheap pattern that is neither zeros nor repeated, so no layer below can shortcut it.
std::uint64_t pattern_word(std::int64_t index) {
  std::uint64_t x = static_cast<std::uint64_t>(index) * 0x9E3779B97F4A7C15ull + 1;
  x ^= x >> 31;
  return x * 0xBF58476D1CE4E5B9ull;
}

void fill_pattern(offload::AlignedBuffer& buffer) {
  auto* words = static_cast<std::uint64_t*>(buffer.data());
  const std::int64_t count = buffer.bytes() / 8;
  for (std::int64_t i = 0; i < count; ++i) words[i] = pattern_word(i);
}

// One word per 4 KiB page: cleared before a read, checked after it, so a read that did not
// land (a lost request, a wrong offset) is an error rather than a fast number.
constexpr std::int64_t kWordsPerPage = offload::kDirectAlignment / 8;

void clear_checked_words(offload::AlignedBuffer& buffer) {
  auto* words = static_cast<std::uint64_t*>(buffer.data());
  for (std::int64_t i = 0; i < buffer.bytes() / 8; i += kWordsPerPage) words[i] = 0;
}

void check_read_back(const offload::AlignedBuffer& buffer, const std::string& path) {
  const auto* words = static_cast<const std::uint64_t*>(buffer.data());
  for (std::int64_t i = 0; i < buffer.bytes() / 8; i += kWordsPerPage)
    if (words[i] != pattern_word(i))
      throw offload::IoError(path + ": read back wrong data at offset " + std::to_string(i * 8) +
                             " (the engine returned without the bytes written there)");
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

Row measure(const AioSettings& settings, const offload::AioFile& file,
            offload::AlignedBuffer& buffer) {
  offload::AioEngine engine(settings);
  Row row;
  row.settings = settings;
  const double gigabytes = static_cast<double>(buffer.bytes()) / 1e9;

  auto start = std::chrono::steady_clock::now();
  auto ticket = engine.write(file, buffer.data(), buffer.bytes(), 0);
  engine.wait(ticket);
  row.write_gb_per_s = gigabytes / seconds_since(start);

  clear_checked_words(buffer);
  start = std::chrono::steady_clock::now();
  ticket = engine.read(file, buffer.data(), buffer.bytes(), 0);
  engine.wait(ticket);
  row.read_gb_per_s = gigabytes / seconds_since(start);
  check_read_back(buffer, file.path());
  return row;
}

// ---- output ----

nlohmann::ordered_json aio_block(const AioSettings& settings) {
  nlohmann::ordered_json block;
  block["block_size"] = settings.block_size;
  block["queue_depth"] = settings.queue_depth;
  block["intra_op_parallelism"] = settings.intra_op_parallelism;
  block["single_submit"] = settings.single_submit;
  block["overlap_events"] = settings.overlap_events;
  return block;
}

// {"aio": {"block_size": 1048576, ...}} on one line, spaced as Python's json.dumps (and
// jobscripts/slurm/aio-sweep-merge.py) writes it.
std::string aio_line(const AioSettings& settings) {
  std::string line = "{\"aio\": {";
  const auto block = aio_block(settings);
  for (auto item = block.begin(); item != block.end(); ++item)
    line += (item == block.begin() ? "\"" : ", \"") + item.key() + "\": " + item.value().dump();
  return line + "}}";
}

std::string csv_line(const std::string& node, const std::string& backend, bool direct,
                     std::int64_t file_bytes, const Row& row) {
  char rates[64];
  std::snprintf(rates, sizeof rates, "%.6f,%.6f", row.read_gb_per_s, row.write_gb_per_s);
  const AioSettings& s = row.settings;
  return node + "," + backend + "," + bool_text(direct) + "," + std::to_string(file_bytes) + "," +
         std::to_string(s.block_size) + "," + std::to_string(s.queue_depth) + "," +
         std::to_string(s.intra_op_parallelism) + "," + bool_text(s.single_submit) + "," +
         bool_text(s.overlap_events) + "," + rates + "\n";
}

constexpr const char* kCsvHeader =
    "node,backend,o_direct,file_bytes,block_size,queue_depth,threads,single_submit,"
    "overlap_events,read_gbps,write_gbps\n";

void print_row(const Row& row) {
  const AioSettings& s = row.settings;
  std::printf("%10s %11d %7d %13s %14s %9.3f %10.3f\n", size_label(s.block_size).c_str(),
              s.queue_depth, s.intra_op_parallelism, bool_text(s.single_submit),
              bool_text(s.overlap_events), row.read_gb_per_s, row.write_gb_per_s);
  std::fflush(stdout);
}

std::string csv_field(std::string text) {
  std::replace(text.begin(), text.end(), ',', '_');
  std::replace(text.begin(), text.end(), '\n', '_');
  return text;
}

int run(const AioBenchOptions& options) {
  // Everything the flags say is checked before a byte is written.
  const std::int64_t file_bytes = parse_size("--size", options.size);
  const auto block_sizes = parse_block_sizes(options.block_sizes);
  const auto queue_depths = parse_counts("--queue-depths", options.queue_depths, 65536);
  const auto thread_counts = parse_counts("--threads", options.threads, 256);
  const auto single_submits = parse_bools("--single-submit", options.single_submit);
  const auto overlaps = parse_bools("--overlap-events", options.overlap_events);
  IoBackend requested = IoBackend::Automatic;
  try {
    requested = offload::parse_io_backend(options.backend);
  } catch (const std::invalid_argument& error) {
    throw UsageError(std::string("--backend: ") + error.what());
  }
  for (const int threads : thread_counts) {
    const std::int64_t unit = offload::kDirectAlignment * threads;
    if (file_bytes % unit != 0)
      throw UsageError("--size " + options.size + " (" + std::to_string(file_bytes) +
                       " bytes) is not a multiple of 4096 x threads = " + std::to_string(unit) +
                       " bytes (--threads " + std::to_string(threads) +
                       "): each worker's share must be O_DIRECT-aligned; e.g. 16MiB or 1GiB");
  }
  for (const std::int64_t block : block_sizes)
    if (file_bytes < block)
      throw UsageError("--size " + options.size + " (" + std::to_string(file_bytes) +
                       " bytes) is smaller than the block size " + size_label(block) + " (" +
                       std::to_string(block) + " bytes); the file must hold at least one block");
  if (options.parts < 1 || options.part < 0 || options.part >= options.parts)
    throw UsageError("--part P N: needs 0 <= P < N, got " + std::to_string(options.part) + " " +
                     std::to_string(options.parts));
  check_folder(options.path);

  // The grid, in a fixed order (block size outermost), and this part's share of it.
  std::vector<AioSettings> grid;
  for (const auto block : block_sizes)
    for (const int depth : queue_depths)
      for (const int threads : thread_counts)
        for (const bool single : single_submits)
          for (const bool overlap : overlaps) {
            AioSettings settings;
            settings.block_size = block;
            settings.queue_depth = depth;
            settings.intra_op_parallelism = threads;
            settings.single_submit = single;
            settings.overlap_events = overlap;
            grid.push_back(settings);
          }
  std::vector<AioSettings> mine;
  for (std::size_t i = 0; i < grid.size(); ++i)
    if (static_cast<int>(i % static_cast<std::size_t>(options.parts)) == options.part)
      mine.push_back(grid[i]);
  if (mine.empty())
    throw UsageError("--part " + std::to_string(options.part) + " " +
                     std::to_string(options.parts) + ": no combination falls to this part (the " +
                     "grid has " + std::to_string(grid.size()) + ")");

  // The whole file is one transfer from one buffer, as DeepSpeed's ds_io does it.
  offload::AlignedBuffer buffer;
  try {
    buffer = offload::AlignedBuffer(file_bytes);
  } catch (const std::bad_alloc&) {
    throw UsageError("--size " + options.size + ": cannot allocate a buffer of " +
                     memory::format_bytes(file_bytes) + " (the file is held in memory once)");
  }

  const std::string node = csv_field(options.label.empty() ? short_hostname() : options.label);
  std::ofstream csv;
  if (!options.csv_path.empty()) {
    csv.open(options.csv_path, std::ios::out | std::ios::trunc);
    if (!csv) throw UsageError("--csv " + files::quote(options.csv_path) + ": cannot write it");
  }
  if (!options.json_path.empty() && !std::ofstream(options.json_path, std::ios::app))
    throw UsageError("--json " + files::quote(options.json_path) + ": cannot write it");

  // Everything goes into a folder of this run's own, removed on the way out.
  const std::string pid = std::to_string(::getpid());
  const std::string work = options.path + "/zt-aio-bench-" + short_hostname() + "-" + pid;
  const std::string test_path = work + "/test-file";
  // The names of the engine's probe files (src/offload/aio.cpp), for the signal handler.
  WorkFolder guard(work, options.path,
                   {test_path, work + "/.zt_aio_probe." + pid + ".io_uring",
                    work + "/.zt_aio_probe." + pid + ".libaio"});

  // The backend: the one asked for (checked to work) or the faster of the two here.
  AioSettings base;
  base.backend = requested;
  const auto choice =
      offload::choose_io_backend(base, work, std::min<std::int64_t>(file_bytes, 32 << 20));
  const std::string backend = offload::io_backend_name(choice.chosen);
  std::printf("zerotrain aio-bench: %s on %s, test file %s (%lld bytes)\n",
              files::quote(options.path).c_str(), node.c_str(),
              memory::format_bytes(file_bytes).c_str(), static_cast<long long>(file_bytes));
  std::printf("  backend      %s%s\n", requested == IoBackend::Automatic ? "auto: " : "",
              choice.description.c_str());

  offload::AioFile file;
  try {
    file = offload::open_swap_file(test_path, /*create=*/true);
  } catch (const offload::IoError& error) {
    throw UsageError(std::string("--path ") + files::quote(options.path) +
                     ": cannot create a test file there: " + error.what());
  }
  std::string warning;
  if (!file.direct()) {
    warning = "WARNING: O_DIRECT is unavailable on " + files::quote(options.path) + " (" +
              file.fallback_reason() +
              "): buffered I/O, so these numbers measure the page cache, not the device";
    std::printf("  %s\n", warning.c_str());
  } else {
    std::printf("  o_direct     yes (no page cache)\n");
  }
  std::printf("  grid         %zu combination%s", mine.size(), mine.size() == 1 ? "" : "s");
  if (options.parts > 1)
    std::printf(" (part %d of %d of a grid of %zu)", options.part, options.parts, grid.size());
  std::printf("; each: one timed write, then one timed read of the whole file\n");
  std::printf("  GB/s         1e9 bytes per second (DeepSpeed's ds_io prints GiB/s)\n\n");
  std::fflush(stdout);

  fill_pattern(buffer);
  {
    // The file is written once before timing, so every timed write overwrites allocated blocks.
    AioSettings first;
    first.backend = choice.chosen;
    offload::AioEngine engine(first);
    auto ticket = engine.write(file, buffer.data(), file_bytes, 0);
    engine.wait(ticket);
  }

  const bool write_csv = !options.csv_path.empty();
  if (write_csv) csv << kCsvHeader << std::flush;
  std::printf("%10s %11s %7s %13s %14s %9s %10s\n", "block_size", "queue_depth", "threads",
              "single_submit", "overlap_events", "read GB/s", "write GB/s");
  std::vector<Row> rows;
  for (AioSettings settings : mine) {
    settings.backend = choice.chosen;
    file.check_still_linked();
    Row row = measure(settings, file, buffer);
    print_row(row);
    if (write_csv) csv << csv_line(node, backend, file.direct(), file_bytes, row) << std::flush;
    rows.push_back(row);
  }
  if (write_csv && !csv) throw offload::IoError(options.csv_path + ": writing the CSV failed");

  const Row* best = &rows.front();
  for (const Row& row : rows)
    if (row.read_gb_per_s + row.write_gb_per_s > best->read_gb_per_s + best->write_gb_per_s)
      best = &row;
  std::printf("\n");
  std::printf("best by read + write GB/s: read %.3f, write %.3f GB/s (%s, %s)\n",
              best->read_gb_per_s, best->write_gb_per_s, backend.c_str(),
              file.direct() ? "O_DIRECT" : "buffered");
  if (!warning.empty()) std::printf("%s\n", warning.c_str());
  std::printf(
      "# the aio block for the DeepSpeed config; DeepSpeed's docs and the HF guide spell the "
      "thread key thread_count, which DeepSpeed >= 0.16.4 ignores: intra_op_parallelism is the "
      "name its runtime reads (zerotrain accepts both)\n");
  nlohmann::ordered_json pasteable;
  pasteable["aio"] = aio_block(best->settings);
  std::printf("%s\n", aio_line(best->settings).c_str());
  std::fflush(stdout);

  if (!options.json_path.empty()) {
    nlohmann::ordered_json report;
    report["path"] = options.path;
    report["node"] = node;
    report["file_bytes"] = file_bytes;
    report["backend"] = backend;
    report["backend_description"] = choice.description;
    report["o_direct"] = file.direct();
    report["fallback_reason"] = file.fallback_reason();
    report["part"] = options.part;
    report["parts"] = options.parts;
    report["criterion"] = "max read_gbps + write_gbps (GB = 1e9 bytes)";
    report["rows"] = nlohmann::ordered_json::array();
    for (const Row& row : rows) {
      auto entry = aio_block(row.settings);
      entry["read_gbps"] = row.read_gb_per_s;
      entry["write_gbps"] = row.write_gb_per_s;
      report["rows"].push_back(entry);
    }
    report["best"] = pasteable;
    std::ofstream out(options.json_path, std::ios::out | std::ios::trunc);
    out << report.dump(2) << "\n";
    if (!out) throw offload::IoError(options.json_path + ": cannot write the JSON report");
  }
  return 0;
}

}  // namespace

int run_aio_bench(const AioBenchOptions& options) {
  try {
    return run(options);
  } catch (const UsageError& error) {
    std::fprintf(stderr, "zerotrain: error: %s\n", files::escaped(error.what(), true).c_str());
    return 2;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "zerotrain: error: aio-bench: %s\n",
                 files::escaped(error.what(), true).c_str());
    return 1;
  }
}

}  // namespace zt::app
