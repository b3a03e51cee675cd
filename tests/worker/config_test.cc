#include "worker/config.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/error.h"
#include "support/test_support.h"

namespace tamma::worker {
namespace {

using std::chrono::milliseconds;
using ::testing::HasSubstr;
using ::testing::Not;

// The tests must not depend on the machine's own configuration file.
class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::error_code ec;
    if (std::filesystem::exists("/etc/tamma-worker/config.json", ec)) {
      GTEST_SKIP() << "/etc/tamma-worker/config.json exists on this machine";
    }
  }

  std::filesystem::path write_config(const std::string& content) {
    const auto file = dir_.path() / "config.json";
    tamma::testing::write_file(file, content);
    return file;
  }

  Config load_with_file(const std::string& content, std::vector<std::string> env = {}) {
    ConfigOverrides overrides;
    overrides.config_file = write_config(content);
    return load_config(overrides, env);
  }

  tamma::testing::TempDir dir_;
};

std::string load_error(const ConfigOverrides& overrides, const std::vector<std::string>& env) {
  try {
    load_config(overrides, env);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kConfig);
    EXPECT_EQ(e.code(), "invalid_config");
    return e.what();
  }
  ADD_FAILURE() << "load_config accepted the configuration";
  return "";
}

std::string env_error(const std::vector<std::string>& env) { return load_error({}, env); }

std::string flag_error(const std::string& key, const std::string& value) {
  ConfigOverrides overrides;
  overrides.values[key] = value;
  return load_error(overrides, {});
}

TEST_F(ConfigTest, Defaults) {
  const Config c = load_config({}, {"TMPDIR=/var/tmp"});
  EXPECT_EQ(c.workspace_root, "/var/tmp/tamma-worker");
  EXPECT_EQ(c.default_timeout, std::chrono::minutes(30));
  EXPECT_EQ(c.grace_period, std::chrono::seconds(10));
  EXPECT_EQ(c.output_limit_bytes, 4ULL << 20);
  EXPECT_EQ(c.output_hard_limit_bytes, 1ULL << 30);
  EXPECT_EQ(c.default_memory_bytes, 4ULL << 30);
  EXPECT_FALSE(c.default_cpus);
  EXPECT_EQ(c.default_pids, 4096U);
  EXPECT_FALSE(c.default_disk_bytes);
  EXPECT_TRUE(c.isolate);
  EXPECT_FALSE(c.allow_degraded);
  EXPECT_EQ(c.task_uid, 65534U);
  EXPECT_EQ(c.task_gid, 65534U);
  EXPECT_EQ(c.tmp_bytes, 256ULL << 20);
  EXPECT_FALSE(c.tmp_on_tmpfs);
  EXPECT_TRUE(c.pass_env.empty());
  EXPECT_TRUE(c.handlers.empty());
  EXPECT_EQ(c.orchestrator_url, "");
  EXPECT_EQ(c.token, "");
  EXPECT_EQ(c.slots, 1U);
  EXPECT_TRUE(c.labels.empty());
  EXPECT_EQ(c.log_level, "info");
  EXPECT_EQ(c.log_format, LogFormat::kText);
}

TEST_F(ConfigTest, WorkspaceRootFallsBackToTmp) {
  EXPECT_EQ(load_config({}, {}).workspace_root, "/tmp/tamma-worker");
  EXPECT_EQ(load_config({}, {"TMPDIR="}).workspace_root, "/tmp/tamma-worker");
  EXPECT_EQ(load_config({}, {"TMPDIR=relative"}).workspace_root, "/tmp/tamma-worker");
}

TEST_F(ConfigTest, PrecedenceDefaultsFileEnvironmentFlags) {
  const auto file = write_config(R"({"gracePeriod": "20s"})");
  ConfigOverrides overrides;
  EXPECT_EQ(load_config(overrides, {}).grace_period, std::chrono::seconds(10));

  overrides.config_file = file;
  EXPECT_EQ(load_config(overrides, {}).grace_period, std::chrono::seconds(20));

  const std::vector<std::string> env = {"TAMMA_GRACE_PERIOD=30s"};
  EXPECT_EQ(load_config(overrides, env).grace_period, std::chrono::seconds(30));

  overrides.values["gracePeriod"] = "40s";
  EXPECT_EQ(load_config(overrides, env).grace_period, std::chrono::seconds(40));
}

