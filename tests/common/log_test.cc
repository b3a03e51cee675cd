#include "common/log.h"

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "support/test_support.h"

namespace tamma {
namespace {

// Captures what the logger writes to stderr (fd 2) while `body` runs.
std::string capture_stderr(const std::function<void()>& body) {
  testing::TempDir dir;
  auto file = dir.path() / "stderr";
  fflush(stderr);
  int saved = ::dup(2);
  FILE* f = std::fopen(file.c_str(), "w");
  ::dup2(::fileno(f), 2);
  body();
  spdlog::default_logger()->flush();
  fflush(stderr);
  ::dup2(saved, 2);
  ::close(saved);
  std::fclose(f);
  return testing::read_file(file);
}

TEST(Logging, JsonFormatWritesOneValidObjectPerLineEvenWithQuotesAndNewlines) {
  std::string out = capture_stderr([] {
    setup_logging("info", "json");
    spdlog::info("a \"quoted\" word\nand a second line");
    spdlog::debug("below the level");
  });
  ASSERT_EQ(std::count(out.begin(), out.end(), '\n'), 1) << out;
  auto line = nlohmann::json::parse(out);
  EXPECT_EQ(line["level"], "info");
  EXPECT_EQ(line["msg"], "a \"quoted\" word\nand a second line");
}

TEST(Logging, RejectsUnknownLevelAndFormat) {
  EXPECT_THROW(setup_logging("loud", "text"), Error);
  EXPECT_THROW(setup_logging("info", "xml"), Error);
}

}  // namespace
}  // namespace tamma
