#!/usr/bin/env python3
"""End-to-end check of `gbtd demo` (suite 'tool'): usage errors, --help, and the --json summary
of a small run, whose figures must agree with what the demo plants.

    check_demo.py GBTD_BINARY"""
import json
import subprocess
import sys

failed = 0


def check(ok, name):
    global failed
    print(("ok   " if ok else "FAIL ") + name)
    failed += not ok


def run(*args):
    return subprocess.run([sys.argv[1], "demo"] + list(args), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, timeout=300)


r = run("--help")
check(r.returncode == 0 and "usage: gbtd demo" in r.stdout, "demo --help exits 0 with usage")
r = run("--shape", "3,3")
check(r.returncode == 2 and r.stderr.count("\n") == 1 and "demo" in r.stderr,
      "demo --shape with 2 sizes: exit 2, one line on stderr")
r = run("--ranks", "4,1,1,1", "--shape", "3,3,8,8")
check(r.returncode == 2, "demo rank larger than its mode: exit 2")
r = run("--bogus")
check(r.returncode == 2, "demo unknown option: exit 2")

shape, ranks = [3, 3, 24, 40], [1, 2, 4, 8]
r = run("--json", "--quiet", "--seed", "3", "--threads", "1", "--shape",
        ",".join(map(str, shape)), "--ranks", ",".join(map(str, ranks)))
check(r.returncode == 0 and r.stderr == "", "demo --json --quiet runs silently")
try:
    d = json.loads(r.stdout)
except ValueError:
    d = None
check(d is not None, "demo --json prints one JSON object")
if d:
    check(d["shape"] == shape and d["ranks"] == ranks and d["seed"] == 3, "JSON echoes the options")
    numel = 3 * 3 * 24 * 40
    for m in d["modes"]:
        n = m["mode"]
        check(m["unfolding"] == [shape[n], numel // shape[n]], "mode %d unfolding shape" % n)
        # The sampled entries of the product are checked against direct dot products: the error
        # relative to sum |u||x| is bounded by the summation length times eps.
        check(m["max_rel_err"] <= shape[n] * 2.3e-16, "mode %d product matches direct sums" % n)
        # Noise is 1e-3 of the signal: outside the planted rank lies at most ~1e-6 of the energy.
        check(m["energy_in_rank"] >= 1 - 1e-5, "mode %d energy concentrated in the planted rank" % n)
        check(m["sv2"][0] >= m["sv2"][1] >= m["sv2"][2] >= 0, "mode %d squared singular values sorted" % n)
    # Truncated HOSVD at the planted ranks removes most of the noise and keeps the signal: the
    # relative error is below the noise level and not far below it (noise is nearly orthogonal
    # to the small planted subspace).
    check(0.5e-3 <= d["hosvd_rel_error"] <= 1.0e-3, "truncated HOSVD error at the noise level")
    r2 = run("--json", "--quiet", "--seed", "3", "--threads", "1", "--shape",
             ",".join(map(str, shape)), "--ranks", ",".join(map(str, ranks)))
    d2 = json.loads(r2.stdout)
    check(d2["norm"] == d["norm"] and d2["hosvd_rel_error"] == d["hosvd_rel_error"],
          "same seed, same numbers")
print("%d failed" % failed)
sys.exit(1 if failed else 0)