TEST_F(ConfigTest, ConfigFileFromTheEnvironment) {
  const auto file = write_config(R"({"slots": 3})");
  EXPECT_EQ(load_config({}, {"TAMMA_CONFIG_PATH=" + file.string()}).slots, 3U);
  // The flag names a file too, and wins.
  const auto other = dir_.path() / "other.json";
  tamma::testing::write_file(other, R"({"slots": 5})");
  ConfigOverrides overrides;
  overrides.config_file = other;
  EXPECT_EQ(load_config(overrides, {"TAMMA_CONFIG_PATH=" + file.string()}).slots, 5U);
}

TEST_F(ConfigTest, ReadsEverySettingFromTheFile) {
  const Config c = load_with_file(R"({
    "workspaceRoot": "/srv/ws",
    "defaultTimeout": "45m",
    "gracePeriod": 5,
    "outputLimit": "1M",
    "outputHardLimit": 104857600,
    "defaultMemory": "2G",
    "defaultCpus": 1.5,
    "defaultPids": 256,
    "defaultDisk": "10G",
    "isolate": false,
    "allowDegraded": "yes",
    "taskUid": 1000,
    "taskGid": "1001",
    "tmpSize": "64M",
    "handlers": {"lint": "/opt/handlers/lint"},
    "orchestratorUrl": "https://orchestrator.example.com",
    "token": "abc123",
    "slots": 4,
    "labels": {"arch": "amd64", "pool": "fast"},
    "logLevel": "debug",
    "logFormat": "json"
  })");
  EXPECT_EQ(c.workspace_root, "/srv/ws");
  EXPECT_EQ(c.default_timeout, std::chrono::minutes(45));
  EXPECT_EQ(c.grace_period, std::chrono::seconds(5));
  EXPECT_EQ(c.output_limit_bytes, 1ULL << 20);
  EXPECT_EQ(c.output_hard_limit_bytes, 100ULL << 20);
  EXPECT_EQ(c.default_memory_bytes, 2ULL << 30);
  EXPECT_EQ(c.default_cpus, 1.5);
  EXPECT_EQ(c.default_pids, 256U);
  EXPECT_EQ(c.default_disk_bytes, 10ULL << 30);
  EXPECT_FALSE(c.isolate);
  EXPECT_TRUE(c.allow_degraded);
  EXPECT_EQ(c.task_uid, 1000U);
  EXPECT_EQ(c.task_gid, 1001U);
  EXPECT_EQ(c.tmp_bytes, 64ULL << 20);
  EXPECT_EQ(c.handlers,
            (std::map<std::string, std::filesystem::path>{{"lint", "/opt/handlers/lint"}}));
  EXPECT_EQ(c.orchestrator_url, "https://orchestrator.example.com");
  EXPECT_EQ(c.token, "abc123");
  EXPECT_EQ(c.slots, 4U);
  EXPECT_EQ(c.labels, (std::map<std::string, std::string>{{"arch", "amd64"}, {"pool", "fast"}}));
  EXPECT_EQ(c.log_level, "debug");
  EXPECT_EQ(c.log_format, LogFormat::kJson);
}

TEST_F(ConfigTest, ReadsEverySettingFromTheEnvironment) {
  const Config c = load_config({}, {"TAMMA_WORKSPACE_ROOT=/srv/ws",
                                    "TAMMA_DEFAULT_TIMEOUT=1h",
                                    "TAMMA_GRACE_PERIOD=2s",
                                    "TAMMA_OUTPUT_LIMIT=512K",
                                    "TAMMA_OUTPUT_HARD_LIMIT=2G",
                                    "TAMMA_DEFAULT_MEMORY=1G",
                                    "TAMMA_DEFAULT_CPUS=0.5",
                                    "TAMMA_DEFAULT_PIDS=64",
                                    "TAMMA_DEFAULT_DISK=5G",
                                    "TAMMA_ISOLATE=no",
                                    "TAMMA_ALLOW_DEGRADED=1",
                                    "TAMMA_TASK_UID=2000",
                                    "TAMMA_TASK_GID=2001",
                                    "TAMMA_TMP_SIZE=32M",
                                    "TAMMA_HANDLERS=lint=/opt/lint, scan = /opt/scan,",
                                    "TAMMA_ORCHESTRATOR_URL=http://localhost:3000",
                                    "TAMMA_TOKEN=t0k",
                                    "TAMMA_SLOTS=8",
                                    "TAMMA_LABELS=arch=arm64,zone=eu",
                                    "TAMMA_LOG_LEVEL=WARN",
                                    "TAMMA_LOG_FORMAT=json"});
  EXPECT_EQ(c.workspace_root, "/srv/ws");
  EXPECT_EQ(c.default_timeout, std::chrono::hours(1));
  EXPECT_EQ(c.grace_period, std::chrono::seconds(2));
  EXPECT_EQ(c.output_limit_bytes, 512ULL << 10);
  EXPECT_EQ(c.output_hard_limit_bytes, 2ULL << 30);
  EXPECT_EQ(c.default_memory_bytes, 1ULL << 30);
  EXPECT_EQ(c.default_cpus, 0.5);
  EXPECT_EQ(c.default_pids, 64U);
  EXPECT_EQ(c.default_disk_bytes, 5ULL << 30);
  EXPECT_FALSE(c.isolate);
  EXPECT_TRUE(c.allow_degraded);
  EXPECT_EQ(c.task_uid, 2000U);
  EXPECT_EQ(c.task_gid, 2001U);
  EXPECT_EQ(c.tmp_bytes, 32ULL << 20);
  EXPECT_EQ(c.handlers, (std::map<std::string, std::filesystem::path>{{"lint", "/opt/lint"},
                                                                      {"scan", "/opt/scan"}}));
  EXPECT_EQ(c.orchestrator_url, "http://localhost:3000");
  EXPECT_EQ(c.token, "t0k");
  EXPECT_EQ(c.slots, 8U);
  EXPECT_EQ(c.labels, (std::map<std::string, std::string>{{"arch", "arm64"}, {"zone", "eu"}}));
  EXPECT_EQ(c.log_level, "warn");
  EXPECT_EQ(c.log_format, LogFormat::kJson);
}

