"""PyTorch reference for tests/nn/test_net_torch.c.

usage: torch_net.py SPEC DIR

Builds the network SPEC as ordinary torch.nn modules written from the descriptions in
docs/networks.md and PAPER.md (independently of gbtd's graph builder), loads the weights with
strict name and shape matching, runs one training-mode forward on x, backpropagates dlogits, and
writes the logits ("logits"), the input gradient ("dx"), every parameter gradient
("grad.<name>"), the running statistics after the forward ("<name>.running_mean/var") and the
eval-mode logits after that step ("eval_logits").

Exchange format (kept trivial so that the test does not depend on other readers): NAME.txt lists
"name ndim d0 d1 ..." per tensor, NAME.bin holds the values back to back, row-major,
little-endian (float32 from gbtd in in.bin, float64 from here in ref.bin).
Weight sharing is done the PyTorch way: the same module (Parameter) is used by several units.

ReLU kinks. gbtd computes in float32, so a pre-activation within its rounding error of 0 can land
on the other side of the kink from this float64 reference, and that one element then changes
the gradients by far more than rounding (measured: 1e-2 relative on a bias gradient). in.bin
therefore also carries gbtd's ReLU masks of its training forward ("mask.<key>": 1 where gbtd's
pre-activation was > 0; key = the batch norm's module name, or "<unit>.add" for the ReLU after a
residual add). Where |z| < KINK_BAND here, the backward uses gbtd's mask instead of this side's
sign; everywhere else the two must agree, and the number of elements where they do not
("kinks": adopted inside the band, conflicts outside it) goes back to the test, which requires 0
conflicts. The band is 1e-4, against float32 errors of about 1e-6 in these pre-activations
(batch-normalised values of order 1), and it only ever decides a mask, never a value."""
import sys

import struct

import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(1)

# presets mirrored from docs/networks.md (small-image family)
PRESETS = {
    "resnet-20": dict(block="basic", act="post", sc="a", stem=16, units=[3, 3, 3],
                      width=[16, 32, 64], inner=None, groups=[1, 1, 1], share=[0, 0, 0]),
    "bottleneck-29": dict(block="bottleneck", act="post", sc="b", stem=32, units=[3, 3, 3],
                          width=[128, 256, 512], inner=[32, 64, 128], groups=[1, 1, 1],
                          share=[0, 0, 0]),
    "resnext-29-8x4d": dict(block="bottleneck", act="post", sc="b", stem=32, units=[3, 3, 3],
                            width=[128, 256, 512], inner=[32, 64, 128], groups=[8, 8, 8],
                            share=[0, 0, 0]),
    "resnext-29-32x1d": dict(block="bottleneck", act="post", sc="b", stem=32, units=[3, 3, 3],
                             width=[128, 256, 512], inner=[32, 64, 128], groups=[32, 32, 32],
                             share=[0, 0, 0]),
    "cru-net-35@x14x7-8x4d": dict(block="bottleneck", act="pre", sc="b", stem=32,
                                  units=[3, 3, 3], width=[128, 256, 512], inner=[32, 64, 128],
                                  groups=[8, 64, 128], share=[0, 3, 3]),
}


def bn(c):
    return nn.BatchNorm2d(c, eps=1e-5, momentum=0.1)


KINK_BAND = 1e-4
GBTD_MASKS = {}  # key -> gbtd's 0/1 ReLU mask (training forward only)
KINKS = [0, 0]  # elements in the band where gbtd's mask was taken, elements outside it that differ


class KinkReLU(torch.autograd.Function):
    """max(z, 0); its backward mask is gbtd's inside the kink band (see the module docstring)."""

    @staticmethod
    def forward(ctx, z, key):
        mask = z > 0
        g = GBTD_MASKS.get(key)
        if g is not None:
            g = g.reshape(z.shape) > 0.5
            near = z.abs() < KINK_BAND
            differ = g != mask
            KINKS[0] += int((near & differ).sum())
            KINKS[1] += int((~near & differ).sum())
            mask = torch.where(near, g, mask)
        ctx.save_for_backward(mask)
        return z.clamp(min=0)

    @staticmethod
    def backward(ctx, gy):
        (mask,) = ctx.saved_tensors
        return gy * mask, None


def relu(z, key):
    # Without gbtd's masks (bench/train's PyTorch side) PyTorch's own ReLU: the custom function
    # computes the same values and gradients but costs PyTorch a mask, a clamp and a multiply.
    return KinkReLU.apply(z, key) if GBTD_MASKS else F.relu(z)


def bn_relu(b, x):
    """relu(b(x)) keyed by the batch norm's module name."""
    return relu(b(x), b.key)


