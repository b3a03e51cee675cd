#include "sandbox/spawn_slot.h"

#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <condition_variable>
#include <mutex>
#include <vector>

#include "common/error.h"

#if defined(__SANITIZE_ADDRESS__)
#define TAMMA_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TAMMA_ASAN 1
#endif
#endif
#ifdef TAMMA_ASAN
#include <sanitizer/asan_interface.h>
#endif

namespace tamma::sandbox {

namespace {

// PID 1 and the task's code before execve use a few KiB; AddressSanitizer's frames more.
constexpr std::size_t kInitStackBytes = std::size_t{128} << 10;
constexpr std::size_t kTaskStackBytes = std::size_t{64} << 10;
constexpr std::size_t kDonorStackBytes = std::size_t{64} << 10;

struct Pool {
  std::mutex mutex;
  std::vector<SpawnSlot*> free;
};

Pool& pool() {
  static auto* instance = new Pool;  // never destroyed: parked threads outlive main
  return *instance;
}

struct DonorStart {
  std::mutex mutex;
  std::condition_variable ready;
  bool started = false;
  void* thread_pointer = nullptr;
};

void* current_thread_pointer() {
  void* pointer = nullptr;
#if defined(__x86_64__)
  // glibc keeps the thread block's own address at %fs:0; it is what clone3 takes as tls.
  asm volatile("mov %%fs:0, %0" : "=r"(pointer));
#endif
  return pointer;
}

void* donor_main(void* arg) {
  auto* start = static_cast<DonorStart*>(arg);
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  {
    std::lock_guard lock(start->mutex);
    start->thread_pointer = current_thread_pointer();
    start->started = true;
  }
  start->ready.notify_one();
  // From here on this thread must not touch its thread block: a bare system call that,
  // with every signal blocked, never returns (no errno, no cancellation point).
  for (;;) ::syscall(SYS_ppoll, nullptr, 0, nullptr, nullptr, 0);
  return nullptr;
}

void* start_donor() {
  DonorStart start;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, kDonorStackBytes);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_t thread;
  int err = pthread_create(&thread, &attr, donor_main, &start);
  pthread_attr_destroy(&attr);
  if (err != 0) throw_errno("start of a thread for a sandbox's PID 1", err);
  std::unique_lock lock(start.mutex);
  start.ready.wait(lock, [&] { return start.started; });
  if (start.thread_pointer == nullptr) {
    // An architecture without the thread pointer read above; can_share_memory() said so.
    throw Error(ErrorKind::kSandboxSetup, "sandbox_setup_failed",
                "no thread block to lend to a sandbox's PID 1 on this architecture");
  }
  return start.thread_pointer;
}

SpawnSlot* make_slot() {
  const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  // guard | PID 1's stack | guard | the task's stack: stacks grow down into their guard.
  const std::size_t total = page + kInitStackBytes + page + kTaskStackBytes;
  void* area = ::mmap(nullptr, total, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (area == MAP_FAILED) throw_errno("mmap of stacks for a sandbox's PID 1");
  auto* base = static_cast<char*>(area);
  if (::mprotect(base, page, PROT_NONE) != 0 ||
      ::mprotect(base + page + kInitStackBytes, page, PROT_NONE) != 0) {
    int err = errno;
    ::munmap(area, total);
    throw_errno("mprotect of stack guards", err);
  }
  void* thread_pointer = nullptr;
  try {
    thread_pointer = start_donor();
  } catch (...) {
    ::munmap(area, total);
    throw;
  }
  return new SpawnSlot{.thread_pointer = thread_pointer,
                       .init_stack = base + page,
                       .init_stack_size = kInitStackBytes,
                       .task_stack = base + page + kInitStackBytes + page,
                       .task_stack_size = kTaskStackBytes};
}

}  // namespace

bool can_share_memory() {
#if defined(__x86_64__) && defined(__LP64__)
  return true;
#else
  return false;
#endif
}

SpawnSlotLease& SpawnSlotLease::operator=(SpawnSlotLease&& other) noexcept {
  if (this != &other) {
    SpawnSlotLease old(slot_);
    slot_ = other.slot_;
    other.slot_ = nullptr;
  }
  return *this;
}

SpawnSlotLease::~SpawnSlotLease() {
  if (slot_ == nullptr) return;
  Pool& p = pool();
  std::lock_guard lock(p.mutex);
  try {
    p.free.push_back(slot_);
  } catch (const std::bad_alloc&) {
    // Out of memory for one pointer: the slot is lost, not reused while still listed.
  }
}

SpawnSlotLease lease_spawn_slot() {
  SpawnSlot* slot = nullptr;
  {
    Pool& p = pool();
    std::lock_guard lock(p.mutex);
    if (!p.free.empty()) {
      slot = p.free.back();
      p.free.pop_back();
    }
  }
  if (slot == nullptr) slot = make_slot();
#ifdef TAMMA_ASAN
  // The last PID 1 left its frames poisoned where it called _exit; the next one's frames
  // lie elsewhere on the same stacks.
  __asan_unpoison_memory_region(slot->init_stack, slot->init_stack_size);
  __asan_unpoison_memory_region(slot->task_stack, slot->task_stack_size);
#endif
  return SpawnSlotLease(slot);
}

}  // namespace tamma::sandbox