TEST_F(ConfigTest, ReadsSettingsFromFlags) {
  ConfigOverrides overrides;
  overrides.values = {{"workspaceRoot", "/w"},   {"gracePeriod", "1m"},
                      {"outputLimit", "8M"},     {"logLevel", "trace"},
                      {"logFormat", "json"},     {"allowDegraded", "true"},
                      {"isolate", "false"},      {"handlers", "a=/bin/a,b=/bin/b"},
                      {"defaultMemory", "none"}, {"labels", "k=v"}};
  const Config c = load_config(overrides, {});
  EXPECT_EQ(c.workspace_root, "/w");
  EXPECT_EQ(c.grace_period, std::chrono::minutes(1));
  EXPECT_EQ(c.output_limit_bytes, 8ULL << 20);
  EXPECT_EQ(c.log_level, "trace");
  EXPECT_EQ(c.log_format, LogFormat::kJson);
  EXPECT_TRUE(c.allow_degraded);
  EXPECT_FALSE(c.isolate);
  EXPECT_EQ(c.handlers.size(), 2U);
  EXPECT_FALSE(c.default_memory_bytes);
  EXPECT_EQ(c.labels.at("k"), "v");
}

TEST_F(ConfigTest, BooleanSpellings) {
  for (const char* yes : {"true", "TRUE", "1", "yes", "Yes"}) {
    EXPECT_TRUE(load_config({}, {std::string("TAMMA_ALLOW_DEGRADED=") + yes}).allow_degraded)
        << yes;
  }
  for (const char* no : {"false", "False", "0", "no", "NO"}) {
    EXPECT_FALSE(load_config({}, {std::string("TAMMA_ISOLATE=") + no}).isolate) << no;
  }
  EXPECT_THAT(env_error({"TAMMA_ISOLATE=maybe"}),
              HasSubstr("isolate from environment TAMMA_ISOLATE: must be true or false"));
}

TEST_F(ConfigTest, DefaultLimitsCanBeSwitchedOff) {
  const Config c = load_with_file(
      R"({"defaultMemory": null, "defaultPids": "none", "defaultCpus": 2, "defaultDisk": "1G"})",
      {"TAMMA_DEFAULT_CPUS=none", "TAMMA_DEFAULT_DISK=None"});
  EXPECT_FALSE(c.default_memory_bytes);
  EXPECT_FALSE(c.default_pids);
  EXPECT_FALSE(c.default_cpus);
  EXPECT_FALSE(c.default_disk_bytes);
}

TEST_F(ConfigTest, EmptyEnvironmentVariablesCountAsUnset) {
  const Config c = load_config({}, {"TAMMA_GRACE_PERIOD=", "TAMMA_LOG_LEVEL="});
  EXPECT_EQ(c.grace_period, std::chrono::seconds(10));
  EXPECT_EQ(c.log_level, "info");
}

