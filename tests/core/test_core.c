/* Unit tests of lib/core: status codes, allocation hooks and failure injection, checked sizes,
 * the RNG, tensors and views, element-wise operations against float64 loops. */
#define _GNU_SOURCE
#include <dlfcn.h>

#include "check.h"
#include "core/blas.h"

/* Reference: element (idx) of a contiguous tensor with shape sh computed by hand. */
static double ref_at(const double *d, int nd, const int64_t *sh, const int64_t *idx)
{
    int64_t off = 0;
    for (int k = 0; k < nd; k++) off = off * sh[k] + idx[k];
    return d[off];
}

static void test_status(void)
{
    CHECK(!strcmp(gbtd_strerror(GBTD_OK), "success"), "strerror ok");
    int distinct = 1;
    for (int c = GBTD_EINVAL; c >= GBTD_ECANCELLED; c--)
        if (!strcmp(gbtd_strerror(c), "unknown status")) distinct = 0;
    CHECK(distinct, "every status code has a message");
    CHECK(!strcmp(gbtd_strerror(12345), "unknown status"), "unknown code");
    int rc = gbtd_error(GBTD_ESHAPE, "shape %d", 7);
    CHECK(rc == GBTD_ESHAPE && !strcmp(gbtd_last_error(), "shape 7"), "gbtd_error records detail");
    gbtd_clear_error();
    CHECK(gbtd_last_error()[0] == '\0', "clear_error");
}

static void test_sizes(void)
{
    int64_t p;
    const int64_t ok[3] = {1000, 1000, 1000};
    CHECK_OK(gbtd_prod_i64(ok, 3, &p), "prod small");
    CHECK(p == 1000000000, "prod value");
    const int64_t big[3] = {INT64_C(1) << 40, INT64_C(1) << 30, 2};
    CHECK_STATUS(gbtd_prod_i64(big, 3, &p), GBTD_EOVERFLOW, "prod overflow");
    const int64_t neg[2] = {3, -1};
    CHECK_STATUS(gbtd_prod_i64(neg, 2, &p), GBTD_EINVAL, "prod negative");
    size_t s;
    CHECK_STATUS(gbtd_mul_size(SIZE_MAX / 2, 3, &s), GBTD_EOVERFLOW, "mul_size overflow");
    gbtd_tensor t;
    const int64_t huge[4] = {INT64_C(1) << 20, INT64_C(1) << 20, INT64_C(1) << 20, 16};
    CHECK_STATUS(gbtd_tensor_alloc(&t, 4, huge), GBTD_EOVERFLOW, "alloc overflowing shape");
    const int64_t tooBig[2] = {INT64_C(1) << 21, INT64_C(1) << 21}; /* 32 TiB */
    CHECK_STATUS(gbtd_tensor_alloc(&t, 2, tooBig), GBTD_ENOMEM, "alloc 32 TiB fails cleanly");
    CHECK_STATUS(gbtd_tensor_alloc(&t, 9, ok), GBTD_EINVAL, "alloc 9 modes");
    CHECK_STATUS(gbtd_tensor_alloc(&t, 2, neg), GBTD_EINVAL, "alloc negative size");
    CHECK(t.data == NULL && t.owned == NULL, "failed alloc leaves empty tensor");
    gbtd_tensor_free(&t);
    blasint bi;
    CHECK_STATUS(gbtd_blas_int(INT64_C(1) << 40, &bi),
                 sizeof(blasint) < 8 ? GBTD_EOVERFLOW : GBTD_OK, "blas int cast checked");
}

static void test_blas_is_openblas(void)
{
    Dl_info info;
    memset(&info, 0, sizeof info);
    void *sym = (void *)(uintptr_t)&cblas_dgemm;
    int found = dladdr(sym, &info);
    const char *lib = found && info.dli_fname ? info.dli_fname : "?";
    char name[256];
    snprintf(name, sizeof name, "cblas_dgemm resolves to OpenBLAS (%s)", lib);
    /* Static linking puts it in the executable: then check OpenBLAS's own entry point is there. */
    void *self = dlopen(NULL, RTLD_NOW);
    void *cfg = self ? dlsym(self, "openblas_get_config") : NULL;
    CHECK(strstr(lib, "openblas") != NULL || (strstr(lib, "gslcblas") == NULL && cfg != NULL), name);
    if (self) dlclose(self);
}

