#pragma once
// Bytes waiting to be sent, kept in memory up to a cap and on disk beyond it: an orchestrator
// out of reach for minutes must cost a worker neither its task's output nor gigabytes of RAM.
// Positions are relative to the spool's front; dropping from the front frees memory first and
// truncates the file once everything in it is gone.

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "common/unique_fd.h"

namespace tamma::worker {

class OutputSpool {
 public:
  // `spill_dir` empty: memory only. The file is unlinked from the start (O_TMPFILE), so
  // nothing is left behind whatever happens to the worker.
  OutputSpool(std::size_t memory_bytes, std::filesystem::path spill_dir);

  [[nodiscard]] std::uint64_t size() const { return memory_.size() + (file_end_ - file_front_); }
  [[nodiscard]] std::uint64_t on_disk() const { return file_end_ - file_front_; }
  // False when the bytes could not be kept (no memory room and no usable spill file): the
  // caller counts them as dropped.
  bool append(std::string_view data);
  // Bytes [pos, pos + length) (clamped to size()).
  [[nodiscard]] std::string read(std::uint64_t pos, std::uint64_t length) const;
  void drop_front(std::uint64_t count);
  void clear();

 private:
  bool open_file();

  std::size_t memory_cap_;
  std::filesystem::path spill_dir_;
  std::string memory_;            // the front of the spool
  UniqueFd file_;                 // what follows memory_, at [file_front_, file_end_)
  std::uint64_t file_front_ = 0;  // file offset of the first byte still kept
  std::uint64_t file_end_ = 0;
  bool file_failed_ = false;  // said once; memory only from then on
};

}  // namespace tamma::worker