TEST_F(ConfigTest, HandlersAndLabelsMergeAcrossLevels) {
  ConfigOverrides overrides;
  overrides.config_file =
      write_config(R"({"handlers": {"a": "/file/a", "b": "/file/b"}, "labels": {"x": "1"}})");
  overrides.values["handlers"] = "b=/flag/b";
  const Config c = load_config(overrides, {"TAMMA_LABELS=y=2"});
  EXPECT_EQ(c.handlers,
            (std::map<std::string, std::filesystem::path>{{"a", "/file/a"}, {"b", "/flag/b"}}));
  EXPECT_EQ(c.labels, (std::map<std::string, std::string>{{"x", "1"}, {"y", "2"}}));
}

TEST_F(ConfigTest, SeedVariablesWithTheirUnits) {
  Config c = load_config(
      {}, {"MAX_EXECUTION_TIME=1800000", "MAX_MEMORY_USAGE=4194304000", "MAX_CPU_USAGE=2",
           "WORKSPACE_ROOT=/tmp/tamma-workspace", "ENABLE_SANDBOX=false"});
  EXPECT_EQ(c.default_timeout, std::chrono::minutes(30));
  EXPECT_EQ(c.default_memory_bytes, 4194304000U);
  EXPECT_EQ(c.default_cpus, 2.0);
  EXPECT_EQ(c.workspace_root, "/tmp/tamma-workspace");
  EXPECT_FALSE(c.isolate);

  c = load_config({}, {"MAX_EXECUTION_TIME=45m", "MAX_MEMORY_USAGE=2G", "MAX_CPU_USAGE=150%",
                       "ENABLE_SANDBOX=true"});
  EXPECT_EQ(c.default_timeout, std::chrono::minutes(45));
  EXPECT_EQ(c.default_memory_bytes, 2ULL << 30);
  EXPECT_EQ(c.default_cpus, 1.5);
  EXPECT_TRUE(c.isolate);
}

TEST_F(ConfigTest, TammaVariablesWinOverSeedVariables) {
  const Config c = load_config(
      {}, {"TAMMA_DEFAULT_TIMEOUT=5m", "MAX_EXECUTION_TIME=1000", "WORKSPACE_ROOT=/seed",
           "TAMMA_WORKSPACE_ROOT=/tamma", "ENABLE_SANDBOX=false", "TAMMA_ISOLATE=true"});
  EXPECT_EQ(c.default_timeout, std::chrono::minutes(5));
  EXPECT_EQ(c.workspace_root, "/tamma");
  EXPECT_TRUE(c.isolate);
}

TEST_F(ConfigTest, SeedVariablesNameThemselvesInErrors) {
  EXPECT_THAT(env_error({"MAX_EXECUTION_TIME=soon"}),
              HasSubstr("defaultTimeout from environment MAX_EXECUTION_TIME: \"soon\" is not a "
                        "duration"));
  EXPECT_THAT(env_error({"MAX_EXECUTION_TIME=0"}),
              HasSubstr("defaultTimeout from environment MAX_EXECUTION_TIME: \"0ms\""));
  EXPECT_THAT(env_error({"MAX_MEMORY_USAGE=lots"}),
              HasSubstr("defaultMemory from environment MAX_MEMORY_USAGE: \"lots\" is not a size"));
  EXPECT_THAT(env_error({"MAX_CPU_USAGE=2000"}),
              HasSubstr("defaultCpus from environment MAX_CPU_USAGE: must be a positive number"));
  EXPECT_THAT(env_error({"MAX_CPU_USAGE=x%"}),
              HasSubstr("defaultCpus from environment MAX_CPU_USAGE: \"x%\" is not a percentage"));
  EXPECT_THAT(env_error({"WORKSPACE_ROOT=rel"}),
              HasSubstr("workspaceRoot from environment WORKSPACE_ROOT: \"rel\" is not an "
                        "absolute path"));
  EXPECT_THAT(env_error({"ENABLE_SANDBOX=on-ish"}),
              HasSubstr("isolate from environment ENABLE_SANDBOX: must be true or false"));
}

TEST_F(ConfigTest, TokenFromAFileIsTrimmed) {
  const auto file = dir_.path() / "token";
  tamma::testing::write_file(file, "  s3cr3t-token\n");
  EXPECT_EQ(load_config({}, {"TAMMA_TOKEN_FILE=" + file.string()}).token, "s3cr3t-token");
  EXPECT_EQ(load_with_file(R"({"tokenFile": ")" + file.string() + R"("})").token, "s3cr3t-token");
}

