/* Unit tests of lib/linalg: unfold/fold, Kronecker and Khatri-Rao products, mode-n products,
 * the multi-mode product, GEMM, Gram matrices and leading singular vectors.
 *
 * Three sources of truth: NumPy fixtures (tests/linalg/fixtures/linalg.fix, written once by
 * make_fixtures.py and cross-checked against TensorLy by check_tensorly.py), the in-library
 * naive kernel gbtd_ttm_ref, and identities. Usage: test_linalg FIXTURE_FILE. */
#include <stdint.h>

#include "check.h"
#include "core/blas.h"

/* ---- fixtures ----------------------------------------------------------------------------- */

typedef struct {
    char name[64];
    int ndim;
    int64_t shape[GBTD_MAX_MODES];
    double *data;
} fixture;

static fixture *fx = NULL;
static int fx_count = 0;

static int read_u32(FILE *f, uint32_t *v)
{
    unsigned char b[4];
    if (fread(b, 1, 4, f) != 4) return 0;
    *v = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
    return 1;
}

/* Reads the fixture file (format in make_fixtures.py; this host is little-endian, as checked
 * by the magic and a known value below). Returns 0 on any problem. */
static int load_fixtures(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) return 0;
    char magic[8];
    uint32_t version = 0, count = 0;
    int ok = fread(magic, 1, 8, f) == 8 && !memcmp(magic, "GBTDFIX", 8) && read_u32(f, &version) &&
             version == 1 && read_u32(f, &count) && count < 10000;
    if (ok) fx = calloc(count, sizeof *fx);
    for (uint32_t r = 0; ok && fx && r < count; r++) {
        uint32_t len = 0, nd = 0;
        fixture *e = &fx[r];
        ok = read_u32(f, &len) && len < sizeof e->name && fread(e->name, 1, len, f) == len &&
             read_u32(f, &nd) && nd <= GBTD_MAX_MODES;
        if (!ok) break;
        e->ndim = (int)nd;
        size_t n = 1;
        for (uint32_t k = 0; ok && k < nd; k++) {
            ok = fread(&e->shape[k], 8, 1, f) == 1 && e->shape[k] >= 0 && e->shape[k] < 100000;
            n *= (size_t)e->shape[k];
        }
        e->data = ok ? malloc((n ? n : 1) * sizeof(double)) : NULL;
        ok = ok && e->data && fread(e->data, sizeof(double), n, f) == n;
        fx_count = (int)r + 1;
    }
    fclose(f);
    return ok && fx != NULL;
}

static gbtd_tensor fxt(const char *name)
{
    gbtd_tensor t;
    memset(&t, 0, sizeof t);
    for (int r = 0; r < fx_count; r++)
        if (!strcmp(fx[r].name, name)) {
            gbtd_tensor_wrap(fx[r].data, fx[r].ndim, fx[r].shape, &t);
            return t;
        }
    fprintf(stderr, "missing fixture %s\n", name);
    exit(1);
}

/* ---- helpers -------------------------------------------------------------------------------- */

static gbtd_rng *rng;

static int exactly_equal(const gbtd_tensor *a, const gbtd_tensor *b)
{
    double d = 1.0;
    if (!gbtd_tensor_same_shape(a, b) || gbtd_tensor_max_abs_diff(a, b, &d) != GBTD_OK) return 0;
    return d == 0.0;
}

static void abs_copy(gbtd_tensor *dst, const gbtd_tensor *src)
{
    gbtd_tensor_clone(dst, src);
    int64_t n = gbtd_tensor_numel(dst);
    for (int64_t i = 0; i < n; i++) dst->data[i] = fabs(dst->data[i]);
}

/* Worst |got - ref| / (tol_factor * scale) over contiguous tensors, where `scale` bounds the
 * rounding: <= 1 passes. An element with zero scale must match exactly. */
static double worst_ratio(const gbtd_tensor *got, const gbtd_tensor *ref, const gbtd_tensor *scale,
                          double tol_factor)
{
    if (!gbtd_tensor_same_shape(got, ref)) return INFINITY;
    const int64_t n = gbtd_tensor_numel(got);
    double worst = 0.0;
    for (int64_t i = 0; i < n; i++) {
        const double d = fabs(got->data[i] - ref->data[i]);
        if (isnan(d)) return INFINITY;
        const double b = tol_factor * scale->data[i];
        const double r = b > 0 ? d / b : (d == 0 ? 0 : INFINITY);
        if (r > worst) worst = r;
    }
    return worst;
}

/* Checks a mode-n product against a reference to the rounding bound of two dot products of
 * length I_n computed in any order: |err| <= 2 * I_n * eps * (|op(U)| x_n |X|). */
static void check_ttm_close(const gbtd_tensor *got, const gbtd_tensor *ref, const gbtd_tensor *x,
                            const gbtd_tensor *u, int mode, gbtd_trans tr, const char *name)
{
    gbtd_tensor ax, au, sc;
    gbtd_tensor xc;
    gbtd_tensor_clone(&xc, x);
    abs_copy(&ax, &xc);
    abs_copy(&au, u);
    gbtd_tensor_alloc_like(&sc, ref);
    gbtd_ttm_ref(&ax, &au, mode, tr, &sc);
    const double tol = 2.0 * (double)(x->shape[mode] > 0 ? x->shape[mode] : 1) * DBL_EPSILON;
    CHECK_LE(worst_ratio(got, ref, &sc, tol), 1.0, name);
    gbtd_tensor_free(&sc);
    gbtd_tensor_free(&au);
    gbtd_tensor_free(&ax);
    gbtd_tensor_free(&xc);
}

static void random_tensor(gbtd_tensor *t, int nd, const int64_t *shape)
{
    gbtd_tensor_alloc(t, nd, shape);
    gbtd_tensor_fill_normal(t, rng, 0.0, 1.0);
}

/* A strided copy of x: x written into every other element of a twice-as-large buffer, seen
 * through a view with reversed mode 0 (negative stride) and step 2 elsewhere. */
static void strided_copy(gbtd_tensor *big, gbtd_tensor *view, const gbtd_tensor *x)
{
    int64_t bshape[GBTD_MAX_MODES], start[GBTD_MAX_MODES], step[GBTD_MAX_MODES];
    for (int k = 0; k < x->ndim; k++) {
        bshape[k] = 2 * x->shape[k] + 1;
        step[k] = 2;
        start[k] = 1;
    }
    if (x->ndim > 0) {
        step[0] = -2;
        start[0] = 2 * x->shape[0] - 1;
    }
    gbtd_tensor_alloc(big, x->ndim, bshape);
    gbtd_tensor_fill(big, NAN);
    gbtd_tensor_view_sub(big, start, x->shape, step, view);
    gbtd_tensor_copy(view, x);
}

static const char *const tags[] = {"p3", "s5", "w4", "m2", "v1"};
enum { NTAGS = sizeof tags / sizeof tags[0] };

/* ---- unfold / fold -------------------------------------------------------------------------- */

static void test_unfold_fixtures(void)
{
    char name[160], key[64];
    for (int t = 0; t < NTAGS; t++) {
        snprintf(key, sizeof key, "%s/x", tags[t]);
        gbtd_tensor x = fxt(key), big, xs;
        strided_copy(&big, &xs, &x);
        for (int n = 0; n < x.ndim; n++) {
            snprintf(key, sizeof key, "%s/unfold%d", tags[t], n);
            gbtd_tensor ref = fxt(key), m, f, fs;
            /* Copies only: the comparison is exact. */
            snprintf(name, sizeof name, "unfold %s mode %d equals NumPy", tags[t], n);
            CHECK(gbtd_unfold_alloc(&x, n, &m) == GBTD_OK && exactly_equal(&m, &ref), name);
            gbtd_tensor_free(&m);
            snprintf(name, sizeof name, "unfold of strided view %s mode %d equals NumPy", tags[t], n);
            CHECK(gbtd_unfold_alloc(&xs, n, &m) == GBTD_OK && exactly_equal(&m, &ref), name);
            /* Strided output: write the unfolding into a transposed view of a buffer. */
            gbtd_tensor buf, mt;
            gbtd_matrix_alloc(&buf, ref.shape[1], ref.shape[0]);
            const int perm[2] = {1, 0};
            gbtd_tensor_view_permute(&buf, perm, &mt);
            snprintf(name, sizeof name, "unfold %s mode %d into transposed view", tags[t], n);
            CHECK(gbtd_unfold(&xs, n, &mt) == GBTD_OK && exactly_equal(&mt, &ref), name);
            snprintf(name, sizeof name, "fold %s mode %d inverts the NumPy unfolding", tags[t], n);
            CHECK(gbtd_fold_alloc(&ref, n, x.ndim, x.shape, &f) == GBTD_OK && exactly_equal(&f, &x),
                  name);
            snprintf(name, sizeof name, "fold %s mode %d from a transposed view", tags[t], n);
            gbtd_tensor_alloc_like(&fs, &x);
            CHECK(gbtd_fold(&mt, n, &fs) == GBTD_OK && exactly_equal(&fs, &x), name);
            snprintf(name, sizeof name, "fold %s mode %d into a strided view", tags[t], n);
            gbtd_tensor big2, v2;
            strided_copy(&big2, &v2, &x);
            gbtd_tensor_fill(&v2, 0.0);
            CHECK(gbtd_fold(&m, n, &v2) == GBTD_OK && exactly_equal(&v2, &x), name);
            gbtd_tensor_free(&big2);
            gbtd_tensor_free(&fs);
            gbtd_tensor_free(&f);
            gbtd_tensor_free(&buf);
            gbtd_tensor_free(&m);
        }
        gbtd_tensor_free(&big);
    }
    /* fold(unfold(X)) = X on a larger random 5-way tensor, every mode. */
    const int64_t sh[5] = {3, 4, 1, 5, 2};
    gbtd_tensor x;
    random_tensor(&x, 5, sh);
    int all = 1;
    for (int n = 0; n < 5; n++) {
        gbtd_tensor m, f;
        all &= gbtd_unfold_alloc(&x, n, &m) == GBTD_OK;
        all &= gbtd_fold_alloc(&m, n, 5, sh, &f) == GBTD_OK && exactly_equal(&f, &x);
        gbtd_tensor_free(&f);
        gbtd_tensor_free(&m);
    }
    CHECK(all, "fold(unfold(X, n), n) == X for every mode of a 5-way tensor");
    gbtd_tensor_free(&x);
}

