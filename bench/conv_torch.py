"""PyTorch side of bench/conv: times forward + backward (input and weight gradients) of the
convolutions that bench/conv times in gbtd, with the same thread count.

usage: conv_torch.py THREADS REPS CASE...   CASE = n,c_in,h,w,c_out,k,stride,pad,groups
                                              or bn,n,c,h,w / bnrelu,n,c,h,w (batch norm in
                                              training mode, forward + backward, optionally
                                              followed by ReLU)
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
        fields = case.split(",")
        if fields[0] in ("bn", "bnrelu"):
            n, c, h, w = (int(v) for v in fields[1:])
            layer = torch.nn.BatchNorm2d(c)
            if fields[0] == "bnrelu":
                layer = torch.nn.Sequential(layer, torch.nn.ReLU())
            x = torch.randn(n, c, h, w, requires_grad=True)
        else:
            n, ci, h, w, co, k, s, p, g = (int(v) for v in fields)
            layer = torch.nn.Conv2d(ci, co, k, stride=s, padding=p, groups=g, bias=False)
            x = torch.randn(n, ci, h, w, requires_grad=True)
        with torch.no_grad():
            gy = torch.randn_like(layer(x))
        times = []
        for r in range(reps + 1):
            x.grad = None
            layer.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            layer(x).backward(gy)
            t1 = time.perf_counter()
            if r > 0:  # the first run warms up
                times.append(t1 - t0)
        print(json.dumps({"case": case, "min_s": min(times),
                          "median_s": statistics.median(times)}), flush=True)


if __name__ == "__main__":
    main()
