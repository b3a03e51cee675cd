// The checkout step as built for the sandbox: where credentials go (the environment only),
// which protocols and settings git gets, and what the step is granted (network, binds).
// The real git runs in tests/cli/checkout_test.cc.

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/encoding.h"
#include "worker/checkout.h"

namespace tamma::worker {
namespace {

using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::Pair;

// The GIT_CONFIG_KEY_n/VALUE_n pairs as a map.
std::map<std::string, std::string> git_config(const StepCommand& command) {
  std::map<std::string, std::string> out;
  const int count = std::stoi(command.env.at("GIT_CONFIG_COUNT"));
  for (int i = 0; i < count; ++i) {
    out[command.env.at("GIT_CONFIG_KEY_" + std::to_string(i))] =
        command.env.at("GIT_CONFIG_VALUE_" + std::to_string(i));
  }
  return out;
}

std::string joined(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) out += a + "\n";
  return out;
}

TEST(CheckoutCommand, UrlWithoutCredentials) {
  EXPECT_EQ(url_without_credentials("https://u:p%40ss@host:8443/o/r.git"),
            "https://host:8443/o/r.git");
  EXPECT_EQ(url_without_credentials("https://token@host/r"), "https://host/r");
  EXPECT_EQ(url_without_credentials("https://host/a@b"), "https://host/a@b");
  EXPECT_EQ(url_without_credentials("file:///srv/r.git"), "file:///srv/r.git");
}

TEST(CheckoutCommand, CredentialsSecretGoesIntoAHeaderInTheEnvironmentOnly) {
  protocol::TaskSpec spec;
  spec.secrets = {{"GIT_TOKEN", "ghp_t0ken"}};
  protocol::Repository repo{"https://github.com/o/r.git", "main", 1, "GIT_TOKEN"};
  const StepCommand command = checkout_command(repo, spec, true);
  EXPECT_EQ(command.name, "checkout");
  EXPECT_TRUE(command.host_network);
  EXPECT_TRUE(command.readonly_binds_at.empty());
  EXPECT_THAT(git_config(command),
              Contains(Pair("http.extraHeader",
                            "Authorization: Basic " + base64_encode("x-access-token:ghp_t0ken"))));
  EXPECT_THAT(joined(command.argv), Not(HasSubstr("ghp_t0ken")));
  EXPECT_THAT(joined(command.argv), Not(HasSubstr(base64_encode("x-access-token:ghp_t0ken"))));
}

TEST(CheckoutCommand, UserInformationLeavesTheUrlForTheHeader) {
  protocol::Repository repo{"https://robot:p%40ss@git.example.com/r.git", "", 0, ""};
  const StepCommand command = checkout_command(repo, {}, true);
  EXPECT_THAT(
      git_config(command),
      Contains(Pair("http.extraHeader", "Authorization: Basic " + base64_encode("robot:p@ss"))));
  const std::string argv = joined(command.argv);
  EXPECT_THAT(argv, HasSubstr("\nhttps://git.example.com/r.git\n"));
  EXPECT_THAT(argv, Not(HasSubstr("robot")));
  EXPECT_THAT(argv, Not(HasSubstr("p%40ss")));
}

TEST(CheckoutCommand, HardenedGitSettings) {
  protocol::Repository repo{"git://git.example.com/r.git", "v1", 3, ""};
  const StepCommand command = checkout_command(repo, {}, true);
  const auto config = git_config(command);
  EXPECT_THAT(config, Contains(Pair("core.hooksPath", "/dev/null")));
  EXPECT_THAT(config, Contains(Pair("submodule.recurse", "false")));
  EXPECT_THAT(config, Contains(Pair("fetch.recurseSubmodules", "false")));
  EXPECT_THAT(config, Contains(Pair("transfer.fsckObjects", "true")));
  EXPECT_THAT(config, Contains(Pair("protocol.allow", "never")));
  EXPECT_THAT(config, Contains(Pair("protocol.git.allow", "always")));
  EXPECT_FALSE(config.contains("http.extraHeader"));
  EXPECT_EQ(command.env.at("GIT_TERMINAL_PROMPT"), "0");
  EXPECT_EQ(command.env.at("GIT_ALLOW_PROTOCOL"), "git");
  EXPECT_EQ(command.env.at("GIT_CONFIG_NOSYSTEM"), "1");
  EXPECT_EQ(command.env.at("GIT_CONFIG_GLOBAL"), "/dev/null");
  // $1 fetched URL, $2 shown URL, $3 ref, $4 depth, $5 upload-pack (file:// only).
  ASSERT_EQ(command.argv.size(), 9u);
  EXPECT_EQ(command.argv[6], "v1");
  EXPECT_EQ(command.argv[7], "3");
  EXPECT_EQ(command.argv[8], "");
}

TEST(CheckoutCommand, FileRepositoryIsBoundReadOnlyWithoutNetwork) {
  protocol::Repository repo{"file:///srv/git/r.git", "", 1, ""};
  const StepCommand isolated = checkout_command(repo, {}, true);
  EXPECT_FALSE(isolated.host_network);
  ASSERT_EQ(isolated.readonly_binds_at.size(), 1u);
  EXPECT_EQ(isolated.readonly_binds_at[0].first, "/srv/git/r.git");
  EXPECT_EQ(isolated.readonly_binds_at[0].second, kSandboxRepository);
  EXPECT_EQ(isolated.argv[4], std::string("file://") + kSandboxRepository);
  EXPECT_EQ(isolated.argv[5], "file:///srv/git/r.git");
  EXPECT_THAT(isolated.argv[8], HasSubstr("uploadpack.allowAnySHA1InWant=true"));

  const StepCommand plain = checkout_command(repo, {}, false);
  EXPECT_TRUE(plain.readonly_binds_at.empty());
  EXPECT_EQ(plain.argv[4], "file:///srv/git/r.git");
}

}  // namespace
}  // namespace tamma::worker
