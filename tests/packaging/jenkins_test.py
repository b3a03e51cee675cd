#!/usr/bin/env python3
"""tamma-worker run as the ci/Jenkinsfile runs it, with the environment Jenkins sets.

    jenkins_test.py TAMMA_WORKER_BINARY SOURCE_DIR

Takes the `tamma-worker run` command line and the `junit` and `recordIssues` sarif patterns
from ci/Jenkinsfile, runs that command in a fresh WORKSPACE with Jenkins' variables (and no
other CI system's) on a security-scan task, and checks that the files those steps would read
exist and parse: the JUnit XML and a SARIF 2.1.0 log with the findings. Then a test task
without --junit-out: under Jenkins the JUnit report goes to tamma-junit.xml by default, with
the failing test in it. Neither run may write GitHub workflow commands or GitLab sections.
Needs root (the sandbox) and flawfinder (scripts/setup.sh); exits 77 (skipped) without root.
"""

import glob
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

worker = os.path.abspath(sys.argv[1])
source = pathlib.Path(sys.argv[2]).resolve()
if os.geteuid() != 0:
    print("SKIPPED: needs root for the sandbox")
    sys.exit(77)

jenkinsfile = (source / "ci" / "Jenkinsfile").read_text()
script = re.search(r"script: '''(.*?)'''", jenkinsfile, re.S).group(1)
command_text = re.search(r"tamma-worker run(?:[^\n]*\\\n)*[^\n]*", script).group(0)
command = shlex.split(command_text.replace("\\\n", " "))
junit_pattern = re.search(r"junit testResults: '([^']+)'", jenkinsfile).group(1)
sarif_pattern = re.search(r"sarif\([^)]*pattern: '([^']+)'", jenkinsfile).group(1)
task_variable = re.search(r"(\w+) = '[^']+\.json'", jenkinsfile).group(1)
failures = []


def check(condition, text):
    if not condition:
        failures.append(text)
    return condition


def jenkins_environment(workspace):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GITHUB_", "GITLAB_", "CI_", "RUNNER_", "JENKINS_", "TAMMA_"))
           and k not in ("CI", "BUILD_ID", "BUILD_NUMBER", "WORKSPACE")}
    env.update({
        "JENKINS_URL": "https://jenkins.example.com/",
        "JENKINS_HOME": "/var/lib/jenkins",
        "BUILD_NUMBER": "42",
        "BUILD_ID": "42",
        "BUILD_TAG": "jenkins-tamma-main-42",
        "BUILD_URL": "https://jenkins.example.com/job/tamma/job/main/42/",
        "JOB_NAME": "tamma/main",
        "JOB_BASE_NAME": "main",
        "NODE_NAME": "tamma-agent-1",
        "EXECUTOR_NUMBER": "0",
        "WORKSPACE": str(workspace),
        "CI": "true",
    })
    return env


def run(args, workspace, env):
    result = subprocess.run(args, cwd=workspace, env=env, capture_output=True, text=True,
                            timeout=300)
    output = result.stdout + result.stderr
    for line in output.splitlines():
        check(not line.startswith("::"), f"a GitHub workflow command under Jenkins: {line!r}")
        check("section_start:" not in line and "section_end:" not in line,
              f"a GitLab section marker under Jenkins: {line!r}")
    return result, output


with tempfile.TemporaryDirectory(prefix="tamma-jenkins-") as tmp:
    tmp = pathlib.Path(tmp)
    workspace = tmp / "workspace"
    workspace.mkdir()
    (tmp / "workspaces").mkdir()
    # The worker's own settings, whatever /etc/tamma-worker/config.json says on this machine.
    config = tmp / "config.json"
    config.write_text(json.dumps({"workspaceRoot": str(tmp / "workspaces")}))
    env = jenkins_environment(workspace)

    # 1. The Jenkinsfile's command on a scan task that finds something (exit 1: unstable).
    scan = json.loads((source / "examples" / "flawfinder" / "task.json").read_text())
    scan["artifacts"] = ["scan.sarif"]
    scan["artifactsWhen"] = "always"
    (workspace / "ci").mkdir()
    task_file = workspace / "ci" / "tamma-task.json"
    task_file.write_text(json.dumps(scan))
    args = [worker if a == "tamma-worker" else a for a in command]
    args = [str(task_file) if a == f"${task_variable}" else a for a in args]
    args[2:2] = ["--config", str(config)]
    print("running:", " ".join(shlex.quote(a) for a in args))
    result, output = run(args, workspace, env)
    print(output)
    check(result.returncode == 1, f"the scan task exited {result.returncode}, want 1 (findings)")

    junit_files = glob.glob(str(workspace / junit_pattern), recursive=True)
    if check(junit_files, f"junit pattern {junit_pattern} matches nothing"):
        root = ET.parse(junit_files[0]).getroot()
        cases = root.findall(".//testcase")
        check(root.tag in ("testsuites", "testsuite"), f"JUnit root is <{root.tag}>")
        check([c.get("name") for c in cases] == ["write source", "flawfinder"],
              f"JUnit cases {[c.get('name') for c in cases]}, want the two steps")
    sarif_files = glob.glob(str(workspace / sarif_pattern), recursive=True)
    if check(sarif_files, f"sarif pattern {sarif_pattern} matches nothing"):
        log = json.loads(pathlib.Path(sarif_files[0]).read_text())
        check(log.get("version") == "2.1.0", f"SARIF version {log.get('version')}")
        results = [r for run_ in log.get("runs", []) for r in run_.get("results", [])]
        check(len(results) >= 2, f"{len(results)} SARIF results, want the strcpy and system ones")
    document = json.loads((workspace / "tamma-result.json").read_text())
    check(document.get("status") == "failed", f"result status {document.get('status')}")

    # 2. A test task with a failing test, without --junit-out: Jenkins gets the default file.
    (workspace / "tamma-junit.xml").unlink()
    test_task = {
        "type": "test",
        "timeout": "2m",
        "steps": [{"name": "tests", "run": (
            "mkdir -p out && printf '%s' '<testsuite name=\"unit\" tests=\"2\" failures=\"1\">"
            "<testcase classname=\"calc\" name=\"adds\"/>"
            "<testcase classname=\"calc\" name=\"subtracts\" file=\"calc.py\" line=\"7\">"
            "<failure message=\"2 - 1 != 3\">assert 1 == 3</failure></testcase>"
            "</testsuite>' > out/junit.xml")}],
        "reports": ["out/junit.xml"],
    }
    test_file = tmp / "test-task.json"
    test_file.write_text(json.dumps(test_task))
    result, output = run([worker, "run", "--config", str(config), str(test_file)], workspace, env)
    print(output)
    check(result.returncode == 1, f"the test task exited {result.returncode}, want 1")
    default_junit = workspace / "tamma-junit.xml"
    if check(default_junit.is_file(), "no tamma-junit.xml by default under Jenkins"):
        root = ET.parse(default_junit).getroot()
        failed = [c for c in root.findall(".//testcase") if c.find("failure") is not None]
        check(any(c.get("name") == "subtracts" for c in failed),
              "the failing test is not in tamma-junit.xml")

if failures:
    print("FAILED:")
    for failure in failures:
        print("  " + failure)
    sys.exit(1)
print("PASSED: the Jenkinsfile's command, its JUnit and SARIF inputs, and the default JUnit file")
