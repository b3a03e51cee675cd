#include "common/units.h"

#include <cmath>
#include <limits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace tamma {
namespace {

using std::chrono::milliseconds;

constexpr std::string_view kDurationForms =
    "use e.g. 30s, 10m, 1h30m, 250ms, 1.5s; a bare number is seconds";
constexpr std::string_view kSizeForms =
    "use e.g. 512M, 2G, 64KiB, 1.5GiB, or a number of bytes; K/M/G/T are powers of 1024";

// Deadlines end up as nanoseconds on steady_clock: a year keeps every sum far from overflow and
// is longer than any CI task has a reason to run.
constexpr std::uint64_t kMaxDurationMs = 365ULL * 24 * 3600 * 1000;

// Digits past this do not change a millisecond or a byte count, and keep the arithmetic exact.
constexpr int kMaxFractionDigits = 18;

// Quoted as JSON quotes strings, so that control characters and stray bytes stay visible.
std::string quote(std::string_view text) {
  constexpr std::size_t kShown = 64;
  std::string quoted = nlohmann::json(std::string(text.substr(0, kShown)))
                           .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (text.size() > kShown) quoted.insert(quoted.size() - 1, "...");
  return quoted;
}

std::string_view trim(std::string_view text) {
  constexpr std::string_view kSpace = " \t\r\n";
  const auto begin = text.find_first_not_of(kSpace);
  if (begin == std::string_view::npos) return {};
  return text.substr(begin, text.find_last_not_of(kSpace) - begin + 1);
}

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// A decimal number kept exact as digits: whole + fraction / 10^fraction_digits. Binary floating
// point would turn "0.1s" into 99 ms and "1.1G" into a byte count off by one.
struct Decimal {
  std::uint64_t whole = 0;
  std::uint64_t fraction = 0;
  int fraction_digits = 0;
  bool overflow = false;  // the whole part does not fit in 64 bits

  [[nodiscard]] bool is_zero() const { return !overflow && whole == 0 && fraction == 0; }
};

// Reads [0-9]*(\.[0-9]*)? with at least one digit at `pos`; advances `pos` past it.
std::optional<Decimal> read_decimal(std::string_view text, std::size_t& pos) {
  Decimal number;
  bool any_digit = false;
  std::size_t i = pos;
  for (; i < text.size() && is_digit(text[i]); ++i) {
    any_digit = true;
    const auto digit = static_cast<std::uint64_t>(text[i] - '0');
    if (__builtin_mul_overflow(number.whole, 10ULL, &number.whole) ||
        __builtin_add_overflow(number.whole, digit, &number.whole)) {
      number.overflow = true;
    }
  }
  if (i < text.size() && text[i] == '.') {
    for (++i; i < text.size() && is_digit(text[i]); ++i) {
      any_digit = true;
      if (number.fraction_digits < kMaxFractionDigits) {
        number.fraction = number.fraction * 10 + static_cast<std::uint64_t>(text[i] - '0');
        ++number.fraction_digits;
      }
    }
  }
  if (!any_digit) return std::nullopt;
  pos = i;
  return number;
}

// number * unit rounded down, or nullopt when that does not fit in 64 bits.
std::optional<std::uint64_t> scale(const Decimal& number, std::uint64_t unit) {
  if (number.overflow) return std::nullopt;
  unsigned __int128 power = 1;
  for (int i = 0; i < number.fraction_digits; ++i) power *= 10;
  const unsigned __int128 total = static_cast<unsigned __int128>(number.whole) * unit +
                                  static_cast<unsigned __int128>(number.fraction) * unit / power;
  if (total > std::numeric_limits<std::uint64_t>::max()) return std::nullopt;
  return static_cast<std::uint64_t>(total);
}

template <typename T>
std::optional<T> fail(std::string* error, std::string message) {
  if (error != nullptr) *error = std::move(message);
  return std::nullopt;
}

}  // namespace

