#!/usr/bin/env python3
"""Summarises the cgroup v2 VM test run (scripts/vm/run-v2-tests.sh).

Reads RESULTS/<vm>/report.xml (GoogleTest's XML) and the timing files boot.sh and guest.sh
leave beside it, and prints what ran, passed, failed and was skipped (each skip with its
reason), the wall time and the boot times. Exits 1 if any test failed, any VM has no report
or a non-zero status, or no test ran at all.
"""

import argparse
import pathlib
import sys
import xml.etree.ElementTree as ET


def read(path: pathlib.Path, default: str = "") -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return default


def is_location(line: str) -> bool:
    """GoogleTest's "file:line" before a message."""
    head, _, number = line.strip().rpartition(":")
    return bool(head) and number.isdigit()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("results", type=pathlib.Path)
    parser.add_argument("--wall", type=float, default=None, help="seconds the whole step took")
    args = parser.parse_args()

    ok = True
    totals = {"run": 0, "passed": 0, "failed": 0, "skipped": 0}
    skips, failures, problems, boots, rows = [], [], [], [], []
    for vm in sorted(p for p in args.results.iterdir() if p.is_dir()):
        rc = read(vm / "rc", "?")
        attempts = read(vm / "attempts", "1")
        boot = read(vm / "boot-seconds")
        wall = read(vm / "wall-seconds", "?")
        if boot:
            boots.append(float(boot))
        counts = {"run": 0, "passed": 0, "failed": 0, "skipped": 0}
        report = vm / "report.xml"
        if not report.exists():
            problems.append(f"{vm.name}: no test report (exit {rc}; see its output.log)")
        else:
            try:
                root = ET.parse(report).getroot()
            except ET.ParseError as e:
                problems.append(f"{vm.name}: unreadable report: {e}")
                root = ET.Element("testsuites")
            for case in root.iter("testcase"):
                if case.get("status") == "notrun":
                    continue  # DISABLED_ tests
                name = f"{case.get('classname')}.{case.get('name')}"
                counts["run"] += 1
                failure = case.find("failure")
                skipped = case.find("skipped")
                if failure is not None:
                    counts["failed"] += 1
                    message = (failure.get("message") or failure.text or "").strip()
                    lines = [l.strip() for l in message.splitlines() if l.strip()]
                    where = lines.pop(0) if len(lines) > 1 and is_location(lines[0]) else ""
                    text = " ".join(lines[:3])
                    failures.append(f"{name} [{vm.name}]: {text}" + (f" ({where})" if where else ""))
                elif skipped is not None or case.get("result") == "skipped":
                    counts["skipped"] += 1
                    reason = ""
                    if skipped is not None:
                        reason = (skipped.get("message") or skipped.text or "").strip()
                    # GoogleTest puts "file:line\n" before the message.
                    lines = [l for l in reason.splitlines() if l.strip()]
                    if len(lines) > 1 and is_location(lines[0]):
                        lines = lines[1:]
                    skips.append(f"{name}: {' '.join(lines) if lines else '(no reason given)'}")
                else:
                    counts["passed"] += 1
            if counts["run"] == 0:
                problems.append(f"{vm.name}: ran no test (a filter that matches nothing?)")
        if rc != "0":
            problems.append(f"{vm.name}: exit status {rc}")
        for key in totals:
            totals[key] += counts[key]
        retry = f", booted {attempts}x (RETRIED)" if attempts != "1" else ""
        rows.append(
            f"  {vm.name:<14} run {counts['run']:>4}  passed {counts['passed']:>4}  "
            f"failed {counts['failed']:>3}  skipped {counts['skipped']:>3}  "
            f"wall {wall}s  boot {boot or '?'}s{retry}"
        )

    print("=" * 78)
    print("cgroup v2 VM tests (scripts/vm/run-v2-tests.sh)")
    for row in rows:
        print(row)
    print(
        f"  total: run {totals['run']}, passed {totals['passed']}, failed {totals['failed']}, "
        f"skipped {totals['skipped']}"
    )
    if args.wall is not None:
        print(f"  wall time {args.wall:.1f}s", end="")
        if boots:
            print(
                f"; boot to test {min(boots):.1f}-{max(boots):.1f}s "
                f"(mean {sum(boots) / len(boots):.1f}s)",
                end="",
            )
        print()
    if skips:
        print(f"skipped ({len(skips)}), each NOT EXERCISED on cgroup v2 here:")
        for line in sorted(skips):
            print(f"  - {line}")
    left_out = read(args.results / "left-out").split()
    if left_out:
        print(f"left out of the VMs by filter ({len(left_out)}), run on the host only:")
        for name in left_out:
            print(f"  - {name}")
    if failures:
        ok = False
        print(f"FAILED ({len(failures)}):")
        for line in failures:
            print(f"  - {line}")
    if problems:
        ok = False
        print("PROBLEMS:")
        for line in problems:
            print(f"  - {line}")
    if totals["run"] == 0:
        ok = False
    print("=" * 78)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
