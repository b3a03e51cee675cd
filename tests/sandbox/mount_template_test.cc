// The jail template itself: what every task's copy shares must stay as built.

#include "sandbox/mount_template.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "sandbox/run_helpers.h"
#include "sandbox/sandbox.h"
#include "support/test_support.h"

namespace tamma::sandbox {
namespace {

// Runs `body` in a thread that has entered the template's namespace itself (not a copy).
template <typename Body>
void inside(const MountTemplate& jail, Body body) {
  std::thread visitor([&] {
    ASSERT_EQ(::unshare(CLONE_FS), 0);
    ASSERT_EQ(::setns(jail.ns.get(), CLONE_NEWNS), 0) << std::strerror(errno);
    body();
  });
  visitor.join();
}

std::vector<std::string> entries(const char* dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir);
  if (d == nullptr) return {"<cannot open>"};
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(d);
  return names;
}

MountRequest default_binds() {
  Policy defaults;
  return {.readonly_binds = defaults.readonly_binds};
}

TEST(MountTemplateTest, WhatEveryCopySharesIsReadOnlyEvenForRoot) {
  if (!mount_templates_supported()) GTEST_SKIP() << "NOT EXERCISED: no open_tree/move_mount";
  auto jail = mount_template(default_binds());
  inside(*jail, [] {
    // This thread is root with every capability: only the mounts' flags stop it.
    for (const char* path : {"/planted", "/dev/planted", "/usr/planted", "/etc/planted"}) {
      errno = 0;
      int fd = ::open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
      EXPECT_LT(fd, 0) << path;
      EXPECT_EQ(errno, EROFS) << path;
      if (fd >= 0) ::close(fd);
    }
  });
}

TEST(MountTemplateTest, TasksLeaveNothingInTheTemplate) {
  if (!mount_templates_supported()) GTEST_SKIP() << "NOT EXERCISED: no open_tree/move_mount";
  tamma::testing::TempDir workspace;
  auto sandbox = Sandbox::create({});
  Command command;
  command.argv = {"/bin/sh", "-c", "echo x > /workspace/f; echo y > /tmp/g; echo z > /dev/shm/h"};
  command.env = {"PATH=/usr/bin:/bin"};
  command.workspace = workspace.path();
  auto r = testing::run(*sandbox, command);
  ASSERT_TRUE(r.exit);
  ASSERT_EQ(r.exit->code, 0) << r.err;

  // The same cached template the task was copied from: its mount points are still empty
  // directories, with none of the task's mounts on them.
  auto jail = mount_template(default_binds());
  inside(*jail, [] {
    for (const char* dir : {"/workspace", "/tmp", "/dev/shm", "/proc"}) {
      EXPECT_EQ(entries(dir), std::vector<std::string>{}) << dir;
    }
    EXPECT_NE(entries("/usr"), std::vector<std::string>{});
  });
}

}  // namespace
}  // namespace tamma::sandbox