std::optional<milliseconds> parse_duration(std::string_view text, std::string* error) {
  struct Unit {
    std::string_view name;
    std::uint64_t ms;
  };
  // Largest first: a compound duration must list its units in this order, each once.
  static constexpr Unit kUnits[] = {{"h", 3'600'000}, {"m", 60'000}, {"s", 1'000}, {"ms", 1}};

  const std::string_view s = trim(text);
  const std::string garbage = fmt::format("{} is not a duration ({})", quote(text), kDurationForms);
  if (s.empty()) return fail<milliseconds>(error, garbage);
  if (s.front() == '-') {
    return fail<milliseconds>(error, fmt::format("{} is not a duration: it must be positive ({})",
                                                 quote(text), kDurationForms));
  }

  std::uint64_t total = 0;
  bool too_long = false;
  bool any_nonzero = false;
  int previous_unit = -1;
  std::size_t pos = 0;
  while (pos < s.size()) {
    const auto number = read_decimal(s, pos);
    if (!number) return fail<milliseconds>(error, garbage);
    std::size_t unit_end = pos;
    while (unit_end < s.size() && is_alpha(s[unit_end])) ++unit_end;
    const std::string_view unit_name = s.substr(pos, unit_end - pos);
    std::uint64_t unit_ms = 0;
    if (unit_name.empty()) {
      // Only a lone number may leave out its unit: "1h30" is likelier a slip than 1h and 30 s.
      if (previous_unit != -1 || unit_end != s.size()) return fail<milliseconds>(error, garbage);
      unit_ms = 1'000;
    } else {
      int index = -1;
      for (int i = 0; i < static_cast<int>(std::size(kUnits)); ++i) {
        if (kUnits[i].name == unit_name) index = i;
      }
      if (index < 0) return fail<milliseconds>(error, garbage);
      if (index <= previous_unit) {
        return fail<milliseconds>(
            error, fmt::format("{} is not a duration: units go from largest to smallest, each "
                               "once ({})",
                               quote(text), kDurationForms));
      }
      previous_unit = index;
      unit_ms = kUnits[index].ms;
    }
    pos = unit_end;
    any_nonzero = any_nonzero || !number->is_zero();
    // The syntax of the rest is still checked: garbage deserves that message over "too long".
    const auto part = scale(*number, unit_ms);
    if (!part || *part > kMaxDurationMs || total + *part > kMaxDurationMs) {
      too_long = true;
    } else {
      total += *part;
    }
  }
  if (too_long) {
    return fail<milliseconds>(error,
                              fmt::format("{} is too long a duration (at most {})", quote(text),
                                          format_duration(milliseconds(kMaxDurationMs))));
  }
  if (!any_nonzero) {
    return fail<milliseconds>(error, fmt::format("{} is not a duration: it must be positive ({})",
                                                 quote(text), kDurationForms));
  }
  if (total == 0) {
    return fail<milliseconds>(
        error, fmt::format("{} is shorter than 1ms, the smallest duration", quote(text)));
  }
  return milliseconds(static_cast<std::int64_t>(total));
}

std::optional<milliseconds> duration_from_seconds(double seconds, std::string* error) {
  const std::string shown = fmt::format("{}", seconds);
  if (std::isnan(seconds)) {
    return fail<milliseconds>(error, fmt::format("{} is not a duration", shown));
  }
  if (seconds <= 0) {
    return fail<milliseconds>(
        error, fmt::format("{} is not a duration: it must be a positive number of seconds", shown));
  }
  const double ms = std::round(seconds * 1000.0);
  if (ms > static_cast<double>(kMaxDurationMs)) {
    return fail<milliseconds>(error,
                              fmt::format("{} seconds is too long a duration (at most {})", shown,
                                          format_duration(milliseconds(kMaxDurationMs))));
  }
  if (ms < 1.0) {
    return fail<milliseconds>(
        error, fmt::format("{} seconds is shorter than 1ms, the smallest duration", shown));
  }
  return milliseconds(static_cast<std::int64_t>(ms));
}

