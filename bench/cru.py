#!/usr/bin/env python3
"""bench/cru: the CRU pipeline on the pretrained CIFAR ResNets, end to end, by driving `gbtd`
(long: run by hand, not by meson test).

    bench/cru.py GBTD [--data DIR] [--cases r20,r20-indep,r56,r56-indep,speed] [--epochs N]
                 [--epochs56 N] [--threads T] [--work DIR] [--python PY]

DIR is ../shared/data (models/ and cifar-10-batches-bin/). Cases:
  r20        ResNet-20: stages 2 and 3 collectively (R = 8 terms) to 30 % of their conv
             parameters, i.e. <= 40 % of the network's conv parameters; response refit of each
             member's own 1x1 on 1,024 training images with a constant per channel (--intercept,
             docs/cru.md 5a); fine-tuning N epochs (default 15: the ResNet-20 target sets no
             epoch limit; 10 end at ~90.7 %) with distillation from the source (T = 4,
             alpha = 0.5), augmentation, lr 0.01 cosine, new layers at 0.1x.
  r20-indep  the same budget with independent per-convolution Tucker-2 (--groups-of 1, R = 1).
  r56        ResNet-56: stages 2 and 3 (R = 8) to 45.1 % of their conv parameters, i.e. <= 50 %
             of the network's conv parameters (and of all its parameters); refit on 2,048
             images; <= 10 epochs (default 10), lr 0.005, otherwise the same recipe.
  r56-indep  its independent Tucker-2 baseline at the same budget.
  speed      time per fine-tuning step of the ResNet-20 CRU-Net: `gbtd finetune` against
             bench/cru_torch.py (PyTorch, same network, batch and threads), same run.
Prints one line per case and one JSON line per case ("bench cru {...}"); the ratios are
measured in this run. The paper's numbers are not ours; the recipe is (docs/cru.md)."""
import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def conv_params(depth):
    """Convolution parameters of the CIFAR ResNet-depth (stem, three stages, no shortcut convs)."""
    n = (depth - 2) // 6
    return (27 * 16 + 2 * n * 9 * 16 * 16 + 9 * 16 * 32 + (2 * n - 1) * 9 * 32 * 32
            + 9 * 32 * 64 + (2 * n - 1) * 9 * 64 * 64)


def run(cmd, log):
    t0 = time.time()
    with open(log, "w") as f:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=f, text=True)
    if r.returncode != 0:
        sys.exit("bench/cru: %s failed (status %d), see %s" % (" ".join(cmd[:2]), r.returncode, log))
    return r.stdout, time.time() - t0


def pipeline(a, name, depth, stages, terms, budget, groups_of, epochs, lr, refit, intercept=False):
    model = os.path.join(a.data, "models", "resnet%d-cifar10.safetensors" % depth)
    cifar = os.path.join(a.data, "cifar-10-batches-bin")
    comp = os.path.join(a.work, name + ".h5")
    ft = os.path.join(a.work, name + "-ft.h5")
    cmd = [a.gbtd, "compress", model, "--stages", stages, "--terms", str(terms), "--budget",
           str(budget), "--data", "cifar10", "--data-dir", cifar, "--norm", "imagenet", "--refit", str(refit),
           "--threads", str(a.threads), "--json", "-o", comp]
    if groups_of:
        cmd += ["--groups-of", str(groups_of)]
    if intercept:
        cmd.append("--intercept")
    out, t_comp = run(cmd, os.path.join(a.work, name + "-compress.log"))
    c = json.loads(out)
    before = sum(s["params_before"] for s in c["stages"])
    after = sum(s["params_after"] for s in c["stages"])
    total = conv_params(depth)
    res = {"case": name, "source_top1": c["top1_source"], "built_top1": c["top1_cru_as_built"],
           "before_ft_top1": c["top1_cru"], "stages": stages, "terms": terms, "budget": budget,
           "groups_of": groups_of, "stage_params": [before, after],
           "conv_params": [total, total - before + after],
           "conv_fraction": (total - before + after) / total, "stage_fraction": after / before,
           "kernel_error": [s["kernel_error"] for s in c["stages"]], "spec": c["spec"],
           "seconds_compress": t_comp, "epochs": epochs, "lr": lr, "refit_images": refit,
           "refit_error": [c["refit_error_before"], c["refit_error_after"]]}
    out, t_ft = run([a.gbtd, "finetune", comp, "--data", "cifar10", "--data-dir", cifar, "--norm",
                     "imagenet", "--epochs", str(epochs), "--lr", str(lr), "--augment", "--teacher",
                     model, "--threads", str(a.threads), "--json", "-o", ft],
                    os.path.join(a.work, name + "-finetune.log"))
    f = json.loads(out)
    res.update({"after_ft_top1": f["top1_after"], "seconds_finetune": t_ft,
                "seconds_per_epoch": f["seconds_per_epoch"]})
    print("%-10s conv params %d -> %d (%.1f %%; stages %.1f %%)  top-1: source %.2f, built %.2f, "
          "refitted %.2f, after %d epochs %.2f  (%.0f s/epoch)"
          % (name, total, total - before + after, 100 * res["conv_fraction"],
             100 * res["stage_fraction"], res["source_top1"], res["built_top1"],
             res["before_ft_top1"], epochs, res["after_ft_top1"], res["seconds_per_epoch"]))
    print("bench cru " + json.dumps(res), flush=True)


