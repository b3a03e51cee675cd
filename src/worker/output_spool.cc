#include "worker/output_spool.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <spdlog/spdlog.h>

namespace tamma::worker {

OutputSpool::OutputSpool(std::size_t memory_bytes, std::filesystem::path spill_dir)
    : memory_cap_(memory_bytes), spill_dir_(std::move(spill_dir)) {}

bool OutputSpool::open_file() {
  if (file_) return true;
  if (file_failed_ || spill_dir_.empty()) return false;
  std::error_code ec;
  std::filesystem::create_directories(spill_dir_, ec);
  const int fd = ::open(spill_dir_.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd < 0) {
    file_failed_ = true;
    spdlog::warn(
        "unsent task output cannot spill to disk under {}: {}; keeping {} bytes in "
        "memory at most",
        spill_dir_.string(), std::strerror(errno), memory_cap_);
    return false;
  }
  file_.reset(fd);
  return true;
}

bool OutputSpool::append(std::string_view data) {
  // Once bytes are on disk, later ones follow them there: the order is the log's order.
  if (on_disk() == 0 && memory_.size() + data.size() <= memory_cap_) {
    memory_.append(data);
    return true;
  }
  if (!open_file()) return false;
  std::size_t written = 0;
  while (written < data.size()) {
    const ssize_t n = ::pwrite(file_.get(), data.data() + written, data.size() - written,
                               static_cast<off_t>(file_end_ + written));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      // A full disk: what was written stays unused past file_end_ and is overwritten next time.
      return false;
    }
    written += static_cast<std::size_t>(n);
  }
  file_end_ += written;
  return true;
}

std::string OutputSpool::read(std::uint64_t pos, std::uint64_t length) const {
  std::string out;
  const std::uint64_t end = std::min(size(), pos + length);
  if (pos >= end) return out;
  out.reserve(end - pos);
  if (pos < memory_.size()) {
    const std::uint64_t to = std::min<std::uint64_t>(end, memory_.size());
    out.append(memory_, pos, to - pos);
    pos = to;
  }
  while (pos < end) {
    const std::uint64_t at = file_front_ + (pos - memory_.size());
    char buffer[1 << 16];
    const std::size_t want =
        static_cast<std::size_t>(std::min<std::uint64_t>(end - pos, sizeof buffer));
    const ssize_t n = ::pread(file_.get(), buffer, want, static_cast<off_t>(at));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // the caller sends what it got and asks again later
    out.append(buffer, static_cast<std::size_t>(n));
    pos += static_cast<std::uint64_t>(n);
  }
  return out;
}

void OutputSpool::drop_front(std::uint64_t count) {
  if (count >= size()) {
    clear();
    return;
  }
  if (count <= memory_.size()) {
    memory_.erase(0, count);
    return;
  }
  const std::uint64_t from_file = count - memory_.size();
  // Free the disk blocks behind the front at once: a file that never empties (a task writing
  // as fast as it is sent) must not grow without bound.
  ::fallocate(file_.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
              static_cast<off_t>(file_front_), static_cast<off_t>(from_file));
  file_front_ += from_file;
  memory_.clear();
}

void OutputSpool::clear() {
  memory_.clear();
  memory_.shrink_to_fit();
  if (file_ && file_end_ > 0) {
    // Give the disk back; the file itself stays open for the next spill.
    if (::ftruncate(file_.get(), 0) != 0) spdlog::warn("truncating the output spool failed");
  }
  file_front_ = 0;
  file_end_ = 0;
}

}  // namespace tamma::worker