/* ---- mode-n products -------------------------------------------------------------------------- */

static void test_ttm_fixtures(void)
{
    char name[160], key[64];
    for (int t = 0; t < NTAGS; t++) {
        snprintf(key, sizeof key, "%s/x", tags[t]);
        gbtd_tensor x = fxt(key), big, xs;
        strided_copy(&big, &xs, &x);
        for (int n = 0; n < x.ndim; n++)
            for (int tr = 0; tr < 2; tr++) {
                const char *tn = tr ? "t" : "n";
                snprintf(key, sizeof key, "%s/ttm%d_%s/u", tags[t], n, tn);
                gbtd_tensor u = fxt(key);
                snprintf(key, sizeof key, "%s/ttm%d_%s/y", tags[t], n, tn);
                gbtd_tensor ref = fxt(key), y, yr;
                const gbtd_trans trans = tr ? GBTD_TRANS : GBTD_NOTRANS;
                snprintf(name, sizeof name, "ttm %s mode %d %s equals NumPy", tags[t], n, tn);
                int rc = gbtd_ttm_alloc(&x, &u, n, trans, &y);
                if (rc == GBTD_OK) check_ttm_close(&y, &ref, &x, &u, n, trans, name);
                else CHECK(0, name);
                gbtd_tensor_free(&y);
                snprintf(name, sizeof name, "ttm_ref on strided X %s mode %d %s equals NumPy",
                         tags[t], n, tn);
                gbtd_tensor_alloc_like(&yr, &ref);
                if (gbtd_ttm_ref(&xs, &u, n, trans, &yr) == GBTD_OK)
                    check_ttm_close(&yr, &ref, &x, &u, n, trans, name);
                else CHECK(0, name);
                /* U given as a transposed view of its transpose (unit stride on mode 0). */
                gbtd_tensor ut, utv;
                gbtd_matrix_alloc(&ut, u.shape[1], u.shape[0]);
                const int perm[2] = {1, 0};
                gbtd_tensor_view_permute(&ut, perm, &utv);
                gbtd_tensor_copy(&utv, &u);
                snprintf(name, sizeof name, "ttm %s mode %d %s with column-major U", tags[t], n, tn);
                gbtd_tensor_fill(&yr, NAN);
                if (gbtd_ttm(&x, &utv, n, trans, &yr) == GBTD_OK)
                    check_ttm_close(&yr, &ref, &x, &u, n, trans, name);
                else CHECK(0, name);
                gbtd_tensor_free(&ut);
                gbtd_tensor_free(&yr);
            }
        gbtd_tensor_free(&big);
    }
}

/* The BLAS kernel against the naive one on shapes that exercise the three GEMM layouts and
 * both the threaded-BLAS and the OpenMP batch paths. */
static void test_ttm_random(void)
{
    /* {1500, 7}: the last-mode product in blocks of 512 rows (a partial last block). */
    static const int64_t shapes[][5] = {{17, 13, 11, 1, 1}, {64, 40, 50, 1, 1}, {3, 1, 4, 7, 2},
                                        {2, 31, 3, 5, 1}, {1, 9, 1, 6, 1}, {1500, 7, 1, 1, 1}};
    static const int nds[] = {3, 3, 5, 4, 5, 2};
    char name[160];
    for (int threads = 1; threads <= 2; threads++) {
        gbtd_set_threads(threads);
        for (size_t s = 0; s < sizeof nds / sizeof nds[0]; s++) {
            gbtd_tensor x;
            random_tensor(&x, nds[s], shapes[s]);
            for (int n = 0; n < nds[s]; n++)
                for (int tr = 0; tr < 2; tr++) {
                    const int64_t j = (n % 2) ? 5 : 23;
                    gbtd_tensor u, y, yr;
                    if (tr) gbtd_matrix_alloc(&u, x.shape[n], j);
                    else gbtd_matrix_alloc(&u, j, x.shape[n]);
                    gbtd_tensor_fill_normal(&u, rng, 0.0, 1.0);
                    const gbtd_trans trans = tr ? GBTD_TRANS : GBTD_NOTRANS;
                    gbtd_ttm_alloc(&x, &u, n, trans, &y);
                    gbtd_tensor_alloc_like(&yr, &y);
                    gbtd_ttm_ref(&x, &u, n, trans, &yr);
                    snprintf(name, sizeof name, "ttm = ttm_ref, case %zu mode %d %s, %d thread(s)",
                             s, n, tr ? "T" : "N", threads);
                    check_ttm_close(&y, &yr, &x, &u, n, trans, name);
                    /* X x_n I = X exactly: every sum has one term 1 * x and zeros. */
                    if (tr == 0) {
                        gbtd_tensor id, yi;
                        gbtd_matrix_alloc(&id, x.shape[n], x.shape[n]);
                        for (int64_t i = 0; i < x.shape[n]; i++) id.data[i * x.shape[n] + i] = 1;
                        snprintf(name, sizeof name, "X x_%d I == X, case %zu, %d thread(s)", n, s,
                                 threads);
                        CHECK(gbtd_ttm_alloc(&x, &id, n, GBTD_NOTRANS, &yi) == GBTD_OK &&
                                  exactly_equal(&yi, &x),
                              name);
                        gbtd_tensor_free(&yi);
                        gbtd_tensor_free(&id);
                    }
                    gbtd_tensor_free(&yr);
                    gbtd_tensor_free(&y);
                    gbtd_tensor_free(&u);
                }
            gbtd_tensor_free(&x);
        }
    }
    gbtd_set_threads(1);
}

/* The blocked last-mode product: J <= 128 goes through a transposed block and a workspace,
 * J > 128 through direct block GEMMs; with beta != 0 (ttm_acc) on 1 and 2 threads. */
static void test_ttm_last_mode(void)
{
    char name[128];
    const int64_t sh[3] = {3, 700, 6};
    gbtd_tensor x;
    random_tensor(&x, 3, sh);
    for (int threads = 1; threads <= 2; threads++) {
        gbtd_set_threads(threads);
        for (int c = 0; c < 2; c++) {
            const int64_t j = c ? 131 : 9;
            gbtd_tensor u, y, yr, y0;
            gbtd_matrix_alloc(&u, 6, j);
            gbtd_tensor_fill_normal(&u, rng, 0, 1);
            const int64_t ysh[3] = {3, 700, j};
            gbtd_tensor_alloc(&y, 3, ysh);
            gbtd_tensor_fill_normal(&y, rng, 0, 1);
            gbtd_tensor_clone(&y0, &y);
            gbtd_tensor_alloc(&yr, 3, ysh);
            gbtd_ttm_ref(&x, &u, 2, GBTD_TRANS, &yr);
            /* y <- -1.5 (X x_2 U^T) + 0.25 y0; reference formed the same way from ttm_ref. */
            CHECK_OK(gbtd_ttm_acc(-1.5, &x, &u, 2, GBTD_TRANS, 0.25, &y), "ttm_acc last mode");
            gbtd_tensor_scale(&yr, -1.5);
            gbtd_tensor_axpy(0.25, &y0, &yr);
            double d;
            gbtd_tensor_max_abs_diff(&y, &yr, &d);
            /* |X x U| <= 6 * max|x| * max|u| < 6 * 6 * 6 (normal samples below 6 sigma) */
            snprintf(name, sizeof name, "blocked last-mode ttm_acc, J = %lld, %d thread(s)",
                     (long long)j, threads);
            CHECK_LE(d, 4 * 6 * DBL_EPSILON * (1.5 * 216 + 0.25 * 6), name);
            gbtd_tensor_free(&y);
            gbtd_tensor_free(&yr);
            gbtd_tensor_free(&y0);
            gbtd_tensor_free(&u);
        }
    }
    gbtd_set_threads(1);
    gbtd_tensor_free(&x);
}

