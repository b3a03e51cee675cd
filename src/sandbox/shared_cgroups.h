#pragma once
// The worker's one CgroupManager (one per process: it owns the worker's cgroup subtree).

#include <string>

#include "sandbox/cgroup.h"

namespace tamma::sandbox {

// Created on first use, thread-safe. nullptr, with the reason in *why, when this host has no
// usable cgroups; the answer is remembered for the life of the process.
CgroupManager* shared_cgroup_manager(std::string* why = nullptr);

}  // namespace tamma::sandbox
