/* gbtd linalg: mode-n products (TTM) as GEMMs on contiguous slabs, the multi-mode product,
 * and the checked GEMM wrapper. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "linalg/internal.h"

/* Slab GEMMs below this flop count run faster one per thread than with threaded BLAS. */
#define TTM_SMALL_GEMM_FLOPS 1.0e8
/* Above this load imbalance of P slabs over the threads, large slab GEMMs use threaded BLAS. */
#define TTM_MAX_IMBALANCE 1.05

/* Shape checks common to every TTM entry point. Sets *jout (rows of op(U)). */
static int ttm_check(const char *op, const gbtd_tensor *x, const gbtd_tensor *u, int mode,
                     gbtd_trans trans, const gbtd_tensor *y, int64_t *jout)
{
    if (x == NULL || u == NULL || y == NULL)
        return gbtd_error(GBTD_EINVAL, "%s: NULL tensor argument", op);
    if (trans != GBTD_NOTRANS && trans != GBTD_TRANS)
        return gbtd_error(GBTD_EINVAL, "%s: invalid trans %d", op, (int)trans);
    if (mode < 0 || mode >= x->ndim)
        return gbtd_error(GBTD_ERANGE, "%s: mode %d out of range for a %d-way tensor", op, mode,
                          x->ndim);
    if (u->ndim != 2)
        return gbtd_error(GBTD_ESHAPE, "%s: U must be a matrix, it has %d modes", op, u->ndim);
    const int64_t j = trans == GBTD_NOTRANS ? u->shape[0] : u->shape[1];
    const int64_t i = trans == GBTD_NOTRANS ? u->shape[1] : u->shape[0];
    char a[128];
    if (i != x->shape[mode])
        return gbtd_error(GBTD_ESHAPE, "%s: %sU is %lld x %lld but mode %d of X %s has size %lld",
                          op, trans == GBTD_TRANS ? "transposed " : "", (long long)j, (long long)i,
                          mode, gbtd_shape_str(x->ndim, x->shape, a, sizeof a),
                          (long long)x->shape[mode]);
    int bad = y->ndim != x->ndim;
    for (int k = 0; !bad && k < x->ndim; k++)
        bad = y->shape[k] != (k == mode ? j : x->shape[k]);
    if (bad) {
        char b[128];
        return gbtd_error(GBTD_ESHAPE, "%s: output %s, expected X %s with mode %d of size %lld", op,
                          gbtd_shape_str(y->ndim, y->shape, b, sizeof b),
                          gbtd_shape_str(x->ndim, x->shape, a, sizeof a), mode, (long long)j);
    }
    *jout = j;
    return GBTD_OK;
}

/* Rows of X per block of the last-mode product, and the largest J that goes through the
 * transposed form (its workspace is then at most TTM_LAST_J * TTM_LAST_ROWS doubles per
 * thread, 512 KiB). */
#define TTM_LAST_ROWS 512
#define TTM_LAST_J 128

/* Y (P x J) = alpha X (P x I) op(U)^T + beta Y, the last-mode product. A single GEMM with
 * J as its short dimension runs well below the dgemm rate of the same flop count in OpenBLAS;
 * so X is cut into blocks of TTM_LAST_ROWS rows, and for J <= TTM_LAST_J each block computes
 * T = op(U) X_b^T (J x rows, the fast orientation) into a small workspace, then transposes T
 * into Y. Blocks run as an OpenMP loop when several threads are set. */