static void test_ttm_acc_and_edges(void)
{
    const int64_t sh[3] = {5, 6, 7};
    gbtd_tensor x, u, y, yr, base;
    random_tensor(&x, 3, sh);
    gbtd_matrix_alloc(&u, 4, 6);
    gbtd_tensor_fill_normal(&u, rng, 0, 1);
    gbtd_ttm_alloc(&x, &u, 1, GBTD_NOTRANS, &yr);
    gbtd_tensor_alloc_like(&y, &yr);
    gbtd_tensor_fill_normal(&y, rng, 0, 1);
    gbtd_tensor_clone(&base, &y);
    /* y <- 0.5 y + 2 (X x_1 U), checked against the same formula from the plain product:
     * the two differ by the rounding of the fused scaling, bounded by the dot-product bound. */
    CHECK_OK(gbtd_ttm_acc(2.0, &x, &u, 1, GBTD_NOTRANS, 0.5, &y), "ttm_acc runs");
    gbtd_tensor_scale(&base, 0.5);
    gbtd_tensor_axpy(2.0, &yr, &base);
    double d;
    gbtd_tensor_max_abs_diff(&y, &base, &d);
    CHECK_LE(d, 4 * 6 * DBL_EPSILON * (2 * 6 * 3 * 3 + 3), "ttm_acc = beta Y + alpha X x_n U");
    gbtd_tensor_fill(&y, NAN);
    CHECK_OK(gbtd_ttm_acc(1.0, &x, &u, 1, GBTD_NOTRANS, 0.0, &y), "ttm_acc beta 0");
    gbtd_tensor_max_abs_diff(&y, &yr, &d);
    CHECK(d == 0.0, "ttm_acc with beta 0 ignores NaN already in Y");
    gbtd_tensor_free(&base);
    gbtd_tensor_free(&y);
    gbtd_tensor_free(&yr);
    gbtd_tensor_free(&u);
    gbtd_tensor_free(&x);

    /* Empty contraction (I_n = 0): the product is zero. */
    const int64_t sz[3] = {3, 0, 4};
    gbtd_tensor_alloc(&x, 3, sz);
    gbtd_matrix_alloc(&u, 2, 0);
    const int64_t so[3] = {3, 2, 4};
    gbtd_tensor_alloc(&y, 3, so);
    gbtd_tensor_fill(&y, NAN);
    CHECK_OK(gbtd_ttm(&x, &u, 1, GBTD_NOTRANS, &y), "ttm with I_n = 0");
    CHECK(gbtd_tensor_norm(&y) == 0.0, "ttm with I_n = 0 gives zeros");
    gbtd_tensor_free(&y);
    CHECK_OK(gbtd_ttm_alloc(&x, &u, 1, GBTD_NOTRANS, &y), "ttm_alloc with I_n = 0");
    gbtd_tensor_free(&y);
    gbtd_tensor_free(&u);
    gbtd_tensor_free(&x);
}

/* ---- multi-mode products ---------------------------------------------------------------------- */

static void test_multi_ttm(void)
{
    /* Tucker reconstruction fixture. */
    gbtd_tensor g = fxt("tk/g"), ref = fxt("tk/y"), y;
    gbtd_tensor u0 = fxt("tk/u0"), u1 = fxt("tk/u1"), u2 = fxt("tk/u2");
    const gbtd_tensor *us[3] = {&u0, &u1, &u2};
    const int modes[3] = {0, 1, 2};
    CHECK_OK(gbtd_multi_ttm_alloc(&g, us, modes, 3, GBTD_NOTRANS, &y), "multi_ttm Tucker runs");
    /* Three nested sums of lengths 2, 3, 4 in some order: |err| <= 2 * (2+3+4) * eps * scale,
     * scale = |G| x |U0| x |U1| x |U2|. */
    gbtd_tensor ag, a0, a1, a2, sc;
    abs_copy(&ag, &g);
    abs_copy(&a0, &u0);
    abs_copy(&a1, &u1);
    abs_copy(&a2, &u2);
    const gbtd_tensor *as[3] = {&a0, &a1, &a2};
    gbtd_multi_ttm_alloc(&ag, as, modes, 3, GBTD_NOTRANS, &sc);
    CHECK_LE(worst_ratio(&y, &ref, &sc, 2.0 * 9 * DBL_EPSILON), 1.0,
             "multi_ttm Tucker reconstruction equals NumPy");
    gbtd_tensor_free(&y);
    /* Modes listed in another order: same result (products on distinct modes commute). */
    const gbtd_tensor *usr[3] = {&u2, &u0, &u1};
    const int modesr[3] = {2, 0, 1};
    CHECK_OK(gbtd_multi_ttm_alloc(&g, usr, modesr, 3, GBTD_NOTRANS, &y), "multi_ttm permuted list");
    CHECK_LE(worst_ratio(&y, &ref, &sc, 2.0 * 9 * DBL_EPSILON), 1.0,
             "multi_ttm with the modes listed in another order");
    gbtd_tensor_free(&y);
    /* Strided core. */
    gbtd_tensor big, gs;
    strided_copy(&big, &gs, &g);
    CHECK_OK(gbtd_multi_ttm_alloc(&gs, us, modes, 3, GBTD_NOTRANS, &y), "multi_ttm strided core");
    CHECK_LE(worst_ratio(&y, &ref, &sc, 2.0 * 9 * DBL_EPSILON), 1.0,
             "multi_ttm on a strided core equals NumPy");
    gbtd_tensor_free(&y);
    gbtd_tensor_free(&big);
    /* Projection: X x_0 U0^T x_1 U1^T (TRANS, two modes) equals two sequential products. */
    gbtd_tensor p, t1, t2;
    const gbtd_tensor *ut[2] = {&u1, &u0};
    const int mt[2] = {1, 0};
    CHECK_OK(gbtd_multi_ttm_alloc(&ref, ut, mt, 2, GBTD_TRANS, &p), "multi_ttm projection");
    gbtd_ttm_alloc(&ref, &u0, 0, GBTD_TRANS, &t1);
    gbtd_ttm_alloc(&t1, &u1, 1, GBTD_TRANS, &t2);
    gbtd_tensor ar, sp, s1;
    abs_copy(&ar, &ref);
    gbtd_ttm_alloc(&ar, &a0, 0, GBTD_TRANS, &s1);
    gbtd_ttm_alloc(&s1, &a1, 1, GBTD_TRANS, &sp);
    CHECK_LE(worst_ratio(&p, &t2, &sp, 2.0 * (5 + 6) * DBL_EPSILON), 1.0,
             "multi_ttm (TRANS) equals sequential ttm");
    gbtd_tensor_free(&sp);
    gbtd_tensor_free(&s1);
    gbtd_tensor_free(&ar);
    gbtd_tensor_free(&t2);
    gbtd_tensor_free(&t1);
    gbtd_tensor_free(&p);
    CHECK_OK(gbtd_multi_ttm_alloc(&g, us, modes, 0, GBTD_NOTRANS, &y), "multi_ttm count 0");
    CHECK(exactly_equal(&y, &g), "multi_ttm with no product copies X");
    gbtd_tensor_free(&y);
    gbtd_tensor_free(&sc);
    gbtd_tensor_free(&a2);
    gbtd_tensor_free(&a1);
    gbtd_tensor_free(&a0);
    gbtd_tensor_free(&ag);

    /* Order: X 100 x 5 x 100, U_0 2 x 100 (shrinks), U_1 50 x 5 (grows). Shrinking first costs
     * 2*100*5*100*2 + 2*2*5*100*50 = 300000 flops; the other order 2*50000*50 + 2*2*50*5000*...:
     * growing first costs 2*(100*5*100)*50 + 2*(100*50*100)*2 = 5e6 + 2e6. */
    const int64_t sh[3] = {100, 5, 100};
    gbtd_tensor x, v0, v1;
    gbtd_tensor_alloc(&x, 3, sh);
    gbtd_matrix_alloc(&v0, 2, 100);
    gbtd_matrix_alloc(&v1, 50, 5);
    const gbtd_tensor *vs[2] = {&v1, &v0};
    const int vm[2] = {1, 0};
    int order[2] = {-1, -1};
    double flops = 0;
    CHECK_OK(gbtd_multi_ttm_order(&x, vs, vm, 2, GBTD_NOTRANS, order, &flops), "multi_ttm_order");
    CHECK(order[0] == 1 && order[1] == 0, "multi_ttm applies the shrinking product first");
    CHECK(flops == 2.0 * 100 * 5 * 100 * 2 + 2.0 * 2 * 5 * 100 * 50,
          "multi_ttm_order flop count by formula");
    /* Commuting products on a random 4-way tensor: (X x_0 A) x_2 B == (X x_2 B) x_0 A. */
    const int64_t s4[4] = {6, 5, 7, 3};
    gbtd_tensor x4, a, b, ya, yab, yb, yba;
    random_tensor(&x4, 4, s4);
    gbtd_matrix_alloc(&a, 4, 6);
    gbtd_matrix_alloc(&b, 7, 9);
    gbtd_tensor_fill_normal(&a, rng, 0, 1);
    gbtd_tensor_fill_normal(&b, rng, 0, 1);
    gbtd_ttm_alloc(&x4, &a, 0, GBTD_NOTRANS, &ya);
    gbtd_ttm_alloc(&ya, &b, 2, GBTD_TRANS, &yab);
    gbtd_ttm_alloc(&x4, &b, 2, GBTD_TRANS, &yb);
    gbtd_ttm_alloc(&yb, &a, 0, GBTD_NOTRANS, &yba);
    gbtd_tensor ax, aa, ab, s1b, s2b;
    abs_copy(&ax, &x4);
    abs_copy(&aa, &a);
    abs_copy(&ab, &b);
    gbtd_ttm_alloc(&ax, &aa, 0, GBTD_NOTRANS, &s1b);
    gbtd_ttm_alloc(&s1b, &ab, 2, GBTD_TRANS, &s2b);
    CHECK_LE(worst_ratio(&yab, &yba, &s2b, 2.0 * (6 + 7) * DBL_EPSILON), 1.0,
             "products on different modes commute");
    gbtd_tensor *fr[] = {&x, &v0, &v1, &x4, &a, &b, &ya, &yab, &yb, &yba, &ax, &aa, &ab, &s1b, &s2b};
    for (size_t i = 0; i < sizeof fr / sizeof fr[0]; i++) gbtd_tensor_free(fr[i]);
}

