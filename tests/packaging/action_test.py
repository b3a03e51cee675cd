#!/usr/bin/env python3
"""action.yml's cache: the key and the library list a restored worker is completed with.

    action_test.py TAMMA_WORKER_BINARY SOURCE_DIR

Runs the action's own "Cache key" script and the part of "Build tamma-worker" that lists the
runtime packages (both taken from action.yml, run with bash as the runner would), and checks:
the key names the OS and a hash of the sources, changes when a source file changes and not
otherwise; the cache step restores exactly the directory the build fills and the run uses;
the build, setup and library steps are skipped or run on the right conditions; the package
list covers every shared library the worker links.
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

worker, source = os.path.abspath(sys.argv[1]), pathlib.Path(sys.argv[2]).resolve()
action = yaml.safe_load((source / "action.yml").read_text())
steps = {step.get("name"): step for step in action["runs"]["steps"]}
failures = []


def check(condition, text):
    if not condition:
        failures.append(text)


def bash(script, env):
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env,
                          capture_output=True, text=True, check=True).stdout


cache = steps.get("Restore the built worker", {})
check(cache.get("uses", "").startswith("actions/cache@"), "no actions/cache step")
check(cache.get("with", {}).get("key") == "${{ steps.key.outputs.key }}", "cache key")
check(cache.get("with", {}).get("path") == "${{ steps.key.outputs.dir }}", "cache path")
for name in ("Install build dependencies", "Build tamma-worker"):
    check("steps.cache.outputs.cache-hit != 'true'" in steps.get(name, {}).get("if", ""),
          f"{name} must be skipped on a cache hit")
check("steps.cache.outputs.cache-hit == 'true'" in
      steps.get("Install the cached worker's libraries", {}).get("if", ""),
      "the libraries step must run on a cache hit")
check("inputs.deb != ''" in steps.get("Install the package", {}).get("if", ""),
      "the package step must run only with a deb")
run_env = steps.get("Run the task", {}).get("env", {})
check("steps.key.outputs.dir" in run_env.get("TAMMA_WORKER", ""),
      "the task must run the cached worker")
check('"$TAMMA_WORKER" run' in steps.get("Run the task", {}).get("run", ""),
      "the run step does not use $TAMMA_WORKER")

with tempfile.TemporaryDirectory(prefix="tamma-action-") as tmp:
    tmp = pathlib.Path(tmp)
    copy = tmp / "action"
    shutil.copytree(source / "src", copy / "src")
    shutil.copy(source / "CMakeLists.txt", copy / "CMakeLists.txt")
    shutil.copytree(source / "packaging", copy / "packaging")

    def key():
        output = tmp / "output"
        output.write_text("")
        env = dict(os.environ, GITHUB_ACTION_PATH=str(copy), GITHUB_OUTPUT=str(output),
                   RUNNER_OS="Linux", RUNNER_ARCH="X64", RUNNER_TEMP=str(tmp))
        bash(steps["Cache key"]["run"], env)
        return dict(line.split("=", 1) for line in output.read_text().splitlines())

    first = key()
    check(re.fullmatch(r"tamma-worker-Linux-X64-[a-z]+[0-9.]*-[0-9a-f]{20}", first.get("key", "")),
          f"cache key {first.get('key')!r}")
    check(first.get("dir") == str(tmp / "tamma-worker-bin"), f"cache dir {first.get('dir')!r}")
    check(key() == first, "the key changes without a source change")
    (copy / "src" / "common" / "units.cc").write_text(
        (copy / "src" / "common" / "units.cc").read_text() + "\n// changed\n")
    check(key()["key"] != first["key"], "the key does not change with a source file")

    # The build step's package list, run on the real binary.
    build = steps["Build tamma-worker"]["run"]
    listing = build[build.index("paths=()"):]
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    shutil.copy(worker, bin_dir / "tamma-worker")
    bash(listing, dict(os.environ, TAMMA_BIN=str(bin_dir)))
    packages = (bin_dir / "runtime-packages").read_text().split()
    check(packages, "no runtime packages listed")
    libraries = re.findall(r"=> (/\S+)", subprocess.run(["ldd", worker], capture_output=True,
                                                         text=True).stdout)
    files = subprocess.run(["dpkg", "-L", *packages], capture_output=True, text=True).stdout
    owned = {os.path.realpath(f) for f in files.split()}
    for library in libraries:
        check(os.path.realpath(library) in owned, f"{library} is in no listed package")
    for needed in ("libcurl4", "libseccomp2"):
        check(any(p.startswith(needed) for p in packages), f"{needed} not listed: {packages}")

if failures:
    print("FAILED:")
    for failure in failures:
        print("  " + failure)
    sys.exit(1)
print(f"PASSED: key {first['key']}; runtime packages {' '.join(packages)}")
