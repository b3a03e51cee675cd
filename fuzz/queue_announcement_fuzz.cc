// The NOTIFY payload other orchestrators send (postgres_signal.h): any bytes a session on the
// same database could put on the channel.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "orchestrator/store/postgres_signal.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view payload(reinterpret_cast<const char*>(data), size);
  if (auto tasks = tamma::orchestrator::decode_announcement(payload)) {
    // What was understood encodes again to something that reads back the same.
    std::string again = "[";
    for (const auto& task : *tasks) {
      if (again.size() > 1) again += ",";
      again += tamma::orchestrator::encode_announcement(task.task_id,
                                                        task.queued ? &*task.queued : nullptr);
    }
    again += "]";
    if (again.size() <= 8000) {
      auto round = tamma::orchestrator::decode_announcement(again);
      if (!round || round->size() != tasks->size()) __builtin_trap();
    }
  }
  return 0;
}
