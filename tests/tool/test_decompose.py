#!/usr/bin/env python3
"""End-to-end tests of `gbtd decompose`.

    test_decompose.py GBTD_EXE WORK_DIR

A NumPy-made tensor goes through the command; h5py reads the factors back, reconstructs the
tensor as docs/formats.md describes, and the error must match the printed summary. Then each
impossible request must be refused with exit status 2, one line on stderr, and no output file.
One line per check; exit status 1 on any failure."""
import json
import os
import subprocess
import sys

import numpy as np

GBTD, WORK = sys.argv[1], sys.argv[2]
os.makedirs(WORK, exist_ok=True)
failures = 0
try:
    import h5py
except Exception as exc:  # a broken h5py is a set-up problem, reported as such
    print(f"FAIL h5py cannot be imported by {sys.executable}: {exc}")
    sys.exit(1)


def check(ok, name, detail=""):
    global failures
    print(("ok   " if ok else "FAIL ") + name + ("" if ok else ": " + detail))
    failures += 0 if ok else 1


def run(args):
    return subprocess.run([GBTD, "decompose", *args], capture_output=True, text=True)


def p(name):
    return os.path.join(WORK, name)


def tucker_reconstruct(f):
    x = f["core"][()]
    for k, m in enumerate(f.attrs["modes"]):
        u = f["factors"][str(k)][()]
        x = np.moveaxis(np.tensordot(u, x, axes=(1, m)), 0, m)
    return x


def cp_reconstruct(f):
    w = f["weights"][()]
    facs = [f["factors"][str(n)][()] for n in range(len(f.attrs["shape"]))]
    x = np.zeros(tuple(f.attrs["shape"]))
    for r in range(len(w)):
        t = w[r]
        for a in facs:
            t = np.multiply.outer(t, a[:, r])
        x += t
    return x


def btd_reconstruct(f):
    x = np.zeros(tuple(f.attrs["shape"]))
    for r in range(int(f.attrs["nterms"])):
        g = f["terms"][str(r)]
        t = g["core"][()]
        for k, m in enumerate(f.attrs["modes"]):
            t = np.moveaxis(np.tensordot(g["factors"][str(k)][()], t, axes=(1, m)), 0, m)
        x += t
    return x


rng = np.random.default_rng(7)
x = np.einsum("abc,ia,jb,kc->ijk", rng.standard_normal((3, 4, 5)),
              rng.standard_normal((12, 3)), rng.standard_normal((13, 4)),
              rng.standard_normal((14, 5)))
x += 0.05 * np.linalg.norm(x) / np.sqrt(x.size) * rng.standard_normal(x.shape)
np.save(p("x.npy"), x)
kern = rng.standard_normal((3, 3, 8, 10))
with h5py.File(p("kernel.h5"), "w") as f:
    f["layer1/weight"] = kern
    f["other"] = np.ones(3)

cases = [
    ("tucker", ["--method", "tucker", "--ranks", "3,4,5", p("x.npy")], x, tucker_reconstruct),
    ("tucker2", ["--method", "tucker", "--modes", "2,3", "--ranks", "4,5",
                 p("kernel.h5") + ":/layer1/weight"], kern, tucker_reconstruct),
    ("tucker_target", ["--method", "tucker", "--error-target", "0.1", p("x.npy")], x,
     tucker_reconstruct),
    ("cp", ["--method", "cp", "--ranks", "4", "--max-iter", "200", p("x.npy")], x,
     cp_reconstruct),
    ("btd", ["--method", "btd", "--terms", "2", "--modes", "2,3", "--ranks", "2,2",
             "--max-iter", "30", p("kernel.h5") + ":layer1/weight"], kern, btd_reconstruct),
]
for name, args, ref, recon in cases:
    out = p(name + ".h5")
    if os.path.exists(out):
        os.remove(out)
    r = run(["--json", *args, "-o", out])
    if r.returncode != 0:
        check(False, f"{name}: runs", f"exit {r.returncode}: {r.stderr.strip()}")
        continue
    s = json.loads(r.stdout)
    with h5py.File(out, "r") as f:
        ok_attrs = (f.attrs["gbtd_format"] == "decomposition" and f.attrs["format_version"] == 1
                    and f.attrs["method"] == s["method"]
                    and list(f.attrs["shape"]) == list(ref.shape))
        xh = recon(f)
        stored = float(f.attrs["rel_error"])
        params = int(f.attrs["params"])
    e = float(np.linalg.norm(ref - xh) / np.linalg.norm(ref))
    check(ok_attrs, f"{name}: file attributes (format, version, method, shape)")
    # The summary is printed with 17 digits; the error from the file's factors differs only
    # by rounding in the reconstruction (a few ulps of ||X||, relative to the error itself).
    check(abs(e - s["rel_error"]) <= 1e-9 * max(e, 1e-3), f"{name}: h5py reconstruction error "
          "matches the printed summary", f"{e!r} vs {s['rel_error']!r}")
    check(stored == s["rel_error"] and params == s["params"], f"{name}: file and summary agree")
    check(abs(s["compression"] - ref.size / params) <= 1e-5 * s["compression"],
          f"{name}: compression = numel / params")
