#pragma once
// Internal to the sandbox: work that changes the calling thread's namespaces or file system
// context for good (unshare of a network or mount namespace) runs in a thread made for it,
// which exits afterwards, so that no thread of the worker has to find its way back.

#include <exception>
#include <thread>
#include <utility>

namespace tamma::sandbox {

// Runs `work` in a new thread and returns its result; an exception it throws is rethrown here.
template <typename Work>
auto in_own_thread(Work work) -> decltype(work()) {
  decltype(work()) result;
  std::exception_ptr failure;
  std::thread worker([&] {
    try {
      result = work();
    } catch (...) {
      failure = std::current_exception();
    }
  });
  worker.join();
  if (failure) std::rethrow_exception(failure);
  return result;
}

}  // namespace tamma::sandbox
