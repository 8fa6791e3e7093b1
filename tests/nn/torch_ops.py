"""Reference outputs of PyTorch (CPU, float32) for the layer kernels of lib/nn/ops.h.

usage: torch_ops.py OUT_FILE
Writes a tensor file read by tests/nn/test_ops_torch.c: magic b"GBTDT1\\0\\0", u32 count, then per
tensor: u32 name length, name bytes, u32 ndim, ndim x i64 sizes, float32 data (little endian).
Inputs are drawn here with a fixed seed. Without torch the file holds no tensors (the C test then skips)."""
import struct
import sys

OUT = sys.argv[1]
tensors = []


def put(name, t):
    tensors.append((name, t.detach().clone().contiguous().float()))


def write():
    with open(OUT + ".tmp", "wb") as f:
        f.write(b"GBTDT1\0\0")
        f.write(struct.pack("<I", len(tensors)))
        for name, t in tensors:
            b = name.encode()
            f.write(struct.pack("<I", len(b)) + b + struct.pack("<I", t.dim()))
            f.write(struct.pack("<%dq" % t.dim(), *t.shape))
            f.write(struct.pack("<%df" % t.numel(), *t.flatten().tolist()))
    import os
    os.replace(OUT + ".tmp", OUT)


try:
    import torch
    import torch.nn.functional as F
except ImportError:
    tensors.append(("skip", None))
    with open(OUT, "wb") as f:  # the C test sees no tensors and exits 77 (skipped)
        f.write(b"GBTDT1\0\0" + struct.pack("<I", 0))
    raise SystemExit(0)

torch.manual_seed(1234)
torch.set_num_threads(1)

# conv: n, c_in, h, w, c_out, k, stride, pad, groups, bias
CONVS = [(2, 3, 7, 9, 5, 3, 1, 1, 1, 1), (3, 8, 9, 8, 16, 3, 2, 1, 1, 0), (2, 16, 6, 5, 8, 1, 1, 0, 1, 1),
         (2, 16, 7, 7, 32, 1, 2, 0, 1, 0), (2, 32, 9, 9, 32, 3, 2, 1, 8, 1), (2, 12, 7, 6, 12, 3, 1, 1, 12, 1),
         (2, 6, 9, 8, 12, 3, 2, 1, 6, 0), (1, 3, 15, 15, 8, 7, 2, 3, 1, 0)]
