#include "worker/checkout.h"

#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <filesystem>
#include <map>

#include <fmt/format.h>

#include "common/encoding.h"
#include "common/error.h"

namespace tamma::worker {
namespace {

using protocol::TaskStatus;

// The directories the engine puts on a task's PATH: git must be in one of them, and with
// isolation those are the host's own directories bound read-only.
constexpr const char* kGitDirs[] = {"/usr/local/bin", "/usr/bin", "/bin"};

// $1 URL git fetches, $2 URL shown, $3 ref, $4 depth (0 = all), $5 upload-pack command for
// file:// (empty otherwise). Positional parameters keep every value out of the script text,
// so nothing in them is ever parsed by the shell.
constexpr const char* kScript = R"sh(set -eu
url=$1 shown=$2 ref=${3:-HEAD} depth=$4 upload_pack=$5
if [ "$depth" -gt 0 ]; then history="depth $depth"; else history="full history"; fi
echo "checkout: $shown at $ref ($history)"
git init -q --template= .
git remote add origin "$url"
set -- -q --no-tags --no-recurse-submodules
if [ "$depth" -gt 0 ]; then set -- "$@" --depth="$depth"; fi
if [ -n "$upload_pack" ]; then set -- "$@" --upload-pack="$upload_pack"; fi
git fetch "$@" origin "$ref"
git -c advice.detachedHead=false checkout -q --detach FETCH_HEAD
)sh";

// For file://, git runs upload-pack itself, with the GIT_CONFIG_* variables removed: its
// settings go on its command line. The repository belongs to another user than the task's,
// and fetching a commit by its id needs upload-pack to accept any object asked for.
constexpr const char* kLocalUploadPack =
    "git -c 'safe.directory=*' -c uploadpack.allowAnySHA1InWant=true upload-pack";

struct ParsedUrl {
  std::string scheme;
  std::string userinfo;  // percent-decoded
  std::string rest;      // everything after the userinfo (host, path)
};

std::string percent_decode(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() &&
        std::isxdigit(static_cast<unsigned char>(text[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(text[i + 2]))) {
      out += static_cast<char>(std::stoi(std::string(text.substr(i + 1, 2)), nullptr, 16));
      i += 2;
    } else {
      out += text[i];
    }
  }
  return out;
}

ParsedUrl parse_url(std::string_view url) {
  ParsedUrl parsed;
  const auto scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) {
    parsed.rest = url;
    return parsed;
  }
  parsed.scheme = url.substr(0, scheme_end);
  std::string_view after = url.substr(scheme_end + 3);
  const auto authority_end = after.find('/');
  const std::string_view authority = after.substr(0, authority_end);
  // The last '@' ends the user information: a password may itself contain an '@'.
  if (const auto at = authority.rfind('@'); at != std::string_view::npos) {
    parsed.userinfo = percent_decode(authority.substr(0, at));
    after.remove_prefix(at + 1);
  }
  parsed.rest = after;
  return parsed;
}

// "user:password" as is; a bare token as GitHub's token user (GitLab and Gitea accept any
// user name with a token).
std::string basic_authorization(const std::string& credentials) {
  const std::string pair =
      credentials.find(':') == std::string::npos ? "x-access-token:" + credentials : credentials;
  return "Authorization: Basic " + base64_encode(pair);
}

bool git_installed() {
  for (const char* dir : kGitDirs) {
    if (::access((std::string(dir) + "/git").c_str(), X_OK) == 0) return true;
  }
  return false;
}

std::string trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) {
    text.pop_back();
  }
  constexpr std::size_t kMaxMessage = 2000;
  if (text.size() > kMaxMessage) text = "…" + text.substr(text.size() - kMaxMessage);
  return text;
}

// The commit a detached checkout is at: git keeps it as the whole of .git/HEAD (40 hex digits
// and a newline). Read on the host, from the workspace the checkout step just wrote, so that
// nothing of it has to pass through the task's output. "" when it is not that.
std::string detached_head(const std::filesystem::path& workspace) {
  const int fd = ::open((workspace / ".git" / "HEAD").c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return "";
  char buffer[64];
  const ssize_t n = ::read(fd, buffer, sizeof buffer);
  ::close(fd);
  if (n < 40) return "";
  std::string head(buffer, static_cast<std::size_t>(n));
  while (!head.empty() && (head.back() == '\n' || head.back() == '\r')) head.pop_back();
  if (head.size() != 40 || head.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return "";
  }
  return head;
}

}  // namespace

std::string url_without_credentials(std::string_view url) {
  const ParsedUrl parsed = parse_url(url);
  if (parsed.scheme.empty()) return std::string(url);
  return parsed.scheme + "://" + parsed.rest;
}

