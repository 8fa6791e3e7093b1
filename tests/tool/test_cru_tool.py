#!/usr/bin/env python3
"""End-to-end checks of the CRU commands (suite 'tool'): a SHORT `gbtd demo` run (--json, a few
steps), `gbtd compress` on the pretrained ResNet-20 (when ../shared/data is present), and the
refusals: unrecognised weights, a stage that does not exist, a budget that cannot be met, data
whose image size does not match the network -- each one line on stderr, exit 2, nothing written.

    test_cru_tool.py GBTD_BINARY WORKDIR DATA_DIR"""
import json
import os
import subprocess
import sys

gbtd, work, data = sys.argv[1], sys.argv[2], sys.argv[3]
os.makedirs(work, exist_ok=True)
failed = 0


def check(ok, name):
    global failed
    print(("ok   " if ok else "FAIL ") + name)
    failed += not ok


def run(*args):
    return subprocess.run([gbtd] + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, timeout=600)


def refused(r, name, out=None):
    check(r.returncode == 2 and r.stderr.count("\n") == 1 and r.stdout == "",
          name + ": exit 2, one line on stderr (" + r.stderr.strip()[:100] + ")")
    if out:
        check(not os.path.exists(out), name + ": nothing written")


r = run("demo", "--help")
check(r.returncode == 0 and "usage: gbtd demo" in r.stdout and "--tensors" in r.stdout,
      "demo --help names the CRU demo and --tensors")
r = run("demo", "--ranks", "3,3")
refused(r, "demo --ranks without --tensors")
r = run("demo", "--budget", "1.5")
refused(r, "demo --budget 1.5")

# A short demo: 12 training steps, 8 fine-tuning steps, 500 test images, small network.
r = run("demo", "--json", "--quiet", "--threads", "2", "--arch",
        "custom:block=bottleneck,units=3/3,width=32/64,inner=8/16,stem-width=8",
        "--stages", "1,2", "--steps", "12", "--ft-steps", "8", "--limit", "500", "--budget", "0.5")
check(r.returncode == 0 and r.stderr == "", "short demo --json --quiet runs silently")
try:
    d = json.loads(r.stdout)
except ValueError:
    d = None
check(d is not None, "demo --json prints one JSON object")
if d:
    st = d["stages"]
    check([s["stage"] for s in st] == [1, 2], "both stages reported")
    check(all(s["params_after"] <= 0.5 * s["params_before"] for s in st), "each stage within its budget")
    check(all(s["members"] == 2 for s in st), "units 1 and 2 of each stage are shared (unit 0 changes width)")
    check(all(0 <= s["kernel_error"] < 1 for s in st), "kernel errors in [0, 1)")
    saved = sum(s["params_before"] - s["params_after"] for s in st)
    # the removed BN (gamma, beta) of conv1/conv2 of each member: 2 x 2 x inner per member
    bn = 2 * (2 * 2 * 8 + 2 * 2 * 16)
    check(d["params_source"] - d["params_cru"] == saved + bn,
          "network parameters drop by the stages' savings plus the removed inner batch norms")
    check(0 <= d["top1_source"] <= 100 and 0 <= d["top1_cru"] <= 100 and 0 <= d["top1_finetuned"] <= 100,
          "accuracies are percentages")
    check(d["test_images"] == 500, "test limit honoured")

