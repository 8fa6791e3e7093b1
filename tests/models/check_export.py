"""Load a file gbtd exported into PyTorch and compare its logits with gbtd's.

usage: check_export.py MODE WEIGHTS IOFILE RTOL
MODE: "gbtd" (python/gbtd_torch.py builds the network from the file's metadata) or
"torchvision:NAME" (torchvision.models.NAME(weights=None)); both load with strict=True.
IOFILE holds "x" (the input gbtd ran) and "logits" (gbtd's float32 output). The PyTorch
forward runs in float64; passes when max |gbtd - torch| <= RTOL * max |torch|. Exit 0 / 1.
"""
import os
import sys

import torch
from safetensors.torch import load_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
import gbtd_torch  # noqa: E402


def main():
    mode, weights, iofile, rtol = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    if mode == "gbtd":
        model = gbtd_torch.load(weights, dtype=torch.float64)
    else:
        import torchvision
        model = getattr(torchvision.models, mode.split(":", 1)[1])(weights=None)
        model.load_state_dict(load_file(weights), strict=True)
        model = model.double().eval()
    io = load_file(iofile)
    with torch.no_grad():
        ref = model(io["x"].double())
    err = (io["logits"].double() - ref).abs().max().item()
    scale = ref.abs().max().item()
    ok = scale > 0 and err <= rtol * scale
    print("%s %s: max |gbtd - torch| = %.3g, max |torch| = %.3g, rtol %.1e: %s"
          % (mode, os.path.basename(weights), err, scale, rtol, "ok" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
