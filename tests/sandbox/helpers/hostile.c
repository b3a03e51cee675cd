/* What a hostile task would try, one attempt per mode, run inside the sandbox by
 * tests/sandbox/hostile_test.cc. Prints "<attempt>=<result>" lines; the result is "ok" when
 * the attempt succeeded, otherwise the errno name. */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char* what, long rc) {
  printf("%s=%s\n", what, rc >= 0 ? "ok" : strerrorname_np(errno));
  fflush(stdout);
}

static int hog(long mib) {
  /* Touch every page so the memory is really charged, 1 MiB at a time. */
  for (long i = 0; i < mib; ++i) {
    char* block = malloc(1 << 20);
    if (block == NULL) return 3;
    memset(block, 0x5a, 1 << 20);
  }
  return 0;
}

/* Keeps `mib` MiB charged for `seconds`, as one of many mid-sized processes would. */
static int hold(long mib, int seconds) {
  if (hog(mib) != 0) return 3;
  sleep((unsigned)seconds);
  return 0;
}

static int kernel_escapes(void) {
  report("mount", mount("tmpfs", "/tmp", "tmpfs", 0, NULL));
  report("umount", umount2("/workspace", MNT_DETACH));
  report("unshare_user", unshare(CLONE_NEWUSER));
  report("unshare_net", unshare(CLONE_NEWNET));
  report("setns", setns(0, 0));
  report("ptrace_traceme", ptrace(PTRACE_TRACEME, 0, NULL, NULL));
  report("ptrace_attach_init", ptrace(PTRACE_ATTACH, 1, NULL, NULL));
  report("bpf", syscall(SYS_bpf, 0, NULL, 0));
  report("keyctl", syscall(SYS_keyctl, 0, 0, 0, 0, 0));
  report("perf_event_open", syscall(SYS_perf_event_open, NULL, 0, -1, -1, 0));
  report("pivot_root", syscall(SYS_pivot_root, "/tmp", "/tmp"));
  report("chroot", chroot("/tmp"));
  report("sethostname", sethostname("evil", 4));
  /* A raw clone asking for a user namespace; the child, if any, exits at once. */
  long pid = syscall(SYS_clone, CLONE_NEWUSER | SIGCHLD, 0, 0, 0, 0);
  if (pid == 0) _exit(0);
  if (pid > 0) waitpid((pid_t)pid, NULL, 0);
  report("clone_newuser", pid);
  struct {
    unsigned long long flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
  } args = {0};
  args.exit_signal = SIGCHLD;
  long pid3 = syscall(SYS_clone3, &args, sizeof args);
  if (pid3 == 0) _exit(0);
  if (pid3 > 0) waitpid((pid_t)pid3, NULL, 0);
  report("clone3", pid3);
  /* An ordinary fork must still work (glibc falls back from clone3 to clone). */
  pid_t child = fork();
  if (child == 0) _exit(7);
  int status = 0;
  if (child > 0) waitpid(child, &status, 0);
  printf("fork=%s\n", child > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 7 ? "ok" : "failed");
  return 0;
}

static int foreign_abi(const char* which) {
  long rc;
  if (strcmp(which, "i386") == 0) {
    /* getpid (20) through the 32-bit entry point. */
    __asm__ volatile("int $0x80" : "=a"(rc) : "a"(20L) : "memory");
  } else {
    /* getpid (39) with the x32 bit set. */
    __asm__ volatile("syscall" : "=a"(rc) : "a"(0x40000000L | 39L) : "rcx", "r11", "memory");
  }
  printf("%s=%ld\n", which, rc);
  return 0;
}

static int connect_to(int port) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) { /* no network without a network namespace: the socket itself is refused */
    report("socket", -1);
    return 0;
  }
  struct sockaddr_in addr = {0};
  addr.sin_family = AF_INET;
  addr.sin_port = htons((unsigned short)port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  report("connect", connect(s, (struct sockaddr*)&addr, sizeof addr));
  return 0;
}

static int bound_socket(int port, struct sockaddr_in* addr) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  if (s < 0) return -1;
  memset(addr, 0, sizeof *addr);
  addr->sin_family = AF_INET;
  addr->sin_port = htons((unsigned short)port);
  addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(s, (struct sockaddr*)addr, sizeof *addr) != 0) return -1;
  socklen_t len = sizeof *addr;
  getsockname(s, (struct sockaddr*)addr, &len);
  return s;
}

/* A server that closes its side of a connection first, as HTTP servers do, leaves its port
 * in TIME_WAIT; then binds the same port again, without SO_REUSEADDR. */
static int time_wait(int port) {
  struct sockaddr_in addr;
  int server = bound_socket(port, &addr);
  if (server < 0 || listen(server, 1) != 0) return 3;
  int client = socket(AF_INET, SOCK_STREAM, 0);
  if (connect(client, (struct sockaddr*)&addr, sizeof addr) != 0) return 3;
  int accepted = accept(server, NULL, NULL);
  if (accepted < 0) return 3;
  close(accepted);
  close(server);
  usleep(20 * 1000);
  close(client);
  usleep(50 * 1000);
  printf("port=%d\n", ntohs(addr.sin_port));
  report("rebind", bound_socket(ntohs(addr.sin_port), &addr));
  return 0;
}

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  if (strcmp(argv[1], "hog") == 0 && argc == 3) return hog(atol(argv[2]));
  if (strcmp(argv[1], "hold") == 0 && argc == 4) return hold(atol(argv[2]), atoi(argv[3]));
  if (strcmp(argv[1], "escapes") == 0) return kernel_escapes();
  if (strcmp(argv[1], "abi") == 0 && argc == 3) return foreign_abi(argv[2]);
  if (strcmp(argv[1], "connect") == 0 && argc == 3) return connect_to(atoi(argv[2]));
  if (strcmp(argv[1], "timewait") == 0 && argc == 3) return time_wait(atoi(argv[2]));
  if (strcmp(argv[1], "bind") == 0 && argc == 3) {
    struct sockaddr_in addr;
    report("bind", bound_socket(atoi(argv[2]), &addr));
    return 0;
  }
  if (strcmp(argv[1], "kill") == 0 && argc == 4) {
    report("kill", kill(atoi(argv[2]), atoi(argv[3])));
    return 0;
  }
  return 2;
}
