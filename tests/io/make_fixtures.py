#!/usr/bin/env python3
"""Writes the small reference files that tests/io/test_io.c reads back bit-exactly.

Run once from the repository root (the outputs are committed):
    /usr/bin/python3 tests/io/make_fixtures.py npy h5   # Debian NumPy + h5py
    build/venv/bin/python tests/io/make_fixtures.py st  # safetensors (pip package in the venv) Values follow val(i) below, which the C
test recomputes: ((37 * i) % 101 - 50) / 7 in float64, rounded once to float32/float16 where
the file holds those types, so every comparison is exact.
FIXTURE_VERSION = 1
"""
import os
import sys

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")


def val(shape, dtype=np.float64):
    n = int(np.prod(shape, dtype=np.int64))
    i = np.arange(n, dtype=np.int64)
    v = ((37 * i) % 101 - 50).astype(np.float64) / 7.0
    return v.reshape(shape).astype(dtype)


def ints(shape, dtype):
    n = int(np.prod(shape, dtype=np.int64))
    i = np.arange(n, dtype=np.int64)
    return ((37 * i) % 101 - 50).reshape(shape).astype(dtype)


def path(name):
    return os.path.join(OUT, name)


def npy_part():
    np.save(path("np_f8_3x4.npy"), val((3, 4)))
    np.save(path("np_f4_2x3x5.npy"), val((2, 3, 5), np.float32))
    np.save(path("np_f8_0d.npy"), val(()))
    np.save(path("np_f8_5way.npy"), val((2, 1, 3, 1, 4)))
    for ver in ((2, 0), (3, 0)):
        with open(path("np_v%d.npy" % ver[0]), "wb") as f:
            np.lib.format.write_array(f, val((4, 3)), version=ver)
    np.save(path("np_fortran.npy"), np.asfortranarray(val((3, 4))))
    np.save(path("np_bigendian.npy"), val((3,)).astype(">f8"))
    np.save(path("np_i4.npy"), ints((5,), np.int32))
    np.save(path("np_object.npy"), np.array([1, "a"], dtype=object), allow_pickle=True)
    np.savez(path("npz_stored.npz"), a=val((3, 4)), b=val((5,), np.float32),
             c=ints((2, 2), np.int64))
    np.savez_compressed(path("npz_deflated.npz"), a=val((3, 4)), b=val((5,), np.float32),
                        c=ints((2, 2), np.int64))
    print("npy/npz fixtures written")


def h5_part():
    import h5py
    with h5py.File(path("h5py_mixed.h5"), "w") as f:
        a = f.create_dataset("a", data=val((3, 4)))
        a.attrs["units"] = "volts"               # variable-length UTF-8 string
        a.attrs["scale"] = 0.5
        a.attrs["dims"] = np.array([3, 4], dtype=np.int32)
        a.attrs["fixed"] = np.bytes_("abc")        # fixed-length byte string
        g = f.create_group("grp")
        g.attrs["note"] = "group attribute"
        g.attrs["names"] = np.array([b"x", b"yy"], dtype="S2")
        f.create_dataset("grp/sub/b", data=val((2, 3, 5), np.float32))
        f.create_dataset("ints", data=ints((6,), np.int32))
        f.create_dataset("big_endian", data=val((4,)).astype(">f8"))
        f.create_dataset("half", data=val((5,), np.float16))
        f.create_dataset("scalar", data=val(()))
        f.create_dataset("text", data=np.array([b"hello", b"world"]))
    # The layout Keras 2 writes with model.save_weights("x.h5"): root attributes layer_names,
    # backend, keras_version; one group per layer with attribute weight_names; datasets under
    # <layer>/<layer>/<weight>:0. Kernels are HWIO.
    with h5py.File(path("keras_small.h5"), "w") as f:
        layers = {
            "conv1": [("kernel:0", val((3, 3, 2, 4), np.float32)),
                      ("bias:0", val((4,), np.float32))],
            "bn1": [("gamma:0", val((4,), np.float32)), ("beta:0", val((4,), np.float32)),
                    ("moving_mean:0", val((4,), np.float32)),
                    ("moving_variance:0", np.abs(val((4,), np.float32)) + 1)],
            "relu1": [],
            "dense": [("kernel:0", val((4, 3), np.float32)), ("bias:0", val((3,), np.float32))],
        }
        f.attrs["layer_names"] = np.array([k.encode() for k in layers], dtype="S5")
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.11.0"
        for name, weights in layers.items():
            g = f.create_group(name)
            g.attrs["weight_names"] = np.array([("%s/%s" % (name, w)).encode() for w, _ in weights],
                                               dtype="S32")
            for w, arr in weights:
                g.create_dataset("%s/%s" % (name, w), data=arr)
    print("h5 fixtures written")


def st_part():
    from safetensors.numpy import save_file
    tensors = {
        "conv.weight": val((4, 2, 3, 3), np.float32),
        "conv.bias": val((4,), np.float32),
        "half": val((3, 5), np.float16),
        "double": val((2, 3)),
        "count": ints((3,), np.int64),
        "scalar": val((), np.float32),
    }
    save_file(tensors, path("st_mixed.safetensors"), metadata={"format": "np", "note": "gbtd"})
    try:
        import torch
        from safetensors.torch import save_file as tsave
        tsave({"w": torch.tensor(val((2, 3)).tolist(), dtype=torch.float32).to(torch.bfloat16)},
              path("st_bf16.safetensors"))
    except ImportError:
        pass
    print("safetensors fixtures written")


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    parts = {"npy": npy_part, "h5": h5_part, "st": st_part}
    for name in sys.argv[1:] or ["npy", "h5", "st"]:
        parts[name]()