class BasicPost(nn.Module):
    def __init__(self, cin, w, stride, option_a):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, w, 3, stride, 1, bias=False)
        self.bn1 = bn(w)
        self.conv2 = nn.Conv2d(w, w, 3, 1, 1, bias=False)
        self.bn2 = bn(w)
        self.pad = (w - cin) // 2 if (stride != 1 or cin != w) else None
        self.option_a = option_a

    def forward(self, x):
        y = self.bn2(self.conv2(bn_relu(self.bn1, self.conv1(x))))
        if self.pad is not None:
            x = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return relu(y + x, self.key + ".add")


class BottleneckPost(nn.Module):
    def __init__(self, cin, w, inner, groups, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, inner, 1, bias=False)
        self.bn1 = bn(inner)
        self.conv2 = nn.Conv2d(inner, inner, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = bn(inner)
        self.conv3 = nn.Conv2d(inner, w, 1, bias=False)
        self.bn3 = bn(w)
        self.downsample = None
        if stride != 1 or cin != w:
            self.downsample = nn.Sequential(nn.Conv2d(cin, w, 1, stride, bias=False), bn(w))

    def forward(self, x):
        y = bn_relu(self.bn1, self.conv1(x))
        y = bn_relu(self.bn2, self.conv2(y))
        y = self.bn3(self.conv3(y))
        s = x if self.downsample is None else self.downsample(x)
        return relu(y + s, self.key + ".add")


class PreShortcut(nn.Module):
    def __init__(self, cin, w, stride):
        super().__init__()
        self.bn = bn(cin)
        self.conv = nn.Conv2d(cin, w, 1, stride, bias=False)

    def forward(self, x):
        return self.conv(bn_relu(self.bn, x))


class BottleneckPre(nn.Module):
    def __init__(self, cin, w, inner, groups, stride):
        super().__init__()
        self.bn1 = bn(cin)
        self.conv1 = nn.Conv2d(cin, inner, 1, bias=False)
        self.bn2 = bn(inner)
        self.conv2 = nn.Conv2d(inner, inner, 3, stride, 1, groups=groups, bias=False)
        self.bn3 = bn(inner)
        self.conv3 = nn.Conv2d(inner, w, 1, bias=False)
        self.shortcut = PreShortcut(cin, w, stride) if (stride != 1 or cin != w) else None

    def forward(self, x):
        y = self.conv1(bn_relu(self.bn1, x))
        y = self.conv2(bn_relu(self.bn2, y))
        y = self.conv3(bn_relu(self.bn3, y))
        return y + (x if self.shortcut is None else self.shortcut(x))


class Proj(nn.Module):
    """The 'down' unit's projection W_p, applied at stride 1 and at the unit's stride."""

    def __init__(self, cin, w, stride):
        super().__init__()
        self.bn1 = bn(cin)
        self.conv = nn.Conv2d(cin, w, 1, bias=False)
        self.bn2 = bn(cin)
        self.stride = stride

    def forward(self, x):
        inner_in = self.conv(bn_relu(self.bn1, x))
        shortcut = F.conv2d(bn_relu(self.bn2, x), self.conv.weight, stride=self.stride)
        return inner_in, shortcut


class CRU(nn.Module):
    def __init__(self, cin, w, d, stride, shared):
        super().__init__()
        self.proj = Proj(cin, w, stride) if (stride != 1 or cin != w) else None
        self.bn_a = bn(w)
        if shared is None:  # first unit of a sharing group owns W_a and W_b
            self.conv_a = nn.Conv2d(w, d, 1, bias=False)
            self.conv_b = nn.Conv2d(d, d, 3, 1, 1, groups=d, bias=False)
            shared = (self.conv_a, self.conv_b)
        self.shared = shared  # a tuple: not registered again, the same modules reused
        self.stride = stride
        self.bn_b = bn(d)
        self.conv_c = nn.Conv2d(d, d, 1, bias=False)
        self.bn_c = bn(d)
        self.conv_d = nn.Conv2d(d, w, 1, bias=False)

    def forward(self, x):
        if self.proj is not None:
            u, s = self.proj(x)
        else:
            u, s = x, x
        wa, wb = self.shared
        a = wa(bn_relu(self.bn_a, u))
        b = F.conv2d(a, wb.weight, stride=self.stride, padding=1, groups=wb.groups)
        c = self.conv_c(bn_relu(self.bn_b, b))
        d = self.conv_d(bn_relu(self.bn_c, c))
        return s + d


class Net(nn.Module):
    def __init__(self, p, cin, classes):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, p["stem"], 3, 1, 1, bias=False)
        self.bn1 = bn(p["stem"])
        c = p["stem"]
        self.pre = p["act"] == "pre"
        for s in range(len(p["units"])):
            units = []
            shared = None
            for u in range(p["units"][s]):
                stride = 2 if (u == 0 and s > 0) else 1
                w = p["width"][s]
                if p["share"][s]:
                    if u % p["share"][s] == 0:
                        shared = None
                    m = CRU(c, w, p["inner"][s], stride, shared)
                    shared = m.shared
                elif p["block"] == "basic":
                    m = BasicPost(c, w, stride, True)
                elif self.pre:
                    m = BottleneckPre(c, w, p["inner"][s], p["groups"][s], stride)
                else:
                    m = BottleneckPost(c, w, p["inner"][s], p["groups"][s], stride)
                units.append(m)
                c = w
            setattr(self, "layer%d" % (s + 1), nn.Sequential(*units))
        self.nstages = len(p["units"])
        if self.pre:
            self.bn_final = bn(c)
        head = nn.Linear(c, classes)
        if p["sc"] == "a":
            self.linear = head
        else:
            self.fc = head
        self.head = "linear" if p["sc"] == "a" else "fc"
        for name, m in self.named_modules():  # the keys of gbtd's ReLU masks
            m.key = name

    def forward(self, x):
        x = bn_relu(self.bn1, self.conv1(x))
        for s in range(self.nstages):
            x = getattr(self, "layer%d" % (s + 1))(x)
        if self.pre:
            x = bn_relu(self.bn_final, x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return getattr(self, self.head)(x)


def read_set(base):
    raw = open(base + ".bin", "rb").read()
    out, off = {}, 0
    for line in open(base + ".txt"):
        f = line.split()
        shape = [int(v) for v in f[2:2 + int(f[1])]]
        n = 1
        for v in shape:
            n *= v
        t = torch.frombuffer(bytearray(raw[off:off + 4 * n]), dtype=torch.float32)
        out[f[0]] = t.reshape(shape).double()
        off += 4 * n
    return out


def write_set(base, tensors):
    with open(base + ".txt", "w") as txt, open(base + ".bin", "wb") as b:
        for k, v in tensors.items():
            v = v.detach().double().contiguous()
            txt.write("%s %d %s\n" % (k, v.dim(), " ".join(str(s) for s in v.shape)))
            b.write(struct.pack("<%dd" % v.numel(), *v.flatten().tolist()))


def pretrained(weights, batch_file, n, out):
    """Top-1 predictions of the CIFAR ResNet-20 in `weights` on the first n records of
    batch_file (RGB / 255, normalised with the ImageNet mean and std), one per line."""
    from safetensors.numpy import load_file
    w = {k: torch.frombuffer(bytearray(v.astype("<f4").tobytes()), dtype=torch.float32)
         .reshape(v.shape).double() for k, v in load_file(weights).items()}
    net = Net(PRESETS["resnet-20"], 3, 10).double()
    for k, v in net.state_dict().items():
        if k.endswith("num_batches_tracked"):
            w[k] = v
    net.load_state_dict(w, strict=True)
    net.eval()
    raw = open(batch_file, "rb").read(3073 * n)
    pix = torch.tensor([b for i in range(n) for b in raw[3073 * i + 1:3073 * (i + 1)]],
                       dtype=torch.float64).reshape(n, 3, 32, 32) / 255.0
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).reshape(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).reshape(1, 3, 1, 1)
    with torch.no_grad():
        pred = net((pix - mean) / std).argmax(1)
    with open(out, "w") as f:
        f.write("\n".join(str(int(p)) for p in pred) + "\n")