/* ---- Kronecker / Khatri-Rao ------------------------------------------------------------------ */

static void test_kron_kr(void)
{
    char name[128], key[64];
    static const char *const kt[] = {"k1", "k2", "k3"};
    for (int t = 0; t < 3; t++) {
        snprintf(key, sizeof key, "%s/a", kt[t]);
        gbtd_tensor a = fxt(key);
        snprintf(key, sizeof key, "%s/b", kt[t]);
        gbtd_tensor b = fxt(key);
        snprintf(key, sizeof key, "%s/kron", kt[t]);
        gbtd_tensor ref = fxt(key), k;
        /* One correctly rounded product per element: exact. */
        snprintf(name, sizeof name, "kron %s equals numpy.kron exactly", kt[t]);
        CHECK(gbtd_kron_alloc(&a, &b, &k) == GBTD_OK && exactly_equal(&k, &ref), name);
        gbtd_tensor_free(&k);
        gbtd_tensor bigA, av, buf, kv;
        strided_copy(&bigA, &av, &a);
        gbtd_matrix_alloc(&buf, ref.shape[1], ref.shape[0]);
        const int perm[2] = {1, 0};
        gbtd_tensor_view_permute(&buf, perm, &kv);
        snprintf(name, sizeof name, "kron %s strided A, transposed output", kt[t]);
        CHECK(gbtd_kron(&av, &b, &kv) == GBTD_OK && exactly_equal(&kv, &ref), name);
        gbtd_tensor_free(&buf);
        gbtd_tensor_free(&bigA);
    }
    gbtd_tensor a0 = fxt("kr/a0"), a1 = fxt("kr/a1"), a2 = fxt("kr/a2"), kr;
    const gbtd_tensor *ms[3] = {&a0, &a1, &a2};
    /* Products of 3 factors: relative error <= 2 * 2 * eps each way. */
    const double rt = 4 * DBL_EPSILON;
    gbtd_tensor ref = fxt("kr/all");
    CHECK_OK(gbtd_khatri_rao_alloc(ms, 3, -1, &kr), "khatri_rao of 3 runs");
    {
        gbtd_tensor sc;
        abs_copy(&sc, &ref);
        CHECK_LE(worst_ratio(&kr, &ref, &sc, rt), 1.0, "khatri_rao equals the NumPy definition");
        gbtd_tensor_free(&sc);
    }
    gbtd_tensor_free(&kr);
    for (int s = 0; s < 3; s++) {
        snprintf(key, sizeof key, "kr/skip%d", s);
        gbtd_tensor r = fxt(key), sc, buf, v;
        abs_copy(&sc, &r);
        snprintf(name, sizeof name, "khatri_rao skipping %d equals NumPy", s);
        CHECK(gbtd_khatri_rao_alloc(ms, 3, s, &kr) == GBTD_OK &&
                  worst_ratio(&kr, &r, &sc, rt) <= 1.0,
              name);
        gbtd_matrix_alloc(&buf, r.shape[1], r.shape[0]);
        const int perm[2] = {1, 0};
        gbtd_tensor_view_permute(&buf, perm, &v);
        snprintf(name, sizeof name, "khatri_rao skipping %d into a transposed view", s);
        CHECK(gbtd_khatri_rao(ms, 3, s, &v) == GBTD_OK && gbtd_tensor_copy(&kr, &v) == GBTD_OK &&
                  worst_ratio(&kr, &r, &sc, rt) <= 1.0,
              name);
        gbtd_tensor_free(&buf);
        gbtd_tensor_free(&sc);
        gbtd_tensor_free(&kr);
    }
    /* CP identity: unfold(X, n) = A_n diag(w) KR(A_m, m != n)^T. */
    gbtd_tensor w = fxt("kr/w"), cp = fxt("kr/cp");
    for (int n = 0; n < 3; n++) {
        gbtd_tensor un, an, rhs, k, aan, ak, sc;
        gbtd_khatri_rao_alloc(ms, 3, n, &k);
        gbtd_tensor_clone(&an, ms[n]);
        for (int64_t i = 0; i < an.shape[0]; i++)
            for (int64_t r = 0; r < 4; r++) an.data[i * 4 + r] *= w.data[r];
        gbtd_matrix_alloc(&rhs, an.shape[0], k.shape[0]);
        gbtd_gemm(GBTD_NOTRANS, GBTD_TRANS, 1.0, &an, &k, 0.0, &rhs);
        gbtd_unfold_alloc(&cp, n, &un);
        abs_copy(&aan, &an);
        abs_copy(&ak, &k);
        gbtd_matrix_alloc(&sc, an.shape[0], k.shape[0]);
        gbtd_gemm(GBTD_NOTRANS, GBTD_TRANS, 1.0, &aan, &ak, 0.0, &sc);
        /* Each entry: R = 4 terms of 4-factor products, computed twice: 2 * (4 + 4) eps. */
        snprintf(name, sizeof name, "unfold(CP, %d) = A_%d diag(w) khatri_rao(others)^T", n, n);
        CHECK_LE(worst_ratio(&un, &rhs, &sc, 16 * DBL_EPSILON), 1.0, name);
        gbtd_tensor *fr[] = {&un, &an, &rhs, &k, &aan, &ak, &sc};
        for (size_t i = 0; i < sizeof fr / sizeof fr[0]; i++) gbtd_tensor_free(fr[i]);
    }
    /* Everything skipped: the empty product, a row of ones. */
    const gbtd_tensor *one[1] = {&a0};
    CHECK(gbtd_khatri_rao_alloc(one, 1, 0, &kr) == GBTD_OK && kr.shape[0] == 1 &&
              kr.shape[1] == 4 && kr.data[0] == 1 && kr.data[3] == 1,
          "khatri_rao with every matrix skipped is a row of ones");
    gbtd_tensor_free(&kr);
}

/* ---- GEMM, Gram, singular vectors --------------------------------------------------------- */