static int ttm_last_mode(double alpha, const double *x, int64_t p_n, blasint bi, const double *u,
                         blasint ldu, int opu, blasint bj, double beta, double *y)
{
    const int64_t nblocks = (p_n + TTM_LAST_ROWS - 1) / TTM_LAST_ROWS;
    const int nt = gbtd_get_threads();
    if (nblocks < 2) {
        blasint bp = 0;
        GBTD_CHECK(gbtd_blas_int(p_n, &bp));
        cblas_dgemm(CblasRowMajor, CblasNoTrans, la_cblas_trans(!opu), bp, bj, bi, alpha, x, bi,
                    u, ldu, beta, y, bj);
        return GBTD_OK;
    }
    const int use_omp = nt > 1 && nblocks >= 2 * (int64_t)nt;
    const int nws = use_omp ? nt : 1;
    const int transposed = bj <= TTM_LAST_J;
    double *ws = NULL;
    if (transposed) {
        ws = gbtd_malloc((size_t)nws * (size_t)bj * TTM_LAST_ROWS * sizeof(double));
        if (ws == NULL) return GBTD_ENOMEM;
    }
    int saved = 0;
    if (use_omp) {
        saved = openblas_get_num_threads();
        openblas_set_num_threads(1);
    }
#ifdef _OPENMP
#pragma omp parallel for schedule(static) num_threads(nws) if (use_omp)
#endif
    for (int64_t b = 0; b < nblocks; b++) {
        const int64_t p0 = b * TTM_LAST_ROWS;
        const blasint rows = (blasint)(p_n - p0 < TTM_LAST_ROWS ? p_n - p0 : TTM_LAST_ROWS);
        const double *xb = x + p0 * bi;
        double *yb = y + p0 * bj;
        if (!transposed) {
            cblas_dgemm(CblasRowMajor, CblasNoTrans, la_cblas_trans(!opu), rows, bj, bi, alpha, xb,
                        bi, u, ldu, beta, yb, bj);
            continue;
        }
#ifdef _OPENMP
        double *t = ws + (size_t)omp_get_thread_num() * (size_t)bj * TTM_LAST_ROWS;
#else
        double *t = ws;
#endif
        cblas_dgemm(CblasRowMajor, la_cblas_trans(opu), CblasTrans, bj, rows, bi, alpha, u, ldu,
                    xb, bi, 0.0, t, rows);
        /* yb[p, j] = t[j, p] (+ beta yb[p, j]), in tiles of 16 rows for locality. */
        for (blasint pt = 0; pt < rows; pt += 16) {
            const blasint pe = rows - pt < 16 ? rows : pt + 16;
            for (blasint j = 0; j < bj; j++) {
                const double *tj = t + (size_t)j * (size_t)rows;
                if (beta == 0.0)
                    for (blasint p = pt; p < pe; p++) yb[(size_t)p * bj + j] = tj[p];
                else
                    for (blasint p = pt; p < pe; p++)
                        yb[(size_t)p * bj + j] = beta * yb[(size_t)p * bj + j] + tj[p];
            }
        }
    }
    if (use_omp) openblas_set_num_threads(saved);
    gbtd_free(ws);
    return GBTD_OK;
}