// The packaged systemd unit hands the token over with LoadCredential= (packaging/systemd).
TEST_F(ConfigTest, TokenFromTheSystemdCredentialsDirectory) {
  const auto credentials = dir_.path() / "credentials";
  std::filesystem::create_directories(credentials);
  tamma::testing::write_file(credentials / "registration-token", "cred-token\n");
  const std::string dir_variable = "CREDENTIALS_DIRECTORY=" + credentials.string();
  EXPECT_EQ(load_config({}, {dir_variable}).token, "cred-token");
  // The environment and flags still win; a directory without the credential gives nothing.
  EXPECT_EQ(load_config({}, {dir_variable, "TAMMA_TOKEN=env-token"}).token, "env-token");
  ConfigOverrides overrides;
  overrides.values["token"] = "flag-token";
  EXPECT_EQ(load_config(overrides, {dir_variable}).token, "flag-token");
  EXPECT_EQ(load_config({}, {"CREDENTIALS_DIRECTORY=" + dir_.path().string()}).token, "");
  tamma::testing::write_file(credentials / "registration-token", "\n");
  EXPECT_THAT(env_error({dir_variable}),
              HasSubstr("tokenFile from systemd credential registration-token"));
}

TEST_F(ConfigTest, TokenFileProblems) {
  const auto missing = dir_.path() / "missing";
  EXPECT_THAT(
      env_error({"TAMMA_TOKEN_FILE=" + missing.string()}),
      HasSubstr("tokenFile from environment TAMMA_TOKEN_FILE: cannot read " + missing.string()));
  const auto empty = dir_.path() / "empty";
  tamma::testing::write_file(empty, " \n");
  EXPECT_THAT(env_error({"TAMMA_TOKEN_FILE=" + empty.string()}), HasSubstr("holds no token"));
  EXPECT_THAT(env_error({"TAMMA_TOKEN_FILE=relative/token"}), HasSubstr("not an absolute path"));
  tamma::testing::write_file(empty, "x");
  EXPECT_THAT(env_error({"TAMMA_TOKEN=a", "TAMMA_TOKEN_FILE=" + empty.string()}),
              HasSubstr("set either TAMMA_TOKEN or TAMMA_TOKEN_FILE, not both"));
  ConfigOverrides overrides;
  overrides.config_file =
      write_config(R"({"token": "a", "tokenFile": ")" + empty.string() + R"("})");
  EXPECT_THAT(load_error(overrides, {}), HasSubstr("set either token or tokenFile, not both"));
}

TEST_F(ConfigTest, TokenValueStaysOutOfMessages) {
  ConfigOverrides overrides;
  overrides.config_file = write_config(R"({"token": "   "})");
  EXPECT_THAT(load_error(overrides, {}),
              HasSubstr("token from config file " + overrides.config_file->string() +
                        ": must not be empty"));
}

TEST_F(ConfigTest, ExplicitConfigFileMustExist) {
  ConfigOverrides overrides;
  overrides.config_file = dir_.path() / "nope.json";
  EXPECT_THAT(load_error(overrides, {}), HasSubstr("nope.json (flag --config) does not exist"));
  EXPECT_THAT(env_error({"TAMMA_CONFIG_PATH=" + (dir_.path() / "gone.json").string()}),
              HasSubstr("gone.json (environment TAMMA_CONFIG_PATH) does not exist"));
  overrides.config_file = dir_.path();
  EXPECT_THAT(load_error(overrides, {}), HasSubstr("is a directory"));
}

// The fuzz target's entry point (fuzz/worker_config_fuzz.cc) is the file layer of load_config.
TEST_F(ConfigTest, TextOfAConfigFileGivesWhatTheFileGives) {
  const std::string text = R"({"slots": 3, "labels": {"a": "b"}, "gracePeriod": "5s"})";
  const Config from_text = config_from_file_text(text, "inline.json");
  const Config from_file = load_with_file(text);
  EXPECT_EQ(from_text.slots, 3u);
  EXPECT_EQ(from_text.slots, from_file.slots);
  EXPECT_EQ(from_text.labels, from_file.labels);
  EXPECT_EQ(from_text.grace_period, from_file.grace_period);
  EXPECT_EQ(from_text.workspace_root, from_file.workspace_root);
  try {
    config_from_file_text(R"({"slots": 0, "frobnicate": 1})", "inline.json");
    ADD_FAILURE() << "config_from_file_text accepted slots 0";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("slots from config file inline.json"));
    EXPECT_THAT(e.what(), HasSubstr("frobnicate from config file inline.json"));
  }
}

TEST_F(ConfigTest, ConfigFileMustBeAJsonObject) {
  ConfigOverrides overrides;
  overrides.config_file = write_config("{\n  \"slots\": 2,\n  oops\n}");
  const std::string message = load_error(overrides, {});
  EXPECT_THAT(message, HasSubstr("is not valid JSON: parse error at line 3, column 3"));
  EXPECT_THAT(message, Not(HasSubstr("[json.exception")));
  overrides.config_file = write_config("[1, 2]");
  EXPECT_THAT(load_error(overrides, {}), HasSubstr("must hold a JSON object of settings"));
}

