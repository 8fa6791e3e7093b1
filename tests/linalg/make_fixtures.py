#!/usr/bin/python3
"""Generate the NumPy fixtures of tests/linalg (run once; the output is committed).

    /usr/bin/python3 tests/linalg/make_fixtures.py tests/linalg/fixtures/linalg.fix

Each fixture is an array computed by NumPy with the conventions gbtd follows (docs/conventions.md):
    unfold(X, n)      = moveaxis(X, n, 0).reshape(I_n, -1)
    fold(M, n, shape) = moveaxis(M.reshape(shape[n], *other sizes), 0, n)
    kron(A, B)        = numpy.kron(A, B)
    khatri_rao(A_0..) : column r = kron(A_0[:, r], A_1[:, r], ...)   (A_0 varies slowest)
    mode_dot(X, U, n) = moveaxis(tensordot(U, X, axes=(1, n)), 0, n)  (U is J x I_n)
tests/linalg/check_tensorly.py checks that these definitions agree with TensorLy's.

File format (little-endian), version 1:
    8 bytes  magic b"GBTDFIX\\0"
    u32      format version (1)
    u32      number of records
    records: u32 name length, name bytes (ASCII, no terminator), u32 ndim,
             ndim x i64 shape, prod(shape) x f64 values in C order.
"""
import struct
import sys

import numpy as np

VERSION = 1
SEED = 20240601


def unfold(x, n):
    return np.moveaxis(x, n, 0).reshape(x.shape[n], -1)


def fold(m, n, shape):
    other = [s for k, s in enumerate(shape) if k != n]
    return np.moveaxis(m.reshape([shape[n]] + other), 0, n)


def khatri_rao(mats):
    r = mats[0].shape[1]
    out = np.ones((1, r))
    for a in mats:
        out = (out[:, None, :] * a[None, :, :]).reshape(-1, r)
    return out


def mode_dot(x, u, n):
    return np.moveaxis(np.tensordot(u, x, axes=(1, n)), 0, n)


def build():
    rng = np.random.default_rng(SEED)
    recs = []

    def add(name, arr):
        recs.append((name, np.ascontiguousarray(arr, dtype="<f8")))

    # Odd shapes: primes, size-1 modes, a 5-way tensor, a 2-way and a 1-way tensor.
    shapes = {"p3": (3, 5, 7), "s5": (2, 1, 3, 1, 5), "w4": (4, 3, 2, 5), "m2": (6, 1),
              "v1": (7,)}
    for tag, shape in shapes.items():
        x = rng.standard_normal(shape)
        add(tag + "/x", x)
        for n in range(len(shape)):
            add("%s/unfold%d" % (tag, n), unfold(x, n))
            assert np.array_equal(fold(unfold(x, n), n, shape), x)
            j = [2, 3, 1, 4, 2][n]
            u = rng.standard_normal((j, shape[n]))
            add("%s/ttm%d_n/u" % (tag, n), u)
            add("%s/ttm%d_n/y" % (tag, n), mode_dot(x, u, n))
            ut = rng.standard_normal((shape[n], j + 1))
            add("%s/ttm%d_t/u" % (tag, n), ut)
            add("%s/ttm%d_t/y" % (tag, n), mode_dot(x, ut.T, n))

    # Kronecker products.
    for tag, (sa, sb) in {"k1": ((2, 3), (4, 5)), "k2": ((1, 3), (3, 1)), "k3": ((3, 2), (1, 1))}.items():
        a = rng.standard_normal(sa)
        b = rng.standard_normal(sb)
        add(tag + "/a", a)
        add(tag + "/b", b)
        add(tag + "/kron", np.kron(a, b))

    # Khatri-Rao of three matrices with R = 4, all and skipping each; and a CP tensor.
    mats = [rng.standard_normal((i, 4)) for i in (3, 2, 5)]
    for k, a in enumerate(mats):
        add("kr/a%d" % k, a)
    add("kr/all", khatri_rao(mats))
    for k in range(3):
        add("kr/skip%d" % k, khatri_rao([a for m, a in enumerate(mats) if m != k]))
    w = rng.standard_normal(4)
    cp = np.einsum("r,ir,jr,kr->ijk", w, *mats)
    add("kr/w", w)
    add("kr/cp", cp)
    for n in range(3):
        rest = khatri_rao([a for m, a in enumerate(mats) if m != n])
        assert np.allclose(unfold(cp, n), mats[n] @ np.diag(w) @ rest.T)

    # Tucker reconstruction (multi-mode product on all modes) of a 2 x 3 x 4 core.
    g = rng.standard_normal((2, 3, 4))
    us = [rng.standard_normal((j, i)) for j, i in ((5, 2), (6, 3), (7, 4))]
    add("tk/g", g)
    y = g
    for n, u in enumerate(us):
        add("tk/u%d" % n, u)
        y = mode_dot(y, u, n)
    add("tk/y", y)
    return recs


def write(path, recs):
    with open(path, "wb") as f:
        f.write(b"GBTDFIX\0")
        f.write(struct.pack("<II", VERSION, len(recs)))
        for name, arr in recs:
            nb = name.encode("ascii")
            f.write(struct.pack("<I", len(nb)))
            f.write(nb)
            f.write(struct.pack("<I", arr.ndim))
            f.write(struct.pack("<%dq" % arr.ndim, *arr.shape))
            f.write(arr.tobytes())


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_fixtures.py OUTPUT")
    write(sys.argv[1], build())
