// The child side's descriptor hygiene: PID 1 lives as long as the task, and any worker
// descriptor it kept (another task's pipe, a connection) would stay open that long.

#include "sandbox/spawn.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <string>
#include <vector>

namespace tamma::sandbox {
namespace {

// Runs `body` in a forked child (it closes descriptors of the process it runs in) and
// returns what it returned. `body` gets the pipe's descriptor, which it may renumber.
template <typename Body>
std::string in_child(Body body) {
  int out[2];
  EXPECT_EQ(::pipe2(out, O_CLOEXEC), 0);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(out[0]);
    int report = out[1];
    const std::string text = body(report);
    (void)!::write(report, text.data(), text.size());
    ::_exit(0);
  }
  ::close(out[1]);
  std::string text;
  char buffer[512];
  ssize_t n;
  while ((n = ::read(out[0], buffer, sizeof buffer)) > 0) text.append(buffer, n);
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  return text;
}

// Open descriptors from 0 to 99, as "0 1 2 ...".
std::string open_fds() {
  std::string list;
  for (int fd = 0; fd < 100; ++fd) {
    if (::fcntl(fd, F_GETFD) >= 0) list += std::to_string(fd) + " ";
  }
  return list;
}

TEST(KeepOnlyFds, KeepsTheGivenDescriptorsWhereTheyAreAndClosesTheRest) {
  const std::string result = in_child([](int& report) {
    std::vector<int> opened;
    for (int i = 0; i < 8; ++i) opened.push_back(::open("/dev/null", O_RDONLY));
    int a = opened[2], b = opened[5], none = -1;
    int same_as_b = b;  // stdout and stderr are often one descriptor
    int* keep[] = {&a, &none, &b, &same_as_b, &report};
    if (keep_only_fds(keep, 5) != 0) return std::string("failed");
    return std::to_string(a == opened[2] && b == opened[5] && same_as_b == b) + ": " + open_fds();
  });
  EXPECT_EQ(result.substr(0, 3), "1: ");
  const std::string fds = result.substr(3);
  EXPECT_EQ(fds.rfind("0 1 2 ", 0), 0u) << fds;
  // Exactly five descriptors: stdio, the two kept ones and the report pipe.
  EXPECT_EQ(std::count(fds.begin(), fds.end(), ' '), 6) << fds;
}

TEST(KeepOnlyFds, RenumbersAboveStdioWhenOneIsBelow) {
  const std::string result = in_child([](int& report) {
    int extra = ::open("/dev/null", O_RDONLY);
    int high = ::open("/dev/null", O_RDONLY);
    int stdout_fd = 1;
    int* keep[] = {&stdout_fd, &high, &report};
    if (keep_only_fds(keep, 3) != 0) return std::string("failed");
    (void)extra;
    // Renumbered 3, 4, 5 in order; the original 1 is still open (stdio is never closed).
    return std::to_string(stdout_fd) + " " + std::to_string(high) + " " + std::to_string(report) +
           " | " + open_fds();
  });
  EXPECT_EQ(result, "3 4 5 | 0 1 2 3 4 5 ");
}

}  // namespace
}  // namespace tamma::sandbox