for i, (n, ci, h, w, co, k, s, p, g, b) in enumerate(CONVS):
    x = torch.randn(n, ci, h, w, requires_grad=True)
    wt = torch.randn(co, ci // g, k, k, requires_grad=True)
    bias = torch.randn(co, requires_grad=True) if b else None
    y = F.conv2d(x, wt, bias, stride=s, padding=p, groups=g)
    gy = torch.randn_like(y)
    y.backward(gy)
    pre = "conv%d/" % i
    put(pre + "p", torch.tensor([n, ci, h, w, co, k, s, p, g, b], dtype=torch.float32))
    for nm, t in (("x", x), ("w", wt), ("gy", gy), ("y", y), ("gx", x.grad), ("gw", wt.grad)):
        put(pre + nm, t)
    if b:
        put(pre + "b", bias)
        put(pre + "gb", bias.grad)

# batch norm (training, momentum 0.1, eps 1e-5) plain and fused with ReLU; evaluation
for relu in (0, 1):
    n, c, h, w = 4, 3, 5, 6
    x = (torch.randn(n, c, h, w) * 2 + 1).requires_grad_(True)
    gamma = (torch.rand(c) + 0.5).requires_grad_(True)
    beta = torch.randn(c).requires_grad_(True)
    rm, rv = torch.randn(c), torch.rand(c) + 0.5
    pre = "bn%d/" % relu
    put(pre + "x", x)
    put(pre + "gamma", gamma)
    put(pre + "beta", beta)
    put(pre + "rm0", rm)
    put(pre + "rv0", rv)
    y = F.batch_norm(x, rm, rv, gamma, beta, training=True, momentum=0.1, eps=1e-5)
    if relu:
        y = F.relu(y)
    gy = torch.randn_like(y)
    y.backward(gy)
    put(pre + "y", y)
    put(pre + "rm1", rm)
    put(pre + "rv1", rv)
    put(pre + "gy", gy)
    put(pre + "gx", x.grad)
    put(pre + "ggamma", gamma.grad)
    put(pre + "gbeta", beta.grad)
    ye = F.batch_norm(x, rm, rv, gamma, beta, training=False, eps=1e-5)
    put(pre + "yeval", F.relu(ye) if relu else ye)

# ReLU (inputs away from 0), residual add + ReLU
x = torch.randn(2, 3, 4, 5)
x = (x + 0.05 * torch.sign(x)).requires_grad_(True)
y = F.relu(x)
gy = torch.randn_like(y)
y.backward(gy)
for nm, t in (("x", x), ("y", y), ("gy", gy), ("gx", x.grad)):
    put("relu/" + nm, t)

# pools: max 3x3/2 pad 1 (distinct values), avg 3x3/2 pad 1 (count_include_pad), avg 2x2/2, global
x = (torch.randperm(2 * 3 * 9 * 8).float().reshape(2, 3, 9, 8) * 0.01).requires_grad_(True)
y = F.max_pool2d(x, 3, 2, 1)
gy = torch.randn_like(y)
y.backward(gy)
for nm, t in (("x", x), ("y", y), ("gy", gy), ("gx", x.grad)):
    put("maxpool/" + nm, t)
for name, (k, s, p) in (("avgpool0/", (3, 2, 1)), ("avgpool1/", (2, 2, 0))):
    x = torch.randn(2, 3, 9, 8, requires_grad=True)
    y = F.avg_pool2d(x, k, s, p, count_include_pad=True)
    gy = torch.randn_like(y)
    y.backward(gy)
    for nm, t in (("x", x), ("y", y), ("gy", gy), ("gx", x.grad)):
        put(name + nm, t)
x = torch.randn(3, 5, 4, 7, requires_grad=True)
y = F.adaptive_avg_pool2d(x, 1).flatten(1)
gy = torch.randn_like(y)
y.backward(gy)
for nm, t in (("x", x), ("y", y), ("gy", gy), ("gx", x.grad)):
    put("gap/" + nm, t)

# linear
x = torch.randn(5, 12, requires_grad=True)
wt = torch.randn(7, 12, requires_grad=True)
b = torch.randn(7, requires_grad=True)
y = F.linear(x, wt, b)
gy = torch.randn_like(y)
y.backward(gy)
for nm, t in (("x", x), ("w", wt), ("b", b), ("y", y), ("gy", gy), ("gx", x.grad), ("gw", wt.grad), ("gb", b.grad)):
    put("linear/" + nm, t)

# softmax cross-entropy, mean over the batch, with and without label smoothing
for i, sm in enumerate((0.0, 0.1)):
    z = (torch.randn(6, 10) * 3).requires_grad_(True)
    lab = torch.randint(0, 10, (6,))
    loss = F.cross_entropy(z, lab, label_smoothing=sm)
    loss.backward()
    pre = "xent%d/" % i
    put(pre + "z", z)
    put(pre + "labels", lab.float())
    put(pre + "smoothing", torch.tensor([sm]))
    put(pre + "loss", loss.reshape(1))
    put(pre + "gz", z.grad)

# option-A shortcut (CIFAR ResNet, 16 -> 32 channels: pad 8 before and after), odd size
x = torch.randn(2, 16, 7, 6, requires_grad=True)
y = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8))
gy = torch.randn_like(y)
y.backward(gy)
for nm, t in (("x", x), ("y", y), ("gy", gy), ("gx", x.grad)):
    put("shortcut/" + nm, t)

write()
