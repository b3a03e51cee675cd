// Repository checkout before the steps: the real binary, real git, local bare repositories
// (file://) made by the test, and a loopback HTTP server for credentials.

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <thread>

#include "common/encoding.h"
#include "support/test_support.h"

namespace tamma {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::ProcessResult;
using testing::TempDir;
using testing::write_file;
using json = nlohmann::json;

std::string sh(const std::string& script) {
  ProcessResult r = testing::run_process({"/bin/sh", "-ec", script});
  if (r.exit_code != 0) throw std::runtime_error("setup failed: " + script + "\n" + r.err);
  std::string out = r.out;
  while (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

class Checkout : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::access("/usr/bin/git", X_OK) != 0)
      GTEST_SKIP() << "git is not installed: apt-get install git";
    // Three commits on main, a tag on the second, a branch "feature" with one more commit.
    const std::string work = (files_.path() / "work").string();
    bare_ = (files_.path() / "origin.git").string();
    sh("git init -q -b main " + work + " && cd " + work +
       " && git config user.name t && git config user.email t@example.com"
       " && echo one > a.txt && git add a.txt && git commit -qm one"
       " && echo two > a.txt && git commit -qam two && git tag -a v2 -m v2"
       " && echo three > a.txt && git commit -qam three"
       " && git checkout -qb feature && echo feature > b.txt && git add b.txt"
       " && git commit -qm feature && git checkout -q main"
       " && git clone -q --bare " +
       work + " " + bare_);
    first_ = sh("git -C " + bare_ + " rev-list --max-parents=0 main");
    main_ = sh("git -C " + bare_ + " rev-parse main");
    feature_ = sh("git -C " + bare_ + " rev-parse feature");
    v2_ = sh("git -C " + bare_ + " rev-parse v2^{commit}");
  }

  void TearDown() override {
    std::vector<std::string> left;
    for (const auto& e : std::filesystem::directory_iterator(workspaces_.path())) {
      left.push_back(e.path().filename());
    }
    EXPECT_TRUE(left.empty()) << "workspace root not empty: " << (left.empty() ? "" : left[0]);
  }

  ProcessResult run(const json& spec) {
    const auto file = files_.path() / ("task-" + std::to_string(++count_) + ".json");
    write_file(file, spec.dump());
    return testing::run_process({TAMMA_WORKER_BINARY, "run", "--json", "--workspace-root",
                                 workspaces_.path().string(), file.string()});
  }

  json run_json(const json& spec, int expected_exit) {
    ProcessResult r = run(spec);
    EXPECT_EQ(r.exit_code, expected_exit) << r.err;
    last_err_ = r.err;
    try {
      return json::parse(r.out);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not a result document: " << r.out << r.err;
      return {};
    }
  }

  // A task that checks out `repository` and reports what it sees.
  static json task(json repository) {
    return {{"type", "build"},
            {"repository", std::move(repository)},
            {"steps",
             {{{"name", "look"},
               {"run", "cat a.txt; git rev-list --count HEAD; git rev-parse HEAD; ls"}}}}};
  }

  TempDir files_;
  TempDir workspaces_;
  std::string bare_, first_, main_, feature_, v2_, last_err_;
  int count_ = 0;
};

TEST_F(Checkout, ShallowBranchIsCheckedOutAsTheFirstStepInTheSandbox) {
  const json result = run_json(task({{"url", "file://" + bare_}, {"ref", "feature"}}), 0);
  ASSERT_EQ(result["steps"].size(), 2u) << result.dump(2);
  EXPECT_EQ(result["steps"][0]["name"], "checkout");
  EXPECT_EQ(result["steps"][0]["status"], "succeeded");
  // Depth 1 by default: one commit of history.
  EXPECT_EQ(result["steps"][1]["stdout"], "three\n1\n" + feature_ + "\na.txt\nb.txt\n");
  EXPECT_EQ(
      result["details"]["checkout"],
      json({{"url", "file://" + bare_}, {"ref", "feature"}, {"commit", feature_}, {"depth", 1}}));
  // Progress counts the checkout: [1/2] then [2/2].
  EXPECT_THAT(last_err_, HasSubstr("[1/2"));
  EXPECT_THAT(last_err_, HasSubstr("[2/2"));
  // The commit reaches the details without passing through what the user reads: no marker of
  // the worker's own in the checkout step's output, the console or the result.
  EXPECT_EQ(result["steps"][0]["stdout"], "checkout: file://" + bare_ + " at feature (depth 1)\n");
  EXPECT_THAT(last_err_, Not(HasSubstr("tamma-checkout-commit")));
  EXPECT_THAT(result.dump(), Not(HasSubstr("tamma-checkout-commit")));
}

TEST_F(Checkout, RemoteHeadWhenNoRef) {
  const json result = run_json(task({{"url", "file://" + bare_}}), 0);
  EXPECT_EQ(result["details"]["checkout"]["commit"], main_);
  EXPECT_EQ(result["details"]["checkout"]["ref"], "HEAD");
}

TEST_F(Checkout, AnnotatedTagWithFullHistory) {
  const json result = run_json(task({{"url", "file://" + bare_}, {"ref", "v2"}, {"depth", 0}}), 0);
  ASSERT_EQ(result["steps"].size(), 2u) << result.dump(2);
  EXPECT_EQ(result["steps"][1]["stdout"], "two\n2\n" + v2_ + "\na.txt\n");
  EXPECT_EQ(result["details"]["checkout"]["commit"], v2_);
}

