"""NumPy reference for bench/ttm: the mode-n product done the way TensorLy's mode_dot does it
(unfold = moveaxis + reshape, which copies X; one matmul; fold = reshape + moveaxis, a view).

    OPENBLAS_NUM_THREADS=T python ttm_numpy.py REPS SHAPE:MODE:J [SHAPE:MODE:J ...]

SHAPE is "256x256x256". Prints one JSON object per case (min and median seconds of REPS timed
runs after one warm-up, and a max-abs check value), then one line with the peak RSS.
The thread count comes from the environment, set by the caller before NumPy loads OpenBLAS."""
import json
import resource
import sys
import time

import numpy as np


def mode_dot(x, u, n):
    full = list(x.shape)
    full[n] = u.shape[0]
    unfolded = np.moveaxis(x, n, 0).reshape(x.shape[n], -1)
    res = u @ unfolded
    other = [full[n]] + [s for k, s in enumerate(full) if k != n]
    return np.moveaxis(res.reshape(other), 0, n)


def main():
    reps = int(sys.argv[1])
    rng = np.random.default_rng(1)
    for spec in sys.argv[2:]:
        shape_s, mode_s, j_s = spec.split(":")
        shape = [int(s) for s in shape_s.split("x")]
        mode, j = int(mode_s), int(j_s)
        x = rng.standard_normal(shape)
        u = rng.standard_normal((j, shape[mode]))
        y = mode_dot(x, u, mode)  # warm-up, and a spot check against a direct dot product
        idx = [s // 2 for s in y.shape]
        xi = list(idx)
        xi[mode] = slice(None)
        check = abs(y[tuple(idx)] - u[idx[mode]] @ x[tuple(xi)])
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            y = mode_dot(x, u, mode)
            times.append(time.perf_counter() - t0)
        del y, x, u
        times.sort()
        print(json.dumps({"case": spec, "min_s": times[0], "median_s": times[len(times) // 2],
                          "check": check}), flush=True)
    print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}))


if __name__ == "__main__":
    main()
