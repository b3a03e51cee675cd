// SARIF 2.1.0 logs as security scanners write them (the `security_scan` task type):
// parse_sarif over any bytes, then the result's details as the worker writes them. Refusing a
// log is the parser's job; anything else (a crash, a sanitizer report, an exception that is not
// tamma::Error) is a finding.

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/error.h"
#include "reports/sarif_report.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    const auto scan = tamma::reports::parse_sarif(text, "scan.sarif", "/workspace");
    // The details go into the result document: they must serialize whatever the log held.
    (void)tamma::reports::to_details(scan, tamma::reports::Level::kWarning, "scan.sarif").dump();
  } catch (const tamma::Error&) {
    // A refused log: Error(kTaskFailed, "report_malformed").
  }
  return 0;
}
