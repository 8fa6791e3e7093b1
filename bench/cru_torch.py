#!/usr/bin/env python3
"""PyTorch twin of a gbtd CRU-Net of a CIFAR ResNet, for timing a fine-tuning epoch slice
(bench/cru.py runs it next to `gbtd finetune` in the same run, same threads, same batch).

    cru_torch.py SPEC --steps N --batch B --threads T [--warmup W]

SPEC is the CRU-Net spec gbtd records (cru/build.h):
    "resnet-D:input=3x32x32,classes=10|S,R,r_in,r_out,groups_of,extra,act|..."
The source is the CIFAR ResNet-D (3x3 stem 16, three stages of (D - 2) / 6 basic blocks of width
16/32/64, option-A shortcuts, GAP, linear). In each factored stage S, every 3x3 convolution whose
input and output widths agree and whose stride is 1 (a "member") becomes
    conv_a 1x1 C -> R r_in (shared by its group), conv_b 3x3 R r_in -> R r_out, R groups (shared),
    [BN-ReLU (act)], [conv_c 1x1 (extra)], [BN-ReLU (extra and act)], conv_d 1x1 R r_out -> C (own)
followed by the member's own batch norm, as gbtd builds it. Weights are random: only the time is
measured. A training step is forward, cross-entropy, backward and an SGD step (momentum 0.9,
weight decay 5e-4) on a batch of random images held in memory (no data loading, which favours
PyTorch slightly: gbtd's time includes its loader). Prints one JSON line:
    {"images_per_s": ..., "seconds_per_step": ..., "params": ..., "threads": ...}
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def parse_spec(spec):
    parts = spec.split("|")
    base = parts[0]
    depth = int(base.split(":")[0].split("-")[1])
    classes = 10
    for kv in base.split(":", 1)[1].split(",") if ":" in base else []:
        if kv.startswith("classes="):
            classes = int(kv.split("=")[1])
    stages = {}
    for p in parts[1:]:
        s, R, ri, ro, of, x, a = (int(v) for v in p.split(","))
        stages[s] = dict(R=R, ri=ri, ro=ro, of=of, extra=bool(x), act=bool(a))
    return depth, classes, stages


class Factored(nn.Module):
    """One member convolution replaced by the CRU chain (shared conv_a / conv_b given)."""

    def __init__(self, conv_a, conv_b, c, lay):
        super().__init__()
        self.shared = [conv_a, conv_b]  # not registered twice
        rb = lay["R"] * lay["ro"]
        self.bn_b = nn.BatchNorm2d(rb) if lay["act"] else None
        self.conv_c = nn.Conv2d(rb, rb, 1, bias=False) if lay["extra"] else None
        self.bn_c = nn.BatchNorm2d(rb) if lay["extra"] and lay["act"] else None
        self.conv_d = nn.Conv2d(rb, c, 1, bias=False)

    def forward(self, x):
        y = self.shared[1](self.shared[0](x))
        if self.bn_b is not None:
            y = F.relu(self.bn_b(y))
        if self.conv_c is not None:
            y = self.conv_c(y)
        if self.bn_c is not None:
            y = F.relu(self.bn_c(y))
        return self.conv_d(y)


class Block(nn.Module):
    def __init__(self, c_in, c, stride, conv1, conv2):
        super().__init__()
        self.conv1 = conv1 or nn.Conv2d(c_in, c, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = conv2 or nn.Conv2d(c, c, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.pad = (c - c_in) // 2
        self.stride = stride

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        s = x
        if self.stride != 1 or self.pad:
            s = F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(y + s)


class Net(nn.Module):
    def __init__(self, depth, classes, stages):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.shared = nn.ModuleList()
        blocks = []
        c_in = 16
        for s, c in enumerate((16, 32, 64), start=1):
            lay = stages.get(s)
            member = 0
            group = None

            def factored():
                nonlocal member, group
                of = lay["of"]
                if group is None or (of > 0 and member % of == 0):
                    ra, rb = lay["R"] * lay["ri"], lay["R"] * lay["ro"]
                    group = (nn.Conv2d(c, ra, 1, bias=False),
                             nn.Conv2d(ra, rb, 3, 1, 1, groups=lay["R"], bias=False))
                    self.shared.extend(group)
                member += 1
                return Factored(group[0], group[1], c, lay)

            for u in range(n):
                stride = 2 if s > 1 and u == 0 else 1
                ci = c_in if u == 0 else c
                conv1 = factored() if lay and ci == c and stride == 1 else None
                conv2 = factored() if lay else None
                blocks.append(Block(ci, c, stride, conv1, conv2))
            c_in = c
        self.blocks = nn.Sequential(*blocks)
        self.linear = nn.Linear(64, classes)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.blocks(y)
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("spec")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    depth, classes, stages = parse_spec(a.spec)
    net = Net(depth, classes, stages)
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.randn(a.batch, 3, 32, 32)
    y = torch.randint(0, classes, (a.batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()

    for _ in range(a.warmup):
        step()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    dt = time.perf_counter() - t0
    params = sum(p.numel() for p in net.parameters())
    print(json.dumps({"images_per_s": a.steps * a.batch / dt, "seconds_per_step": dt / a.steps,
                      "params": params, "threads": a.threads, "spec": a.spec}))


if __name__ == "__main__":
    main()
