"""Reference files for tests/models (written into the build folder, never committed).

usage: make_models.py OUTDIR DATADIR

OUTDIR/tv_resnet18.safetensors, tv_resnet50.safetensors, tv_resnext50_32x4d.safetensors:
    torchvision models (weights=None, seed 0) with randomised BN affine parameters and running
    statistics taken from one training-mode pass (so activations stay O(1)); state_dict names.
OUTDIR/keras_resnet50.h5: the same ResNet-50 in the layout Keras save_weights writes (layer
    groups, weight_names, HWIO kernels, (in, out) Dense kernel), with random convolution biases;
    its reference is the PyTorch ResNet-50 turned into Keras' v1 graph (stride on the first 1x1,
    conv biases, BN eps 1.001e-5).
OUTDIR/ref.safetensors: x (2 x 3 x 64 x 64) and the float64 reference logits of each model,
    "logits.<name>"; and, when DATADIR has CIFAR-10 and the pretrained CIFAR ResNets,
    "cifar_pred.<resnetN>" (int64 predictions on the first 1000 test images, PyTorch float32).
"""
import os
import sys

import h5py
import numpy as np
import torch
import torchvision
from safetensors.torch import save_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
import gbtd_torch  # noqa: E402


def randomise_bn(model, seed):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            m.momentum = 1.0  # running statistics := the statistics of the next batch
    model.train()
    with torch.no_grad():
        model(torch.randn(8, 3, 64, 64, generator=g))
    model.eval()


def state(model):
    return {k: v.detach().contiguous() for k, v in model.state_dict().items()}


def to_v1(model, seed):
    """ResNet-50 as Keras builds it: stride on the first 1x1, conv biases, eps 1.001e-5."""
    g = torch.Generator().manual_seed(seed)
    for layer in (model.layer2, model.layer3, model.layer4):
        b = layer[0]
        b.conv1.stride, b.conv2.stride = (2, 2), (1, 1)
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            m.bias = torch.nn.Parameter(0.1 * torch.randn(m.out_channels, generator=g))
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eps = 1.001e-5
    return model


def keras_h5(model, path):
    """Write model (a v1 ResNet-50 from to_v1) in the Keras save_weights layout."""
    sd = state(model)
    layers = []  # (keras layer name, [(weight name, array)])

    def conv(kname, tname):
        w = sd[tname + ".weight"].numpy().transpose(2, 3, 1, 0)  # OIHW -> HWIO
        layers.append((kname, [("kernel:0", w), ("bias:0", sd[tname + ".bias"].numpy())]))

    def bn(kname, tname):
        layers.append((kname, [("gamma:0", sd[tname + ".weight"].numpy()),
                               ("beta:0", sd[tname + ".bias"].numpy()),
                               ("moving_mean:0", sd[tname + ".running_mean"].numpy()),
                               ("moving_variance:0", sd[tname + ".running_var"].numpy())]))

    layers.append(("input_1", []))
    layers.append(("conv1_pad", []))
    conv("conv1_conv", "conv1")
    bn("conv1_bn", "bn1")
    layers.append(("pool1_pool", []))
    for s, layer in enumerate((model.layer1, model.layer2, model.layer3, model.layer4)):
        for u in range(len(layer)):
            p, t = "conv%d_block%d_" % (s + 2, u + 1), "layer%d.%d." % (s + 1, u)
            if layer[u].downsample is not None:
                conv(p + "0_conv", t + "downsample.0")
                bn(p + "0_bn", t + "downsample.1")
            for k in (1, 2, 3):
                conv(p + "%d_conv" % k, t + "conv%d" % k)
                bn(p + "%d_bn" % k, t + "bn%d" % k)
    layers.append(("avg_pool", []))
    layers.append(("predictions", [("kernel:0", sd["fc.weight"].numpy().T.copy()),
                                   ("bias:0", sd["fc.bias"].numpy())]))
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = np.array([n.encode() for n, _ in layers])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.11.0"
        for name, ws in layers:
            grp = f.create_group(name)
            grp.attrs["weight_names"] = np.array([(name + "/" + w).encode() for w, _ in ws],
                                                 dtype="S64")
            for w, arr in ws:
                grp.create_dataset(name + "/" + w, data=arr.astype(np.float32))


def cifar_images(path, n):
    raw = np.fromfile(path, dtype=np.uint8, count=n * 3073).reshape(n, 3073)
    x = raw[:, 1:].reshape(n, 3, 32, 32).astype(np.float32) / 255.0
    mean = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
    std = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)
    return torch.from_numpy((x - mean) / std)


def main():
    out, data = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    ref = {"x": x.contiguous()}
    for i, name in enumerate(["resnet18", "resnet50", "resnext50_32x4d"]):
        torch.manual_seed(i)
        model = getattr(torchvision.models, name)(weights=None)
        randomise_bn(model, 10 + i)
        save_file(state(model), os.path.join(out, "tv_%s.safetensors" % name),
                  metadata={"format": "pt"})
        with torch.no_grad():
            ref["logits." + name] = model.double()(x.double()).contiguous()
        if name == "resnet50":
            torch.manual_seed(i)
            v1 = getattr(torchvision.models, name)(weights=None)
            randomise_bn(v1, 10 + i)
            to_v1(v1, 20)
            keras_h5(v1, os.path.join(out, "keras_resnet50.h5"))
            with torch.no_grad():
                ref["logits.keras_resnet50"] = v1.double()(x.double()).contiguous()
    test_batch = os.path.join(data, "cifar-10-batches-bin", "test_batch.bin")
    if os.path.exists(test_batch):
        imgs = cifar_images(test_batch, 1000)
        for depth in (20, 32, 44, 56):
            f = os.path.join(data, "models", "resnet%d-cifar10.safetensors" % depth)
            n = (depth - 2) // 6
            arch = {"stem": "small", "stem_width": 16, "input": [3, 32, 32], "classes": 10,
                    "block": "basic", "preact": False, "shortcut": "a", "eps": 1e-5,
                    "momentum": 0.1, "units": [n] * 3, "width": [16, 32, 64],
                    "inner": [0] * 3, "groups": [1] * 3, "share": [0] * 3, "stride": [1, 2, 2]}
            from safetensors.torch import load_file
            model = gbtd_torch.build(arch)
            model.load_state_dict(load_file(f), strict=True)
            model.eval()
            with torch.no_grad():
                ref["cifar_pred.resnet%d" % depth] = model(imgs).argmax(1).to(torch.int64)
    save_file(ref, os.path.join(out, "ref.safetensors"))


if __name__ == "__main__":
    main()
