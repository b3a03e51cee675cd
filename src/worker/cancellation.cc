#include "worker/cancellation.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cstdint>

#include "common/error.h"

namespace tamma::worker {

Cancellation::Cancellation() : event_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (!event_) throw_errno("eventfd for cancellation");
}

void Cancellation::request() noexcept {
  int expected = 0;
  level_.compare_exchange_strong(expected, 1);
  std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(event_.get(), &one, sizeof one);
}

void Cancellation::request_immediate() noexcept {
  level_.store(2);
  std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(event_.get(), &one, sizeof one);
}

}  // namespace tamma::worker