models = os.path.join(data, "models", "resnet20-cifar10.safetensors")
cifar = os.path.join(data, "cifar-10-batches-bin")
if os.path.exists(models):
    out = os.path.join(work, "r20.h5")
    if os.path.exists(out):
        os.remove(out)
    r = run("compress", models, "--stages", "2,3", "--ranks", "16,24", "--json", "--quiet", "-o", out)
    check(r.returncode == 0 and os.path.exists(out), "compress resnet-20 stages 2,3 writes a checkpoint")
    try:
        d = json.loads(r.stdout)
    except ValueError:
        d = {"stages": []}
    check([s["members"] for s in d["stages"]] == [5, 5],
          "resnet-20: 5 equal-shape 3x3 convs in stages 2 and 3")
    check(all(s["params_after"] == 16 * s["rank_in"] * 0 + (32 if s["stage"] == 2 else 64) * 16
              + 9 * 16 * 24 + 5 * 24 * (32 if s["stage"] == 2 else 64) for s in d["stages"]),
          "conv parameter count = C r_in + 9 r_in r_out + L r_out C")
    check(all(s["independent_params"] <= s["params_after"] for s in d["stages"]),
          "independent Tucker-2 compared at no more parameters")
    bad_out = os.path.join(work, "bad.h5")
    ft = os.path.join(work, "r20ft.h5")
    r = run("finetune", out, "--data", "cifar10", "--data-dir", cifar, "--norm", "imagenet", "--epochs", "1",
            "--steps", "2", "--batch", "16", "--limit", "50", "--json", "--quiet", "-o", ft)
    check(r.returncode == 0 and os.path.exists(ft), "gbtd finetune loads the CRU-Net checkpoint and writes one")
    # per-stage feature matching against the source (teacher): the distance is reported in --json
    ftf = os.path.join(work, "r20ft-feat.h5")
    r = run("finetune", out, "--data", "cifar10", "--data-dir", cifar, "--norm", "imagenet", "--epochs", "1",
            "--steps", "2", "--batch", "32", "--limit", "64", "--teacher", models, "--feat-beta", "0.5",
            "--feat-stages", "2,3", "--json", "--quiet", "-o", ftf)
    try:
        f = json.loads(r.stdout)
    except ValueError:
        f = {}
    check(r.returncode == 0 and os.path.exists(ftf) and f.get("feat_beta") == 0.5
          and f.get("feat_dist", -1) > 0, "finetune --feat-beta reports a positive feature distance")
    for args, what in ((["--teacher", models, "--feat-beta", "-1"], "negative --feat-beta"),
                       (["--feat-beta", "1"], "--feat-beta without --teacher"),
                       (["--teacher", models, "--feat-beta", "1", "--feat-stages", "4"],
                        "--feat-stages naming a stage the network lacks")):
        nf = os.path.join(work, "nofeat.h5")
        refused(run("finetune", out, "--data", "cifar10", "--data-dir", cifar, "--norm", "imagenet",
                    "--epochs", "1", "--steps", "1", "--batch", "16", "--limit", "32", *args, "-o", nf),
                "finetune: " + what, nf)
    r = run("eval", out, "--data", "cifar10", "--data-dir", cifar, "--norm", "imagenet", "--limit", "50",
            "--json")
    try:
        e = json.loads(r.stdout)
    except ValueError:
        e = {}
    check(r.returncode == 0 and "|2,1,16,24,0,0,0|3,1,16,24,0,0,0" in e.get("spec", "")
          and e.get("images") == 50, "gbtd eval loads a CRU-Net checkpoint (its spec rebuilds the graph)")
    # --act --extra with batch-norm re-estimation: the BN-ReLU layers start as pass-through
    act = os.path.join(work, "act.h5")
    r = run("compress", models, "--stages", "3", "--terms", "2", "--ranks", "8,12", "--act", "--extra",
            "--data", "cifar10", "--data-dir", cifar, "--bn-images", "256", "--limit", "200",
            "--json", "--quiet", "-o", act)
    try:
        d = json.loads(r.stdout)
    except ValueError:
        d = {}
    check(r.returncode == 0 and d.get("spec", "").endswith("|3,2,8,12,0,1,1"),
          "compress --act --extra records act and extra in the spec")
    # R r_out = 24 channels: extra 1x1 24 x 24 per member, two own BN (gamma, beta) per member
    st3 = d.get("stages", [{}])[0]
    check(st3.get("params_after") == 2 * (64 * 8 + 9 * 8 * 12) + 5 * (24 * 64 + 24 * 24),
          "act/extra conv count = R (C r_in + 9 r_in r_out) + L (R r_out C + (R r_out)^2)")
    check(d.get("bn_images") == 256 and 0 <= d.get("top1_cru_no_bn_reestimation", -1) <= 100
          and 0 <= d.get("top1_cru", -1) <= 100, "--bn-images reports top-1 before and after re-estimation")
    refused(run("compress", models, "--stages", "3", "--budget", "0.5", "--bn-images", "100", "-o", bad_out),
            "--bn-images without --data", bad_out)
    # the response refit: each member's own 1x1 re-solved on 256 training images
    rf = os.path.join(work, "refit.h5")
    r = run("compress", models, "--stages", "3", "--terms", "2", "--ranks", "8,12", "--data", "cifar10",
            "--data-dir", cifar, "--refit", "256", "--limit", "500", "--json", "--quiet", "-o", rf)
    try:
        d = json.loads(r.stdout)
    except ValueError:
        d = {}
    print("refit:", {k: d.get(k) for k in ("top1_cru_as_built", "top1_cru", "refit_error_before",
                                            "refit_error_after", "seconds_refit")})
    check(r.returncode == 0 and d.get("refit_images") == 256
          and 0 < d.get("refit_error_after", -1) < d.get("refit_error_before", -1),
          "compress --refit lowers the members' response error")
    check(d.get("top1_cru", -1) > d.get("top1_cru_as_built", 101) + 5,
          "compress --refit: top-1 on 500 test images rises by more than 5 points")
    refused(run("compress", models, "--stages", "3", "--budget", "0.5", "--refit", "100", "-o", bad_out),
            "--refit without --data", bad_out)
    refused(run("compress", models, "--stages", "3", "--budget", "0.5", "--intercept", "-o", bad_out),
            "--intercept without --refit", bad_out)
    refused(run("finetune", out, "--data", "fashion-mnist", "-o", os.path.join(work, "no.h5")),
            "finetune: data image size not matching the network", os.path.join(work, "no.h5"))
    refused(run("finetune", out, "--data", "cifar10", "--data-dir", cifar, "--wd", "-1", "-o",
                os.path.join(work, "no.h5")), "finetune --wd -1", os.path.join(work, "no.h5"))
    # with a constant per channel (folded into the batch norm): a larger model of the same
    # responses, so its least-squares error is no larger
    r = run("compress", models, "--stages", "3", "--terms", "2", "--ranks", "8,12", "--data", "cifar10",
            "--data-dir", cifar, "--refit", "256", "--intercept", "--limit", "500", "--json",
            "--quiet", "-o", rf)
    try:
        di = json.loads(r.stdout)
    except ValueError:
        di = {}
    print("refit --intercept:", {k: di.get(k) for k in ("top1_cru", "refit_error_after")})
    check(r.returncode == 0 and 0 < di.get("refit_error_after", -1) <= d.get("refit_error_after", 0) * 1.001,
          "compress --refit --intercept: response error no larger than without")
    bad = os.path.join(work, "bad.h5")
    refused(run("compress", models, "--stages", "7", "--budget", "0.5", "-o", bad), "stage that does not exist", bad)
    refused(run("compress", models, "--stages", "3", "--budget", "0.0005", "--quiet", "-o", bad), "budget that cannot be met", bad)
    refused(run("compress", models, "--stages", "3", "--budget", "0.5", "--data", "fashion-mnist", "-o", bad),
            "data image size not matching the network", bad)
    junk = os.path.join(work, "junk.safetensors")
    import struct
    hdr = b'{"foo.weight":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    with open(junk, "wb") as f:
        f.write(struct.pack("<Q", len(hdr)) + hdr + b"\0\0\0\0")
    refused(run("compress", junk, "--stages", "3", "--budget", "0.5", "-o", bad), "unrecognised weights", bad)
else:
    print("skip: no ../shared/data/models")
refused(run("compress", "/nonexistent.safetensors", "--stages", "1", "--budget", "0.5", "-o",
            os.path.join(work, "x.h5")), "missing weights file")
refused(run("compress"), "compress without arguments")
sys.exit(1 if failed else 0)