static void test_gemm(void)
{
    char name[96];
    gbtd_tensor a, b, c, ref, at, bt, ct;
    gbtd_matrix_alloc(&a, 7, 5);
    gbtd_matrix_alloc(&b, 5, 3);
    gbtd_tensor_fill_normal(&a, rng, 0, 1);
    gbtd_tensor_fill_normal(&b, rng, 0, 1);
    gbtd_matrix_alloc(&ref, 7, 3);
    for (int i = 0; i < 7; i++)
        for (int j = 0; j < 3; j++) {
            double s = 0, sa = 0;
            for (int k = 0; k < 5; k++) {
                s += a.data[i * 5 + k] * b.data[k * 3 + j];
                sa += fabs(a.data[i * 5 + k] * b.data[k * 3 + j]);
            }
            ref.data[i * 3 + j] = s;
            (void)sa;
        }
    /* Stored transposes, seen as views (unit stride on mode 0). */
    gbtd_matrix_alloc(&at, 5, 7);
    gbtd_matrix_alloc(&bt, 3, 5);
    gbtd_matrix_alloc(&ct, 3, 7);
    const int perm[2] = {1, 0};
    gbtd_tensor atv, btv, ctv;
    gbtd_tensor_view_permute(&at, perm, &atv);
    gbtd_tensor_view_permute(&bt, perm, &btv);
    gbtd_tensor_view_permute(&ct, perm, &ctv);
    gbtd_tensor_copy(&atv, &a);
    gbtd_tensor_copy(&btv, &b);
    gbtd_matrix_alloc(&c, 7, 3);
    /* 5-term dot products computed twice: 2 * 5 * eps * max|a||b| * 5 bounds every entry. */
    const double tol = 2 * 5 * DBL_EPSILON * 5 * 25;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++)
            for (int cv = 0; cv < 2; cv++) {
                gbtd_tensor *cc = cv ? &ctv : &c;
                gbtd_tensor_fill(cc, NAN);
                int rc = gbtd_gemm(ta ? GBTD_TRANS : GBTD_NOTRANS, tb ? GBTD_TRANS : GBTD_NOTRANS,
                                   1.0, ta ? &at : &a, tb ? &bt : &b, 0.0, cc);
                double d = INFINITY;
                if (rc == GBTD_OK) {
                    gbtd_tensor_max_abs_diff(cc, &ref, &d);
                    /* and the same through the transposed views of the stored transposes */
                }
                snprintf(name, sizeof name, "gemm %c%c%s equals a triple loop", ta ? 'T' : 'N',
                         tb ? 'T' : 'N', cv ? " into a transposed C" : "");
                CHECK_LE(d, tol, name);
            }
    gbtd_tensor_fill(&c, 1.0);
    CHECK_OK(gbtd_gemm(GBTD_NOTRANS, GBTD_NOTRANS, 2.0, &atv, &btv, -1.0, &c),
             "gemm with column-major views");
    double d;
    gbtd_tensor_scale(&ref, 2.0);
    for (int i = 0; i < 21; i++) ref.data[i] -= 1.0;
    gbtd_tensor_max_abs_diff(&c, &ref, &d);
    CHECK_LE(d, 2 * tol + 4 * DBL_EPSILON, "gemm alpha/beta: C = 2 A B - C");
    gbtd_tensor *fr[] = {&a, &b, &c, &ref, &at, &bt, &ct};
    for (size_t i = 0; i < sizeof fr / sizeof fr[0]; i++) gbtd_tensor_free(fr[i]);
}

static void test_gram_and_svd(void)
{
    char name[128];
    const int64_t sh[4] = {6, 4, 5, 3};
    gbtd_tensor x;
    random_tensor(&x, 4, sh);
    for (int n = 0; n < 4; n++) {
        gbtd_tensor g, m, ref, am, sc;
        gbtd_matrix_alloc(&g, sh[n], sh[n]);
        gbtd_unfold_alloc(&x, n, &m);
        gbtd_matrix_alloc(&ref, sh[n], sh[n]);
        gbtd_gemm(GBTD_NOTRANS, GBTD_TRANS, 1.0, &m, &m, 0.0, &ref);
        abs_copy(&am, &m);
        gbtd_matrix_alloc(&sc, sh[n], sh[n]);
        gbtd_gemm(GBTD_NOTRANS, GBTD_TRANS, 1.0, &am, &am, 0.0, &sc);
        const double len = (double)(gbtd_tensor_numel(&x) / sh[n]);
        snprintf(name, sizeof name, "unfold_gram mode %d = X_(n) X_(n)^T", n);
        CHECK(gbtd_unfold_gram(&x, n, &g) == GBTD_OK &&
                  worst_ratio(&g, &ref, &sc, 2 * len * DBL_EPSILON) <= 1.0,
              name);
        gbtd_tensor *fr[] = {&g, &m, &ref, &am, &sc};
        for (size_t i = 0; i < sizeof fr / sizeof fr[0]; i++) gbtd_tensor_free(fr[i]);
    }

    /* Singular values against LAPACK's SVD of the explicit unfolding, both Gram sides:
     * mode 0 of (6, 4, 5, 3) uses the 6 x 6 Gram; mode 0 of (12, 2, 3) the 6 x 6 column Gram.
     * Squared singular values from a Gram matrix are accurate to ~ n * eps * sigma_max^2. */
    const int64_t sh2[3] = {12, 2, 3};
    gbtd_tensor x2;
    random_tensor(&x2, 3, sh2);
    const gbtd_tensor *cases[2] = {&x, &x2};
    for (int c = 0; c < 2; c++) {
        const gbtd_tensor *xx = cases[c];
        const int64_t in = xx->shape[0], rest = gbtd_tensor_numel(xx) / in;
        const int64_t rank = c == 0 ? 4 : 9; /* case 1: rank 9 > rank of the unfolding (6) */
        gbtd_tensor u, m, s;
        double sv2[12], sv[12], sup[12];
        int rc = gbtd_leading_singular_vectors(xx, 0, rank, &u, sv2);
        snprintf(name, sizeof name, "leading_singular_vectors case %d runs", c);
        CHECK_OK(rc, name);
        if (rc != GBTD_OK) continue;
        gbtd_unfold_alloc(xx, 0, &m);
        gbtd_tensor_clone(&s, &m);
        LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'N', 'N', (lapack_int)in, (lapack_int)rest, s.data,
                       (lapack_int)rest, sv, NULL, 1, NULL, 1, sup);
        const int64_t k = in < rest ? in : rest;
        double worst = 0;
        for (int64_t i = 0; i < in; i++) {
            const double want = i < k ? sv[i] * sv[i] : 0.0;
            worst = fmax(worst, fabs(sv2[i] - want));
        }
        snprintf(name, sizeof name, "case %d: squared singular values match dgesvd", c);
        CHECK_LE(worst, 8 * (double)(in + rest) * DBL_EPSILON * sv[0] * sv[0], name);
        /* Orthonormal columns: |U^T U - I| <= 8 * I_n * eps (Gram-Schmidt / dsyevd accuracy). */
        gbtd_tensor utu;
        gbtd_matrix_alloc(&utu, rank, rank);
        gbtd_gemm(GBTD_TRANS, GBTD_NOTRANS, 1.0, &u, &u, 0.0, &utu);
        double orth = 0;
        for (int64_t i = 0; i < rank; i++)
            for (int64_t j = 0; j < rank; j++)
                orth = fmax(orth, fabs(utu.data[i * rank + j] - (i == j)));
        snprintf(name, sizeof name, "case %d: singular vectors are orthonormal", c);
        CHECK_LE(orth, 64 * (double)in * DBL_EPSILON, name);
        /* Each vector with a nonzero singular value solves M M^T u = s^2 u; residual relative to
         * sigma_max^2: the eigenvector of a Gram matrix is accurate to ~ n eps sigma_max^2 / gap,
         * so the residual, not the vector, is compared. */
        gbtd_tensor mtu, mmtu;
        gbtd_matrix_alloc(&mtu, rest, rank);
        gbtd_matrix_alloc(&mmtu, in, rank);
        gbtd_gemm(GBTD_TRANS, GBTD_NOTRANS, 1.0, &m, &u, 0.0, &mtu);
        gbtd_gemm(GBTD_NOTRANS, GBTD_NOTRANS, 1.0, &m, &mtu, 0.0, &mmtu);
        double res = 0;
        int signs = 1;
        for (int64_t j = 0; j < rank; j++) {
            int64_t at = 0;
            for (int64_t i = 0; i < in; i++) {
                const double lam = j < k ? sv[j] * sv[j] : 0.0;
                res = fmax(res, fabs(mmtu.data[i * rank + j] - lam * u.data[i * rank + j]));
                if (fabs(u.data[i * rank + j]) > fabs(u.data[at * rank + j])) at = i;
            }
            signs &= u.data[at * rank + j] > 0;
        }
        snprintf(name, sizeof name, "case %d: X_(n) X_(n)^T u = s^2 u", c);
        CHECK_LE(res, 64 * (double)(in + rest) * DBL_EPSILON * sv[0] * sv[0], name);
        snprintf(name, sizeof name, "case %d: largest entry of each vector is positive", c);
        CHECK(signs, name);
        gbtd_tensor *fr[] = {&u, &m, &s, &utu, &mtu, &mmtu};
        for (size_t i = 0; i < sizeof fr / sizeof fr[0]; i++) gbtd_tensor_free(fr[i]);
    }
    /* Planted subspace: X = G x_1 A with A orthonormal (7 x 2): the leading 2 vectors of mode 1
     * span A, so |U U^T - A A^T| is at rounding level (gap: the other singular values are 0). */
    const int64_t gsh[3] = {4, 2, 5};
    gbtd_tensor gg, a, xp, u, strided, big;
    random_tensor(&gg, 3, gsh);
    gbtd_matrix_alloc(&a, 7, 2);
    gbtd_tensor_fill_normal(&a, rng, 0, 1);
    for (int j = 0; j < 2; j++) { /* Gram-Schmidt on the two columns */
        for (int k = 0; k < j; k++) {
            double d = 0;
            for (int i = 0; i < 7; i++) d += a.data[i * 2 + k] * a.data[i * 2 + j];
            for (int i = 0; i < 7; i++) a.data[i * 2 + j] -= d * a.data[i * 2 + k];
        }
        double s = 0;
        for (int i = 0; i < 7; i++) s += a.data[i * 2 + j] * a.data[i * 2 + j];
        for (int i = 0; i < 7; i++) a.data[i * 2 + j] /= sqrt(s);
    }
    gbtd_ttm_alloc(&gg, &a, 1, GBTD_NOTRANS, &xp);
    strided_copy(&big, &strided, &xp);
    CHECK_OK(gbtd_leading_singular_vectors(&strided, 1, 2, &u, NULL), "planted: strided X");
    double worst = 0;
    for (int i = 0; i < 7; i++)
        for (int j = 0; j < 7; j++) {
            double pu = 0, pa = 0;
            for (int k = 0; k < 2; k++) {
                pu += u.data[i * 2 + k] * u.data[j * 2 + k];
                pa += a.data[i * 2 + k] * a.data[j * 2 + k];
            }
            worst = fmax(worst, fabs(pu - pa));
        }
    CHECK_LE(worst, 1e3 * DBL_EPSILON, "planted: leading vectors span the planted factor");
    gbtd_tensor *fr[] = {&gg, &a, &xp, &u, &big, &x, &x2};
    for (size_t i = 0; i < sizeof fr / sizeof fr[0]; i++) gbtd_tensor_free(fr[i]);
}