def main():
    if sys.argv[1] == "--pretrained":
        pretrained(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
        return
    spec, d = sys.argv[1], sys.argv[2]
    name = spec.split(":")[0]
    w = read_set(d + "/in")
    x, dlogits = w.pop("x"), w.pop("dlogits")
    for k in [k for k in w if k.startswith("mask.")]:
        GBTD_MASKS[k[5:]] = w.pop(k)
    net = Net(PRESETS[name], x.shape[1], dlogits.shape[1]).double()
    sd = net.state_dict()
    for k in list(sd):
        if k.endswith("num_batches_tracked"):
            w[k] = sd[k]
    net.load_state_dict(w, strict=True)  # every name and shape must match gbtd's
    net.train()
    xd = x.detach().requires_grad_(True)
    logits = net(xd)
    logits.backward(dlogits)
    GBTD_MASKS.clear()
    out = {"logits": logits, "dx": xd.grad, "kinks": torch.tensor(KINKS, dtype=torch.float64)}
    for k, p in net.named_parameters():
        out["grad." + k] = p.grad
    for k, b in net.named_buffers():
        if "running" in k:
            out[k] = b
    net.eval()
    with torch.no_grad():
        out["eval_logits"] = net(xd)
    write_set(d + "/ref", out)


if __name__ == "__main__":
    main()
