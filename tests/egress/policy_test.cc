// Allow-list entries, address ranges and the operator's network policy (issue 15).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "egress/address_policy.h"
#include "egress/destination.h"
#include "egress/network_policy.h"

namespace tamma::egress {
namespace {

using boost::asio::ip::make_address;
using nlohmann::json;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Optional;
using ::testing::SizeIs;

Destination entry(std::string_view text, bool any_port = false) {
  auto parsed = parse_destination(text, DestinationOptions{.allow_any_port = any_port});
  if (auto* problem = std::get_if<std::string>(&parsed)) {
    ADD_FAILURE() << text << ": " << *problem;
    return {};
  }
  return std::get<Destination>(parsed);
}

std::string problem(std::string_view text) {
  auto parsed = parse_destination(text);
  if (auto* p = std::get_if<std::string>(&parsed)) return *p;
  return "(accepted)";
}

TEST(Destination, NameMatchesThatNameAndPortOnly) {
  const Destination d = entry("registry.npmjs.org:443");
  EXPECT_TRUE(d.matches("registry.npmjs.org", 443));
  EXPECT_TRUE(d.matches("REGISTRY.npmjs.org.", 443));
  EXPECT_FALSE(d.matches("registry.npmjs.org", 80));
  EXPECT_FALSE(d.matches("evil-registry.npmjs.org", 443));
  EXPECT_FALSE(d.matches("registry.npmjs.org.evil.com", 443));
  EXPECT_FALSE(d.matches("npmjs.org", 443));
}

TEST(Destination, WildcardMatchesNamesBelowItNotItself) {
  const Destination d = entry("*.githubusercontent.com:443");
  EXPECT_TRUE(d.matches("raw.githubusercontent.com", 443));
  EXPECT_TRUE(d.matches("a.b.githubusercontent.com", 443));
  EXPECT_FALSE(d.matches("githubusercontent.com", 443));
  EXPECT_FALSE(d.matches("evilgithubusercontent.com", 443));
  EXPECT_FALSE(d.matches("raw.githubusercontent.com", 80));
}

TEST(Destination, AddressEntriesAndNamesNeverMatchEachOther) {
  const Destination v4 = entry("10.0.0.5:5432");
  EXPECT_TRUE(v4.matches("10.0.0.5", 5432));
  EXPECT_FALSE(v4.matches("10.0.0.6", 5432));
  const Destination v6 = entry("[2001:DB8:0::5]:443");
  EXPECT_EQ(v6.text(), "[2001:db8::5]:443");
  EXPECT_TRUE(v6.matches("[2001:db8::5]", 443));
  EXPECT_TRUE(v6.matches("2001:db8:0:0::5", 443));
  const Destination name = entry("db.internal:5432");
  EXPECT_FALSE(name.matches("10.0.0.5", 5432));
  // Numeric forms some resolvers read as 127.0.0.1 are neither names nor literals.
  EXPECT_FALSE(normalise_host("127.1"));
  EXPECT_FALSE(normalise_host("2130706433"));
  EXPECT_FALSE(normalise_host("0x7f.1"));
  EXPECT_FALSE(normalise_host("fe80::1%eth0"));
}

TEST(Destination, RefusalsSayWhatIsWrong) {
  EXPECT_THAT(problem("x.com"), HasSubstr("has no port"));
  EXPECT_THAT(problem("x.com:99999"), HasSubstr("no valid port"));
  EXPECT_THAT(problem("x.com:*"), HasSubstr("one port"));
  EXPECT_THAT(problem("*.com:443"), HasSubstr("two labels"));
  EXPECT_THAT(problem("a*.x.com:443"), HasSubstr("first label"));
  EXPECT_THAT(problem("::1:443"), HasSubstr("brackets"));
  EXPECT_THAT(problem("[x.com]:443"), HasSubstr("not an IPv6"));
  EXPECT_THAT(problem("http://x.com:443"), HasSubstr("without a scheme"));
  EXPECT_THAT(problem("x .com:443"), HasSubstr("spaces"));
  EXPECT_THAT(problem(std::string(64, 'a') + ".com:443"), HasSubstr("not a valid DNS name"));
}

TEST(Destination, CoversIsTheOperatorsBound) {
  EXPECT_TRUE(entry("*.npmjs.org:*", true).covers(entry("registry.npmjs.org:443")));
  EXPECT_TRUE(entry("*.npmjs.org:443").covers(entry("*.a.npmjs.org:443")));
  EXPECT_TRUE(entry("*.npmjs.org:443").covers(entry("*.npmjs.org:443")));
  EXPECT_FALSE(entry("*.npmjs.org:443").covers(entry("npmjs.org:443")));
  EXPECT_FALSE(entry("*.npmjs.org:443").covers(entry("registry.npmjs.org:80")));
  EXPECT_FALSE(entry("registry.npmjs.org:443").covers(entry("*.registry.npmjs.org:443")));
  EXPECT_FALSE(entry("*.npmjs.org:443").covers(entry("10.0.0.5:443")));
  EXPECT_TRUE(entry("10.0.0.5:*", true).covers(entry("10.0.0.5:5432")));
}

TEST(Authority, SplitsHostAndPort) {
  EXPECT_EQ(split_authority("x.com:443")->host, "x.com");
  EXPECT_EQ(split_authority("[::1]:80")->host, "::1");
  EXPECT_EQ(split_authority("[::1]:80")->port, 80);
  EXPECT_FALSE(split_authority("x.com"));
  EXPECT_FALSE(split_authority("::1:80"));
  EXPECT_FALSE(split_authority("x.com:0"));
  EXPECT_FALSE(split_authority("[::1]80"));
}

TEST(AddressPolicy, BuiltInRangesAreAlwaysRefused) {
  AddressPolicy policy(false);
  policy.except(std::get<Cidr>(parse_cidr("0.0.0.0/0")));  // exceptions never open them
  for (const char* a :
       {"127.0.0.1", "127.5.5.5", "169.254.169.254", "0.0.0.0", "224.0.0.1", "255.255.255.255",
        "100.100.100.200", "::1", "::", "fe80::1", "ff02::1", "fd00:ec2::254", "::ffff:127.0.0.1",
        "::ffff:169.254.169.254", "::127.0.0.1"}) {
    EXPECT_TRUE(policy.refusal(make_address(a))) << a;
  }
  for (const char* a : {"10.0.0.5", "192.0.2.1", "8.8.8.8", "2001:db8::1", "100.64.0.1"}) {
    EXPECT_EQ(policy.refusal(make_address(a)), std::nullopt) << a;
  }
  EXPECT_THAT(policy.refusal(make_address("169.254.169.254")), Optional(HasSubstr("metadata")));
}

TEST(AddressPolicy, OperatorRangesAndExceptions) {
  AddressPolicy policy(false);
  policy.deny(std::get<Cidr>(parse_cidr("10.0.0.0/8")));
  policy.except(std::get<Cidr>(parse_cidr("10.0.0.5")));
  EXPECT_THAT(policy.refusal(make_address("10.1.2.3")), Optional(HasSubstr("10.0.0.0/8")));
  EXPECT_THAT(policy.refusal(make_address("::ffff:10.1.2.3")), Optional(HasSubstr("operator")));
  EXPECT_EQ(policy.refusal(make_address("10.0.0.5")), std::nullopt);
  EXPECT_EQ(policy.refusal(make_address("11.0.0.1")), std::nullopt);
}

TEST(AddressPolicy, TheHostsOwnAddressesAreRefused) {
  // Every machine with a network has a non-loopback address or at least lo's; the first
  // non-loopback one of this host must be refused like loopback.
  AddressPolicy with(true);
  AddressPolicy without(false);
  bool found = false;
  FILE* pipe = ::popen("ip -o -4 addr show scope global | awk '{print $4}' | cut -d/ -f1", "r");
  ASSERT_NE(pipe, nullptr);
  char line[64];
  while (std::fgets(line, sizeof line, pipe)) {
    std::string text(line);
    while (!text.empty() && (text.back() == '\n')) text.pop_back();
    if (text.empty()) continue;
    found = true;
    EXPECT_THAT(with.refusal(make_address(text)), Optional(HasSubstr("worker's host"))) << text;
    EXPECT_EQ(without.refusal(make_address(text)), std::nullopt) << text;
  }
  ::pclose(pipe);
  if (!found) GTEST_SKIP() << "this host has no global IPv4 address to check against";
}

TEST(Cidr, ParsesAndRefuses) {
  EXPECT_EQ(std::get<Cidr>(parse_cidr("10.0.0.0/8")).text(), "10.0.0.0/8");
  EXPECT_EQ(std::get<Cidr>(parse_cidr("fd00::/8")).text(), "fd00::/8");
  EXPECT_EQ(std::get<Cidr>(parse_cidr("10.0.0.5")).prefix, 32u);
  EXPECT_TRUE(std::holds_alternative<std::string>(parse_cidr("10.0.0.0/33")));
  EXPECT_TRUE(std::holds_alternative<std::string>(parse_cidr("10.0.0.0/")));
  EXPECT_TRUE(std::holds_alternative<std::string>(parse_cidr("10.0.0/8")));
  EXPECT_TRUE(std::holds_alternative<std::string>(parse_cidr("fe80::1%lo/64")));
  EXPECT_TRUE(std::get<Cidr>(parse_cidr("10.0.0.0/8")).contains(make_address("10.255.0.1")));
  EXPECT_FALSE(std::get<Cidr>(parse_cidr("10.0.0.0/8")).contains(make_address("11.0.0.1")));
  EXPECT_TRUE(std::get<Cidr>(parse_cidr("0.0.0.0/0")).contains(make_address("1.2.3.4")));
}

TEST(NetworkPolicy, ParsesAndBoundsTasks) {
  NetworkPolicy policy;
  const auto problems = parse_network_policy(json{{"hostNetwork", false},
                                                  {"allow", {"*.npmjs.org:443", "10.0.0.5:*"}},
                                                  {"denyAddresses", {"10.0.0.0/8"}},
                                                  {"allowAddresses", {"10.0.0.5"}}},
                                             policy);
  ASSERT_THAT(problems, SizeIs(0));
  EXPECT_FALSE(policy.host_network);
  EXPECT_EQ(policy.check({entry("registry.npmjs.org:443"), entry("10.0.0.5:5432")}), std::nullopt);
  EXPECT_THAT(policy.check({entry("registry.npmjs.org:443"), entry("pypi.org:443")}),
              Optional(HasSubstr("$.network.allow[1]: \"pypi.org:443\"")));
  const AddressPolicy addresses = policy.address_policy();
  EXPECT_TRUE(addresses.refusal(make_address("10.9.9.9")));
  EXPECT_FALSE(addresses.refusal(make_address("10.0.0.5")));
  // Without "allow" every task entry is within the policy.
  EXPECT_EQ(NetworkPolicy{}.check({entry("pypi.org:443")}), std::nullopt);
}

TEST(NetworkPolicy, TextFromTheEnvironmentIsJson) {
  NetworkPolicy policy;
  EXPECT_THAT(parse_network_policy(json(R"({"allow": ["pypi.org:443"]})"), policy), SizeIs(0));
  ASSERT_TRUE(policy.allow);
  EXPECT_EQ(policy.allow->at(0).text(), "pypi.org:443");
  EXPECT_THAT(parse_network_policy(json("{not json"), policy),
              ElementsAre(HasSubstr("not a JSON object")));
}

TEST(NetworkPolicy, EveryProblemIsNamed) {
  NetworkPolicy policy;
  policy.host_network = false;
  const auto problems = parse_network_policy(json{{"hostNetwork", "no"},
                                                  {"allow", {"x.com", 5}},
                                                  {"denyAddresses", {"10.0.0.0/99"}},
                                                  {"frobnicate", 1}},
                                             policy);
  ASSERT_THAT(problems, SizeIs(5));
  EXPECT_THAT(problems[0], HasSubstr("\"frobnicate\": unknown member"));
  EXPECT_THAT(problems[1], HasSubstr("hostNetwork: must be true or false"));
  EXPECT_THAT(problems[2], HasSubstr("denyAddresses[0]: has a prefix longer than 32"));
  EXPECT_THAT(problems[3], HasSubstr("allow[0]: \"x.com\" has no port"));
  EXPECT_THAT(problems[4], HasSubstr("allow[1]: must be a string"));
  // A refused policy leaves the previous one in place.
  EXPECT_FALSE(policy.host_network);
}

}  // namespace
}  // namespace tamma::egress
