#include "sandbox/tree_kill.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>

namespace tamma::sandbox {

namespace {

// Enough for any CI task (a pids limit is refused in this tier, so a tree may be large);
// a bigger tree is still killed, in several rounds.
constexpr int kMaxTree = 16384;
// Bounds the stop-to-fixpoint loop for a process that never reaches the stopped state
// (one in uninterruptible sleep): the kill that follows does not need it stopped.
constexpr int kMaxPasses = 200;

struct Tree {
  pid_t pid[kMaxTree];
  int pidfd[kMaxTree];
  int count;
};

char* format_pid(char* out, long value) {
  char digits[24];
  int n = 0;
  do {
    digits[n++] = static_cast<char>('0' + value % 10);
    value /= 10;
  } while (value > 0);
  while (n > 0) *out++ = digits[--n];
  *out = '\0';
  return out;
}

char* append(char* out, const char* text) {
  while (*text != '\0') *out++ = *text++;
  *out = '\0';
  return out;
}

// Reads a small /proc file into buffer; returns the length or -1.
ssize_t read_small(const char* path, char* buffer, std::size_t size) {
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t got = ::read(fd, buffer, size - 1);
  ::close(fd);
  if (got >= 0) buffer[got] = '\0';
  return got;
}

// State letter and parent from /proc/<pid>/stat; false if gone.
bool stat_of(pid_t pid, char* state, pid_t* ppid) {
  char path[64];
  append(format_pid(append(path, "/proc/"), pid), "/stat");
  char buffer[512];
  if (read_small(path, buffer, sizeof buffer) <= 0) return false;
  // "pid (comm) S ppid ...": comm may hold anything, so parse after the last ')'.
  char* close = nullptr;
  for (char* p = buffer; *p != '\0'; ++p) {
    if (*p == ')') close = p;
  }
  if (close == nullptr || close[1] != ' ' || close[2] == '\0') return false;
  *state = close[2];
  long value = 0;
  for (char* p = close + 4; *p >= '0' && *p <= '9'; ++p) value = value * 10 + (*p - '0');
  *ppid = static_cast<pid_t>(value);
  return true;
}

bool known(const Tree& tree, pid_t pid) {
  for (int i = 0; i < tree.count; ++i) {
    if (tree.pid[i] == pid) return true;
  }
  return false;
}

// Adds the children of `parent` (every thread's list) not yet in the tree, holding each by
// a pidfd taken while it is still the child of `parent`; with `stop`, stops it. Returns how
// many were added.
int add_children(Tree& tree, pid_t parent, bool stop) {
  char dir_path[64];
  append(format_pid(append(dir_path, "/proc/"), parent), "/task");
  const int dir = ::open(dir_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return 0;
  int added = 0;
  char entries[4096];
  for (;;) {
    const long got = ::syscall(SYS_getdents64, dir, entries, sizeof entries);
    if (got <= 0) break;
    for (long offset = 0; offset < got;) {
      auto* entry = reinterpret_cast<struct dirent64*>(entries + offset);
      offset += entry->d_reclen;
      if (entry->d_name[0] < '0' || entry->d_name[0] > '9') continue;
      char path[128];
      char* end = append(path, dir_path);
      end = append(end, "/");
      end = append(end, entry->d_name);
      append(end, "/children");
      char list[8192];
      if (read_small(path, list, sizeof list) <= 0) continue;
      long value = -1;
      for (char* p = list;; ++p) {
        if (*p >= '0' && *p <= '9') {
          value = (value < 0 ? 0 : value * 10) + (*p - '0');
          continue;
        }
        if (value > 0 && tree.count < kMaxTree && !known(tree, static_cast<pid_t>(value))) {
          const auto pid = static_cast<pid_t>(value);
          const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
          char state = 0;
          pid_t ppid = 0;
          // Taken after the check could be another process with a recycled pid: checked
          // again once held, since a held pid is never reused.
          if (pidfd >= 0 && stat_of(pid, &state, &ppid) && ppid == parent) {
            tree.pid[tree.count] = pid;
            tree.pidfd[tree.count] = pidfd;
            ++tree.count;
            ++added;
            if (stop) ::syscall(SYS_pidfd_send_signal, pidfd, SIGSTOP, nullptr, 0);
          } else if (pidfd >= 0) {
            ::close(pidfd);
          }
        }
        value = -1;
        if (*p == '\0') break;
      }
    }
  }
  ::close(dir);
  return added;
}

// Every descendant of the caller, found level by level (the tree array is the queue).
int walk(Tree& tree, bool stop) {
  int added = add_children(tree, static_cast<pid_t>(::getpid()), stop);
  for (int i = 0; i < tree.count; ++i) added += add_children(tree, tree.pid[i], stop);
  return added;
}

bool all_stopped(const Tree& tree) {
  for (int i = 0; i < tree.count; ++i) {
    char state = 0;
    pid_t ppid = 0;
    if (!stat_of(tree.pid[i], &state, &ppid)) continue;  // gone
    if (state != 'T' && state != 't' && state != 'Z' && state != 'X') return false;
  }
  return true;
}

void release(Tree& tree) {
  for (int i = 0; i < tree.count; ++i) ::close(tree.pidfd[i]);
  tree.count = 0;
}

Tree* map_tree() {
  void* memory =
      ::mmap(nullptr, sizeof(Tree), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) return nullptr;
  auto* tree = static_cast<Tree*>(memory);
  tree->count = 0;
  return tree;
}

}  // namespace

int signal_descendants(int sig) {
  Tree* tree = map_tree();
  if (tree == nullptr) return -1;
  walk(*tree, false);
  int sent = 0;
  for (int i = 0; i < tree->count; ++i) {
    sent += ::syscall(SYS_pidfd_send_signal, tree->pidfd[i], sig, nullptr, 0) == 0 ? 1 : 0;
  }
  release(*tree);
  ::munmap(tree, sizeof(Tree));
  return sent;
}

int kill_descendants(pid_t main, int* main_status) {
  Tree* tree = map_tree();
  const int err = tree == nullptr ? errno : 0;
  if (tree != nullptr) {
    // Stop everything, to a fixpoint: a pass that finds nothing new with all stopped.
    for (int pass = 0; pass < kMaxPasses; ++pass) {
      const int added = walk(*tree, true);
      if (added == 0 && all_stopped(*tree)) break;
      if (added == 0) ::sched_yield();  // a SIGSTOP takes effect when the process next runs
      if (tree->count >= kMaxTree) break;
    }
    for (int i = 0; i < tree->count; ++i) {
      ::syscall(SYS_pidfd_send_signal, tree->pidfd[i], SIGKILL, nullptr, 0);
    }
    release(*tree);
  }
  // Reap. Orphans of the killed are reparented to us (the subreaper): kill whatever child is
  // still alive before each wait, so the wait always returns.
  for (;;) {
    if (tree != nullptr) {
      if (add_children(*tree, static_cast<pid_t>(::getpid()), false) > 0 ||
          tree->count >= kMaxTree) {
        // A child of ours that is not reaped keeps its pid: kill() cannot hit another.
        for (int i = 0; i < tree->count; ++i) ::kill(tree->pid[i], SIGKILL);
      }
      release(*tree);
      // Descendants of a child that was still running (a tree above kMaxTree): again.
      if (walk(*tree, false) > 0) {
        for (int i = 0; i < tree->count; ++i) {
          ::syscall(SYS_pidfd_send_signal, tree->pidfd[i], SIGKILL, nullptr, 0);
        }
      }
      release(*tree);
    }
    int status = 0;
    const pid_t reaped = ::waitpid(-1, &status, __WALL);
    if (reaped < 0 && errno == EINTR) continue;
    if (reaped < 0) break;  // ECHILD: nothing left
    if (reaped == main && main_status != nullptr) *main_status = status;
  }
  if (tree != nullptr) ::munmap(tree, sizeof(Tree));
  return err;
}

}  // namespace tamma::sandbox