TEST_F(Checkout, CommitThatIsNoBranchTipShallow) {
  const json result = run_json(task({{"url", "file://" + bare_}, {"ref", first_}}), 0);
  ASSERT_EQ(result["steps"].size(), 2u) << result.dump(2);
  EXPECT_EQ(result["steps"][1]["stdout"], "one\n1\n" + first_ + "\na.txt\n");
  EXPECT_EQ(result["details"]["checkout"]["commit"], first_);
}

TEST_F(Checkout, BadRefFailsTheTaskWithGitsMessageAndRunsNoStep) {
  const json result = run_json(task({{"url", "file://" + bare_}, {"ref", "no-such-branch"}}), 1);
  EXPECT_EQ(result["status"], "failed");
  ASSERT_EQ(result["steps"].size(), 1u);
  EXPECT_EQ(result["error"]["code"], "checkout_failed");
  EXPECT_THAT(result["error"]["message"].get<std::string>(), HasSubstr("no-such-branch"));
  EXPECT_THAT(result["error"]["message"].get<std::string>(), HasSubstr("fatal:"));
  EXPECT_TRUE(result["details"]["checkout"]["commit"].is_null());
}

TEST_F(Checkout, MissingRepositoryFailsBeforeGitRuns) {
  const json result = run_json(task({{"url", "file://" + bare_ + "-gone"}}), 1);
  EXPECT_EQ(result["error"]["code"], "checkout_failed");
  EXPECT_THAT(result["error"]["message"].get<std::string>(), HasSubstr("is not a directory"));
  EXPECT_TRUE(result["steps"].empty());
}

TEST_F(Checkout, HooksOfTheRepositoryDoNotRun) {
  // A post-checkout hook in the origin is not copied; git's own templates are not used either.
  write_file(std::filesystem::path(bare_) / "hooks" / "post-checkout", "#!/bin/sh\ntouch pwned\n");
  std::filesystem::permissions(std::filesystem::path(bare_) / "hooks" / "post-checkout",
                               std::filesystem::perms::all);
  json spec = task({{"url", "file://" + bare_}});
  spec["steps"] = {{{"run", "test ! -e pwned && test -z \"$(ls .git/hooks)\""}}};
  run_json(spec, 0);
}

// git hidden from the worker by a bind of /dev/null over it, in a mount namespace of the
// worker's own (unshare -m makes it private: the host keeps its git).
TEST_F(Checkout, NoGitOnTheWorkerIsAClearInfrastructureError) {
  if (::access("/usr/bin/unshare", X_OK) != 0) GTEST_SKIP() << "unshare (util-linux) is needed";
  if (::access("/usr/local/bin/git", F_OK) == 0) GTEST_SKIP() << "a second git in /usr/local/bin";
  const auto file = files_.path() / "task.json";
  write_file(file, task({{"url", "file://" + bare_}}).dump());
  ProcessResult r =
      testing::run_process({"/usr/bin/unshare", "-m", "/bin/sh", "-c",
                            std::string("mount --bind /dev/null /usr/bin/git && exec '") +
                                TAMMA_WORKER_BINARY + "' run --json --workspace-root '" +
                                workspaces_.path().string() + "' '" + file.string() + "'"});
  EXPECT_EQ(r.exit_code, 6) << r.err;
  const json result = json::parse(r.out);
  EXPECT_EQ(result["status"], "error");
  EXPECT_EQ(result["error"]["code"], "git_not_found");
  EXPECT_THAT(result["error"]["message"].get<std::string>(), HasSubstr("git is not installed"));
  EXPECT_TRUE(result["steps"].empty());
}

// A one-connection HTTP server on loopback that answers 404 and keeps the request.
class OneShotHttp {
 public:
  OneShotHttp() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(fd_, 4) != 0) {
      throw std::runtime_error("listen failed");
    }
    socklen_t len = sizeof addr;
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~OneShotHttp() {
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  [[nodiscard]] int port() const { return port_; }
  std::string request() {
    thread_.join();
    thread_ = std::thread([] {});
    return request_;
  }

 private:
  void serve() {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 60'000) <= 0) return;  // a safety limit, not an assertion
    const int client = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) return;
    char buffer[8192];
    while (request_.find("\r\n\r\n") == std::string::npos) {
      const ssize_t n = ::read(client, buffer, sizeof buffer);
      if (n <= 0) break;
      request_.append(buffer, static_cast<std::size_t>(n));
    }
    const std::string answer =
        "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    (void)!::write(client, answer.data(), answer.size());
    ::close(client);
  }
  int fd_ = -1;
  int port_ = 0;
  std::thread thread_;
  std::string request_;
};

TEST_F(Checkout, CredentialsInTheUrlGoInAHeaderAndAreNeverPrinted) {
  OneShotHttp server;
  const std::string password = "pa55-w0rd-never-printed";
  const std::string url =
      "http://robot:" + password + "@127.0.0.1:" + std::to_string(server.port()) + "/r.git";
  ProcessResult r = run(task({{"url", url}, {"ref", "main"}}));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  const std::string request = server.request();
  EXPECT_THAT(request, HasSubstr("Authorization: Basic " + base64_encode("robot:" + password)));
  EXPECT_THAT(request, HasSubstr("GET /r.git/info/refs"));
  EXPECT_THAT(r.out + r.err, Not(HasSubstr(password)));
  EXPECT_THAT(r.out + r.err, Not(HasSubstr("robot")));
  const json result = json::parse(r.out);
  EXPECT_EQ(result["error"]["code"], "checkout_failed");
  EXPECT_EQ(result["details"]["checkout"]["url"],
            "http://127.0.0.1:" + std::to_string(server.port()) + "/r.git");
}

}  // namespace
}  // namespace tamma
