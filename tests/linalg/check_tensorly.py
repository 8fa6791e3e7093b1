"""Cross-check of the committed fixtures against TensorLy (suite 'ref').

Reads tests/linalg/fixtures/linalg.fix (format in make_fixtures.py) and recomputes every
unfolding, mode-n product, Khatri-Rao product and the Tucker reconstruction with TensorLy, so
that gbtd's conventions (pinned by the fixtures in the C tests) are TensorLy's.
Prints one line per check; exit status 1 on any failure."""
import struct
import sys

import numpy as np

try:
    import tensorly as tl
    from tensorly import tenalg
except ImportError:  # not the pinned venv (meson -Dpython=...): skip
    print("TensorLy is not installed for %s: skipped" % sys.executable)
    sys.exit(77)


def read(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"GBTDFIX\0":
        sys.exit("%s: not a gbtd fixture file" % path)
    version, count = struct.unpack_from("<II", data, 8)
    if version != 1:
        sys.exit("%s: fixture format version %d, expected 1" % (path, version))
    off, recs = 16, {}
    for _ in range(count):
        (ln,) = struct.unpack_from("<I", data, off)
        name = data[off + 4:off + 4 + ln].decode("ascii")
        off += 4 + ln
        (nd,) = struct.unpack_from("<I", data, off)
        shape = struct.unpack_from("<%dq" % nd, data, off + 4)
        off += 4 + 8 * nd
        n = int(np.prod(shape)) if nd else 1
        recs[name] = np.frombuffer(data, "<f8", n, off).reshape(shape)
        off += 8 * n
    return recs


def main():
    recs = read(sys.argv[1])
    failed = 0

    def check(ok, name):
        nonlocal failed
        print(("ok   " if ok else "FAIL ") + name)
        failed += not ok

    # Tolerance for products: 4 * n * eps * scale (two summations of n terms each, any order).
    def close(a, b, n, scale):
        return a.shape == b.shape and np.all(np.abs(a - b) <= 4 * n * np.finfo(float).eps * scale)

    for tag in ("p3", "s5", "w4", "m2", "v1"):
        x = recs[tag + "/x"]
        for n in range(x.ndim):
            check(np.array_equal(tl.unfold(x, n), recs["%s/unfold%d" % (tag, n)]),
                  "%s unfold mode %d equals tensorly.unfold" % (tag, n))
            check(np.array_equal(tl.fold(recs["%s/unfold%d" % (tag, n)], n, x.shape), x),
                  "%s fold mode %d equals tensorly.fold" % (tag, n))
            for t in ("n", "t"):
                u = recs["%s/ttm%d_%s/u" % (tag, n, t)]
                op = u if t == "n" else u.T
                got = tenalg.mode_dot(x, op, n)
                scale = tenalg.mode_dot(np.abs(x), np.abs(op), n)
                check(close(got, recs["%s/ttm%d_%s/y" % (tag, n, t)], x.shape[n], scale),
                      "%s mode_dot mode %d %s equals tensorly.mode_dot" % (tag, n, t))
    mats = [recs["kr/a%d" % k] for k in range(3)]
    check(np.allclose(tenalg.khatri_rao(mats), recs["kr/all"], rtol=8 * np.finfo(float).eps, atol=0),
          "khatri_rao equals tensorly.khatri_rao")
    for k in range(3):
        check(np.allclose(tenalg.khatri_rao(mats, skip_matrix=k), recs["kr/skip%d" % k],
                          rtol=8 * np.finfo(float).eps, atol=0),
              "khatri_rao skip %d equals tensorly (skip_matrix)" % k)
    from tensorly.cp_tensor import cp_to_tensor
    cp = cp_to_tensor((recs["kr/w"], mats))
    check(np.allclose(cp, recs["kr/cp"], rtol=1e-13, atol=1e-13), "CP tensor equals tensorly.cp_to_tensor")
    from tensorly.tucker_tensor import tucker_to_tensor
    y = tucker_to_tensor((recs["tk/g"], [recs["tk/u%d" % k] for k in range(3)]))
    check(np.allclose(y, recs["tk/y"], rtol=1e-13, atol=1e-13), "Tucker reconstruction equals tensorly")
    check(np.array_equal(np.kron(recs["k1/a"], recs["k1/b"]), recs["k1/kron"]), "kron equals numpy.kron")
    print("%d failed" % failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