static void test_rng(void)
{
    gbtd_rng *a, *b, *c;
    CHECK_OK(gbtd_rng_alloc(7, &a), "rng alloc");
    gbtd_rng_alloc(7, &b);
    gbtd_rng_alloc(8, &c);
    int same = 1, differ = 0;
    for (int i = 0; i < 1000; i++) {
        double x = gbtd_rng_normal(a), y = gbtd_rng_normal(b), z = gbtd_rng_normal(c);
        if (x != y) same = 0;
        if (x != z) differ = 1;
    }
    CHECK(same, "same seed, same normals");
    CHECK(differ, "different seed, different normals");
    /* Moments of 200k normals: mean within 5 sd of the estimator (5/sqrt(n)), variance within
     * 5 * sqrt(2/n) of 1. */
    const int n = 200000;
    double s = 0, s2 = 0, umin = 1, umax = 0;
    for (int i = 0; i < n; i++) {
        double v = gbtd_rng_normal(a);
        s += v;
        s2 += v * v;
        double u = gbtd_rng_uniform(a);
        if (u < umin) umin = u;
        if (u > umax) umax = u;
    }
    CHECK_LE(fabs(s / n), 5.0 / sqrt(n), "normal mean ~ 0");
    CHECK_LE(fabs(s2 / n - 1.0), 5.0 * sqrt(2.0 / n), "normal variance ~ 1");
    CHECK(umin >= 0.0 && umax < 1.0 && umin < 1e-3 && umax > 1 - 1e-3, "uniform in [0,1)");
    int inrange = 1;
    for (int i = 0; i < 10000; i++)
        if (gbtd_rng_uint(a, 7) >= 7) inrange = 0;
    CHECK(inrange, "uint in range");
    gbtd_rng_free(a);
    gbtd_rng_free(b);
    gbtd_rng_free(c);
}

