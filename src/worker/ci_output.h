#pragma once
// What a CI system reads from a finished task besides the log: GitHub Actions workflow
// commands (annotations) and job summary, GitLab's collapsible sections and a JUnit report
// (ADR 0016). Pure formatting: every text that came from the task passes through `masker`
// before it is escaped, so a secret is masked in whatever form it was reported.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "protocol/task_result.h"
#include "worker/secret_masker.h"

namespace tamma::worker::ci {

enum class System { kNone, kGithub, kGitlab, kJenkins };

// GITHUB_ACTIONS=true or GITLAB_CI=true, as the runners set them; Jenkins by JENKINS_URL (or
// JENKINS_HOME with BUILD_ID, when no Jenkins URL is configured). Jenkins displays plain logs:
// it only changes where the JUnit report goes by default.
System detect(const std::function<const char*(const char*)>& getenv);

// Workflow-command escaping, as actions/toolkit does it: data escapes % CR LF; a property
// value also : and ,.
std::string github_escape_data(std::string_view text);
std::string github_escape_property(std::string_view text);

// ::error/::warning/::notice lines for a failed task, failed tests and scan findings
// (error -> ::error, warning -> ::warning, note and none -> ::notice), at most `limit` of
// each kind and a notice saying how many were left out.
std::string github_annotations(const protocol::TaskResult& result, const SecretMasker& masker,
                               std::size_t limit = 50);

// The Markdown appended to $GITHUB_STEP_SUMMARY.
std::string github_summary(const protocol::TaskResult& result, const SecretMasker& masker,
                           std::size_t limit = 50);

// GitLab's section markers; `name` is reduced to the characters GitLab accepts.
std::string gitlab_section_start(std::string_view name, std::string_view header,
                                 std::int64_t unix_seconds, bool collapsed = true);
std::string gitlab_section_end(std::string_view name, std::int64_t unix_seconds);

// A JUnit XML report: one testcase per step (suite "steps"), and when the result has test
// details, a suite "tests" with its counts and each failing test as a testcase.
std::string junit_report(const protocol::TaskResult& result, const SecretMasker& masker);

}  // namespace tamma::worker::ci
