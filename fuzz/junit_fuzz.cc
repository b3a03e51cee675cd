// JUnit XML reports as test runners write them (the `test` task type): parse_junit over any
// bytes, then the result's details as the worker writes them. Refusing a report is the
// parser's job; anything else (a crash, a sanitizer report, an exception that is not
// tamma::Error) is a finding.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/error.h"
#include "reports/junit_report.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view xml(reinterpret_cast<const char*>(data), size);
  try {
    const auto totals = tamma::reports::parse_junit(xml, "report.xml", "/workspace");
    // The details go into the result document: they must serialize whatever the report held.
    (void)tamma::reports::to_details(totals, {"report.xml"}).dump();
  } catch (const tamma::Error&) {
    // A refused report: Error(kTaskFailed, "report_malformed").
  }
  return 0;
}
