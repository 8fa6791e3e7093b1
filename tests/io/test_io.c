/* Unit tests of lib/io: .npy and HDF5 round trips, files written by NumPy and h5py read back
 * bit-exactly (fixtures made by tests/io/make_fixtures.py), attributes, listing, and every error
 * path: missing, truncated and corrupt files, unsupported dtypes and layouts, missing datasets,
 * allocation failure at each allocation without leaks, no half-written output.
 *
 * usage: test_io FIXTURE_DIR SCRATCH_DIR */
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "io/io.h"
#include "io_test_util.h"

/* True when t (contiguous) holds val(i) rounded to float (as_float) or exact. */
static int holds_val(const gbtd_tensor *t, int as_float)
{
    const int64_t n = gbtd_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) {
        double ref = as_float ? (double)(float)val(i) : val(i);
        if (t->data[i] != ref) return 0;
    }
    return 1;
}

static int shape_is(const gbtd_tensor *t, int nd, const int64_t *sh)
{
    if (t->ndim != nd) return 0;
    for (int k = 0; k < nd; k++)
        if (t->shape[k] != sh[k]) return 0;
    return 1;
}

/* Count files in the scratch folder whose name contains ".tmp" (left-over temporaries). */
static int leftover_tmp(void)
{
    DIR *d = opendir(scratch);
    if (d == NULL) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".tmp")) n++;
    closedir(d);
    return n;
}

/* Fill t with distinct values val(i) in row-major index order of t (any strides). */
static void fill_val(gbtd_tensor *t)
{
    const int64_t n = gbtd_tensor_numel(t);
    double *tmpbuf = malloc((size_t)(n ? n : 1) * sizeof(double));
    for (int64_t i = 0; i < n; i++) tmpbuf[i] = val(i);
    gbtd_tensor w;
    gbtd_tensor_wrap(tmpbuf, t->ndim, t->shape, &w);
    gbtd_tensor_copy(t, &w);
    free(tmpbuf);
}

/* Exact equality of two tensors of the same shape (any strides). */
static int same(const gbtd_tensor *a, const gbtd_tensor *b)
{
    double d;
    if (!gbtd_tensor_same_shape(a, b)) return 0;
    return gbtd_tensor_max_abs_diff(a, b, &d) == GBTD_OK && d == 0.0;
}

/* ---- .npy ---------------------------------------------------------------------------------- */

