#include "common/units.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace tamma {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;

std::string duration_error(std::string_view text) {
  std::string error;
  EXPECT_FALSE(parse_duration(text, &error).has_value()) << text;
  return error;
}

std::string size_error(std::string_view text) {
  std::string error;
  EXPECT_FALSE(parse_size(text, &error).has_value()) << text;
  return error;
}

TEST(ParseDuration, ReadsEachUnit) {
  EXPECT_EQ(parse_duration("250ms"), milliseconds(250));
  EXPECT_EQ(parse_duration("30s"), milliseconds(30'000));
  EXPECT_EQ(parse_duration("10m"), milliseconds(600'000));
  EXPECT_EQ(parse_duration("2h"), milliseconds(7'200'000));
}

TEST(ParseDuration, ReadsCompoundDurations) {
  EXPECT_EQ(parse_duration("1h30m"), milliseconds(5'400'000));
  EXPECT_EQ(parse_duration("1m30s"), milliseconds(90'000));
  EXPECT_EQ(parse_duration("1h2m3s4ms"), milliseconds(3'723'004));
}

TEST(ParseDuration, ReadsFractionsExactly) {
  EXPECT_EQ(parse_duration("1.5s"), milliseconds(1'500));
  // 0.1 is not exact in binary floating point; the parser must not lose the millisecond.
  EXPECT_EQ(parse_duration("0.1s"), milliseconds(100));
  EXPECT_EQ(parse_duration("1.001s"), milliseconds(1'001));
  EXPECT_EQ(parse_duration("0.5h"), milliseconds(1'800'000));
  EXPECT_EQ(parse_duration(".5s"), milliseconds(500));
  EXPECT_EQ(parse_duration("2.9ms"), milliseconds(2));
}

TEST(ParseDuration, BareNumberIsSeconds) {
  EXPECT_EQ(parse_duration("30"), milliseconds(30'000));
  EXPECT_EQ(parse_duration("1.5"), milliseconds(1'500));
  EXPECT_EQ(parse_duration(" 45s\n"), milliseconds(45'000));
}

TEST(ParseDuration, RejectsGarbageQuotingTheTextAndTheForms) {
  const std::string error = duration_error("10x");
  EXPECT_THAT(error, HasSubstr("\"10x\" is not a duration"));
  EXPECT_THAT(error, HasSubstr("30s, 10m"));
  for (const char* text : {"abc", "s", "10 s", "1h30", "1.2.3s", "10S", "1e3s", "inf", "NaN",
                           "10s!", "+5s", "1d", "1us"}) {
    EXPECT_THAT(duration_error(text), HasSubstr("is not a duration")) << text;
  }
}

TEST(ParseDuration, RejectsEmpty) {
  EXPECT_THAT(duration_error(""), HasSubstr("\"\" is not a duration"));
  EXPECT_THAT(duration_error("   "), HasSubstr("is not a duration"));
}

TEST(ParseDuration, RejectsNegativeAndZero) {
  EXPECT_THAT(duration_error("-5s"), HasSubstr("\"-5s\" is not a duration: it must be positive"));
  EXPECT_THAT(duration_error("0"), HasSubstr("must be positive"));
  EXPECT_THAT(duration_error("0s"), HasSubstr("must be positive"));
  EXPECT_THAT(duration_error("0h0m"), HasSubstr("must be positive"));
  EXPECT_THAT(duration_error("0.0001s"), HasSubstr("shorter than 1ms"));
}

TEST(ParseDuration, RejectsUnitsOutOfOrderOrRepeated) {
  EXPECT_THAT(duration_error("30s1m"), HasSubstr("largest to smallest"));
  EXPECT_THAT(duration_error("1h1h"), HasSubstr("largest to smallest"));
}

TEST(ParseDuration, RejectsOverflow) {
  EXPECT_THAT(duration_error("99999999999999999999999s"), HasSubstr("too long"));
  EXPECT_THAT(duration_error("9000000h"), HasSubstr("too long"));
  EXPECT_THAT(duration_error("8760h1ms"), HasSubstr("too long"));
  EXPECT_EQ(parse_duration("8760h"), milliseconds(31'536'000'000));
}

TEST(ParseDuration, ErrorIsOptional) { EXPECT_FALSE(parse_duration("nope").has_value()); }

TEST(DurationFromSeconds, ConvertsAndRejects) {
  EXPECT_EQ(duration_from_seconds(30), milliseconds(30'000));
  EXPECT_EQ(duration_from_seconds(1.5), milliseconds(1'500));
  EXPECT_EQ(duration_from_seconds(0.001), milliseconds(1));
  std::string error;
  EXPECT_FALSE(duration_from_seconds(0, &error));
  EXPECT_THAT(error, HasSubstr("positive"));
  EXPECT_FALSE(duration_from_seconds(-3, &error));
  EXPECT_THAT(error, HasSubstr("-3 is not a duration"));
  EXPECT_FALSE(duration_from_seconds(1e300, &error));
  EXPECT_THAT(error, HasSubstr("too long"));
  EXPECT_FALSE(duration_from_seconds(0.0001, &error));
  EXPECT_THAT(error, HasSubstr("shorter than 1ms"));
  EXPECT_FALSE(duration_from_seconds(std::nan(""), &error));
}

TEST(FormatDuration, IsHumanAndReadsBack) {
  EXPECT_EQ(format_duration(milliseconds(0)), "0s");
  EXPECT_EQ(format_duration(milliseconds(250)), "250ms");
  EXPECT_EQ(format_duration(milliseconds(30'000)), "30s");
  EXPECT_EQ(format_duration(milliseconds(1'500)), "1.5s");
  EXPECT_EQ(format_duration(milliseconds(1'234)), "1.234s");
  EXPECT_EQ(format_duration(milliseconds(90'000)), "1m30s");
  EXPECT_EQ(format_duration(milliseconds(5'400'000)), "1h30m");
  EXPECT_EQ(format_duration(milliseconds(3'600'500)), "1h0.5s");
  EXPECT_EQ(format_duration(milliseconds(-1'500)), "-1.5s");
  for (std::int64_t ms : {1LL, 999LL, 1'000LL, 1'001LL, 60'000LL, 3'723'004LL, 86'400'000LL}) {
    EXPECT_EQ(parse_duration(format_duration(milliseconds(ms))), milliseconds(ms)) << ms;
  }
}

TEST(ParseSize, ReadsBareBytes) {
  EXPECT_EQ(parse_size("1048576"), 1048576U);
  EXPECT_EQ(parse_size("100B"), 100U);
  EXPECT_EQ(parse_size("0"), 0U);
}

TEST(ParseSize, BinaryUnitsInEverySpelling) {
  for (const char* text : {"512M", "512m", "512Mi", "512MiB", "512MB", "512mb", "512 MiB"}) {
    EXPECT_EQ(parse_size(text), 512ULL << 20) << text;
  }
  EXPECT_EQ(parse_size("64K"), 64ULL << 10);
  EXPECT_EQ(parse_size("64KiB"), 64ULL << 10);
  EXPECT_EQ(parse_size("2G"), 2ULL << 30);
  EXPECT_EQ(parse_size("2GiB"), 2ULL << 30);
  EXPECT_EQ(parse_size("3T"), 3ULL << 40);
  EXPECT_EQ(parse_size("3TiB"), 3ULL << 40);
  EXPECT_EQ(parse_size("1P"), 1ULL << 50);
  EXPECT_EQ(parse_size("15E"), 15ULL << 60);
}

TEST(ParseSize, ReadsFractionsExactly) {
  EXPECT_EQ(parse_size("1.5G"), 3ULL << 29);
  EXPECT_EQ(parse_size("0.5K"), 512U);
  EXPECT_EQ(parse_size("1.1K"), 1126U);  // 1126.4, rounded down
  EXPECT_EQ(parse_size("1.0"), 1U);
}

TEST(ParseSize, RejectsGarbageQuotingTheTextAndTheForms) {
  const std::string error = size_error("12X");
  EXPECT_THAT(error, HasSubstr("\"12X\" is not a size"));
  EXPECT_THAT(error, HasSubstr("512M"));
  for (const char* text :
       {"", "M", "abc", "12 34", "1.2.3M", "10MiBs", "10Q", "0x10", "1e6", "10  M", "5Bi"}) {
    EXPECT_THAT(size_error(text), HasSubstr("is not a size")) << text;
  }
}

TEST(ParseSize, RejectsNegativeAndFractionalBytes) {
  EXPECT_THAT(size_error("-1M"), HasSubstr("must not be negative"));
  EXPECT_THAT(size_error("1.5"), HasSubstr("whole number"));
  EXPECT_THAT(size_error("10.5B"), HasSubstr("whole number"));
}

TEST(ParseSize, RejectsOverflow) {
  EXPECT_THAT(size_error("16E"), HasSubstr("too large"));
  EXPECT_THAT(size_error("18446744073709551616"), HasSubstr("too large"));
  EXPECT_THAT(size_error("99999999999999999999999T"), HasSubstr("too large"));
  EXPECT_EQ(parse_size("18446744073709551615"), 18446744073709551615ULL);
}

TEST(FormatSize, IsHuman) {
  EXPECT_EQ(format_size(0), "0B");
  EXPECT_EQ(format_size(1023), "1023B");
  EXPECT_EQ(format_size(1024), "1KiB");
  EXPECT_EQ(format_size(512ULL << 20), "512MiB");
  EXPECT_EQ(format_size(3ULL << 29), "1.5GiB");
  EXPECT_EQ(format_size(1048575), "1MiB");
  EXPECT_EQ(format_size(4ULL << 40), "4TiB");
  EXPECT_EQ(format_size(18446744073709551615ULL), "16EiB");
  EXPECT_EQ(parse_size(format_size(512ULL << 20)), 512ULL << 20);
}

}  // namespace
}  // namespace tamma