TEST_F(ConfigTest, UnknownKeysInTheFileAreErrors) {
  ConfigOverrides overrides;
  overrides.config_file = write_config(R"({"gracePeriodd": "5s"})");
  const std::string file = overrides.config_file->string();
  EXPECT_THAT(load_error(overrides, {}),
              HasSubstr("gracePeriodd from config file " + file +
                        ": unknown setting (did you mean \"gracePeriod\"?)"));
  overrides.config_file = write_config(R"({"WorkspaceRoot": "/x"})");
  EXPECT_THAT(load_error(overrides, {}), HasSubstr("did you mean \"workspaceRoot\"?"));
  overrides.config_file = write_config(R"({"frobnicate": true})");
  EXPECT_THAT(load_error(overrides, {}),
              HasSubstr("frobnicate from config file " + file +
                        ": unknown setting (the settings are workspaceRoot, "));
}

TEST_F(ConfigTest, UnknownOverrideKeysAreErrors) {
  EXPECT_THAT(flag_error("gracePerod", "5s"),
              HasSubstr("gracePerod from flag --grace-perod: unknown setting (did you mean"));
}

TEST_F(ConfigTest, InvalidValuesNameTheSettingAndTheSource) {
  struct Case {
    std::string key;
    std::string variable;
    std::string flag;
    std::string value;
    std::string problem;
  };
  const std::vector<Case> cases = {
      {"workspaceRoot", "TAMMA_WORKSPACE_ROOT", "--workspace-root", "rel/dir",
       "\"rel/dir\" is not an absolute path"},
      {"defaultTimeout", "TAMMA_DEFAULT_TIMEOUT", "--default-timeout", "10x",
       "\"10x\" is not a duration"},
      {"gracePeriod", "TAMMA_GRACE_PERIOD", "--grace-period", "-1s", "must be positive"},
      {"outputLimit", "TAMMA_OUTPUT_LIMIT", "--output-limit", "0", "must be more than 0 bytes"},
      {"outputHardLimit", "TAMMA_OUTPUT_HARD_LIMIT", "--output-hard-limit", "1Q",
       "\"1Q\" is not a size"},
      {"defaultMemory", "TAMMA_DEFAULT_MEMORY", "--default-memory", "lots",
       "(or \"none\" for no default)"},
      {"defaultCpus", "TAMMA_DEFAULT_CPUS", "--default-cpus", "0", "positive number of CPUs"},
      {"defaultCpus", "TAMMA_DEFAULT_CPUS", "--default-cpus", "2000", "at most 1024"},
      {"defaultPids", "TAMMA_DEFAULT_PIDS", "--default-pids", "0", "from 1 to 4194304"},
      {"defaultDisk", "TAMMA_DEFAULT_DISK", "--default-disk", "-5G", "must not be negative"},
      {"isolate", "TAMMA_ISOLATE", "--no-isolate", "perhaps", "must be true or false"},
      {"allowDegraded", "TAMMA_ALLOW_DEGRADED", "--allow-degraded", "2", "must be true or false"},
      {"taskUid", "TAMMA_TASK_UID", "--task-uid", "-1", "from 0 to 4294967294"},
      {"taskGid", "TAMMA_TASK_GID", "--task-gid", "4294967295", "from 0 to 4294967294"},
      {"tmpSize", "TAMMA_TMP_SIZE", "--tmp-size", "big", "\"big\" is not a size"},
      {"tmpOnTmpfs", "TAMMA_TMP_ON_TMPFS", "--tmp-on-tmpfs", "ram", "must be true or false"},
      {"passEnv", "TAMMA_PASS_ENV", "--pass-env", "HTTPS_PROXY=http://p:3128",
       "\"HTTPS_PROXY=http://p:3128\" is not a variable name (names only"},
      {"passEnv", "TAMMA_PASS_ENV", "--pass-env", "OK,9LIVES", "\"9LIVES\" is not a variable name"},
      {"passEnv", "TAMMA_PASS_ENV", "--pass-env", "TAMMA_TOKEN",
       "\"TAMMA_TOKEN\" is one of the worker's own settings, never passed to a task"},
      {"artifactMaxFileSize", "TAMMA_ARTIFACT_MAX_FILE_SIZE", "--artifact-max-file-size", "0",
       "must be more than 0 bytes"},
      {"artifactMaxTotalSize", "TAMMA_ARTIFACT_MAX_TOTAL_SIZE", "--artifact-max-total-size", "much",
       "\"much\" is not a size"},
      {"artifactMaxFiles", "TAMMA_ARTIFACT_MAX_FILES", "--artifact-max-files", "0",
       "from 1 to 1000000"},
      {"handlers", "TAMMA_HANDLERS", "--handler", "lint=bin/lint",
       "the handler for \"lint\": \"bin/lint\" is not an absolute path"},
      {"handlers", "TAMMA_HANDLERS", "--handler", "lint", "\"lint\" is not name=value"},
      {"orchestratorUrl", "TAMMA_ORCHESTRATOR_URL", "--orchestrator-url", "ftp://x",
       "\"ftp://x\" is not an http:// or https:// URL"},
      {"slots", "TAMMA_SLOTS", "--slots", "0", "from 1 to 1024"},
      {"slots", "TAMMA_SLOTS", "--slots", "two", "from 1 to 1024"},
      {"labels", "TAMMA_LABELS", "--label", "=v", "\"=v\" is not name=value"},
      {"logLevel", "TAMMA_LOG_LEVEL", "--log-level", "verbose",
       "must be one of trace, debug, info, warn, error, off, not the string \"verbose\""},
      {"logFormat", "TAMMA_LOG_FORMAT", "--log-format", "xml",
       "must be one of text, json, not the string \"xml\""},
  };
  for (const auto& c : cases) {
    const std::string from_env = env_error({c.variable + "=" + c.value});
    EXPECT_THAT(from_env, HasSubstr(c.key + " from environment " + c.variable + ": ")) << c.key;
    EXPECT_THAT(from_env, HasSubstr(c.problem)) << c.key;
    const std::string from_flag = flag_error(c.key, c.value);
    EXPECT_THAT(from_flag, HasSubstr(c.key + " from flag " + c.flag + ": ")) << c.key;
    EXPECT_THAT(from_flag, HasSubstr(c.problem)) << c.key;
  }
}