static void test_npy_roundtrip(void)
{
    static const struct {
        int nd;
        int64_t sh[5];
        const char *label;
    } cases[] = {
        {0, {0}, "0-d"},          {1, {7}, "1-d"},          {2, {3, 4}, "2-d"},
        {5, {2, 3, 1, 4, 5}, "5-way"}, {3, {1, 1, 3}, "size-1 modes"}, {2, {0, 3}, "empty"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        gbtd_tensor x, y;
        gbtd_tensor_alloc(&x, cases[c].nd, cases[c].sh);
        fill_val(&x);
        char name[128];
        gbtd_dtype st;
        snprintf(name, sizeof name, "npy f8 round trip %s", cases[c].label);
        CHECK_OK(gbtd_npy_save(tmp("rt.npy"), &x, GBTD_DTYPE_F64), name);
        CHECK_OK(gbtd_npy_load(tmp("rt.npy"), &y, &st), name);
        snprintf(name, sizeof name, "npy f8 round trip %s exact, dtype float64", cases[c].label);
        CHECK(same(&x, &y) && st == GBTD_DTYPE_F64, name);
        gbtd_tensor_free(&y);
        CHECK_OK(gbtd_npy_save(tmp("rt4.npy"), &x, GBTD_DTYPE_F32), "npy f4 save");
        CHECK_OK(gbtd_npy_load(tmp("rt4.npy"), &y, &st), "npy f4 load");
        snprintf(name, sizeof name, "npy f4 round trip %s equals float rounding", cases[c].label);
        CHECK(shape_is(&y, cases[c].nd, cases[c].sh) && holds_val(&y, 1) && st == GBTD_DTYPE_F32,
              name);
        gbtd_tensor_free(&y);
        gbtd_tensor_free(&x);
    }
    /* A strided view (a permutation with a reversed slice) is written in its own index order. */
    gbtd_tensor x, v, p, y;
    const int64_t sh[3] = {4, 5, 6};
    gbtd_tensor_alloc(&x, 3, sh);
    fill_val(&x);
    const int perm[3] = {2, 0, 1};
    gbtd_tensor_view_permute(&x, perm, &p);
    const int64_t start[3] = {5, 0, 1}, size[3] = {3, 4, 2}, step[3] = {-2, 1, 2};
    CHECK_OK(gbtd_tensor_view_sub(&p, start, size, step, &v), "strided view");
    CHECK_OK(gbtd_npy_save(tmp("view.npy"), &v, GBTD_DTYPE_F64), "npy save strided view");
    CHECK_OK(gbtd_npy_load(tmp("view.npy"), &y, NULL), "npy load strided view");
    CHECK(same(&v, &y), "npy strided view written in its index order");
    gbtd_tensor_free(&y);
    gbtd_tensor_free(&x);

    /* float32 path. */
    float f[6] = {1.5f, -2.25f, 3.0e-8f, 1e30f, 0.0f, -0.0f};
    const int64_t fs[2] = {2, 3};
    CHECK_OK(gbtd_npy_save_float(tmp("f.npy"), 2, fs, f), "npy save_float");
    int nd = 0;
    int64_t gs[GBTD_MAX_MODES];
    float *g = NULL;
    CHECK_OK(gbtd_npy_load_float(tmp("f.npy"), &nd, gs, &g), "npy load_float");
    CHECK(nd == 2 && gs[0] == 2 && gs[1] == 3 && g && !memcmp(f, g, sizeof f),
          "npy float path bit-exact (signed zero too)");
    gbtd_free(g);
    CHECK_OK(gbtd_npy_load_float(fix("np_f8_3x4.npy"), &nd, gs, &g), "npy load_float of f8");
    int ok = nd == 2 && gs[0] == 3 && gs[1] == 4;
    for (int i = 0; ok && i < 12; i++) ok = g[i] == (float)val(i);
    CHECK(ok, "npy load_float rounds f8 once to float");
    gbtd_free(g);
    CHECK(leftover_tmp() == 0, "npy writes leave no temporary files");
}

static void test_npy_numpy_files(void)
{
    static const struct {
        const char *file;
        int nd;
        int64_t sh[5];
        int f4;
    } cases[] = {
        {"np_f8_3x4.npy", 2, {3, 4}, 0},   {"np_f4_2x3x5.npy", 3, {2, 3, 5}, 1},
        {"np_f8_0d.npy", 0, {0}, 0},       {"np_f8_5way.npy", 5, {2, 1, 3, 1, 4}, 0},
        {"np_v2.npy", 2, {4, 3}, 0},       {"np_v3.npy", 2, {4, 3}, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        gbtd_tensor y;
        gbtd_dtype st;
        char name[128];
        snprintf(name, sizeof name, "numpy %s read", cases[c].file);
        CHECK_OK(gbtd_npy_load(fix(cases[c].file), &y, &st), name);
        snprintf(name, sizeof name, "numpy %s shape, dtype and values bit-exact", cases[c].file);
        CHECK(shape_is(&y, cases[c].nd, cases[c].sh) && holds_val(&y, cases[c].f4) &&
                  st == (cases[c].f4 ? GBTD_DTYPE_F32 : GBTD_DTYPE_F64),
              name);
        gbtd_tensor_free(&y);
    }
}

static void expect_npy_error(const char *path, int code, const char *label)
{
    gbtd_tensor y;
    char name[160];
    snprintf(name, sizeof name, "npy refuses %s", label);
    CHECK_STATUS(gbtd_npy_load(path, &y, NULL), code, name);
    snprintf(name, sizeof name, "npy %s: message names the file, tensor left empty", label);
    CHECK(error_names(path) && y.data == NULL && y.owned == NULL, name);
}

/* Write a .npy with a hand-made header dict (version 1.0) and `data_bytes` zero bytes. */
static const char *handmade_npy(const char *fname, const char *dict, size_t data_bytes)
{
    unsigned char buf[4096];
    size_t dl = strlen(dict);
    size_t total = ((10 + dl + 1 + 63) / 64) * 64;
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (unsigned char)((total - 10) & 0xff);
    buf[9] = (unsigned char)((total - 10) >> 8);
    memcpy(buf + 10, dict, dl);
    memset(buf + 10 + dl, ' ', total - 10 - dl - 1);
    buf[total - 1] = '\n';
    memset(buf + total, 0, data_bytes);
    const char *p = tmp(fname);
    write_bytes(p, buf, total + data_bytes);
    return p;
}

static void test_npy_errors(void)
{
    expect_npy_error(tmp("does_not_exist.npy"), GBTD_EIO, "a missing file");
    expect_npy_error(fix("np_fortran.npy"), GBTD_EUNSUPPORTED, "Fortran order");
    CHECK(strstr(gbtd_last_error(), "Fortran") != NULL, "Fortran message says Fortran");
    expect_npy_error(fix("np_bigendian.npy"), GBTD_EUNSUPPORTED, "big-endian");
    CHECK(strstr(gbtd_last_error(), "big-endian") != NULL, "big-endian message says so");
    expect_npy_error(fix("np_i4.npy"), GBTD_EUNSUPPORTED, "int32 dtype");
    expect_npy_error(fix("np_object.npy"), GBTD_EUNSUPPORTED, "object arrays");
    CHECK(strstr(gbtd_last_error(), "object") != NULL, "object message says so");
    expect_npy_error(fix("h5py_mixed.h5"), GBTD_EFORMAT, "an HDF5 file");

    /* Truncation at every interesting offset: magic, version, length, header, data. */
    size_t n;
    unsigned char *b = read_bytes(fix("np_f8_3x4.npy"), &n);
    const size_t cuts[] = {0, 3, 7, 9, 11, 40, 127, 128, 129, 200, n - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        char label[64];
        snprintf(label, sizeof label, "truncation at %zu of %zu bytes", cuts[i], n);
        write_bytes(tmp("trunc.npy"), b, cuts[i]);
        expect_npy_error(tmp("trunc.npy"), GBTD_EFORMAT, label);
    }
    unsigned char *big = malloc(n + 1);
    memcpy(big, b, n);
    big[n] = 0;
    write_bytes(tmp("long.npy"), big, n + 1);
    expect_npy_error(tmp("long.npy"), GBTD_EFORMAT, "a trailing extra byte");
    free(big);

    /* Flips of single header bytes: targeted ones must be refused as corrupt. */
    struct {
        size_t off;
        unsigned char v;
        int code;
        const char *label;
    } flips[] = {
        {0, 'X', GBTD_EFORMAT, "bad magic"},
        {6, 4, GBTD_EUNSUPPORTED, "version 4.0"},
        {7, 1, GBTD_EUNSUPPORTED, "version 1.1"},
        {8, 0xff, GBTD_EFORMAT, "header length too long"},
        {9, 0x7f, GBTD_EFORMAT, "header length beyond the file"},
        {10, '[', GBTD_EFORMAT, "dict brace replaced"},
        {12, 'x', GBTD_EFORMAT, "misspelt key"},
        {127, ' ', GBTD_EFORMAT, "missing final newline"},
        {20, 0x01, GBTD_EFORMAT, "control byte in header"},
    };
    for (size_t i = 0; i < sizeof flips / sizeof flips[0]; i++) {
        unsigned char *c = malloc(n);
        memcpy(c, b, n);
        c[flips[i].off] = flips[i].v;
        write_bytes(tmp("flip.npy"), c, n);
        expect_npy_error(tmp("flip.npy"), flips[i].code, flips[i].label);
        free(c);
    }
    /* Every byte of the header changed to each of a few values: never a crash, and either
     * refused or read as a well-formed file of the right size. */
    int sane = 1;
    const unsigned char vals[] = {0, ' ', '\'', ',', '(', ')', '9', 'F', 0xff};
    for (size_t off = 0; off < 128; off++)
        for (size_t k = 0; k < sizeof vals; k++) {
            unsigned char *c = malloc(n);
            memcpy(c, b, n);
            c[off] = vals[k];
            write_bytes(tmp("flip.npy"), c, n);
            gbtd_tensor y;
            int rc = gbtd_npy_load(tmp("flip.npy"), &y, NULL);
            if (rc == GBTD_OK) {
                if (gbtd_tensor_numel(&y) * 8 + 128 != (int64_t)n) sane = 0;
                gbtd_tensor_free(&y);
            } else if (rc != GBTD_EFORMAT && rc != GBTD_EUNSUPPORTED && rc != GBTD_EOVERFLOW) {
                sane = 0;
            }
            free(c);
        }
    CHECK(sane, "npy: 1152 single-byte header corruptions refused or read consistently");
    free(b);

    /* Hand-made headers. */
    expect_npy_error(handmade_npy("h1.npy", "{'descr': '<f8', 'fortran_order': False, "
                                            "'shape': (99999999999999999999,), }", 0),
                     GBTD_EOVERFLOW, "a shape entry beyond int64");
    expect_npy_error(handmade_npy("h2.npy", "{'descr': '<f8', 'fortran_order': False, "
                                            "'shape': (4294967296, 4294967296, 4), }", 0),
                     GBTD_EOVERFLOW, "an overflowing element count");
    expect_npy_error(handmade_npy("h3.npy", "{'descr': '<f8', 'fortran_order': False, "
                                            "'shape': (1, 1, 1, 1, 1, 1, 1, 1, 1), }", 8),
                     GBTD_EUNSUPPORTED, "nine dimensions");
    expect_npy_error(handmade_npy("h4.npy", "{'descr': '<f8', 'descr': '<f8', "
                                            "'fortran_order': False, 'shape': (1,), }", 8),
                     GBTD_EFORMAT, "a duplicate key");
    expect_npy_error(handmade_npy("h5.npy", "{'descr': '<f8', 'shape': (1,), }", 8), GBTD_EFORMAT,
                     "a missing key");
    expect_npy_error(handmade_npy("h6.npy", "{'descr': '<f8', 'fortran_order': False, "
                                            "'shape': (1,), 'extra': 1, }", 8),
                     GBTD_EFORMAT, "an unknown key");
    expect_npy_error(handmade_npy("h7.npy", "{'descr': '<f8', 'fortran_order': False, "
                                            "'shape': (3), }", 24),
                     GBTD_EFORMAT, "a shape that is not a tuple");
    expect_npy_error(handmade_npy("h8.npy", "{'descr': [('a', '<f8')], 'fortran_order': False, "
                                            "'shape': (1,), }", 8),
                     GBTD_EUNSUPPORTED, "a structured dtype");
    expect_npy_error(handmade_npy("h9.npy", "{'descr': '<f8', 'fortran_order': Maybe, "
                                            "'shape': (1,), }", 8),
                     GBTD_EFORMAT, "a non-boolean fortran_order");
    expect_npy_error(handmade_npy("h10.npy", "{'descr': '<c16', 'fortran_order': False, "
                                             "'shape': (1,), }", 16),
                     GBTD_EUNSUPPORTED, "complex numbers");
    gbtd_tensor y;
    CHECK_OK(gbtd_npy_load(handmade_npy("h11.npy", "{\"shape\": (2, 1,), \"fortran_order\": "
                                                   "False, \"descr\": \"<f8\"}", 16),
                           &y, NULL),
             "npy accepts reordered keys, double quotes, trailing comma");
    CHECK(y.ndim == 2 && y.shape[0] == 2 && y.shape[1] == 1, "npy reordered header shape");
    gbtd_tensor_free(&y);

    /* Saving: bad dtype, missing folder (nothing written), bad arguments. */
    gbtd_tensor x;
    const int64_t sh[1] = {3};
    gbtd_tensor_alloc(&x, 1, sh);
    CHECK_STATUS(gbtd_npy_save(tmp("x.npy"), &x, GBTD_DTYPE_I32), GBTD_EUNSUPPORTED,
                 "npy save refuses int32");
    CHECK_STATUS(gbtd_npy_save(tmp("no/such/dir/x.npy"), &x, GBTD_DTYPE_F64), GBTD_EIO,
                 "npy save into a missing folder");
    CHECK(error_names("no/such/dir/x.npy"), "npy save error names the file");
    CHECK_STATUS(gbtd_npy_save(NULL, &x, GBTD_DTYPE_F64), GBTD_EINVAL, "npy save NULL path");
    gbtd_tensor_free(&x);
    CHECK(leftover_tmp() == 0, "failed npy writes leave no temporary files");

    /* A failed save leaves the previous file intact. */
    gbtd_tensor_alloc(&x, 1, sh);
    fill_val(&x);
    gbtd_npy_save(tmp("keep.npy"), &x, GBTD_DTYPE_F64);
    gbtd_tensor_free(&x);
    check_alloc_install();
    const int64_t sh2[2] = {50, 50};
    gbtd_tensor big2;
    gbtd_tensor_alloc(&big2, 2, sh2);
    gbtd_tensor_view_permute(&big2, (const int[]){1, 0}, &x); /* strided: save must copy */
    check_alloc_fail_after(0);
    CHECK_STATUS(gbtd_npy_save(tmp("keep.npy"), &x, GBTD_DTYPE_F64), GBTD_ENOMEM,
                 "npy save fails on allocation");
    check_alloc_fail_after(-1);
    gbtd_tensor_free(&big2);
    gbtd_set_allocator(NULL);
    CHECK_OK(gbtd_npy_load(tmp("keep.npy"), &y, NULL), "old file still readable");
    CHECK(y.ndim == 1 && y.shape[0] == 3 && holds_val(&y, 0), "failed save kept the old file");
    gbtd_tensor_free(&y);
}

/* ---- HDF5 ---------------------------------------------------------------------------------- */

static void test_h5_roundtrip(void)
{
    gbtd_h5 *f;
    unlink(tmp("rt.h5"));
    CHECK_OK(gbtd_h5_create(tmp("rt.h5"), &f), "h5 create");
    static const struct {
        const char *name;
        int nd;
        int64_t sh[5];
    } cases[] = {
        {"/scalar", 0, {0}},          {"/one", 1, {7}},
        {"/deep/er/five", 5, {2, 3, 1, 4, 5}}, {"size1", 3, {1, 1, 3}},
        {"/empty", 2, {0, 3}},
    };
    gbtd_tensor xs[5];
    for (int c = 0; c < 5; c++) {
        gbtd_tensor_alloc(&xs[c], cases[c].nd, cases[c].sh);
        fill_val(&xs[c]);
        CHECK_OK(gbtd_h5_write_tensor(f, cases[c].name, &xs[c], GBTD_DTYPE_F64), "h5 write f8");
    }
    gbtd_tensor x, p, y;
    const int64_t sh[3] = {4, 5, 6};
    gbtd_tensor_alloc(&x, 3, sh);
    fill_val(&x);
    const int perm[3] = {1, 2, 0};
    gbtd_tensor_view_permute(&x, perm, &p);
    CHECK_OK(gbtd_h5_write_tensor(f, "/view", &p, GBTD_DTYPE_F64), "h5 write strided view");
    CHECK_OK(gbtd_h5_write_tensor(f, "/g/f4", &x, GBTD_DTYPE_F32), "h5 write f4");
    CHECK_OK(gbtd_h5_write_tensor(f, "/g/f4", &x, GBTD_DTYPE_F32), "h5 write replaces a dataset");
    CHECK(access(tmp("rt.h5"), F_OK) != 0, "h5 file appears only when closed");
    CHECK_OK(gbtd_h5_close(f), "h5 close commits");
    CHECK(leftover_tmp() == 0, "h5 commit leaves no temporary file");

    CHECK_OK(gbtd_h5_open(tmp("rt.h5"), &f), "h5 open");
    for (int c = 0; c < 5; c++) {
        gbtd_dtype st;
        char name[128];
        snprintf(name, sizeof name, "h5 round trip %s exact", cases[c].name);
        CHECK_OK(gbtd_h5_read_tensor(f, cases[c].name, &y, &st), name);
        CHECK(same(&xs[c], &y) && st == GBTD_DTYPE_F64, name);
        gbtd_tensor_free(&y);
        gbtd_tensor_free(&xs[c]);
    }
    CHECK_OK(gbtd_h5_read_tensor(f, "view", &y, NULL), "h5 read view");
    CHECK(same(&p, &y), "h5 strided view written in its index order");
    gbtd_tensor_free(&y);
    gbtd_dtype st;
    CHECK_OK(gbtd_h5_read_tensor(f, "/g/f4", &y, &st), "h5 read f4");
    CHECK(shape_is(&y, 3, sh) && holds_val(&y, 1) && st == GBTD_DTYPE_F32,
          "h5 f4 round trip equals float rounding, dtype float32");
    gbtd_tensor_free(&y);
    CHECK(gbtd_h5_has_dataset(f, "/g/f4") && !gbtd_h5_has_dataset(f, "/g") &&
              !gbtd_h5_has_dataset(f, "/nope/x"),
          "h5 has_dataset");
    CHECK_STATUS(gbtd_h5_write_tensor(f, "/z", &x, GBTD_DTYPE_F64), GBTD_EINVAL,
                 "h5 write on a read-only handle");
    gbtd_h5_close(f);

    /* Append keeps what is there; discard changes nothing; create replaces. */
    CHECK_OK(gbtd_h5_save(tmp("rt.h5"), "/added/x", &x, NULL, true), "h5 save append");
    CHECK_OK(gbtd_h5_load(tmp("rt.h5"), "/added/x", &y, NULL), "h5 appended dataset read");
    CHECK(same(&x, &y), "h5 appended dataset exact");
    gbtd_tensor_free(&y);
    CHECK_OK(gbtd_h5_load(tmp("rt.h5"), "/one", &y, NULL), "h5 append kept old datasets");
    gbtd_tensor_free(&y);
    CHECK_OK(gbtd_h5_open_append(tmp("rt.h5"), &f), "h5 open append");
    gbtd_h5_write_tensor(f, "/discarded", &x, GBTD_DTYPE_F64);
    gbtd_h5_discard(f);
    CHECK_OK(gbtd_h5_open(tmp("rt.h5"), &f), "h5 reopen after discard");
    CHECK(!gbtd_h5_has_dataset(f, "/discarded") && gbtd_h5_has_dataset(f, "/added/x"),
          "h5 discard dropped the change and kept the file");
    gbtd_h5_close(f);
    CHECK(leftover_tmp() == 0, "h5 discard removes the temporary file");
    CHECK_OK(gbtd_h5_save(tmp("rt.h5"), "only", &x, NULL, false), "h5 save new file");
    CHECK_OK(gbtd_h5_open(tmp("rt.h5"), &f), "h5 open new file");
    gbtd_tensor_desc_list l;
    CHECK_OK(gbtd_h5_list(f, &l), "h5 list");
    CHECK(l.count == 1 && !strcmp(l.items[0].name, "/only"), "h5 save without append replaces");
    gbtd_tensor_desc_list_free(&l);
    gbtd_h5_close(f);
    CHECK_OK(gbtd_h5_save(tmp("fresh.h5"), "a/b", &x, NULL, true), "h5 append creates a new file");
    gbtd_tensor_free(&x);

    /* float32 path. */
    float w[24], r[24];
    for (int i = 0; i < 24; i++) w[i] = (float)val(i) * 1e-3f;
    const int64_t ws[4] = {2, 3, 2, 2};
    CHECK_OK(gbtd_h5_create(tmp("ck.h5"), &f), "h5 create checkpoint");
    CHECK_OK(gbtd_h5_write_float(f, "/layer1/weight", 4, ws, w), "h5 write_float");
    CHECK_OK(gbtd_h5_close(f), "h5 close checkpoint");
    CHECK_OK(gbtd_h5_open(tmp("ck.h5"), &f), "h5 open checkpoint");
    CHECK_OK(gbtd_h5_read_float_into(f, "/layer1/weight", 4, ws, r), "h5 read_float_into");
    CHECK(!memcmp(w, r, sizeof w), "h5 float path bit-exact");
    const int64_t wrong[4] = {2, 3, 4, 1};
    CHECK_STATUS(gbtd_h5_read_float_into(f, "/layer1/weight", 4, wrong, r), GBTD_ESHAPE,
                 "h5 read_float_into with the wrong shape");
    int nd;
    int64_t gs[GBTD_MAX_MODES];
    float *g;
    CHECK_OK(gbtd_h5_read_float(f, "/layer1/weight", &nd, gs, &g), "h5 read_float");
    CHECK(nd == 4 && gs[0] == 2 && gs[3] == 2 && !memcmp(g, w, sizeof w), "h5 read_float values");
    gbtd_free(g);
    gbtd_h5_close(f);
}

static void test_h5_attrs(void)
{
    gbtd_attr_list a;
    memset(&a, 0, sizeof a);
    const int64_t iv[3] = {3, -4, INT64_C(1) << 40};
    const double rv[2] = {0.1, -1e300};
    const char *sv[3] = {"alpha", "", "γ-ünïcode"};
    gbtd_attr_list_set_int(&a, "version", 2);
    gbtd_attr_list_set_real(&a, "lr", 0.125);
    gbtd_attr_list_set_string(&a, "arch", "resnet20");
    gbtd_attr_list_set_ints(&a, "shape", iv, 3);
    gbtd_attr_list_set_reals(&a, "reals", rv, 2);
    gbtd_attr_list_set_strings(&a, "names", sv, 3);
    gbtd_attr_list_set_int(&a, "version", 3); /* replaces */
    CHECK(a.count == 6 && gbtd_attr_list_find(&a, "version")->ints[0] == 3,
          "attr list set replaces same name");
    gbtd_tensor x;
    const int64_t sh[1] = {2};
    gbtd_tensor_alloc(&x, 1, sh);
    gbtd_h5 *f;
    gbtd_h5_create(tmp("at.h5"), &f);
    gbtd_h5_write_tensor(f, "/d", &x, GBTD_DTYPE_F64);
    CHECK_OK(gbtd_h5_write_attrs(f, "/d", &a), "h5 write dataset attributes");
    CHECK_OK(gbtd_h5_write_attrs(f, "/grp/new", &a), "h5 write attributes creates the group");
    CHECK_OK(gbtd_h5_write_attrs(f, "/", &a), "h5 write root attributes");
    CHECK_OK(gbtd_h5_close(f), "h5 close");
    gbtd_tensor_free(&x);
    const char *objs[3] = {"/d", "/grp/new", "/"};
    gbtd_h5_open(tmp("at.h5"), &f);
    for (int o = 0; o < 3; o++) {
        gbtd_attr_list b;
        memset(&b, 0, sizeof b);
        char name[96];
        snprintf(name, sizeof name, "h5 read attributes of %s", objs[o]);
        CHECK_OK(gbtd_h5_read_attrs(f, objs[o], &b), name);
        const gbtd_attr *v = gbtd_attr_list_find(&b, "version"),
                        *lr = gbtd_attr_list_find(&b, "lr"),
                        *ar = gbtd_attr_list_find(&b, "arch"),
                        *shp = gbtd_attr_list_find(&b, "shape"),
                        *re = gbtd_attr_list_find(&b, "reals"),
                        *nm = gbtd_attr_list_find(&b, "names");
        int ok = b.count == 6 && v && v->kind == GBTD_ATTR_INT && !v->is_array && v->ints[0] == 3 &&
                 lr && lr->kind == GBTD_ATTR_REAL && lr->reals[0] == 0.125 && ar &&
                 ar->kind == GBTD_ATTR_STRING && !strcmp(ar->strs[0], "resnet20") && shp &&
                 shp->is_array && shp->count == 3 && !memcmp(shp->ints, iv, sizeof iv) && re &&
                 re->count == 2 && re->reals[0] == 0.1 && re->reals[1] == -1e300 && nm &&
                 nm->count == 3 && !strcmp(nm->strs[1], "") && !strcmp(nm->strs[2], sv[2]);
        snprintf(name, sizeof name, "h5 attributes of %s round trip exactly", objs[o]);
        CHECK(ok, name);
        gbtd_attr_list_free(&b);
    }
    gbtd_attr_list b;
    memset(&b, 0, sizeof b);
    CHECK_STATUS(gbtd_h5_read_attrs(f, "/missing", &b), GBTD_ENOTFOUND, "h5 attributes of a missing object");
    gbtd_h5_close(f);
    gbtd_attr_list_free(&a);

    /* h5py-written attributes: variable and fixed-length strings, float, int array. */
    gbtd_h5_open(fix("h5py_mixed.h5"), &f);
    CHECK_OK(gbtd_h5_read_attrs(f, "/a", &b), "h5 read h5py attributes");
    const gbtd_attr *u = gbtd_attr_list_find(&b, "units"), *s = gbtd_attr_list_find(&b, "scale"),
                    *d = gbtd_attr_list_find(&b, "dims"), *fx = gbtd_attr_list_find(&b, "fixed");
    CHECK(u && !strcmp(u->strs[0], "volts") && s && s->reals[0] == 0.5 && d && d->count == 2 &&
              d->ints[0] == 3 && d->ints[1] == 4 && fx && !strcmp(fx->strs[0], "abc"),
          "h5py attributes read exactly");
    gbtd_attr_list_free(&b);
    CHECK_OK(gbtd_h5_read_attrs(f, "grp", &b), "h5 read h5py group attributes");
    const gbtd_attr *nt = gbtd_attr_list_find(&b, "note"), *nm = gbtd_attr_list_find(&b, "names");
    CHECK(nt && !strcmp(nt->strs[0], "group attribute") && nm && nm->count == 2 &&
              !strcmp(nm->strs[0], "x") && !strcmp(nm->strs[1], "yy"),
          "h5py group attributes (fixed-length string array) read exactly");
    gbtd_attr_list_free(&b);
    gbtd_h5_close(f);
}

static void test_h5_h5py_files(void)
{
    gbtd_h5 *f;
    CHECK_OK(gbtd_h5_open(fix("h5py_mixed.h5"), &f), "h5 open h5py file");
    static const struct {
        const char *name;
        int nd;
        int64_t sh[3];
        gbtd_dtype dt;
    } cases[] = {
        {"/a", 2, {3, 4}, GBTD_DTYPE_F64},       {"/grp/sub/b", 3, {2, 3, 5}, GBTD_DTYPE_F32},
        {"/big_endian", 1, {4}, GBTD_DTYPE_F64}, {"/scalar", 0, {0}, GBTD_DTYPE_F64},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        gbtd_tensor y;
        gbtd_dtype st;
        char name[128];
        snprintf(name, sizeof name, "h5py %s read bit-exact with its dtype", cases[c].name);
        int rc = gbtd_h5_read_tensor(f, cases[c].name, &y, &st);
        CHECK(rc == GBTD_OK && shape_is(&y, cases[c].nd, cases[c].sh) &&
                  holds_val(&y, cases[c].dt == GBTD_DTYPE_F32) && st == cases[c].dt,
              name);
        gbtd_tensor_free(&y);
    }
    gbtd_tensor y;
    gbtd_dtype st;
    CHECK_OK(gbtd_h5_read_tensor(f, "ints", &y, &st), "h5py int32 dataset read");
    int ok = st == GBTD_DTYPE_I32 && y.ndim == 1 && y.shape[0] == 6;
    for (int i = 0; ok && i < 6; i++) ok = y.data[i] == (double)((37 * i) % 101 - 50);
    CHECK(ok, "h5py int32 dataset converted to double exactly");
    gbtd_tensor_free(&y);
    CHECK_OK(gbtd_h5_read_tensor(f, "half", &y, &st), "h5py float16 dataset read");
    ok = st == GBTD_DTYPE_F16;
    for (int i = 0; ok && i < 5; i++)
        ok = (float)y.data[i] == gbtd_f16_to_float(gbtd_float_to_f16((float)val(i)));
    CHECK(ok, "h5py float16 dataset equals float16 rounding of the values");
    gbtd_tensor_free(&y);

    gbtd_tensor_desc_list l;
    CHECK_OK(gbtd_h5_list(f, &l), "h5 list h5py file");
    static const char *names[] = {"/a", "/big_endian", "/grp/sub/b", "/half", "/ints", "/scalar",
                                  "/text"};
    ok = l.count == 7;
    for (int i = 0; ok && i < 7; i++) ok = !strcmp(l.items[i].name, names[i]);
    CHECK(ok, "h5 list finds the 7 datasets recursively, in name order");
    ok = ok && l.items[2].ndim == 3 && l.items[2].shape[2] == 5 &&
         l.items[2].dtype == GBTD_DTYPE_F32 && l.items[2].bytes == 120 &&
         l.items[5].ndim == 0 && l.items[5].bytes == 8 && l.items[6].dtype == GBTD_DTYPE_UNKNOWN &&
         !strcmp(l.items[6].dtype_str, "string") && l.items[6].shape[0] == 2;
    CHECK(ok, "h5 list shapes, dtypes and bytes");
    gbtd_tensor_desc_list_free(&l);

    CHECK_STATUS(gbtd_h5_read_tensor(f, "/nope", &y, NULL), GBTD_ENOTFOUND, "h5 missing dataset");
    CHECK(strstr(gbtd_last_error(), "nope") && error_names(fix("h5py_mixed.h5")),
          "h5 missing dataset message names file and dataset");
    CHECK_STATUS(gbtd_h5_read_tensor(f, "/grp/nope/deeper", &y, NULL), GBTD_ENOTFOUND,
                 "h5 missing intermediate group");
    CHECK_STATUS(gbtd_h5_read_tensor(f, "/grp", &y, NULL), GBTD_ENOTFOUND, "h5 group is no dataset");
    CHECK_STATUS(gbtd_h5_read_tensor(f, "/text", &y, NULL), GBTD_EUNSUPPORTED, "h5 string dataset");
    CHECK_STATUS(gbtd_h5_read_tensor(f, "", &y, NULL), GBTD_EINVAL, "h5 empty name");
    gbtd_h5_close(f);
}

static void test_h5_errors(void)
{
    gbtd_h5 *f;
    gbtd_tensor y;
    CHECK_STATUS(gbtd_h5_open(tmp("missing.h5"), &f), GBTD_EIO, "h5 open a missing file");
    CHECK(f == NULL && error_names(tmp("missing.h5")), "h5 missing file message names it");
    CHECK_STATUS(gbtd_h5_open(fix("np_f8_3x4.npy"), &f), GBTD_EFORMAT, "h5 open a .npy file");
    CHECK_STATUS(gbtd_h5_load(tmp("missing.h5"), "/a", &y, NULL), GBTD_EIO, "h5 load missing");
    CHECK_STATUS(gbtd_h5_open_append(fix("np_f8_3x4.npy"), &f), GBTD_EFORMAT,
                 "h5 append to a non-HDF5 file");
    CHECK_STATUS(gbtd_h5_create(tmp("no/dir/x.h5"), &f), GBTD_EIO, "h5 create in a missing folder");

    size_t n;
    unsigned char *b = read_bytes(fix("h5py_mixed.h5"), &n);
    /* Truncations: refused when opened, or when the cut-off data are read; never a crash. */
    const size_t cuts[] = {0, 4, 8, 40, 95, 200, 800, 1400, 2048, 4000, n / 2, n - 100, n - 1};
    int refused = 1;
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        write_bytes(tmp("trunc.h5"), b, cuts[i]);
        int rc = gbtd_h5_open(tmp("trunc.h5"), &f);
        if (rc == GBTD_OK) {
            gbtd_tensor_desc_list l;
            int rl = gbtd_h5_list(f, &l);
            int ra = gbtd_h5_read_tensor(f, "/a", &y, NULL);
            int rb = gbtd_h5_read_tensor(f, "/grp/sub/b", &y, NULL);
            rc = rl != GBTD_OK ? rl : ra != GBTD_OK ? ra : rb;
            if (rl == GBTD_OK) gbtd_tensor_desc_list_free(&l);
            gbtd_h5_close(f);
        }
        if (rc != GBTD_EFORMAT && rc != GBTD_ENOTFOUND) refused = 0;
        if (rc == GBTD_EFORMAT && !error_names(tmp("trunc.h5"))) refused = 0;
    }
    CHECK(refused, "h5 truncated at 13 offsets: every one refused with a message naming it");
    /* Superblock corruption: signature and version bytes. */
    const size_t offs[] = {0, 3, 7, 8};
    for (size_t i = 0; i < sizeof offs / sizeof offs[0]; i++) {
        unsigned char *c = malloc(n);
        memcpy(c, b, n);
        c[offs[i]] ^= 0x5a;
        write_bytes(tmp("flip.h5"), c, n);
        char name[64];
        snprintf(name, sizeof name, "h5 refuses a flipped superblock byte %zu", offs[i]);
        CHECK_STATUS(gbtd_h5_open(tmp("flip.h5"), &f), GBTD_EFORMAT, name);
        free(c);
    }
    free(b);
    CHECK(leftover_tmp() == 0, "failed h5 operations leave no temporary files");
}

/* ---- allocation failure -------------------------------------------------------------------- */

/* Run op with the k-th allocation failing for k = 0, 1, ... until it succeeds; every failure
 * must be GBTD_ENOMEM with nothing left allocated. */
#define ALLOC_LOOP(label, setup, op, cleanup)                                                     \
    do {                                                                                          \
        int all_ok_ = 1, k_;                                                                      \
        for (k_ = 0; k_ < 200; k_++) {                                                            \
            setup;                                                                                \
            long before_ = check_alloc_live();                                                    \
            check_alloc_fail_after(k_);                                                           \
            int rc_ = (op);                                                                       \
            check_alloc_fail_after(-1);                                                           \
            if (rc_ == GBTD_OK) {                                                                 \
                cleanup;                                                                          \
                break;                                                                            \
            }                                                                                     \
            if (rc_ != GBTD_ENOMEM || check_alloc_live() != before_) all_ok_ = 0;                 \
            cleanup;                                                                              \
        }                                                                                         \
        char name_[160];                                                                          \
        snprintf(name_, sizeof name_, "%s: ENOMEM at each of %d allocations, no leak", label, k_); \
        CHECK(all_ok_ && k_ > 0 && k_ < 200, name_);                                              \
    } while (0)

static void test_alloc_failures(void)
{
    check_alloc_install();
    long base = check_alloc_live();
    gbtd_tensor x, y, v;
    const int64_t sh[3] = {3, 4, 5};
    gbtd_tensor_alloc(&x, 3, sh);
    fill_val(&x);
    gbtd_tensor_view_permute(&x, (const int[]){2, 1, 0}, &v);
    gbtd_tensor_desc_list l;
    gbtd_attr_list a;
    memset(&a, 0, sizeof a);
    gbtd_attr_list_set_string(&a, "s", "text");
    gbtd_attr_list_set_ints(&a, "i", sh, 3);
    gbtd_h5 *f = NULL;
    int64_t gs[GBTD_MAX_MODES];
    int nd;
    float *g = NULL;
    gbtd_npy_save(tmp("a.npy"), &x, GBTD_DTYPE_F32);

    ALLOC_LOOP("npy_save f8 strided", (void)0, gbtd_npy_save(tmp("b.npy"), &v, GBTD_DTYPE_F64), (void)0);
    ALLOC_LOOP("npy_save f4", (void)0, gbtd_npy_save(tmp("b.npy"), &x, GBTD_DTYPE_F32), (void)0);
    ALLOC_LOOP("npy_load f4", (void)0, gbtd_npy_load(tmp("a.npy"), &y, NULL), gbtd_tensor_free(&y));
    ALLOC_LOOP("npy_load_float", (void)0, gbtd_npy_load_float(tmp("b.npy"), &nd, gs, &g),
               (gbtd_free(g), g = NULL));
    ALLOC_LOOP("h5_save strided with attributes", (void)0,
               gbtd_h5_save(tmp("b.h5"), "/g/x", &v, &a, false), (void)0);
    ALLOC_LOOP("h5_load", (void)0, gbtd_h5_load(tmp("b.h5"), "/g/x", &y, NULL), gbtd_tensor_free(&y));
    ALLOC_LOOP("h5 write f4", gbtd_h5_create(tmp("c.h5"), &f),
               gbtd_h5_write_tensor(f, "x", &v, GBTD_DTYPE_F32), gbtd_h5_discard(f));
    ALLOC_LOOP("h5 read_float", gbtd_h5_open(tmp("b.h5"), &f),
               gbtd_h5_read_float(f, "/g/x", &nd, gs, &g), (gbtd_h5_close(f), gbtd_free(g), g = NULL));
    ALLOC_LOOP("h5 list", gbtd_h5_open(fix("h5py_mixed.h5"), &f), gbtd_h5_list(f, &l),
               (gbtd_h5_close(f), gbtd_tensor_desc_list_free(&l)));
    gbtd_attr_list b;
    memset(&b, 0, sizeof b);
    ALLOC_LOOP("h5 read attributes", gbtd_h5_open(fix("h5py_mixed.h5"), &f),
               gbtd_h5_read_attrs(f, "/grp", &b), (gbtd_h5_close(f), gbtd_attr_list_free(&b)));
    ALLOC_LOOP("io_list npy", (void)0, gbtd_io_list(tmp("a.npy"), NULL, &l),
               gbtd_tensor_desc_list_free(&l));
    gbtd_attr_list c;
    memset(&c, 0, sizeof c);
    ALLOC_LOOP("attr_list_copy", (void)0, gbtd_attr_list_copy(&c, &a), gbtd_attr_list_free(&c));
    gbtd_attr_list_free(&a);
    gbtd_tensor_free(&x);
    CHECK(check_alloc_live() == base, "io: nothing left allocated after the failure loops");
    CHECK(leftover_tmp() == 0, "io: failed writes under allocation failure leave no temporaries");
    gbtd_set_allocator(NULL);
}

/* ---- listing and detection ----------------------------------------------------------------- */

static void test_list(void)
{
    gbtd_tensor_desc_list l;
    gbtd_file_format fmt;
    CHECK_OK(gbtd_io_list(fix("np_f4_2x3x5.npy"), &fmt, &l), "io_list npy");
    CHECK(fmt == GBTD_FORMAT_NPY && l.count == 1 && !strcmp(l.items[0].name, "np_f4_2x3x5.npy") &&
              l.items[0].ndim == 3 && l.items[0].dtype == GBTD_DTYPE_F32 && l.items[0].bytes == 120,
          "io_list npy describes the array");
    gbtd_tensor_desc_list_free(&l);
    CHECK_OK(gbtd_io_list(fix("np_i4.npy"), &fmt, &l), "io_list lists int32 .npy too");
    CHECK(l.count == 1 && l.items[0].dtype == GBTD_DTYPE_I32, "io_list int32 dtype");
    gbtd_tensor_desc_list_free(&l);
    CHECK_OK(gbtd_io_list(fix("h5py_mixed.h5"), &fmt, &l), "io_list hdf5");
    CHECK(fmt == GBTD_FORMAT_HDF5 && l.count == 7, "io_list hdf5 count");
    gbtd_tensor_desc_list_free(&l);
    write_bytes(tmp("junk.bin"), "hello world, not a tensor", 25);
    CHECK_STATUS(gbtd_io_list(tmp("junk.bin"), &fmt, &l), GBTD_EFORMAT, "io_list unknown format");
    CHECK_STATUS(gbtd_io_list(tmp("nope.npy"), &fmt, &l), GBTD_EIO, "io_list missing file");
    CHECK(!strcmp(gbtd_file_format_name(GBTD_FORMAT_SAFETENSORS), "safetensors") &&
              !strcmp(gbtd_dtype_name(GBTD_DTYPE_BF16), "bfloat16") &&
              gbtd_dtype_size(GBTD_DTYPE_F16) == 2 && gbtd_dtype_size(GBTD_DTYPE_UNKNOWN) == 0,
          "dtype and format names");
}

/* float <-> half and bfloat16 against values worked out by hand. */
static void test_half(void)
{
    CHECK(gbtd_float_to_f16(1.0f) == 0x3c00 && gbtd_float_to_f16(-2.0f) == 0xc000 &&
              gbtd_float_to_f16(65504.0f) == 0x7bff && gbtd_float_to_f16(65520.0f) == 0x7c00 &&
              gbtd_float_to_f16(5.9604645e-8f) == 0x0001 && gbtd_float_to_f16(2.9802322e-8f) == 0 &&
              gbtd_float_to_f16(1.0f + 1.0f / 2048) == 0x3c00 && /* tie to even */
              gbtd_float_to_f16(1.0f + 3.0f / 2048) == 0x3c02 && gbtd_float_to_f16(0.1f) == 0x2e66,
          "float to float16 rounding (normal, max, overflow, subnormal, ties)");
    int ok = 1;
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff)) continue; /* NaNs */
        if (gbtd_float_to_f16(gbtd_f16_to_float((uint16_t)h)) != h) ok = 0;
    }
    CHECK(ok, "float16 -> float -> float16 is the identity on all 63488 non-NaN values");
    CHECK(gbtd_float_to_bf16(1.0f) == 0x3f80 && gbtd_float_to_bf16(3.0f) == 0x4040 &&
              gbtd_bf16_to_float(0x3f80) == 1.0f && gbtd_float_to_bf16(1.00390625f) == 0x3f80 &&
              gbtd_float_to_bf16(1.01171875f) == 0x3f82,
          "bfloat16 conversions and ties to even");
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: test_io FIXTURE_DIR SCRATCH_DIR\n");
        return 2;
    }
    fixdir = argv[1];
    static char sdir[1024];
    snprintf(sdir, sizeof sdir, "%s/io_scratch", argv[2]);
    mkdir(sdir, 0755);
    scratch = sdir;
    test_half();
    test_npy_roundtrip();
    test_npy_numpy_files();
    test_npy_errors();
    test_h5_roundtrip();
    test_h5_attrs();
    test_h5_h5py_files();
    test_h5_errors();
    test_list();
    test_alloc_failures();
    return check_finish();
}
