"""TensorLy side of bench/decomp: runs TensorLy 0.9 (NumPy backend) on the .npy inputs that
bench/decomp wrote, with the thread count set by the caller (OPENBLAS_NUM_THREADS).

usage: decomp_tensorly.py REPS CASE...
       decomp_tensorly.py --serve
  CASE = tucker:PATH:r0,r1,r2 | partial:PATH:m0,m1:r0,r1 | cp:PATH:R
Prints one JSON object per case: min and median seconds of REPS timed calls (after a warm-up
call for REPS > 1), iterations, and the relative error recomputed from the returned factors.
With --serve it reads one CASE per line on stdin, runs it once (the input array is loaded once
per path) and answers one JSON line with "s", "iterations" and "rel_error", so that the caller
can alternate these runs with its own under the same machine load."""
import json
import statistics
import sys
import time

import numpy as np
import tensorly as tl
from tensorly.decomposition import parafac, partial_tucker, tucker

tl.set_backend("numpy")


def run(kind, x, args):
    if kind == "tucker":
        ranks = [int(v) for v in args[0].split(",")]
        (core, factors), errs = tucker(x, rank=ranks, init="svd", return_errors=True)
        return tl.tucker_to_tensor((core, factors)), len(errs)
    if kind == "partial":
        modes = [int(v) for v in args[0].split(",")]
        ranks = [int(v) for v in args[1].split(",")]
        (core, factors), errs = partial_tucker(x, rank=ranks, modes=modes, init="svd")
        return tl.tenalg.multi_mode_dot(core, factors, modes=modes), len(errs)
    rank = int(args[0])
    cp, errs = parafac(x, rank, init="random", random_state=0, return_errors=True)
    return tl.cp_to_tensor(cp), len(errs)


def serve():
    arrays = {}
    for line in sys.stdin:
        case = line.strip()
        if not case:
            continue
        kind, path, *args = case.split(":")
        if path not in arrays:
            arrays[path] = np.load(path)
        x = arrays[path]
        t0 = time.perf_counter()
        xh, iters = run(kind, x, args)
        t1 = time.perf_counter()
        err = float(np.linalg.norm(x - xh) / np.linalg.norm(x))
        print(json.dumps({"case": case, "s": t1 - t0, "iterations": iters, "rel_error": err}),
              flush=True)


def main():
    if sys.argv[1] == "--serve":
        serve()
        return
    reps = int(sys.argv[1])
    for case in sys.argv[2:]:
        kind, path, *args = case.split(":")
        x = np.load(path)
        times = []
        for r in range(reps + (1 if reps > 1 else 0)):
            t0 = time.perf_counter()
            xh, iters = run(kind, x, args)
            t1 = time.perf_counter()
            if reps == 1 or r > 0:
                times.append(t1 - t0)
        err = float(np.linalg.norm(x - xh) / np.linalg.norm(x))
        print(json.dumps({"case": case, "min_s": min(times), "median_s": statistics.median(times),
                          "iterations": iters, "rel_error": err}), flush=True)


if __name__ == "__main__":
    main()
