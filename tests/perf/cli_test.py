#!/usr/bin/env python3
"""Checks zring-bench's command line as a user sees it (TAP output).

usage: cli_test.py PATH-TO-ZRING-BENCH
"""
import subprocess
import sys

MODES = ["stream", "rr", "crr", "echo", "sink", "suite"]


def run(exe, *args):
    p = subprocess.run([exe, *args], capture_output=True, text=True, timeout=10)
    return p.returncode, p.stdout, p.stderr


def main():
    exe = sys.argv[1]
    checks = []

    rc, out, err = run(exe, "--help")
    checks.append(("--help exits 0 and lists every planned mode",
                   rc == 0 and all(f"  {m} " in out for m in MODES)))

    rc, out, _ = run(exe, "--version")
    checks.append(("--version prints 'zring-bench <version>'", rc == 0 and out.startswith("zring-bench ")))

    rc, out, err = run(exe)
    checks.append(("no arguments is a usage error", rc == 1 and "usage:" in err and out == ""))

    rc, _, err = run(exe, "--no-such-flag")
    checks.append(("an unknown argument is named, exit 1",
                   rc == 1 and "unknown argument '--no-such-flag'" in err and "usage:" in err))

    for m in MODES:
        rc, _, err = run(exe, m)
        checks.append((f"mode '{m}' says it is not built yet, exit 1",
                       rc == 1 and f"mode '{m}' is not built yet (see issue 'zring-bench')" in err))

    print(f"1..{len(checks)}")
    failed = 0
    for i, (name, ok) in enumerate(checks, 1):
        print(f"{'ok' if ok else 'not ok'} {i} - {name}")
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
