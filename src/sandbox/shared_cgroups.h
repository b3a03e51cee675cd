#pragma once
// The worker's one CgroupManager (one per process: it owns the worker's cgroup subtree).

#include <string>

#include "sandbox/cgroup.h"

namespace tamma::sandbox {

// Created on first use, thread-safe. nullptr, with the reason in *why, when this host has no
// usable cgroups. A manager, once made, lives as long as the process; a failure is tried
// again after a second (it may have come from a passing shortage of descriptors or memory).
CgroupManager* shared_cgroup_manager(std::string* why = nullptr);

}  // namespace tamma::sandbox