static void test_views(void)
{
    const int64_t sh[4] = {3, 4, 5, 2};
    gbtd_tensor x;
    CHECK_OK(gbtd_tensor_alloc(&x, 4, sh), "alloc 3x4x5x2");
    const int64_t n = gbtd_tensor_numel(&x);
    for (int64_t i = 0; i < n; i++) x.data[i] = (double)i * 0.5 - 3.0;
    CHECK(gbtd_tensor_is_contiguous(&x) && n == 120, "contiguous and numel");

    /* permutation view: element (a,b,c,d) of view = x(perm^-1) */
    const int perm[4] = {2, 0, 3, 1};
    gbtd_tensor p;
    CHECK_OK(gbtd_tensor_view_permute(&x, perm, &p), "permute view");
    int good = p.shape[0] == 5 && p.shape[1] == 3 && p.shape[2] == 2 && p.shape[3] == 4;
    int64_t idx[4], src[4];
    for (idx[0] = 0; idx[0] < 5; idx[0]++)
        for (idx[1] = 0; idx[1] < 3; idx[1]++)
            for (idx[2] = 0; idx[2] < 2; idx[2]++)
                for (idx[3] = 0; idx[3] < 4; idx[3]++) {
                    for (int k = 0; k < 4; k++) src[perm[k]] = idx[k];
                    if (*gbtd_tensor_ptr(&p, idx) != ref_at(x.data, 4, sh, src)) good = 0;
                }
    CHECK(good && !gbtd_tensor_is_contiguous(&p), "permute view elements");
    const int badperm[4] = {0, 0, 1, 2};
    CHECK_STATUS(gbtd_tensor_view_permute(&x, badperm, &p), GBTD_EINVAL, "bad permutation");

    /* copy of a permuted view gives NumPy's transpose().copy() */
    gbtd_tensor pc;
    CHECK_OK(gbtd_tensor_clone(&pc, &p), "clone permuted");
    double d;
    gbtd_tensor_max_abs_diff(&pc, &p, &d);
    CHECK(d == 0.0 && gbtd_tensor_is_contiguous(&pc), "clone equals view");

    /* sub-tensor with negative step: x[2:0:-1, 1:4, ::2, 1] */
    const int64_t start[4] = {2, 1, 0, 1}, size[4] = {2, 3, 3, 1}, step[4] = {-1, 1, 2, 1};
    gbtd_tensor s;
    CHECK_OK(gbtd_tensor_view_sub(&x, start, size, step, &s), "sub view");
    good = 1;
    for (idx[0] = 0; idx[0] < 2; idx[0]++)
        for (idx[1] = 0; idx[1] < 3; idx[1]++)
            for (idx[2] = 0; idx[2] < 3; idx[2]++) {
                idx[3] = 0;
                for (int k = 0; k < 4; k++) src[k] = start[k] + idx[k] * step[k];
                if (*gbtd_tensor_ptr(&s, idx) != ref_at(x.data, 4, sh, src)) good = 0;
            }
    CHECK(good, "sub view elements (negative step)");
    const int64_t badsize[4] = {2, 4, 3, 1};
    CHECK_STATUS(gbtd_tensor_view_sub(&x, start, badsize, step, &s), GBTD_ERANGE,
                 "sub view out of range");

    /* reshape */
    const int64_t rs[2] = {12, 10};
    gbtd_tensor r;
    CHECK_OK(gbtd_tensor_view_reshape(&x, 2, rs, &r), "reshape contiguous");
    CHECK(r.data == x.data && r.stride[0] == 10, "reshape strides");
    const int64_t rs_bad[2] = {12, 11};
    CHECK_STATUS(gbtd_tensor_view_reshape(&x, 2, rs_bad, &r), GBTD_ESHAPE, "reshape wrong count");
    CHECK_STATUS(gbtd_tensor_view_reshape(&p, 2, rs, &r), GBTD_EINVAL, "reshape strided refused");

    /* strided copy into a strided destination, then axpy/inner/norm against loops */
    gbtd_tensor y;
    gbtd_tensor_alloc_like(&y, &p);
    gbtd_tensor yv;
    gbtd_tensor_view_permute(&y, (const int[]){0, 1, 2, 3}, &yv);
    CHECK_OK(gbtd_tensor_copy(&yv, &p), "copy strided");
    CHECK_STATUS(gbtd_tensor_copy(&x, &p), GBTD_ESHAPE, "copy shape mismatch");
    double ip, ref = 0.0, nrm2 = 0.0;
    CHECK_OK(gbtd_tensor_inner(&p, &pc, &ip), "inner strided x contiguous");
    for (int64_t i = 0; i < n; i++) {
        ref += x.data[i] * x.data[i];
        nrm2 += x.data[i] * x.data[i];
    }
    CHECK_CLOSE(ip, ref, 0, 120 * DBL_EPSILON, "inner value");
    CHECK_CLOSE(gbtd_tensor_norm(&p), sqrt(nrm2), 0, 120 * DBL_EPSILON, "norm of strided view");
    CHECK_OK(gbtd_tensor_axpy(-1.0, &p, &pc), "axpy");
    CHECK_CLOSE(gbtd_tensor_norm(&pc), 0.0, 0.0, 0.0, "x - x = 0");
    CHECK_STATUS(gbtd_tensor_axpy(1.0, &x, &pc), GBTD_ESHAPE, "axpy mismatch");

    gbtd_tensor_free(&y);
    gbtd_tensor_free(&pc);
    gbtd_tensor_free(&p); /* view: no-op */
    gbtd_tensor_free(&x);
}