static int ttm_blas(const char *op, double alpha, const gbtd_tensor *x, const gbtd_tensor *u,
                    int mode, gbtd_trans trans, double beta, gbtd_tensor *y)
{
    int64_t j = 0;
    GBTD_CHECK(ttm_check(op, x, u, mode, trans, y, &j));
    if (!gbtd_tensor_is_contiguous(x))
        return gbtd_error(GBTD_EINVAL, "%s: X must be contiguous (clone the view first)", op);
    if (!gbtd_tensor_is_contiguous(y))
        return gbtd_error(GBTD_EINVAL, "%s: output must be contiguous", op);
    blasint ldu = 0;
    int flip = 0;
    GBTD_CHECK(la_blas_operand(op, "U", u, &ldu, &flip));

    int64_t p_n = 1, q_n = 1;
    for (int k = 0; k < mode; k++) p_n *= x->shape[k];
    for (int k = mode + 1; k < x->ndim; k++) q_n *= x->shape[k];
    const int64_t i_n = x->shape[mode];
    /* Sizes first: every GEMM dimension must fit the BLAS integer. */
    blasint bi = 0, bj = 0, bq = 0;
    GBTD_CHECK(gbtd_blas_int(i_n, &bi));
    GBTD_CHECK(gbtd_blas_int(j, &bj));
    /* The last-mode product works on blocks of rows; a single block must fit blasint. */
    if (q_n > 1) GBTD_CHECK(gbtd_blas_int(q_n, &bq));
    if (la_overlap(y, x) || la_overlap(y, u))
        return gbtd_error(GBTD_EINVAL, "%s: output aliases an input", op);
    if (p_n == 0 || q_n == 0 || j == 0) return GBTD_OK;
    if (i_n == 0) { /* empty sum: Y = beta Y */
        if (beta == 0.0) gbtd_tensor_fill(y, 0.0);
        else gbtd_tensor_scale(y, beta);
        return GBTD_OK;
    }
    /* op(U) = M^(flip xor trans) for the memory matrix M of U. */
    const int opu = flip ^ (trans == GBTD_TRANS);
    if (q_n == 1) return ttm_last_mode(alpha, x->data, p_n, bi, u->data, ldu, opu, bj, beta,
                                       y->data);
    const CBLAS_TRANSPOSE tu = la_cblas_trans(opu);
    if (p_n == 1) {
        /* First mode: Y (J x Q) = op(U) X (I x Q). */
        cblas_dgemm(CblasRowMajor, tu, CblasNoTrans, bj, bq, bi, alpha, u->data, ldu, x->data, bq,
                    beta, y->data, bq);
        return GBTD_OK;
    }
    /* Middle mode: P slabs, Y_p (J x Q) = op(U) X_p (I x Q). */
    const int64_t xs = i_n * q_n, ys = j * q_n;
    int nt = gbtd_get_threads();
    const double slab_flops = 2.0 * (double)j * (double)i_n * (double)q_n;
    int outer = 0;
    if (nt > 1 && p_n >= nt) {
        const int64_t rounds = (p_n + nt - 1) / nt;
        const double imbalance = (double)(rounds * nt) / (double)p_n;
        outer = imbalance <= TTM_MAX_IMBALANCE || slab_flops < TTM_SMALL_GEMM_FLOPS;
    }
#ifdef _OPENMP
    if (outer) {
        const int saved = openblas_get_num_threads();
        openblas_set_num_threads(1);
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int64_t p = 0; p < p_n; p++)
            cblas_dgemm(CblasRowMajor, tu, CblasNoTrans, bj, bq, bi, alpha, u->data, ldu,
                        x->data + p * xs, bq, beta, y->data + p * ys, bq);
        openblas_set_num_threads(saved);
        return GBTD_OK;
    }
#else
    (void)outer;
    (void)nt;
#endif
    for (int64_t p = 0; p < p_n; p++)
        cblas_dgemm(CblasRowMajor, tu, CblasNoTrans, bj, bq, bi, alpha, u->data, ldu,
                    x->data + p * xs, bq, beta, y->data + p * ys, bq);
    return GBTD_OK;
}

int gbtd_ttm(const gbtd_tensor *x, const gbtd_tensor *u, int mode, gbtd_trans trans,
             gbtd_tensor *y)
{
    return ttm_blas("ttm", 1.0, x, u, mode, trans, 0.0, y);
}

int gbtd_ttm_acc(double alpha, const gbtd_tensor *x, const gbtd_tensor *u, int mode,
                 gbtd_trans trans, double beta, gbtd_tensor *y)
{
    return ttm_blas("ttm_acc", alpha, x, u, mode, trans, beta, y);
}

int gbtd_ttm_alloc(const gbtd_tensor *x, const gbtd_tensor *u, int mode, gbtd_trans trans,
                   gbtd_tensor *y)
{
    if (y == NULL) return gbtd_error(GBTD_EINVAL, "ttm: NULL output");
    memset(y, 0, sizeof *y);
    if (x == NULL || u == NULL) return gbtd_error(GBTD_EINVAL, "ttm: NULL tensor argument");
    if (mode < 0 || mode >= x->ndim)
        return gbtd_error(GBTD_ERANGE, "ttm: mode %d out of range for a %d-way tensor", mode,
                          x->ndim);
    if (u->ndim != 2)
        return gbtd_error(GBTD_ESHAPE, "ttm: U must be a matrix, it has %d modes", u->ndim);
    int64_t shape[GBTD_MAX_MODES];
    for (int k = 0; k < x->ndim; k++) shape[k] = x->shape[k];
    shape[mode] = trans == GBTD_NOTRANS ? u->shape[0] : u->shape[1];
    /* Check everything but the output before allocating it. */
    gbtd_tensor probe = *x;
    probe.shape[mode] = shape[mode];
    int64_t j = 0;
    GBTD_CHECK(ttm_check("ttm", x, u, mode, trans, &probe, &j));
    if (!gbtd_tensor_is_contiguous(x))
        return gbtd_error(GBTD_EINVAL, "ttm: X must be contiguous (clone the view first)");
    GBTD_CHECK(gbtd_tensor_alloc(y, x->ndim, shape));
    const int rc = gbtd_ttm(x, u, mode, trans, y);
    if (rc != GBTD_OK) gbtd_tensor_free(y);
    return rc;
}