if os.path.exists(p("tucker_target.h5")):
    s = json.loads(run(["--json", "--quiet", "--method", "tucker", "--error-target", "0.1",
                        p("x.npy"), "-o", p("tucker_target.h5")]).stdout)
    check(s["rel_error"] <= 0.1, "error target met", str(s["rel_error"]))

# Text summary and progress.
r = run(["--method", "tucker", "--ranks", "3", p("x.npy"), "-o", p("text.h5")])
check(r.returncode == 0 and "rel. error" in r.stdout and "compression" in r.stdout
      and "iter" in r.stderr, "text summary on stdout, progress on stderr")

# Refusals: exit 2, one line on stderr, no output file.
bad = x.copy()
bad[1, 2, 3] = np.nan
np.save(p("nan.npy"), bad)
inf = x.copy()
inf[0, 0, 0] = np.inf
np.save(p("inf.npy"), inf)
np.save(p("zero.npy"), np.zeros((4, 5, 6)))
refusals = [
    ("rank larger than the dimension", ["--method", "tucker", "--ranks", "3,4,15", p("x.npy")]),
    ("mode that does not exist", ["--method", "tucker", "--modes", "0,3", "--ranks", "2",
                                  p("x.npy")]),
    ("NaN input", ["--method", "cp", "--ranks", "2", p("nan.npy")]),
    ("Inf input", ["--method", "tucker", "--ranks", "2", p("inf.npy")]),
    ("zero tensor", ["--method", "tucker", "--ranks", "2", p("zero.npy")]),
    ("zero iterations", ["--method", "cp", "--ranks", "2", "--max-iter", "0", p("x.npy")]),
    ("CP rank beyond any tensor of the shape", ["--method", "cp", "--ranks", "200", p("x.npy")]),
    ("BTD: R x rank beyond what the data holds", ["--method", "btd", "--terms", "40", "--modes",
                                                  "2,3", "--ranks", "4,4",
                                                  p("kernel.h5") + ":layer1/weight"]),
    ("HDF5 file with several datasets and none named", ["--method", "tucker", "--ranks", "2",
                                                        p("kernel.h5")]),
    ("missing dataset", ["--method", "tucker", "--ranks", "2", p("kernel.h5") + ":nope"]),
    ("missing file", ["--method", "tucker", "--ranks", "2", p("missing.npy")]),
    ("unknown method", ["--method", "pca", p("x.npy")]),
    ("cp with several ranks", ["--method", "cp", "--ranks", "2,3", p("x.npy")]),
]
for name, args in refusals:
    out = p("refused.h5")
    if os.path.exists(out):
        os.remove(out)
    r = run([*args, "-o", out])
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    check(r.returncode == 2 and len(lines) == 1 and not os.path.exists(out),
          f"refused with exit 2 and one line: {name}",
          f"exit {r.returncode}, stderr {r.stderr!r}")

print(f"{failures} failed" if failures else "all passed")
sys.exit(1 if failures else 0)
