"""PyTorch side of bench/conv: times forward + backward (input and weight gradients) of the
convolutions that bench/conv times in gbtd, with the same thread count.

usage: conv_torch.py THREADS REPS CASE...   CASE = n,c_in,h,w,c_out,k,stride,pad,groups
Prints one JSON object per case: {"case": CASE, "min_s": ..., "median_s": ...}."""
import json
import statistics
import sys
import time

import torch


def main():
    threads, reps = int(sys.argv[1]), int(sys.argv[2])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    for case in sys.argv[3:]:
        n, ci, h, w, co, k, s, p, g = (int(v) for v in case.split(","))
        conv = torch.nn.Conv2d(ci, co, k, stride=s, padding=p, groups=g, bias=False)
        x = torch.randn(n, ci, h, w, requires_grad=True)
        with torch.no_grad():
            gy = torch.randn_like(conv(x))
        times = []
        for r in range(reps + 1):
            x.grad = None
            conv.weight.grad = None
            t0 = time.perf_counter()
            conv(x).backward(gy)
            t1 = time.perf_counter()
            if r > 0:  # the first run warms up
                times.append(t1 - t0)
        print(json.dumps({"case": case, "min_s": min(times),
                          "median_s": statistics.median(times)}), flush=True)


if __name__ == "__main__":
    main()