/* ---- error paths ---------------------------------------------------------------------------- */

static void test_errors(void)
{
    const int64_t sh[3] = {3, 4, 5};
    gbtd_tensor x, u, y, m, o;
    random_tensor(&x, 3, sh);
    gbtd_matrix_alloc(&u, 2, 4);
    memset(&y, 0, sizeof y);
    /* NULL arguments */
    CHECK_STATUS(gbtd_unfold(NULL, 0, &y), GBTD_EINVAL, "unfold NULL X");
    CHECK_STATUS(gbtd_unfold_alloc(&x, 0, NULL), GBTD_EINVAL, "unfold_alloc NULL out");
    CHECK_STATUS(gbtd_unfold_alloc(NULL, 0, &y), GBTD_EINVAL, "unfold_alloc NULL X");
    CHECK_STATUS(gbtd_fold(NULL, 0, &x), GBTD_EINVAL, "fold NULL M");
    CHECK_STATUS(gbtd_fold_alloc(&u, 0, 3, NULL, &y), GBTD_EINVAL, "fold_alloc NULL shape");
    CHECK_STATUS(gbtd_fold_alloc(&u, 0, 3, sh, NULL), GBTD_EINVAL, "fold_alloc NULL out");
    CHECK_STATUS(gbtd_kron(NULL, &u, &y), GBTD_EINVAL, "kron NULL A");
    CHECK_STATUS(gbtd_kron_alloc(&u, &u, NULL), GBTD_EINVAL, "kron_alloc NULL out");
    CHECK_STATUS(gbtd_khatri_rao(NULL, 2, -1, &y), GBTD_EINVAL, "khatri_rao NULL list");
    CHECK_STATUS(gbtd_khatri_rao_alloc(NULL, 2, -1, NULL), GBTD_EINVAL, "khatri_rao_alloc NULL out");
    CHECK_STATUS(gbtd_ttm(&x, NULL, 1, GBTD_NOTRANS, &y), GBTD_EINVAL, "ttm NULL U");
    CHECK_STATUS(gbtd_ttm_alloc(&x, &u, 1, GBTD_NOTRANS, NULL), GBTD_EINVAL, "ttm_alloc NULL out");
    CHECK_STATUS(gbtd_ttm_alloc(NULL, &u, 1, GBTD_NOTRANS, &y), GBTD_EINVAL, "ttm_alloc NULL X");
    CHECK_STATUS(gbtd_ttm_ref(&x, &u, 1, GBTD_NOTRANS, NULL), GBTD_EINVAL, "ttm_ref NULL out");
    CHECK_STATUS(gbtd_ttm_acc(1, &x, &u, 1, GBTD_NOTRANS, 0, NULL), GBTD_EINVAL, "ttm_acc NULL");
    CHECK_STATUS(gbtd_multi_ttm_alloc(NULL, NULL, NULL, 0, GBTD_NOTRANS, &y), GBTD_EINVAL,
                 "multi_ttm NULL X");
    CHECK_STATUS(gbtd_multi_ttm_alloc(&x, NULL, NULL, 1, GBTD_NOTRANS, &y), GBTD_EINVAL,
                 "multi_ttm NULL lists");
    CHECK_STATUS(gbtd_multi_ttm_alloc(&x, NULL, NULL, 0, GBTD_NOTRANS, NULL), GBTD_EINVAL,
                 "multi_ttm NULL out");
    const gbtd_tensor *nul[1] = {NULL};
    const int m1[1] = {1};
    CHECK_STATUS(gbtd_multi_ttm_alloc(&x, nul, m1, 1, GBTD_NOTRANS, &y), GBTD_EINVAL,
                 "multi_ttm NULL matrix");
    CHECK_STATUS(gbtd_multi_ttm_order(&x, nul, m1, 1, GBTD_NOTRANS, NULL, NULL), GBTD_EINVAL,
                 "multi_ttm_order NULL matrix");
    CHECK_STATUS(gbtd_gemm(GBTD_NOTRANS, GBTD_NOTRANS, 1, NULL, &u, 0, &u), GBTD_EINVAL,
                 "gemm NULL A");
    CHECK_STATUS(gbtd_unfold_gram(NULL, 0, &u), GBTD_EINVAL, "unfold_gram NULL");
    CHECK_STATUS(gbtd_leading_singular_vectors(&x, 0, 1, NULL, NULL), GBTD_EINVAL,
                 "leading_singular_vectors NULL out");
    CHECK_STATUS(gbtd_leading_singular_vectors(NULL, 0, 1, &y, NULL), GBTD_EINVAL,
                 "leading_singular_vectors NULL X");
    /* mode out of range */
    CHECK_STATUS(gbtd_unfold_alloc(&x, 3, &y), GBTD_ERANGE, "unfold mode 3 of 3-way");
    CHECK_STATUS(gbtd_unfold_alloc(&x, -1, &y), GBTD_ERANGE, "unfold mode -1");
    CHECK_STATUS(gbtd_fold_alloc(&u, 3, 3, sh, &y), GBTD_ERANGE, "fold_alloc mode 3");
    CHECK_STATUS(gbtd_fold_alloc(&u, 0, 9, sh, &y), GBTD_EINVAL, "fold_alloc 9 modes");
    const int64_t negsh[3] = {3, -4, 5};
    CHECK_STATUS(gbtd_fold_alloc(&u, 0, 3, negsh, &y), GBTD_EINVAL, "fold_alloc negative size");
    CHECK_STATUS(gbtd_ttm_alloc(&x, &u, 3, GBTD_NOTRANS, &y), GBTD_ERANGE, "ttm_alloc mode 3");
    CHECK_STATUS(gbtd_ttm(&x, &u, -1, GBTD_NOTRANS, &x), GBTD_ERANGE, "ttm mode -1");
    CHECK_STATUS(gbtd_ttm(&x, &u, 1, (gbtd_trans)7, &x), GBTD_EINVAL, "ttm bad trans flag");
    CHECK_STATUS(gbtd_unfold_gram(&x, 5, &u), GBTD_ERANGE, "unfold_gram mode 5");
    CHECK_STATUS(gbtd_leading_singular_vectors(&x, 3, 1, &y, NULL), GBTD_ERANGE, "lsv mode 3");
    CHECK_STATUS(gbtd_leading_singular_vectors(&x, 1, 5, &y, NULL), GBTD_ERANGE, "lsv rank > I_n");
    CHECK_STATUS(gbtd_leading_singular_vectors(&x, 1, 0, &y, NULL), GBTD_ERANGE, "lsv rank 0");
    const gbtd_tensor *ul[2] = {&u, &u};
    const int dup[2] = {1, 1}, bad[1] = {4};
    CHECK_STATUS(gbtd_multi_ttm_alloc(&x, ul, bad, 1, GBTD_NOTRANS, &y), GBTD_ERANGE,
                 "multi_ttm mode 4");
    CHECK_STATUS(gbtd_multi_ttm_alloc(&x, ul, dup, 2, GBTD_NOTRANS, &y), GBTD_EINVAL,
                 "multi_ttm repeated mode");
    CHECK_STATUS(gbtd_multi_ttm_alloc(&x, ul, dup, 4, GBTD_NOTRANS, &y), GBTD_EINVAL,
                 "multi_ttm more products than modes");
    CHECK_STATUS(gbtd_multi_ttm_alloc(&x, ul, m1, 1, (gbtd_trans)3, &y), GBTD_EINVAL,
                 "multi_ttm bad trans");
    CHECK_STATUS(gbtd_multi_ttm_order(&x, ul, m1, 1, GBTD_NOTRANS, NULL, NULL), GBTD_EINVAL,
                 "multi_ttm_order NULL order");
    CHECK_STATUS(gbtd_khatri_rao_alloc(ul, 2, 2, &y), GBTD_ERANGE, "khatri_rao skip 2 of 2");
    CHECK_STATUS(gbtd_khatri_rao_alloc(ul, 0, -1, &y), GBTD_EINVAL, "khatri_rao of 0 matrices");
    /* shape mismatch */
    gbtd_matrix_alloc(&m, 4, 14);
    CHECK_STATUS(gbtd_unfold(&x, 1, &m), GBTD_ESHAPE, "unfold into 4 x 14 (needs 4 x 15)");
    CHECK_STATUS(gbtd_fold(&m, 1, &x), GBTD_ESHAPE, "fold a 4 x 14 matrix into 3 x 4 x 5");
    CHECK_STATUS(gbtd_fold_alloc(&m, 1, 3, sh, &y), GBTD_ESHAPE, "fold_alloc wrong shape");
    CHECK_STATUS(gbtd_unfold(&x, 1, &x), GBTD_ESHAPE, "unfold into a 3-way tensor");
    CHECK_STATUS(gbtd_ttm_alloc(&x, &u, 0, GBTD_NOTRANS, &y), GBTD_ESHAPE, "ttm U 2x4 on mode 0 (3)");
    CHECK_STATUS(gbtd_ttm_alloc(&x, &u, 1, GBTD_TRANS, &y), GBTD_ESHAPE, "ttm U^T on mode 1");
    CHECK_STATUS(gbtd_ttm_alloc(&x, &x, 1, GBTD_NOTRANS, &y), GBTD_ESHAPE, "ttm U not a matrix");
    CHECK_STATUS(gbtd_ttm(&x, &u, 1, GBTD_NOTRANS, &m), GBTD_ESHAPE, "ttm wrong output shape");
    CHECK_STATUS(gbtd_ttm_ref(&x, &u, 1, GBTD_NOTRANS, &m), GBTD_ESHAPE, "ttm_ref wrong output");
    CHECK_STATUS(gbtd_ttm_acc(1, &x, &u, 1, GBTD_NOTRANS, 1, &m), GBTD_ESHAPE, "ttm_acc wrong output");
    CHECK_STATUS(gbtd_multi_ttm_alloc(&x, ul, m1, 1, GBTD_TRANS, &y), GBTD_ESHAPE,
                 "multi_ttm matrix does not match mode");
    CHECK_STATUS(gbtd_multi_ttm_alloc(&x, (const gbtd_tensor *[]){&x}, m1, 1, GBTD_NOTRANS, &y),
                 GBTD_ESHAPE, "multi_ttm matrix with 3 modes");
    CHECK_STATUS(gbtd_kron_alloc(&x, &u, &y), GBTD_ESHAPE, "kron of a 3-way tensor");
    CHECK_STATUS(gbtd_kron(&u, &u, &m), GBTD_ESHAPE, "kron wrong output shape");
    gbtd_tensor v;
    gbtd_matrix_alloc(&v, 5, 3);
    const gbtd_tensor *uv[2] = {&u, &v};
    CHECK_STATUS(gbtd_khatri_rao_alloc(uv, 2, -1, &y), GBTD_ESHAPE, "khatri_rao column mismatch");
    CHECK_STATUS(gbtd_khatri_rao(uv, 2, 1, &m), GBTD_ESHAPE, "khatri_rao wrong output shape");
    const gbtd_tensor *ux[2] = {&u, &x};
    CHECK_STATUS(gbtd_khatri_rao_alloc(ux, 2, -1, &y), GBTD_ESHAPE, "khatri_rao of a 3-way tensor");
    CHECK_STATUS(gbtd_gemm(GBTD_NOTRANS, GBTD_NOTRANS, 1, &u, &u, 0, &m), GBTD_ESHAPE,
                 "gemm inner sizes differ");
    CHECK_STATUS(gbtd_gemm(GBTD_NOTRANS, GBTD_NOTRANS, 1, &x, &u, 0, &m), GBTD_ESHAPE,
                 "gemm with a 3-way operand");
    CHECK_STATUS(gbtd_gemm((gbtd_trans)2, GBTD_NOTRANS, 1, &u, &u, 0, &m), GBTD_EINVAL,
                 "gemm bad trans");
    CHECK_STATUS(gbtd_unfold_gram(&x, 1, &m), GBTD_ESHAPE, "unfold_gram wrong output");
    /* non-contiguous where contiguity is required */
    gbtd_tensor big, xs, ys;
    strided_copy(&big, &xs, &x);
    gbtd_tensor_alloc(&o, 3, (const int64_t[]){3, 2, 5});
    CHECK_STATUS(gbtd_ttm(&xs, &u, 1, GBTD_NOTRANS, &o), GBTD_EINVAL, "ttm strided X refused");
    CHECK_STATUS(gbtd_ttm_alloc(&xs, &u, 1, GBTD_NOTRANS, &y), GBTD_EINVAL,
                 "ttm_alloc strided X refused");
    gbtd_tensor bigy;
    strided_copy(&bigy, &ys, &o);
    CHECK_STATUS(gbtd_ttm(&x, &u, 1, GBTD_NOTRANS, &ys), GBTD_EINVAL, "ttm strided Y refused");
    gbtd_tensor g4;
    gbtd_matrix_alloc(&g4, 4, 4);
    CHECK_STATUS(gbtd_unfold_gram(&xs, 1, &g4), GBTD_EINVAL, "unfold_gram strided X refused");
    /* U with no unit stride (every other column of a 2 x 8 matrix) */
    gbtd_tensor u8, us;
    gbtd_matrix_alloc(&u8, 2, 8);
    gbtd_tensor_view_sub(&u8, (const int64_t[]){0, 0}, (const int64_t[]){2, 4},
                         (const int64_t[]){1, 2}, &us);
    CHECK_STATUS(gbtd_ttm(&x, &us, 1, GBTD_NOTRANS, &o), GBTD_EINVAL, "ttm U without unit stride");
    CHECK_STATUS(gbtd_gemm(GBTD_NOTRANS, GBTD_TRANS, 1, &us, &us, 0, &m), GBTD_ESHAPE,
                 "gemm shape checked before strides");
    gbtd_tensor c22;
    gbtd_matrix_alloc(&c22, 2, 2);
    CHECK_STATUS(gbtd_gemm(GBTD_NOTRANS, GBTD_TRANS, 1, &us, &us, 0, &c22), GBTD_EINVAL,
                 "gemm operand without unit stride");
    /* aliasing */
    gbtd_tensor sq, sqv;
    gbtd_matrix_alloc(&sq, 4, 4);
    CHECK_STATUS(gbtd_gemm(GBTD_NOTRANS, GBTD_NOTRANS, 1, &sq, &g4, 0, &sq), GBTD_EINVAL,
                 "gemm C aliases A");
    const int64_t x44[3] = {1, 4, 4};
    gbtd_tensor_wrap(sq.data, 3, x44, &sqv);
    CHECK_STATUS(gbtd_ttm(&sqv, &g4, 1, GBTD_NOTRANS, &sqv), GBTD_EINVAL, "ttm Y aliases X");
    CHECK_STATUS(gbtd_ttm_ref(&sqv, &g4, 1, GBTD_NOTRANS, &sqv), GBTD_EINVAL, "ttm_ref Y aliases X");
    CHECK_STATUS(gbtd_kron(&sq, &c22, &sq), GBTD_ESHAPE, "kron shape checked first");
    gbtd_tensor k1x1, one;
    gbtd_matrix_alloc(&one, 1, 1);
    gbtd_tensor_view_sub(&sq, (const int64_t[]){0, 0}, (const int64_t[]){1, 1}, NULL, &k1x1);
    CHECK_STATUS(gbtd_kron(&one, &sq, &sq), GBTD_EINVAL, "kron output aliases B");
    const gbtd_tensor *sql[1] = {&sq};
    gbtd_tensor sqrow;
    gbtd_tensor_view_sub(&sq, (const int64_t[]){0, 0}, (const int64_t[]){4, 4}, NULL, &sqrow);
    CHECK_STATUS(gbtd_khatri_rao(sql, 1, -1, &sqrow), GBTD_EINVAL, "khatri_rao output aliases input");
    CHECK_STATUS(gbtd_unfold(&sqv, 1, &sq), GBTD_EINVAL, "unfold output aliases X");
    CHECK_STATUS(gbtd_unfold_gram(&sqv, 1, &sq), GBTD_EINVAL, "unfold_gram output aliases X");
    /* overflow: shapes forged on a dummy pointer (never dereferenced) */
    double dummy[4] = {0};
    gbtd_tensor huge;
    memset(&huge, 0, sizeof huge);
    huge.data = dummy;
    huge.ndim = 2;
    huge.shape[0] = huge.shape[1] = INT64_C(1) << 40;
    huge.stride[0] = INT64_C(1) << 40;
    huge.stride[1] = 1;
    CHECK_STATUS(gbtd_kron_alloc(&huge, &huge, &y), GBTD_EOVERFLOW, "kron size overflow");
    const gbtd_tensor *hh[2] = {&huge, &huge};
    CHECK_STATUS(gbtd_khatri_rao_alloc(hh, 2, -1, &y), GBTD_EOVERFLOW, "khatri_rao size overflow");
    gbtd_tensor h3 = huge;
    h3.ndim = 3;
    h3.shape[2] = INT64_C(1) << 40;
    CHECK_STATUS(gbtd_unfold_alloc(&h3, 0, &y), GBTD_EOVERFLOW, "unfold size overflow");
    CHECK_STATUS(gbtd_leading_singular_vectors(&h3, 0, 1, &y, NULL), GBTD_EOVERFLOW,
                 "leading_singular_vectors size overflow");
    if (sizeof(blasint) < 8) {
        /* A 1 x 2^31 tensor: its GEMM dimension does not fit a 32-bit BLAS integer. */
        gbtd_tensor wide, wu, wy;
        memset(&wide, 0, sizeof wide);
        wide.data = dummy;
        wide.ndim = 2;
        wide.shape[0] = 1;
        wide.shape[1] = INT64_C(1) << 31;
        wide.stride[0] = wide.shape[1];
        wide.stride[1] = 1;
        static double dummy_y[1];
        wy = wide;
        wy.data = dummy_y;
        wy.shape[0] = 1;
        gbtd_matrix_alloc(&wu, 1, 1);
        CHECK_STATUS(gbtd_ttm(&wide, &wu, 0, GBTD_NOTRANS, &wy), GBTD_EOVERFLOW,
                     "ttm GEMM size beyond the BLAS integer");
        gbtd_tensor_free(&wu);
    }
    /* non-finite input to the eigen-solver */
    x.data[7] = NAN;
    CHECK_STATUS(gbtd_leading_singular_vectors(&x, 1, 2, &y, NULL), GBTD_ENONFINITE,
                 "leading_singular_vectors refuses NaN");
    CHECK(y.data == NULL, "failed call leaves the output empty");
    gbtd_tensor *fr[] = {&x, &u, &m, &o, &v, &big, &bigy, &g4, &u8, &c22, &sq, &one};
    for (size_t i = 0; i < sizeof fr / sizeof fr[0]; i++) gbtd_tensor_free(fr[i]);
}