TEST_F(ConfigTest, InvalidFileValuesNameTheSettingAndTheFile) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"workspaceRoot": 5})", "workspaceRoot from config file {}: must be an absolute path"},
      {R"({"defaultTimeout": true})", "defaultTimeout from config file {}: must be a duration"},
      {R"({"gracePeriod": 0})", "gracePeriod from config file {}: 0 is not a duration"},
      {R"({"outputLimit": 1.5})", "outputLimit from config file {}: must be a whole number"},
      {R"({"outputHardLimit": []})", "outputHardLimit from config file {}: must be a size"},
      {R"({"defaultCpus": "fast"})", "defaultCpus from config file {}: must be a positive"},
      {R"({"defaultPids": -3})", "defaultPids from config file {}: must be a whole number"},
      {R"({"isolate": "sometimes"})", "isolate from config file {}: must be true or false"},
      {R"({"taskUid": 1.5})", "taskUid from config file {}: must be a whole number"},
      {R"({"handlers": ["a"]})", "handlers from config file {}: must be an object"},
      {R"({"handlers": {"a": 3}})", "handlers from config file {}: the value of \"a\" must be"},
      {R"({"handlers": {"a": "rel"}})", "handlers from config file {}: the handler for \"a\""},
      {R"({"orchestratorUrl": 8080})", "orchestratorUrl from config file {}: must be an http"},
      {R"({"token": 5})", "token from config file {}: must be a string"},
      {R"({"slots": 0})", "slots from config file {}: must be a whole number from 1"},
      {R"({"labels": {"a": 1}})", "labels from config file {}: the value of \"a\" must be"},
      {R"({"logLevel": null})", "logLevel from config file {}: must be one of"},
      {R"({"logFormat": "yaml"})", "logFormat from config file {}: must be one of text, json"},
      {R"({"passEnv": {"A": "b"}})", "passEnv from config file {}: must be a list of variable"},
      {R"({"passEnv": ["A", 1]})", "passEnv from config file {}: every name must be a string"},
      {R"({"passEnv": ["A B"]})", "passEnv from config file {}: \"A B\" is not a variable name"},
      {R"({"tmpOnTmpfs": "often"})", "tmpOnTmpfs from config file {}: must be true or false"},
  };
  for (const auto& [content, expected] : cases) {
    ConfigOverrides overrides;
    overrides.config_file = write_config(content);
    const std::string message = load_error(overrides, {});
    const std::string file = overrides.config_file->string();
    std::string wanted = expected;
    wanted.replace(wanted.find("{}"), 2, file);
    EXPECT_THAT(message, HasSubstr(wanted)) << content;
  }
}

