#!/usr/bin/env python3
"""Cross-check of `gbtd decompose` against TensorLy 0.9.0 (NumPy backend) on identical inputs.

    tensorly_check.py GBTD_EXE WORK_DIR

Each case writes one .npy, runs gbtd on it (--json summary) and TensorLy on the same array,
then compares relative errors:
  - Tucker (HOOI from the HOSVD) and partial Tucker: both methods iterate to their fixed point
    from the same (sign-free) start, so the errors must agree to 1e-10 relative;
  - CP: gbtd's error must be no worse than TensorLy's (1e-9 relative slack for rounding).
TensorLy's errors are recomputed explicitly from its factors (not taken from its own identity).
One line per check; exit status 1 on any failure."""
import json
import os
import subprocess
import sys

import numpy as np
import tensorly as tl
from tensorly.decomposition import parafac, partial_tucker, tucker

tl.set_backend("numpy")
GBTD, WORK = sys.argv[1], sys.argv[2]
os.makedirs(WORK, exist_ok=True)
failures = 0


def check(ok, name, detail=""):
    global failures
    print(("ok   " if ok else "FAIL ") + name + (" (" + detail + ")" if ok else ": " + detail))
    failures += 0 if ok else 1


def run_gbtd(x, name, args):
    path = os.path.join(WORK, name + ".npy")
    np.save(path, x)
    out = os.path.join(WORK, name + ".h5")
    r = subprocess.run([GBTD, "decompose", "--json", "--quiet", *args, path, "-o", out],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"gbtd failed ({r.returncode}): {r.stderr.strip()}")
    return json.loads(r.stdout)


def rel(x, xh):
    return float(np.linalg.norm(x - xh) / np.linalg.norm(x))


def planted_tucker(rng, shape, ranks, modes, noise):
    core_shape = list(shape)
    for m, r in zip(modes, ranks):
        core_shape[m] = r
    x = rng.standard_normal(core_shape)
    for m, r in zip(modes, ranks):
        x = tl.tenalg.mode_dot(x, rng.standard_normal((shape[m], r)), m)
    n = rng.standard_normal(shape)
    return x + noise * np.linalg.norm(x) / np.linalg.norm(n) * n


rng = np.random.default_rng(20240611)

# ---- Tucker (HOOI) ---------------------------------------------------------------------
for name, shape, ranks, noise in [("tucker_planted", (30, 35, 40), (5, 6, 7), 0.1),
                                  ("tucker_noise", (16, 18, 20), (4, 5, 6), 10.0)]:
    x = planted_tucker(rng, shape, ranks, (0, 1, 2), noise)
    g = run_gbtd(x, name, ["--method", "tucker", "--ranks", ",".join(map(str, ranks)),
                           "--tol", "0", "--max-iter", "300"])
    core, factors = tucker(x, rank=list(ranks), init="svd", n_iter_max=300, tol=0)
    et = rel(x, tl.tucker_to_tensor((core, factors)))
    check(abs(g["rel_error"] - et) <= 1e-10 * et, f"{name}: HOOI error equals TensorLy's",
          f"gbtd {g['rel_error']!r} tensorly {et!r}")

# ---- partial Tucker (Tucker-2 of a conv kernel on the channel modes) ------------------------
x = planted_tucker(rng, (3, 3, 32, 48), (8, 12), (2, 3), 0.2)
g = run_gbtd(x, "tucker2", ["--method", "tucker", "--modes", "2,3", "--ranks", "8,12",
                            "--tol", "0", "--max-iter", "300"])
(core, factors), _ = partial_tucker(x, rank=[8, 12], modes=[2, 3], init="svd", n_iter_max=300,
                                    tol=0)
xh = tl.tenalg.multi_mode_dot(core, factors, modes=[2, 3])
et = rel(x, xh)
check(abs(g["rel_error"] - et) <= 1e-10 * et, "tucker2: partial Tucker error equals TensorLy's",
      f"gbtd {g['rel_error']!r} tensorly {et!r}")
check(g["params"] == core.size + sum(f.size for f in factors), "tucker2: same parameter count",
      f"{g['params']} vs {core.size + sum(f.size for f in factors)}")

# ---- CP ---------------------------------------------------------------------------------
for name, shape, rank, noise in [("cp_planted", (20, 22, 24), 5, 0.01),
                                 ("cp_noise", (12, 13, 14), 4, 1.0)]:
    facs = [rng.standard_normal((n, rank)) for n in shape]
    x = tl.cp_to_tensor((np.ones(rank), facs))
    n = rng.standard_normal(shape)
    x = x + noise * np.linalg.norm(x) / np.linalg.norm(n) * n
    g = run_gbtd(x, name, ["--method", "cp", "--ranks", str(rank), "--tol", "1e-12",
                           "--max-iter", "1000", "--restarts", "3"])
    cp = parafac(x, rank, init="random", random_state=0, n_iter_max=1000, tol=1e-10)
    et = rel(x, tl.cp_to_tensor(cp))
    check(g["rel_error"] <= et * (1 + 1e-9), f"{name}: CP error no worse than TensorLy's",
          f"gbtd {g['rel_error']!r} tensorly {et!r}")

print(f"{'all' if failures == 0 else failures} {'passed' if failures == 0 else 'failed'}")
sys.exit(1 if failures else 0)