/* ---- allocation failure at each allocation --------------------------------------------------- */

typedef int (*alloc_case)(gbtd_tensor *out);
static gbtd_tensor af_x, af_u, af_m, af_x2, af_xs_big, af_xs;
static double af_big[3306];

static int af_unfold(gbtd_tensor *o) { return gbtd_unfold_alloc(&af_x, 1, o); }
static int af_fold(gbtd_tensor *o) { return gbtd_fold_alloc(&af_m, 1, 3, af_x.shape, o); }
static int af_kron(gbtd_tensor *o) { return gbtd_kron_alloc(&af_u, &af_m, o); }
static int af_kr(gbtd_tensor *o)
{
    const gbtd_tensor *l[2] = {&af_u, &af_u};
    return gbtd_khatri_rao_alloc(l, 2, -1, o);
}
static int af_ttm(gbtd_tensor *o) { return gbtd_ttm_alloc(&af_x, &af_u, 1, GBTD_NOTRANS, o); }
static int af_multi(gbtd_tensor *o)
{
    const gbtd_tensor *l[3] = {&af_u, &af_u, &af_u};
    const int md[3] = {0, 1, 2};
    return gbtd_multi_ttm_alloc(&af_xs, l, md, 3, GBTD_TRANS, o);
}
static int af_ttm_last(gbtd_tensor *o)
{
    const int64_t sh[2] = {1100, 3};
    gbtd_tensor x, u;
    gbtd_tensor_wrap(af_big, 2, sh, &x);
    gbtd_tensor_wrap(af_big + 3300, 2, (const int64_t[]){2, 3}, &u);
    return gbtd_ttm_alloc(&x, &u, 1, GBTD_NOTRANS, o);
}
static int af_lsv(gbtd_tensor *o) { return gbtd_leading_singular_vectors(&af_xs, 1, 2, o, NULL); }
static int af_lsv_small(gbtd_tensor *o)
{
    return gbtd_leading_singular_vectors(&af_x2, 0, 7, o, NULL);
}

