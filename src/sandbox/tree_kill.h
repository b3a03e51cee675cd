#pragma once
// Finding and killing a task's whole process tree without a pid namespace or a cgroup (the
// unprivileged tier, ADR 0030). Child side, run by the keeper: the clone child that forks
// the task and is a child subreaper (PR_SET_CHILD_SUBREAPER), so that every orphan of the
// tree is reparented to it instead of to the container's init.
//
// How: the tree is walked through /proc/<pid>/task/<tid>/children (every thread, since
// children are listed per thread); each process is held by a pidfd taken after checking
// its parent, so a recycled pid is never signalled. Processes are stopped (SIGSTOP) as they
// are found and the walk repeats until a pass finds nothing new and all are stopped: the
// children lists are reliable only for stopped processes, and a stopped process cannot
// fork. Then all get SIGKILL and the keeper reaps until it has no child left.
// kill(-1, ...) is never used: outside a pid namespace it reaches every process of the uid,
// the worker included.
//
// What escapes: processes started on the task's behalf by something outside its tree (a
// systemd --user, a docker.sock, ssh to localhost), and the whole tree if the keeper itself
// is killed (possible for a task of the worker's uid without Landlock signal scoping).
//
// Raw system calls and memory from mmap only: the keeper may be a copy of a multi-threaded
// worker (ADR 0009).

#include <sys/types.h>

namespace tamma::sandbox {

// Sends `sig` to every descendant of the caller. Returns how many were signalled.
int signal_descendants(int sig);

// Stops, kills and reaps every descendant of the caller. When `main` is among the reaped,
// its wait status goes to *main_status. Returns 0, or an errno if the walk failed (the
// caller's children are still killed and reaped).
int kill_descendants(pid_t main, int* main_status);

}  // namespace tamma::sandbox
