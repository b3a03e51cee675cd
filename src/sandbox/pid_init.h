#pragma once
// PID 1 of a task's pid namespace: builds the jail, forks the task, reaps every orphan,
// forwards termination signals to the whole namespace and reports the task's exit status.

namespace tamma::sandbox {

struct ChildPlan;

// Signals PID 1 passes on to every process of the namespace; any other signal sent to the
// task is delivered through the cgroup.
bool is_forwarded_signal(int sig);

// The signal asking a keeper (PID 1 without a pid namespace, tree_kill.h) to kill the whole
// tree, reap it, report and exit: a SIGKILL would kill the keeper alone and orphan the rest.
// Also its parent-death signal. A real-time signal no task process is sent by the worker.
inline constexpr int kKeeperKillSignal = 62;

// Child side, runs in the clone3 child; never returns. When the task exits, its raw wait
// status goes to plan.status_fd and PID 1 exits, which makes the kernel kill everything
// still left in the namespace.
// `plan` is the child's own copy, completed here with the task's cgroup files.
[[noreturn]] void run_pid_init(ChildPlan& plan);

}  // namespace tamma::sandbox
