// Which step scripts run without bash (lone_command.h): only those bash would exec unchanged.

#include "worker/lone_command.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tamma::worker {
namespace {

using Words = std::vector<std::string>;
const std::vector<std::string> kEnv = {"PATH=/usr/bin:/bin", "HOME=/home/tamma", "LANG=C.UTF-8"};

TEST(LoneCommand, PlainWordsAreTheCommand) {
  EXPECT_EQ(lone_command("date +%s%N", kEnv), (Words{"date", "+%s%N"}));
  EXPECT_EQ(lone_command("  make -j4\ttest  ", kEnv), (Words{"make", "-j4", "test"}));
  EXPECT_EQ(lone_command("npm test\n", kEnv), (Words{"npm", "test"}));
  EXPECT_EQ(lone_command("./gradlew build --info", kEnv), (Words{"./gradlew", "build", "--info"}));
  EXPECT_EQ(lone_command("cmake -DX=1 -S . -B build", kEnv),
            (Words{"cmake", "-DX=1", "-S", ".", "-B", "build"}));
  EXPECT_EQ(lone_command("pip install a,b user@host:1.2+x", kEnv),
            (Words{"pip", "install", "a,b", "user@host:1.2+x"}));
  // The builtins true and false exit as /usr/bin/true and /usr/bin/false do.
  EXPECT_EQ(lone_command("true", kEnv), (Words{"true"}));
}

TEST(LoneCommand, AnythingTheShellWouldExpandOrInterpretStaysWithTheShell) {
  for (const char* script : {"echo $HOME",
                             "ls *.c",
                             "ls file?",
                             "cat [ab]",
                             "echo {a,b}",
                             "ls ~",
                             "cd ~/x",
                             "echo 'quoted'",
                             "echo \"quoted\"",
                             "echo a\\ b",
                             "make; make install",
                             "a && b",
                             "a || b",
                             "a | b",
                             "a & ",
                             "a > out",
                             "a < in",
                             "(a)",
                             "echo `id`",
                             "echo $(id)",
                             "!a",
                             "a # comment",
                             "a\nb",
                             "make \x01",
                             "A=1 make",
                             "%1",
                             "",
                             "   ",
                             "\n"}) {
    EXPECT_EQ(lone_command(script, kEnv), std::nullopt) << "script: [" << script << "]";
  }
}

TEST(LoneCommand, BuiltinsAndReservedWordsStayWithTheShell) {
  for (const char* script :
       {"cd sub",    "echo hi",   "exit 3",    "export A", "source x",  ". x",
        "test -f x", "[ -f x ]",  "kill 1",    "printf x", "pwd",       "set -x",
        "ulimit -n", "umask 077", "time make", "if",       "exec make", "command make",
        "wait",      "read x",    "eval make"}) {
    EXPECT_EQ(lone_command(script, kEnv), std::nullopt) << "script: [" << script << "]";
  }
}

// bash reads start-up files, options, functions and tracing from its environment: then only
// bash knows what the script does.
TEST(LoneCommand, AnEnvironmentThatChangesBashLeavesTheScriptToIt) {
  for (const char* entry :
       {"BASH_ENV=/w/env.sh", "ENV=/w/env.sh", "SHELLOPTS=xtrace", "BASHOPTS=extglob",
        "POSIXLY_CORRECT=1", "PS4=+ ", "BASH_XTRACEFD=5", "EXECIGNORE=*", "PWD=/x", "OLDPWD=/y",
        "SHLVL=4", "BASH_FUNC_make%%=() { echo no; }"}) {
    auto env = kEnv;
    env.emplace_back(entry);
    EXPECT_EQ(lone_command("make test", env), std::nullopt) << "with " << entry;
  }
  auto env = kEnv;
  env.emplace_back("BASH_ENVIRONMENT=not-read-by-bash");
  EXPECT_EQ(lone_command("make", env), (Words{"make"}));
}

TEST(LoneCommand, ALongScriptStaysWithTheShell) {
  std::string script = "make";
  while (script.size() <= kLoneCommandMaxBytes) script += " x";
  EXPECT_EQ(lone_command(script, kEnv), std::nullopt);
  EXPECT_TRUE(lone_command(script.substr(0, kLoneCommandMaxBytes - 1), kEnv).has_value());
}

}  // namespace
}  // namespace tamma::worker
