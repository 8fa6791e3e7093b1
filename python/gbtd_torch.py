"""PyTorch definitions of the networks gbtd builds, so that a file written by `gbtd export`
loads with load_state_dict(strict=True) and computes what gbtd computes.

    import gbtd_torch
    model = gbtd_torch.load("cru.safetensors")        # nn.Module in eval mode
    logits = model(images)                             # N x 3 x H x W, float32 or float64

The network is read from the file's __metadata__ entry "gbtd.arch" (JSON written by gbtd: stem,
stages, units, widths, inner widths, groups, sharing, strides, BN eps). Parameter names are the
ones gbtd uses (docs/formats.md): torchvision's for post-activation ResNets/ResNeXts, and for
pre-activation and CRU units

    layerS.U.bn1/conv1, bn2/conv2, bn3/conv3, shortcut.bn/shortcut.conv    pre-activation unit
    layerS.U.proj.bn1, proj.conv, proj.bn2                                 CRU projection (first unit)
    layerS.U.bn_a, conv_a, conv_b, bn_b, conv_c, bn_c, conv_d              CRU unit
    bn_final, fc                                                           head

A CRU unit's conv_a / conv_b weights exist only in the first unit of each sharing group; the
other units of the group use the same modules (held outside their own state_dict), and the
projection's stride-s use reuses proj.conv's weight.
"""
import json

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["build", "load", "arch_from_file"]


def _bn(c, a):
    return nn.BatchNorm2d(c, eps=a["eps"], momentum=a["momentum"])


class _Shared:
    """Holds modules by reference without registering them (no duplicate state_dict keys)."""

    def __init__(self, **mods):
        self.__dict__.update(mods)


class _BasicPost(nn.Module):
    def __init__(self, a, c_in, width, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, width, 3, stride, 1, bias=False)
        self.bn1 = _bn(width, a)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = _bn(width, a)
        self.mode = None
        if stride != 1 or c_in != width:
            if a["shortcut"] == "a":
                self.mode = ("a", stride, (width - c_in) // 2)
            else:
                self.mode = ("b",)
                self.downsample = nn.Sequential(nn.Conv2d(c_in, width, 1, stride, bias=False),
                                                _bn(width, a))

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.mode is None:
            sc = x
        elif self.mode[0] == "a":
            s, p = self.mode[1], self.mode[2]
            sc = F.pad(x[:, :, ::s, ::s], (0, 0, 0, 0, p, p))
        else:
            sc = self.downsample(x)
        return F.relu(y + sc)


class _BottleneckPost(nn.Module):
    def __init__(self, a, c_in, width, inner, groups, stride):
        super().__init__()
        s1, s3 = (stride, 1) if a.get("stride_on_1x1") else (1, stride)
        self.conv1 = nn.Conv2d(c_in, inner, 1, s1, bias=False)
        self.bn1 = _bn(inner, a)
        self.conv2 = nn.Conv2d(inner, inner, 3, s3, 1, groups=groups, bias=False)
        self.bn2 = _bn(inner, a)
        self.conv3 = nn.Conv2d(inner, width, 1, bias=False)
        self.bn3 = _bn(width, a)
        self.downsample = None
        if stride != 1 or c_in != width:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, width, 1, stride, bias=False),
                                            _bn(width, a))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return F.relu(y + (x if self.downsample is None else self.downsample(x)))


class _BnConv(nn.Module):
    """BN-ReLU then convolution (the pre-activation building block)."""

    def __init__(self, a, c_in, c_out, k, stride, groups=1):
        super().__init__()
        self.bn = _bn(c_in, a)
        self.conv = nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False)

    def forward(self, x):
        return self.conv(F.relu(self.bn(x)))