static void test_elementwise(void)
{
    gbtd_rng *rng;
    gbtd_rng_alloc(1, &rng);
    const int64_t sh[3] = {7, 1, 11};
    gbtd_tensor a, b;
    gbtd_tensor_alloc(&a, 3, sh);
    gbtd_tensor_alloc(&b, 3, sh);
    gbtd_tensor_fill_uniform(&a, rng, -2.0, 3.0);
    double lo = 1e9, hi = -1e9;
    for (int i = 0; i < 77; i++) {
        lo = fmin(lo, a.data[i]);
        hi = fmax(hi, a.data[i]);
    }
    CHECK(lo >= -2.0 && hi < 3.0, "fill_uniform range");
    gbtd_tensor_fill(&b, 2.5);
    double d;
    gbtd_tensor_max_abs_diff(&a, &b, &d);
    double ref = 0;
    for (int i = 0; i < 77; i++) ref = fmax(ref, fabs(a.data[i] - 2.5));
    CHECK(d == ref, "max_abs_diff");
    b.data[3] = NAN;
    gbtd_tensor_max_abs_diff(&a, &b, &d);
    CHECK(isnan(d), "max_abs_diff propagates NaN");
    CHECK_STATUS(gbtd_tensor_check_finite(&b, "b"), GBTD_ENONFINITE, "check_finite NaN");
    CHECK(strstr(gbtd_last_error(), "index 3") != NULL, "check_finite names the index");
    CHECK_OK(gbtd_tensor_check_finite(&a, "a"), "check_finite ok");
    gbtd_tensor_scale(&a, -2.0);
    /* norm without overflow / underflow */
    gbtd_tensor_fill(&b, 1e300);
    CHECK_CLOSE(gbtd_tensor_norm(&b), 1e300 * sqrt(77.0), 0, 4 * DBL_EPSILON, "norm no overflow");
    gbtd_tensor_fill(&b, 1e-300);
    CHECK_CLOSE(gbtd_tensor_norm(&b), 1e-300 * sqrt(77.0), 0, 4 * DBL_EPSILON, "norm no underflow");
    /* float round trip: doubles that are floats survive exactly */
    float f[77];
    for (int i = 0; i < 77; i++) a.data[i] = (double)(float)(a.data[i]);
    gbtd_tensor_to_float(&a, f);
    gbtd_tensor_fill(&b, 0);
    gbtd_tensor_from_float(&b, f);
    gbtd_tensor_max_abs_diff(&a, &b, &d);
    CHECK(d == 0.0, "float round trip exact");
    /* wrap a caller buffer */
    double buf[6] = {1, 2, 3, 4, 5, 6};
    gbtd_tensor w;
    CHECK_OK(gbtd_tensor_wrap(buf, 2, (const int64_t[]){2, 3}, &w), "wrap");
    CHECK(*gbtd_tensor_ptr(&w, (const int64_t[]){1, 2}) == 6.0, "wrap indexing");
    gbtd_tensor_free(&w);
    CHECK(buf[5] == 6.0, "free of a view leaves the buffer");
    char s[64];
    CHECK(!strcmp(gbtd_shape_str(3, sh, s, sizeof s), "(7, 1, 11)"), "shape_str");
    gbtd_tensor_free(&a);
    gbtd_tensor_free(&b);
    gbtd_rng_free(rng);
}

static void test_alloc_failure(void)
{
    check_alloc_install();
    const int64_t sh[3] = {4, 5, 6};
    int all_enomem = 1, leak_free = 1;
    for (long k = 0; k < 3; k++) {
        long live = check_alloc_live();
        check_alloc_fail_after(k);
        gbtd_tensor a, b;
        int r1 = gbtd_tensor_alloc(&a, 3, sh);
        int r2 = r1 == GBTD_OK ? gbtd_tensor_clone(&b, &a) : GBTD_ENOMEM;
        gbtd_rng *rng = NULL;
        int r3 = r2 == GBTD_OK ? gbtd_rng_alloc(1, &rng) : GBTD_ENOMEM;
        check_alloc_fail_after(-1);
        if (r1 == GBTD_OK && r2 == GBTD_OK && r3 == GBTD_OK) all_enomem = 0;
        if (r3 == GBTD_OK) gbtd_rng_free(rng);
        if (r2 == GBTD_OK) gbtd_tensor_free(&b);
        if (r1 == GBTD_OK) gbtd_tensor_free(&a);
        if (check_alloc_live() != live) leak_free = 0;
    }
    CHECK(all_enomem, "each allocation failure reported as ENOMEM");
    CHECK(leak_free, "no leak after allocation failures");
    gbtd_set_allocator(NULL);
}

int main(void)
{
    test_status();
    test_sizes();
    test_blas_is_openblas();
    test_rng();
    test_views();
    test_elementwise();
    test_alloc_failure();
    gbtd_set_threads(2);
    CHECK(gbtd_get_threads() == 2, "set_threads");
    return check_finish();
}
