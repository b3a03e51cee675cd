// The audit trail, read by admins: GET /api/v1/audit?task=&since=&after=&limit=
// (docs/protocol.md#audit-trail). Every query parameter is checked before the store is asked;
// a bad one is a 400 naming it.

#include <charconv>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "orchestrator/core.h"

namespace tamma::orchestrator {
namespace {

constexpr const char* kAudit = "/api/v1/audit";
constexpr int kDefaultLimit = 100;
constexpr std::size_t kMaxTaskId = 128;

// `digits` characters of decimal digits at `pos`, as a number; nullopt otherwise.
std::optional<int> fixed_digits(std::string_view text, std::size_t pos, std::size_t digits) {
  if (pos + digits > text.size()) return std::nullopt;
  int value = 0;
  for (std::size_t i = pos; i < pos + digits; ++i) {
    if (text[i] < '0' || text[i] > '9') return std::nullopt;
    value = value * 10 + (text[i] - '0');
  }
  return value;
}

// Days from 1970-01-01 to the given date of the proleptic Gregorian calendar (H. Hinnant's
// days_from_civil): no time zone, no locale, no libc normalizing an impossible date for us.
std::int64_t days_from_civil(int y, int m, int d) {
  y -= m <= 2 ? 1 : 0;
  const int era = (y >= 0 ? y : y - 399) / 400;
  const int yoe = y - era * 400;
  const int doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return static_cast<std::int64_t>(era) * 146097 + doe - 719468;
}

bool leap_year(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

// RFC 3339 date-time (2026-01-02T03:04:05.678Z, or with an offset +01:00) as milliseconds
// since the epoch; nullopt for anything else, an impossible date included. Fractions finer
// than a millisecond are cut: the trail's times have milliseconds.
std::optional<std::int64_t> rfc3339_ms(std::string_view t) {
  auto year = fixed_digits(t, 0, 4);
  auto month = fixed_digits(t, 5, 2);
  auto day = fixed_digits(t, 8, 2);
  auto hour = fixed_digits(t, 11, 2);
  auto minute = fixed_digits(t, 14, 2);
  auto second = fixed_digits(t, 17, 2);
  if (!year || !month || !day || !hour || !minute || !second || t[4] != '-' || t[7] != '-' ||
      (t[10] != 'T' && t[10] != 't') || t[13] != ':' || t[16] != ':') {
    return std::nullopt;
  }
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (*month < 1 || *month > 12 || *day < 1 ||
      *day > kDays[*month - 1] + (*month == 2 && leap_year(*year) ? 1 : 0) || *hour > 23 ||
      *minute > 59 || *second > 60) {  // 60: a leap second, which RFC 3339 allows
    return std::nullopt;
  }
  std::size_t pos = 19;
  int millis = 0;
  if (pos < t.size() && t[pos] == '.') {
    std::size_t digits = 0;
    for (++pos; pos < t.size() && t[pos] >= '0' && t[pos] <= '9'; ++pos, ++digits) {
      if (digits < 3) millis = millis * 10 + (t[pos] - '0');
    }
    if (digits == 0 || digits > 9) return std::nullopt;
    for (; digits < 3; ++digits) millis *= 10;
  }
  int offset_minutes = 0;
  if (pos < t.size() && (t[pos] == 'Z' || t[pos] == 'z')) {
    ++pos;
  } else if (pos < t.size() && (t[pos] == '+' || t[pos] == '-')) {
    auto oh = fixed_digits(t, pos + 1, 2);
    auto om = fixed_digits(t, pos + 4, 2);
    if (!oh || !om || t[pos + 3] != ':' || *oh > 23 || *om > 59) return std::nullopt;
    offset_minutes = (*oh * 60 + *om) * (t[pos] == '-' ? -1 : 1);
    pos += 6;
  } else {
    return std::nullopt;
  }
  if (pos != t.size()) return std::nullopt;
  const std::int64_t seconds = days_from_civil(*year, *month, *day) * 86400 + *hour * 3600 +
                               *minute * 60 + *second - offset_minutes * 60;
  return seconds * 1000 + millis;
}

// A non-negative decimal integer of at most 15 digits (below 2^53: any JSON reader gets it
// exactly); nullopt otherwise.
std::optional<std::int64_t> plain_number(std::string_view text) {
  if (text.empty() || text.size() > 15) return std::nullopt;
  std::int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < 0) return std::nullopt;
  return value;
}

AuditQuery audit_query(const Request& request) {
  AuditQuery query;
  query.limit = kDefaultLimit;
  if (auto it = request.query.find("task"); it != request.query.end()) {
    const std::string& id = it->second;
    bool plain = !id.empty() && id.size() <= kMaxTaskId;
    for (char c : id) {
      plain = plain && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                        (c >= '0' && c <= '9') || c == '_' || c == '-');
    }
    if (!plain) {
      throw wire::WireError("task", "a task id has 1 to 128 letters, digits, _ and -");
    }
    query.task_id = id;
  }
  if (auto it = request.query.find("since"); it != request.query.end()) {
    // Digits alone are milliseconds since the epoch; anything else must be RFC 3339.
    query.since_ms = plain_number(it->second);
    if (!query.since_ms) query.since_ms = rfc3339_ms(it->second);
    if (!query.since_ms) {
      throw wire::WireError("since",
                            "expected an RFC 3339 date-time (2026-01-02T03:04:05Z) or "
                            "milliseconds since the epoch");
    }
  }
  if (auto it = request.query.find("after"); it != request.query.end()) {
    auto after = plain_number(it->second);
    if (!after) throw wire::WireError("after", "expected a record's seq (a non-negative integer)");
    query.after_seq = *after;
  }
  if (auto it = request.query.find("limit"); it != request.query.end()) {
    auto limit = plain_number(it->second);
    if (!limit || *limit < 1 || *limit > kMaxAuditLimit) {
      throw wire::WireError("limit",
                            "expected an integer from 1 to " + std::to_string(kMaxAuditLimit));
    }
    query.limit = static_cast<int>(*limit);
  }
  return query;
}

void list_audit(Core& core, Request& request, const ExchangePtr& exchange) {
  core.require_admin(request);
  const AuditQuery query = audit_query(request);
  wire::AuditList list;
  list.records = core.store.audit(query);
  // A full page may have more behind it; a short one is the end for now.
  if (!list.records.empty() && static_cast<int>(list.records.size()) == query.limit) {
    list.next = list.records.back().seq;
  }
  exchange->reply(Response::json(200, wire::to_json(list)));
}

}  // namespace

void add_audit_routes(Router& router, Core& core) {
  router.add(http::verb::get, kAudit, BodyKind::kSmall, Access::kAdmin,
             [&core](Request& r, const ExchangePtr& e) { list_audit(core, r, e); });
}

}  // namespace tamma::orchestrator