class _PreUnit(nn.Module):
    """Pre-activation basic (inner == 0) or bottleneck unit; names bnK/convK, shortcut.bn/conv."""

    def __init__(self, a, c_in, width, inner, groups, stride):
        super().__init__()
        if inner:
            specs = [(c_in, inner, 1, 1, 1), (inner, inner, 3, stride, groups),
                     (inner, width, 1, 1, 1)]
        else:
            specs = [(c_in, width, 3, stride, 1), (width, width, 3, 1, 1)]
        self.n = len(specs)
        for i, (ci, co, k, s, g) in enumerate(specs, 1):
            setattr(self, "bn%d" % i, _bn(ci, a))
            setattr(self, "conv%d" % i, nn.Conv2d(ci, co, k, s, k // 2, groups=g, bias=False))
        self.shortcut = None
        if stride != 1 or c_in != width:
            self.shortcut = _BnConv(a, c_in, width, 1, stride)

    def forward(self, x):
        y = x
        for i in range(1, self.n + 1):
            y = getattr(self, "conv%d" % i)(F.relu(getattr(self, "bn%d" % i)(y)))
        return y + (x if self.shortcut is None else self.shortcut(x))


class _Proj(nn.Module):
    def __init__(self, a, c_in, width):
        super().__init__()
        self.bn1 = _bn(c_in, a)
        self.conv = nn.Conv2d(c_in, width, 1, bias=False)
        self.bn2 = _bn(c_in, a)


class _CRU(nn.Module):
    """Collective residual unit: shared 1x1 (conv_a) and depthwise 3x3 (conv_b), own 1x1s."""

    def __init__(self, a, c_in, width, inner, stride, shared):
        super().__init__()
        self.stride = stride
        self.proj = _Proj(a, c_in, width) if (stride != 1 or c_in != width) else None
        self.bn_a = _bn(width, a)
        if shared is None:
            self.conv_a = nn.Conv2d(width, inner, 1, bias=False)
            self.conv_b = nn.Conv2d(inner, inner, 3, 1, 1, groups=inner, bias=False)
            self.shared = _Shared(conv_a=self.conv_a, conv_b=self.conv_b)
        else:
            self.shared = shared
        self.bn_b = _bn(inner, a)
        self.conv_c = nn.Conv2d(inner, inner, 1, bias=False)
        self.bn_c = _bn(inner, a)
        self.conv_d = nn.Conv2d(inner, width, 1, bias=False)

    def forward(self, x):
        inp, sc = x, x
        if self.proj is not None:
            w = self.proj.conv.weight
            inp = F.conv2d(F.relu(self.proj.bn1(x)), w)
            sc = F.conv2d(F.relu(self.proj.bn2(x)), w, stride=self.stride)
        wa, wb = self.shared.conv_a.weight, self.shared.conv_b.weight
        y = F.conv2d(F.relu(self.bn_a(inp)), wa)
        y = F.conv2d(y, wb, stride=self.stride, padding=1, groups=wb.shape[0])
        y = self.conv_c(F.relu(self.bn_b(y)))
        y = self.conv_d(F.relu(self.bn_c(y)))
        return y + sc


class GbtdNet(nn.Module):
    """Any network described by a gbtd.arch JSON object."""

    def __init__(self, a):
        super().__init__()
        self.arch = a
        c_in = a["input"][0]
        sw = a["stem_width"]
        if a["stem"] == "imagenet":
            self.conv1 = nn.Conv2d(c_in, sw, 7, 2, 3, bias=False)
        else:
            self.conv1 = nn.Conv2d(c_in, sw, 3, 1, 1, bias=False)
        self.bn1 = _bn(sw, a)
        c = sw
        for s in range(len(a["units"])):
            units = []
            shared = None
            for u in range(a["units"][s]):
                stride = a["stride"][s] if u == 0 else 1
                w, inner, g, share = a["width"][s], a["inner"][s], a["groups"][s], a["share"][s]
                if share:
                    if u % share == 0:
                        shared = None
                    unit = _CRU(a, c, w, inner, stride, shared)
                    shared = unit.shared
                elif a["preact"]:
                    unit = _PreUnit(a, c, w, inner if a["block"] == "bottleneck" else 0, g, stride)
                elif a["block"] == "basic":
                    unit = _BasicPost(a, c, w, stride)
                else:
                    unit = _BottleneckPost(a, c, w, inner, g, stride)
                units.append(unit)
                c = w
            setattr(self, "layer%d" % (s + 1), nn.Sequential(*units))
        self.nstages = len(a["units"])
        if a["preact"]:
            self.bn_final = _bn(c, a)
        head = nn.Linear(c, a["classes"])
        if a["shortcut"] == "a":
            self.linear = head
        else:
            self.fc = head

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        if self.arch["stem"] == "imagenet":
            x = F.max_pool2d(x, 3, 2, 1)
        for s in range(self.nstages):
            x = getattr(self, "layer%d" % (s + 1))(x)
        if self.arch["preact"]:
            x = F.relu(self.bn_final(x))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return (self.linear if self.arch["shortcut"] == "a" else self.fc)(x)


def arch_from_file(path):
    """The gbtd.arch JSON object of a safetensors file written by gbtd."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    meta = header.get("__metadata__") or {}
    if "gbtd.arch" not in meta:
        raise ValueError("%s: no gbtd.arch metadata (not written by gbtd export?)" % path)
    return json.loads(meta["gbtd.arch"])


def build(arch):
    """A GbtdNet for a gbtd.arch object (dict) or JSON string."""
    if isinstance(arch, str):
        arch = json.loads(arch)
    return GbtdNet(arch)


def load(path, dtype=torch.float32):
    """Build the network of a gbtd safetensors file and load its weights (strict)."""
    from safetensors.torch import load_file
    model = build(arch_from_file(path))
    model.load_state_dict(load_file(path), strict=True)
    return model.to(dtype).eval()