int gbtd_ttm_ref(const gbtd_tensor *x, const gbtd_tensor *u, int mode, gbtd_trans trans,
                 gbtd_tensor *y)
{
    int64_t j_n = 0;
    GBTD_CHECK(ttm_check("ttm_ref", x, u, mode, trans, y, &j_n));
    if (la_overlap(y, x) || la_overlap(y, u))
        return gbtd_error(GBTD_EINVAL, "ttm_ref: output aliases an input");
    const int nd = x->ndim;
    const int64_t i_n = x->shape[mode], total = gbtd_tensor_numel(y);
    /* op(U)[j, i] sits at u + j * suj + i * sui. */
    const int64_t suj = trans == GBTD_NOTRANS ? u->stride[0] : u->stride[1];
    const int64_t sui = trans == GBTD_NOTRANS ? u->stride[1] : u->stride[0];
    int64_t idx[GBTD_MAX_MODES] = {0};
    for (int64_t e = 0; e < total; e++) {
        const int64_t jj = idx[mode];
        idx[mode] = 0;
        const double *xp = gbtd_tensor_ptr(x, idx);
        idx[mode] = jj;
        double s = 0.0;
        for (int64_t i = 0; i < i_n; i++)
            s += u->data[jj * suj + i * sui] * xp[i * x->stride[mode]];
        *gbtd_tensor_ptr(y, idx) = s;
        for (int k = nd - 1; k >= 0; k--) {
            if (++idx[k] < y->shape[k]) break;
            idx[k] = 0;
        }
    }
    return GBTD_OK;
}

/* ---- multi-mode product ----------------------------------------------------------------- */

/* Checks of the multi-mode arguments; fills in[] and jn[] (old and new sizes per position). */
static int multi_check(const gbtd_tensor *x, const gbtd_tensor *const *u, const int *modes,
                       int count, gbtd_trans trans, int64_t *in, int64_t *jn)
{
    if (x == NULL) return gbtd_error(GBTD_EINVAL, "multi_ttm: NULL tensor argument");
    if (count < 0 || count > x->ndim)
        return gbtd_error(GBTD_EINVAL, "multi_ttm: %d products for a %d-way tensor", count,
                          x->ndim);
    if (count > 0 && (u == NULL || modes == NULL))
        return gbtd_error(GBTD_EINVAL, "multi_ttm: NULL matrix or mode list");
    if (trans != GBTD_NOTRANS && trans != GBTD_TRANS)
        return gbtd_error(GBTD_EINVAL, "multi_ttm: invalid trans %d", (int)trans);
    unsigned seen = 0;
    for (int k = 0; k < count; k++) {
        const int m = modes[k];
        if (m < 0 || m >= x->ndim)
            return gbtd_error(GBTD_ERANGE, "multi_ttm: mode %d out of range for a %d-way tensor",
                              m, x->ndim);
        if (seen & (1u << m))
            return gbtd_error(GBTD_EINVAL, "multi_ttm: mode %d appears twice", m);
        seen |= 1u << m;
        if (u[k] == NULL) return gbtd_error(GBTD_EINVAL, "multi_ttm: matrix %d is NULL", k);
        if (u[k]->ndim != 2)
            return gbtd_error(GBTD_ESHAPE, "multi_ttm: matrix %d has %d modes", k, u[k]->ndim);
        const int64_t i = trans == GBTD_NOTRANS ? u[k]->shape[1] : u[k]->shape[0];
        jn[k] = trans == GBTD_NOTRANS ? u[k]->shape[0] : u[k]->shape[1];
        in[k] = x->shape[m];
        if (i != in[k])
            return gbtd_error(GBTD_ESHAPE,
                              "multi_ttm: matrix %d (%lld x %lld%s) does not match mode %d of "
                              "size %lld",
                              k, (long long)u[k]->shape[0], (long long)u[k]->shape[1],
                              trans == GBTD_TRANS ? ", transposed" : "", m, (long long)in[k]);
    }
    return GBTD_OK;
}