StepCommand checkout_command(const protocol::Repository& repo, const protocol::TaskSpec& spec,
                             bool isolated) {
  const ParsedUrl parsed = parse_url(repo.url);
  const std::string shown = url_without_credentials(repo.url);
  std::string fetch_url = shown;

  // Configuration through the environment (command-line scope): nothing of it is in argv,
  // so a credential never shows in a process listing or in git's own messages.
  std::vector<std::pair<std::string, std::string>> config{
      {"core.hooksPath", "/dev/null"},
      {"core.fsmonitor", "false"},
      {"submodule.recurse", "false"},
      {"fetch.recurseSubmodules", "false"},
      {"transfer.fsckObjects", "true"},
      {"protocol.allow", "never"},
      {"protocol." + parsed.scheme + ".allow", "always"},
      // A stalled server ends the fetch instead of holding the task until its timeout.
      {"http.lowSpeedLimit", "1000"},
      {"http.lowSpeedTime", "60"},
  };
  StepCommand command;
  command.name = "checkout";
  command.workdir = ".";
  if (parsed.scheme == "file") {
    const std::string host_path = parsed.rest.substr(parsed.rest.find('/'));
    if (isolated) {
      command.readonly_binds_at.emplace_back(host_path, kSandboxRepository);
      fetch_url = std::string("file://") + kSandboxRepository;
    }
  } else {
    command.host_network = true;
  }
  std::string credentials = parsed.userinfo;
  if (!repo.credentials_secret.empty()) credentials = spec.secrets.at(repo.credentials_secret);
  if (!credentials.empty())
    config.emplace_back("http.extraHeader", basic_authorization(credentials));

  command.env = {
      {"GIT_TERMINAL_PROMPT", "0"},
      {"GIT_CONFIG_NOSYSTEM", "1"},
      {"GIT_CONFIG_GLOBAL", "/dev/null"},
      {"GIT_ALLOW_PROTOCOL", parsed.scheme},
      {"GIT_CONFIG_COUNT", std::to_string(config.size())},
  };
  for (std::size_t i = 0; i < config.size(); ++i) {
    command.env[fmt::format("GIT_CONFIG_KEY_{}", i)] = config[i].first;
    command.env[fmt::format("GIT_CONFIG_VALUE_{}", i)] = config[i].second;
  }
  command.argv = {"/bin/sh",
                  "-c",
                  kScript,
                  "checkout",
                  fetch_url,
                  shown,
                  repo.ref,
                  std::to_string(repo.depth),
                  parsed.scheme == "file" ? kLocalUploadPack : ""};
  return command;
}

bool checkout_repository(TaskContext& ctx, const protocol::Repository& repo,
                         protocol::TaskResult& result, nlohmann::json& details) {
  const std::string shown = url_without_credentials(repo.url);
  const std::string ref = repo.ref.empty() ? "HEAD" : repo.ref;
  details = {{"url", shown}, {"ref", ref}, {"commit", nullptr}, {"depth", repo.depth}};
  if (!git_installed()) {
    throw Error(ErrorKind::kInfrastructure, "git_not_found",
                "the task asks for a repository checkout, but git is not installed on this "
                "worker (apt-get install git)");
  }
  const auto fail = [&](std::string message) {
    result.status = TaskStatus::kFailed;
    result.error = protocol::TaskError{"checkout_failed", std::move(message), false};
    return false;
  };
  const ParsedUrl parsed = parse_url(repo.url);
  if (parsed.scheme == "file") {
    const std::string host_path = parsed.rest.substr(parsed.rest.find('/'));
    std::error_code ec;
    if (!std::filesystem::is_directory(host_path, ec)) {
      return fail(fmt::format("checkout of {} failed: {} is not a directory", shown, host_path));
    }
  }

  const bool isolated = ctx.task_workspace() != ctx.host_workspace().string();
  const protocol::StepResult step = ctx.run(checkout_command(repo, ctx.spec(), isolated));
  if (step.status != TaskStatus::kSucceeded) {
    result.status = step.status;
    result.limit = step.limit;
    result.exit_code = step.exit_code;
    result.signal = step.signal;
    if (step.status != TaskStatus::kFailed) return false;  // timeout, cancel, limit: as any step
    return fail(fmt::format("checkout of {} at {} failed: {}", shown, ref,
                            trimmed(step.stderr_capture.text)));
  }
  const std::string commit = detached_head(ctx.host_workspace());
  if (commit.empty()) {
    return fail(fmt::format("checkout of {} at {}: git did not report the commit", shown, ref));
  }
  details["commit"] = commit;
  return true;
}

}  // namespace tamma::worker