def speed(a):
    """gbtd finetune (no teacher, no test) vs PyTorch on the ResNet-20 CRU-Net, same batch."""
    model = os.path.join(a.data, "models", "resnet20-cifar10.safetensors")
    cifar = os.path.join(a.data, "cifar-10-batches-bin")
    comp = os.path.join(a.work, "speed.h5")
    out, _ = run([a.gbtd, "compress", model, "--stages", "2,3", "--terms", "8", "--budget", "0.3",
                  "--threads", str(a.threads), "--json", "--quiet", "-o", comp],
                 os.path.join(a.work, "speed-compress.log"))
    spec = json.loads(out)["spec"]
    steps, batch = 40, 128
    res = {"case": "speed", "spec": spec, "steps": steps, "batch": batch, "threads": a.threads}
    for rep in range(2):  # alternate the two, keep the best of each (the machine is shared)
        out, _ = run([a.gbtd, "finetune", comp, "--data", "cifar10", "--data-dir", cifar, "--norm",
                      "imagenet", "--epochs", "1", "--steps", str(steps), "--batch", str(batch),
                      "--limit", "1", "--threads", str(a.threads), "--json", "--quiet", "-o",
                      os.path.join(a.work, "speed-ft.h5")], os.path.join(a.work, "speed-ft.log"))
        g = steps * batch / json.loads(out)["seconds_per_epoch"]
        out, _ = run([a.python, os.path.join(HERE, "cru_torch.py"), spec, "--steps", str(steps),
                      "--batch", str(batch), "--threads", str(a.threads)],
                     os.path.join(a.work, "speed-torch.log"))
        t = json.loads(out)["images_per_s"]
        res["gbtd_images_per_s"] = max(res.get("gbtd_images_per_s", 0), g)
        res["torch_images_per_s"] = max(res.get("torch_images_per_s", 0), t)
    g, t = res["gbtd_images_per_s"], res["torch_images_per_s"]
    res["gbtd_seconds_per_epoch"] = 50000 / g
    res["torch_seconds_per_epoch"] = 50000 / t
    res["ratio_time_gbtd_over_torch"] = t / g
    print("speed      ResNet-20 CRU-Net training, batch %d, %d threads: gbtd %.0f images/s "
          "(%.0f s/epoch), PyTorch %.0f images/s (%.0f s/epoch), time ratio gbtd/PyTorch %.2f"
          % (batch, a.threads, g, 50000 / g, t, 50000 / t, t / g))
    print("bench cru " + json.dumps(res), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("gbtd")
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "shared", "data"))
    ap.add_argument("--cases", default="speed,r20,r20-indep,r56,r56-indep")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--epochs56", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default="bench-cru-work")
    ap.add_argument("--python", default=sys.executable)
    a = ap.parse_args()
    if a.epochs56 > 10:
        sys.exit("bench/cru: ResNet-56 gets at most 10 fine-tuning epochs (the target's rule)")
    os.makedirs(a.work, exist_ok=True)
    for case in a.cases.split(","):
        if case == "speed":
            speed(a)
        elif case == "r20":
            pipeline(a, case, 20, "2,3", 8, 0.30, 0, a.epochs, 0.01, 1024, True)
        elif case == "r20-indep":
            pipeline(a, case, 20, "2,3", 1, 0.30, 1, a.epochs, 0.01, 1024, True)
        elif case == "r56":
            pipeline(a, case, 56, "2,3", 8, 0.451, 0, a.epochs56, 0.005, 2048)
        elif case == "r56-indep":
            pipeline(a, case, 56, "2,3", 1, 0.451, 1, a.epochs56, 0.005, 2048)
        else:
            sys.exit("bench/cru: unknown case '%s'" % case)


if __name__ == "__main__":
    main()