TEST_F(ConfigTest, EveryProblemIsReportedOnItsOwnLine) {
  ConfigOverrides overrides;
  overrides.config_file = write_config(R"({"slots": 0, "logFormat": "xml"})");
  overrides.values["gracePeriod"] = "never";
  const std::string message = load_error(overrides, {"TAMMA_LOG_LEVEL=loud"});
  EXPECT_THAT(message, HasSubstr("logFormat from config file"));
  EXPECT_THAT(message, HasSubstr("\nslots from config file"));
  EXPECT_THAT(message, HasSubstr("\nlogLevel from environment TAMMA_LOG_LEVEL"));
  EXPECT_THAT(message, HasSubstr("\ngracePeriod from flag --grace-period"));
}

// passEnv holds names only, from a JSON list or the text form "A,B"; a higher level replaces
// the list as a whole (the operator means exactly the variables named at that level).
TEST_F(ConfigTest, PassEnvAndTmpOnTmpfsCanBeSet) {
  const Config file = load_with_file(
      R"({"passEnv": ["NODE_EXTRA_CA_CERTS", " SSL_CERT_FILE ", "HTTPS_PROXY", "HTTPS_PROXY"],
          "tmpOnTmpfs": true})");
  EXPECT_EQ(file.pass_env,
            (std::vector<std::string>{"NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "HTTPS_PROXY"}));
  EXPECT_TRUE(file.tmp_on_tmpfs);
  const Config env =
      load_with_file(R"({"passEnv": ["NODE_EXTRA_CA_CERTS"]})",
                     {"TAMMA_PASS_ENV=http_proxy, no_proxy,", "TAMMA_TMP_ON_TMPFS=no"});
  EXPECT_EQ(env.pass_env, (std::vector<std::string>{"http_proxy", "no_proxy"}));
  EXPECT_FALSE(env.tmp_on_tmpfs);
  ConfigOverrides overrides;
  overrides.values["passEnv"] = "_UNDERSCORE_1";
  EXPECT_EQ(load_config(overrides, {"TAMMA_PASS_ENV=A"}).pass_env,
            std::vector<std::string>{"_UNDERSCORE_1"});
  // An empty list switches it off again.
  EXPECT_TRUE(load_with_file(R"({"passEnv": []})").pass_env.empty());
}

TEST_F(ConfigTest, ArtifactLimitsHaveDefaultsAndCanBeSet) {
  const Config defaults = load_config({}, {});
  EXPECT_EQ(defaults.artifact_max_file_bytes, 1ull << 30);
  EXPECT_EQ(defaults.artifact_max_total_bytes, 2ull << 30);
  EXPECT_EQ(defaults.artifact_max_files, 1000u);
  const Config file = load_with_file(
      R"({"artifactMaxFileSize": "10M", "artifactMaxTotalSize": 1048576, "artifactMaxFiles": 5})",
      {"TAMMA_ARTIFACT_MAX_FILES=7"});
  EXPECT_EQ(file.artifact_max_file_bytes, 10ull << 20);
  EXPECT_EQ(file.artifact_max_total_bytes, 1ull << 20);
  EXPECT_EQ(file.artifact_max_files, 7u);
}

}  // namespace
}  // namespace tamma::worker

namespace tamma::worker {
namespace {

// The operator's network policy (issue 15) comes from the file, or as JSON text from
// TAMMA_NETWORK_POLICY; a bad one names its member.
TEST(ConfigNetworkPolicy, FromFileAndEnvironment) {
  const Config c = config_from_file_text(
      R"({"networkPolicy": {"hostNetwork": false, "allow": ["*.npmjs.org:443"]}})", "inline.json");
  EXPECT_FALSE(c.network_policy.host_network);
  ASSERT_TRUE(c.network_policy.allow);
  EXPECT_EQ(c.network_policy.allow->at(0).text(), "*.npmjs.org:443");
  EXPECT_TRUE(Config{}.network_policy.host_network);
  EXPECT_FALSE(Config{}.network_policy.allow);

  const Config from_env =
      load_config({}, {R"(TAMMA_NETWORK_POLICY={"denyAddresses": ["10.0.0.0/8"]})"});
  EXPECT_THAT(from_env.network_policy.deny_addresses, ::testing::SizeIs(1));
  try {
    config_from_file_text(R"({"networkPolicy": {"allow": ["x.com"]}})", "inline.json");
    ADD_FAILURE() << "a policy entry without a port was accepted";
  } catch (const Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("networkPolicy from config file inline.json: allow[0]"));
  }
}

}  // namespace
}  // namespace tamma::worker