static void test_alloc_failures(void)
{
    const int64_t sh[3] = {4, 4, 4}, sh2[3] = {9, 2, 2};
    random_tensor(&af_x, 3, sh);
    random_tensor(&af_x2, 3, sh2);
    strided_copy(&af_xs_big, &af_xs, &af_x);
    gbtd_matrix_alloc(&af_u, 4, 4);
    gbtd_tensor_fill_normal(&af_u, rng, 0, 1);
    gbtd_unfold_alloc(&af_x, 1, &af_m);
    static const struct {
        const char *name;
        alloc_case fn;
    } cases[] = {{"unfold_alloc", af_unfold},
                 {"fold_alloc", af_fold},
                 {"kron_alloc", af_kron},
                 {"khatri_rao_alloc", af_kr},
                 {"ttm_alloc", af_ttm},
                 {"ttm_alloc last mode (block workspace)", af_ttm_last},
                 {"multi_ttm_alloc (strided X, 3 modes)", af_multi},
                 {"leading_singular_vectors (strided X)", af_lsv},
                 {"leading_singular_vectors (column Gram)", af_lsv_small}};
    char name[160];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const long live0 = check_alloc_live();
        int failures = 0, clean = 1, ok = 0;
        for (long n = 0; n < 100; n++) {
            gbtd_tensor out;
            check_alloc_fail_after(n);
            const int rc = cases[c].fn(&out);
            check_alloc_fail_after(-1);
            if (rc == GBTD_OK) {
                gbtd_tensor_free(&out);
                ok = check_alloc_live() == live0;
                break;
            }
            failures++;
            clean &= rc == GBTD_ENOMEM && out.data == NULL && check_alloc_live() == live0;
        }
        snprintf(name, sizeof name, "%s: ENOMEM without leak at each of its %d allocations",
                 cases[c].name, failures);
        CHECK(ok && clean && failures >= 1, name);
    }
    gbtd_tensor *fr[] = {&af_x, &af_x2, &af_xs_big, &af_u, &af_m};
    for (size_t i = 0; i < sizeof fr / sizeof fr[0]; i++) gbtd_tensor_free(fr[i]);
}

int main(int argc, char **argv)
{
    if (argc != 2 || !load_fixtures(argv[1])) {
        fprintf(stderr, "test_linalg: cannot read the fixture file %s\n", argc > 1 ? argv[1] : "");
        return 1;
    }
    check_alloc_install();
    gbtd_set_threads(1);
    gbtd_rng_alloc(7, &rng);
    gbtd_tensor k = fxt("k3/b");
    CHECK(k.ndim == 2 && k.shape[0] == 1 && k.shape[1] == 1 && isfinite(k.data[0]),
          "fixture file read (version 1)");
    test_unfold_fixtures();
    test_ttm_fixtures();
    test_ttm_random();
    test_ttm_last_mode();
    test_ttm_acc_and_edges();
    test_multi_ttm();
    test_kron_kr();
    test_gemm();
    test_gram_and_svd();
    test_errors();
    test_alloc_failures();
    gbtd_rng_free(rng);
    for (int r = 0; r < fx_count; r++) free(fx[r].data);
    free(fx);
    return check_finish();
}