std::optional<std::uint64_t> parse_size(std::string_view text, std::string* error) {
  const std::string_view s = trim(text);
  const std::string garbage = fmt::format("{} is not a size ({})", quote(text), kSizeForms);
  if (s.empty()) return fail<std::uint64_t>(error, garbage);
  if (s.front() == '-') {
    return fail<std::uint64_t>(error, fmt::format("{} is not a size: it must not be negative ({})",
                                                  quote(text), kSizeForms));
  }
  std::size_t pos = 0;
  const auto number = read_decimal(s, pos);
  if (!number) return fail<std::uint64_t>(error, garbage);
  // "512 MiB" reads naturally; one space is allowed before the unit.
  if (pos < s.size() && s[pos] == ' ') ++pos;

  std::string unit;
  for (char c : s.substr(pos)) unit += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  std::uint64_t multiplier = 0;
  if (unit.empty() || unit == "b") {
    multiplier = 1;
  } else {
    static constexpr std::string_view kPrefixes = "kmgtpe";
    const auto prefix = kPrefixes.find(unit.front());
    const std::string_view rest = std::string_view(unit).substr(1);
    if (prefix != std::string_view::npos &&
        (rest.empty() || rest == "b" || rest == "i" || rest == "ib")) {
      multiplier = 1ULL << (10 * (prefix + 1));
    }
  }
  if (multiplier == 0) return fail<std::uint64_t>(error, garbage);
  if (multiplier == 1 && number->fraction != 0) {
    return fail<std::uint64_t>(
        error, fmt::format("{} is not a size: a byte count must be a whole number", quote(text)));
  }
  const auto bytes = scale(*number, multiplier);
  if (!bytes) {
    return fail<std::uint64_t>(error,
                               fmt::format("{} is too large a size (at most {} bytes)", quote(text),
                                           std::numeric_limits<std::uint64_t>::max()));
  }
  return bytes;
}

std::string format_duration(milliseconds ms) {
  const std::int64_t count = ms.count();
  // The magnitude as unsigned, so that the most negative count does not overflow on negation.
  std::uint64_t rest =
      count < 0 ? ~static_cast<std::uint64_t>(count) + 1 : static_cast<std::uint64_t>(count);
  std::string out = count < 0 ? "-" : "";
  if (rest == 0) return "0s";
  if (rest < 1'000) return out + fmt::format("{}ms", rest);
  // Go's style ("1h30m", "1m0.5s"), which parse_duration reads back to the same millisecond.
  const std::uint64_t hours = rest / 3'600'000;
  rest %= 3'600'000;
  const std::uint64_t minutes = rest / 60'000;
  rest %= 60'000;
  if (hours != 0) out += fmt::format("{}h", hours);
  if (minutes != 0) out += fmt::format("{}m", minutes);
  if (rest != 0) {
    out += fmt::format("{}", rest / 1'000);
    if (rest % 1'000 != 0) {
      std::string fraction = fmt::format("{:03}", rest % 1'000);
      while (fraction.back() == '0') fraction.pop_back();
      out += "." + fraction;
    }
    out += "s";
  }
  return out;
}

std::string format_size(std::uint64_t bytes) {
  static constexpr std::string_view kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return fmt::format("{}B", bytes);
  std::size_t unit = 0;
  double value = static_cast<double>(bytes);
  while (value >= 1024.0 && unit + 1 < std::size(kUnits)) {
    value /= 1024.0;
    ++unit;
  }
  double rounded = std::round(value * 100.0) / 100.0;
  // 1048575 bytes would otherwise read "1024KiB".
  if (rounded >= 1024.0 && unit + 1 < std::size(kUnits)) {
    value /= 1024.0;
    ++unit;
    rounded = std::round(value * 100.0) / 100.0;
  }
  std::string text = fmt::format("{:.2f}", rounded);
  while (text.back() == '0') text.pop_back();
  if (text.back() == '.') text.pop_back();
  return text + std::string(kUnits[unit]);
}

}  // namespace tamma
