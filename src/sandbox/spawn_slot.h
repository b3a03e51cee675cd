#pragma once
// What a sandbox's first process needs when it shares the worker's memory (clone3 with
// CLONE_VM) instead of being a copy of it, and must share with nobody else: stacks and a
// thread block. With isolation that process is PID 1, for the task's whole life; without,
// it is the task until its execve.
//
// A process made with CLONE_VM keeps the thread pointer of the thread that made it, and glibc
// keeps errno and its cancellation state behind that pointer: PID 1 would write the errno of
// a worker thread that goes on running. So each slot owns a donor thread, parked forever with
// every signal blocked, whose thread block the child adopts with CLONE_SETTLS: a valid glibc
// thread block that no running code uses. Slots are reused, never freed: there are as many as
// tasks ever ran at once.

#include <cstddef>

namespace tamma::sandbox {

struct SpawnSlot {
  void* thread_pointer = nullptr;  // for clone3's tls
  char* init_stack = nullptr;      // lowest address; a guard page lies below
  std::size_t init_stack_size = 0;
  char* task_stack = nullptr;
  std::size_t task_stack_size = 0;
};

// True where clone3 can start a child on a stack of ours (an assembly entry exists for this
// architecture). Elsewhere the child is a copy of the worker, as after fork.
bool can_share_memory();

// Exclusive use of a slot until destroyed, or forever once abandoned.
class SpawnSlotLease {
 public:
  SpawnSlotLease() = default;
  SpawnSlotLease(const SpawnSlotLease&) = delete;
  SpawnSlotLease& operator=(const SpawnSlotLease&) = delete;
  SpawnSlotLease(SpawnSlotLease&& other) noexcept : slot_(other.slot_) { other.slot_ = nullptr; }
  SpawnSlotLease& operator=(SpawnSlotLease&& other) noexcept;
  ~SpawnSlotLease();

  explicit operator bool() const { return slot_ != nullptr; }
  const SpawnSlot& slot() const { return *slot_; }
  // For a child that could not be reaped: it may still run on these stacks, so the slot is
  // never handed out again.
  void abandon() { slot_ = nullptr; }

 private:
  friend SpawnSlotLease lease_spawn_slot();
  explicit SpawnSlotLease(SpawnSlot* slot) : slot_(slot) {}
  SpawnSlot* slot_ = nullptr;
};

// A free slot, made (thread and stacks) when all are in use. Throws Error(kSandboxSetup).
SpawnSlotLease lease_spawn_slot();

}  // namespace tamma::sandbox