/* Least-flop order by dynamic programming over subsets of positions. */
static void multi_plan(const gbtd_tensor *x, const int64_t *in, const int64_t *jn, int count,
                       int *order, double *flops)
{
    enum { NS = 1 << GBTD_MAX_MODES };
    double best[NS], size[NS];
    int last[NS];
    const double n0 = (double)gbtd_tensor_numel(x);
    const int full = (1 << count) - 1;
    size[0] = n0;
    best[0] = 0.0;
    last[0] = -1;
    for (int s = 1; s <= full; s++) {
        best[s] = HUGE_VAL;
        last[s] = -1;
        for (int k = 0; k < count; k++) {
            if (!(s & (1 << k))) continue;
            const int prev = s & ~(1 << k);
            const double c = best[prev] + 2.0 * size[prev] * (double)jn[k];
            if (c < best[s]) {
                best[s] = c;
                last[s] = k;
            }
        }
        const int k = last[s], prev = s & ~(1 << k);
        size[s] = in[k] ? size[prev] / (double)in[k] * (double)jn[k] : 0.0;
    }
    for (int s = full, step = count - 1; s; step--) {
        order[step] = last[s];
        s &= ~(1 << last[s]);
    }
    if (flops) *flops = best[full];
}

int gbtd_multi_ttm_order(const gbtd_tensor *x, const gbtd_tensor *const *u, const int *modes,
                         int count, gbtd_trans trans, int *order, double *flops)
{
    int64_t in[GBTD_MAX_MODES], jn[GBTD_MAX_MODES];
    GBTD_CHECK(multi_check(x, u, modes, count, trans, in, jn));
    if (order == NULL && count > 0) return gbtd_error(GBTD_EINVAL, "multi_ttm: NULL order");
    multi_plan(x, in, jn, count, order, flops);
    return GBTD_OK;
}

int gbtd_multi_ttm_alloc(const gbtd_tensor *x, const gbtd_tensor *const *u, const int *modes,
                         int count, gbtd_trans trans, gbtd_tensor *y)
{
    if (y == NULL) return gbtd_error(GBTD_EINVAL, "multi_ttm: NULL output");
    memset(y, 0, sizeof *y);
    int64_t in[GBTD_MAX_MODES], jn[GBTD_MAX_MODES];
    GBTD_CHECK(multi_check(x, u, modes, count, trans, in, jn));
    if (count == 0) return gbtd_tensor_clone(y, x);
    int order[GBTD_MAX_MODES];
    multi_plan(x, in, jn, count, order, NULL);

    /* Shapes after each step; the largest intermediate sizes the two temporaries. */
    int64_t shape[GBTD_MAX_MODES], steps[GBTD_MAX_MODES][GBTD_MAX_MODES];
    int64_t tmax = 0;
    for (int k = 0; k < x->ndim; k++) shape[k] = x->shape[k];
    for (int s = 0; s < count; s++) {
        shape[modes[order[s]]] = jn[order[s]];
        memcpy(steps[s], shape, sizeof shape);
        int64_t n;
        GBTD_CHECK(gbtd_prod_i64(shape, x->ndim, &n));
        if (s < count - 1 && n > tmax) tmax = n;
    }
    int rc = GBTD_OK;
    gbtd_tensor xc, t0, t1;
    memset(&xc, 0, sizeof xc);
    memset(&t0, 0, sizeof t0);
    memset(&t1, 0, sizeof t1);
    const gbtd_tensor *cur = x;
    if (!gbtd_tensor_is_contiguous(x)) {
        rc = gbtd_tensor_clone(&xc, x);
        if (rc != GBTD_OK) goto done;
        cur = &xc;
    }
    rc = gbtd_tensor_alloc(y, x->ndim, shape);
    if (rc != GBTD_OK) goto done;
    if (count >= 2) {
        rc = gbtd_tensor_alloc(&t0, 1, &tmax);
        if (rc != GBTD_OK) goto done;
    }
    if (count >= 3) {
        rc = gbtd_tensor_alloc(&t1, 1, &tmax);
        if (rc != GBTD_OK) goto done;
    }
    gbtd_tensor views[2];
    for (int s = 0; s < count; s++) {
        gbtd_tensor *dst = y;
        if (s < count - 1) {
            dst = &views[s % 2];
            gbtd_tensor_wrap(s % 2 ? t1.data : t0.data, x->ndim, steps[s], dst);
        }
        rc = gbtd_ttm(cur, u[order[s]], modes[order[s]], trans, dst);
        if (rc != GBTD_OK) goto done;
        cur = dst;
    }
done:
    gbtd_tensor_free(&t1);
    gbtd_tensor_free(&t0);
    gbtd_tensor_free(&xc);
    if (rc != GBTD_OK) gbtd_tensor_free(y);
    return rc;
}

