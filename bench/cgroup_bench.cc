// Cost of one task cgroup: create with memory, pids and cpu limits, then destroy. Prints its
// figure; compare with the ~0.25 ms of anchors.md (the machines are noisy: no assertion).
//
//   cgroup_bench [ROUNDS]   (default 500; needs root)

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "sandbox/cgroup.h"

int main(int argc, char** argv) {
  const int rounds = argc > 1 ? std::atoi(argv[1]) : 500;
  auto manager = tamma::sandbox::CgroupManager::create();
  tamma::sandbox::Limits limits;
  limits.memory_bytes = 64ull << 20;
  limits.cpus = 1;
  limits.pids = 100;
  std::vector<double> ms;
  for (int i = 0; i < rounds; ++i) {
    const auto start = std::chrono::steady_clock::now();
    manager->create_group("bench-" + std::to_string(i), limits);  // destroyed at once
    ms.push_back(
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count());
  }
  std::sort(ms.begin(), ms.end());
  std::printf("cgroup %s, %d rounds: create + set limits + destroy median %.3f ms, p90 %.3f ms\n",
              manager->version() == tamma::sandbox::CgroupVersion::kV1 ? "v1" : "v2", rounds,
              ms[ms.size() / 2], ms[ms.size() * 9 / 10]);
  return 0;
}
