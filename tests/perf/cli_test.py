#!/usr/bin/env python3
"""Checks zring-bench's command line as a user sees it (TAP output): help for
every mode, --version, usage errors naming the argument (exit 1).

usage: cli_test.py PATH-TO-ZRING-BENCH
"""
import subprocess
import sys

MODES = ["stream", "rr", "crr", "echo", "sink", "suite", "crypto"]
OWN_HELP = {  # each mode's --help names its required arguments
    "stream": "--target HOST:PORT",
    "rr": "--rate R",
    "crr": "--target HOST:PORT",
    "echo": "--listen ADDR",
    "sink": "--listen ADDR",
}


def run(exe, *args):
    p = subprocess.run([exe, *args], capture_output=True, text=True, timeout=10)
    return p.returncode, p.stdout, p.stderr


def main():
    exe = sys.argv[1]
    checks = []

    rc, out, err = run(exe, "--help")
    checks.append(("--help exits 0 and lists every mode",
                   rc == 0 and all(f"  {m} " in out for m in MODES)))
    checks.append(("--help documents the exit statuses", "3 the run counted errors" in out))

    rc, out, _ = run(exe, "--version")
    checks.append(("--version prints 'zring-bench <version>'", rc == 0 and out.startswith("zring-bench ")))

    rc, out, err = run(exe)
    checks.append(("no arguments is a usage error", rc == 1 and "usage:" in err and out == ""))

    rc, _, err = run(exe, "--no-such-flag")
    checks.append(("an unknown argument is named, exit 1",
                   rc == 1 and "unknown argument '--no-such-flag'" in err and "usage:" in err))

    for m, needle in OWN_HELP.items():
        rc, out, err = run(exe, m, "--help")
        checks.append((f"'{m} --help' exits 0 with the mode's usage", rc == 0 and
                       out.startswith(f"usage: zring-bench {m}") and needle in out))

    for args, msg in [
        (["rr", "--target", "127.0.0.1:1"], "--rate: required for rr"),
        (["stream", "--target", "127.0.0.1:1", "--connections", "abc"], "--connections: 'abc' is not a number"),
        (["stream", "--target", "127.0.0.1:1", "--connections", "0"], "--connections: 0 is out of range"),
        (["stream"], "--target: required for stream"),
        (["crr", "--target", "127.0.0.1:1", "--bogus"], "unknown option '--bogus'"),
        (["stream", "--target", "127.0.0.1:1", "--size", "12Q"], "--size: '12Q' is not a size"),
        (["stream", "--target", "127.0.0.1:1", "--warmup", "-1"], "--warmup: '-1' is not a duration"),
        (["sink"], "--listen: required for sink"),
        (["rr", "--target", "127.0.0.1:1", "--rate", "fast"], "--rate: 'fast' is not a number"),
        (["stream", "--target", "127.0.0.1:1", "--bind", "not-an-ip"], "--bind: 'not-an-ip' is not an IP address"),
    ]:
        rc, out, err = run(exe, *args)
        checks.append((f"usage error names the argument: {' '.join(args)}",
                       rc == 1 and msg in err and f"try 'zring-bench {args[0]} --help'" in err and out == ""))

    print(f"1..{len(checks)}")
    failed = 0
    for i, (name, ok) in enumerate(checks, 1):
        print(f"{'ok' if ok else 'not ok'} {i} - {name}")
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
