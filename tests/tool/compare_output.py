#!/usr/bin/env python3
"""Run a program and compare its standard output with an expected-output file.

    compare_output.py PROGRAM EXPECTED_FILE [ARGS...]

Lines are compared token by token (split on white space): numbers match when they agree to a
relative 1e-5 (or absolutely within 1e-9), so that the last printed digit may differ across
BLAS builds; other tokens must be equal. A line of the expected file that starts with "time"
marks a timing line: it matches any output line that starts with "time" (values ignored).
Exit status 0 on a match, 1 otherwise (with the first differing line shown)."""
import subprocess
import sys


def num(tok):
    try:
        return float(tok.strip(",;:()[]"))
    except ValueError:
        return None


def same_line(got, want):
    if want.startswith("time"):
        return got.startswith("time")
    gt, wt = got.split(), want.split()
    if len(gt) != len(wt):
        return False
    for g, w in zip(gt, wt):
        if g == w:
            continue
        a, b = num(g), num(w)
        if a is None or b is None or abs(a - b) > max(1e-9, 1e-5 * abs(b)):
            return False
    return True


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: compare_output.py PROGRAM EXPECTED_FILE [ARGS...]")
    prog, expected = sys.argv[1], sys.argv[2]
    run = subprocess.run([prog] + sys.argv[3:], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, timeout=600)
    if run.returncode != 0:
        print("%s exited with status %d\n%s" % (prog, run.returncode, run.stderr))
        return 1
    got = run.stdout.splitlines()
    with open(expected) as f:
        want = f.read().splitlines()
    for i in range(max(len(got), len(want))):
        g = got[i] if i < len(got) else "<missing>"
        w = want[i] if i < len(want) else "<missing>"
        if not same_line(g, w):
            print("line %d differs\n  got:      %s\n  expected: %s" % (i + 1, g, w))
            return 1
    print("ok: %d lines match %s" % (len(want), expected))
    return 0


if __name__ == "__main__":
    sys.exit(main())