/* ---- GEMM ------------------------------------------------------------------------------- */

int gbtd_gemm(gbtd_trans ta, gbtd_trans tb, double alpha, const gbtd_tensor *a,
              const gbtd_tensor *b, double beta, gbtd_tensor *c)
{
    if (a == NULL || b == NULL || c == NULL)
        return gbtd_error(GBTD_EINVAL, "gemm: NULL tensor argument");
    if ((ta != GBTD_NOTRANS && ta != GBTD_TRANS) || (tb != GBTD_NOTRANS && tb != GBTD_TRANS))
        return gbtd_error(GBTD_EINVAL, "gemm: invalid trans flag");
    if (a->ndim != 2 || b->ndim != 2 || c->ndim != 2)
        return gbtd_error(GBTD_ESHAPE, "gemm: operands must be matrices (got %d, %d, %d modes)",
                          a->ndim, b->ndim, c->ndim);
    const int64_t m = ta ? a->shape[1] : a->shape[0], k = ta ? a->shape[0] : a->shape[1];
    const int64_t kb = tb ? b->shape[1] : b->shape[0], n = tb ? b->shape[0] : b->shape[1];
    if (k != kb || c->shape[0] != m || c->shape[1] != n)
        return gbtd_error(GBTD_ESHAPE,
                          "gemm: op(A) is %lld x %lld, op(B) %lld x %lld, C %lld x %lld",
                          (long long)m, (long long)k, (long long)kb, (long long)n,
                          (long long)c->shape[0], (long long)c->shape[1]);
    if (la_overlap(c, a) || la_overlap(c, b))
        return gbtd_error(GBTD_EINVAL, "gemm: C aliases an input");
    blasint lda = 0, ldb = 0, ldc = 0, bm = 0, bn = 0, bk = 0;
    int fa = 0, fb = 0, fc = 0;
    GBTD_CHECK(la_blas_operand("gemm", "A", a, &lda, &fa));
    GBTD_CHECK(la_blas_operand("gemm", "B", b, &ldb, &fb));
    GBTD_CHECK(la_blas_operand("gemm", "C", c, &ldc, &fc));
    GBTD_CHECK(gbtd_blas_int(m, &bm));
    GBTD_CHECK(gbtd_blas_int(n, &bn));
    GBTD_CHECK(gbtd_blas_int(k, &bk));
    if (m == 0 || n == 0) return GBTD_OK;
    if (k == 0) {
        if (beta == 0.0) gbtd_tensor_fill(c, 0.0);
        else gbtd_tensor_scale(c, beta);
        return GBTD_OK;
    }
    const int oa = fa ^ (ta == GBTD_TRANS), ob = fb ^ (tb == GBTD_TRANS);
    if (!fc)
        cblas_dgemm(CblasRowMajor, la_cblas_trans(oa), la_cblas_trans(ob), bm, bn, bk, alpha,
                    a->data, lda, b->data, ldb, beta, c->data, ldc);
    else /* C is stored transposed: C^T = op(B)^T op(A)^T. */
        cblas_dgemm(CblasRowMajor, la_cblas_trans(!ob), la_cblas_trans(!oa), bn, bm, bk, alpha,
                    b->data, ldb, a->data, lda, beta, c->data, ldc);
    return GBTD_OK;
}
