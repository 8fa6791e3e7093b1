#include "decomp/tucker.h"

#include <float.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "core/blas.h"
#include "core/rng.h"
#include "core/status.h"
#include "decomp/tc_internal.h"
#include "linalg/linalg.h"

gbtd_tucker_opts gbtd_tucker_opts_default(void)
{
    gbtd_tucker_opts o;
    memset(&o, 0, sizeof o);
    o.max_iter = 100;
    o.tol = 1e-10;
    o.time_budget = 0.0;
    o.init = GBTD_TUCKER_INIT_HOSVD;
    o.seed = 42;
    o.error_target = 0.0;
    return o;
}

void gbtd_tucker_free(gbtd_tucker *t)
{
    if (t == NULL) return;
    gbtd_tensor_free(&t->core);
    for (int k = 0; k < GBTD_MAX_MODES; k++) gbtd_tensor_free(&t->factors[k]);
    memset(t, 0, sizeof *t);
}

int64_t gbtd_tucker_param_count(const gbtd_tucker *t)
{
    if (t == NULL || t->core.data == NULL) return 0;
    int64_t n = gbtd_tensor_numel(&t->core);
    for (int k = 0; k < t->nmodes; k++) n += gbtd_tensor_numel(&t->factors[k]);
    return n;
}

int gbtd_tucker_reconstruct_alloc(const gbtd_tucker *t, gbtd_tensor *out)
{
    if (t == NULL || out == NULL || t->core.data == NULL)
        return gbtd_error(GBTD_EINVAL, "tucker_reconstruct: NULL or empty decomposition");
    const gbtd_tensor *u[GBTD_MAX_MODES];
    for (int k = 0; k < t->nmodes; k++) u[k] = &t->factors[k];
    if (t->nmodes == 0) return gbtd_tensor_clone(out, &t->core);
    return gbtd_multi_ttm_alloc(&t->core, u, t->modes, t->nmodes, GBTD_NOTRANS, out);
}

/* ---- leading left singular vectors with a workspace allocated once ----------------------
 * The r largest eigenpairs of an n x n Gram matrix: Householder tridiagonalisation (dsytrd),
 * all eigenvalues of the tridiagonal matrix by the root-free QR algorithm (dsterf, O(n^2)),
 * eigenvectors for the r largest only by inverse iteration (dstein), and back-transformation
 * of those r vectors (dormtr). This is what dsyevr does for a range by index below the full
 * spectrum, except that dsyevr finds the eigenvalues by bisection (dstebz), which for
 * r ~ n/4 .. n/2 (the Tucker-2 case) costs more than the tridiagonalisation itself. When the
 * tridiagonal matrix splits (a negligible off-diagonal entry) or inverse iteration fails to
 * converge for some vector, the r wanted eigenpairs are computed by MRRR (dstemr) instead.
 * Measured on one core (n = 1024, r = 256, a planted spectrum): the wanted eigenpairs of the
 * tridiagonal matrix in 38 ms, against 95-125 ms for dstemr over that index range (its
 * eigenvalues by bisection too), 65-80 ms for dstemr over the whole spectrum and 150-230 ms
 * inside dsyevr; the tridiagonalisation itself takes 85 ms. */

typedef struct lsv_ws {
    int64_t nmax, rmax;
    double *gram; /* nmax x nmax */
    double *w;    /* nmax */
    double *z;    /* nmax x rmax (column-major eigenvectors) */
    double *zs;   /* rmax x nmax */
    double *d, *e, *tau; /* tridiagonal form and Householder scalars, nmax each */
    double *d2, *e2;     /* copies destroyed by dsterf / dstemr, nmax each */
    lapack_int *iblock, *isplit, *ifail; /* dstein's block description and failures */
    double *work;
    lapack_int *iwork, *isuppz;
    lapack_int lwork, liwork;
} lsv_ws;

static void lsv_free(lsv_ws *ws)
{
    gbtd_free(ws->gram);
    gbtd_free(ws->w);
    gbtd_free(ws->z);
    gbtd_free(ws->zs);
    gbtd_free(ws->d);
    gbtd_free(ws->e);
    gbtd_free(ws->tau);
    gbtd_free(ws->d2);
    gbtd_free(ws->e2);
    gbtd_free(ws->iblock);
    gbtd_free(ws->isplit);
    gbtd_free(ws->ifail);
    gbtd_free(ws->work);
    gbtd_free(ws->iwork);
    gbtd_free(ws->isuppz);
    memset(ws, 0, sizeof *ws);
}

static int lsv_alloc(lsv_ws *ws, int64_t nmax, int64_t rmax)
{
    memset(ws, 0, sizeof *ws);
    lapack_int n = 0, r = 0;
    GBTD_CHECK(gbtd_lapack_int(nmax, &n));
    GBTD_CHECK(gbtd_lapack_int(rmax, &r));
    size_t nn;
    GBTD_CHECK(gbtd_mul_size((size_t)nmax, (size_t)nmax, &nn));
    ws->nmax = nmax;
    ws->rmax = rmax;
    ws->gram = gbtd_malloc(nn * sizeof(double));
    ws->w = gbtd_malloc((size_t)nmax * sizeof(double));
    ws->z = gbtd_malloc((size_t)(nmax * rmax) * sizeof(double));
    ws->zs = gbtd_malloc((size_t)(nmax * rmax) * sizeof(double));
    ws->d = gbtd_malloc((size_t)nmax * sizeof(double));
    ws->e = gbtd_malloc((size_t)nmax * sizeof(double));
    ws->tau = gbtd_malloc((size_t)nmax * sizeof(double));
    ws->d2 = gbtd_malloc((size_t)nmax * sizeof(double));
    ws->e2 = gbtd_malloc((size_t)nmax * sizeof(double));
    ws->iblock = gbtd_malloc((size_t)nmax * sizeof(lapack_int));
    ws->isplit = gbtd_malloc((size_t)nmax * sizeof(lapack_int));
    ws->ifail = gbtd_malloc((size_t)nmax * sizeof(lapack_int));
    ws->isuppz = gbtd_malloc((size_t)(2 * nmax) * sizeof(lapack_int));
    if (!ws->gram || !ws->w || !ws->z || !ws->zs || !ws->d || !ws->e || !ws->tau || !ws->d2 ||
        !ws->e2 || !ws->iblock || !ws->isplit || !ws->ifail || !ws->isuppz) {
        lsv_free(ws);
        return GBTD_ENOMEM;
    }
    /* Workspace queries at the largest order (the requirements grow with n and r). */
    double q1 = 0.0, q2 = 0.0, q3 = 0.0;
    lapack_int iq = 0, m = 0, tryrac = 1;
    lapack_int info = LAPACKE_dsytrd_work(LAPACK_COL_MAJOR, 'L', n, ws->gram, n, ws->d, ws->e,
                                          ws->tau, &q1, -1);
    if (info == 0)
        info = LAPACKE_dstemr_work(LAPACK_COL_MAJOR, 'V', 'I', n, ws->d, ws->e, 0.0, 0.0, 1, r,
                                   &m, ws->w, ws->z, n, r, ws->isuppz, &tryrac, &q2, -1, &iq,
                                   -1);
    if (info == 0)
        info = LAPACKE_dormtr_work(LAPACK_COL_MAJOR, 'L', 'L', 'N', n, r, ws->gram, n, ws->tau,
                                   ws->z, n, &q3, -1);
    if (info != 0) {
        lsv_free(ws);
        return gbtd_error(GBTD_ENUMERIC, "tucker: eigensolver workspace query failed (%d)",
                          (int)info);
    }
    double lw = q1 > q2 ? q1 : q2;
    if (q3 > lw) lw = q3;
    if (lw < 18.0 * (double)n) lw = 18.0 * (double)n;
    ws->lwork = (lapack_int)lw;
    ws->liwork = iq > 10 * n ? iq : 10 * n;
    ws->work = gbtd_malloc((size_t)ws->lwork * sizeof(double));
    ws->iwork = gbtd_malloc((size_t)ws->liwork * sizeof(lapack_int));
    if (!ws->work || !ws->iwork) {
        lsv_free(ws);
        return GBTD_ENOMEM;
    }
    return GBTD_OK;
}

/* Largest r eigenpairs of the n x n Gram (lower triangle in column-major terms, destroyed):
 * ws->w[0..r-1] ascending, eigenvectors in the columns of ws->z (leading dimension n). */
static int lsv_eig(lsv_ws *ws, int64_t n, int64_t r)
{
    const lapack_int ln = (lapack_int)n, lr = (lapack_int)r;
    lapack_int info = LAPACKE_dsytrd_work(LAPACK_COL_MAJOR, 'L', ln, ws->gram, ln, ws->d,
                                          ws->e, ws->tau, ws->work, ws->lwork);
    if (info != 0)
        return gbtd_error(GBTD_ENUMERIC, "tucker: tridiagonalisation failed (info %d)", (int)info);
    /* Inverse iteration needs an unreduced tridiagonal matrix (one block): dstebz's splitting
     * test, |e_i| <= eps * sqrt(|d_i|) * sqrt(|d_{i+1}|), must find nothing. */
    bool split = false;
    for (int64_t i = 0; i + 1 < n; i++)
        if (fabs(ws->e[i]) <= DBL_EPSILON * sqrt(fabs(ws->d[i])) * sqrt(fabs(ws->d[i + 1])))
            split = true;
    bool done = false;
    if (!split) {
        memcpy(ws->d2, ws->d, (size_t)n * sizeof(double));
        if (n > 1) memcpy(ws->e2, ws->e, (size_t)(n - 1) * sizeof(double));
        info = LAPACKE_dsterf_work(ln, ws->d2, ws->e2);
        if (info == 0) {
            for (int64_t i = 0; i < r; i++) {
                ws->w[i] = ws->d2[n - r + i];
                ws->iblock[i] = 1;
            }
            ws->isplit[0] = ln;
            info = LAPACKE_dstein_work(LAPACK_COL_MAJOR, ln, ws->d, ws->e, lr, ws->w, ws->iblock,
                                       ws->isplit, ws->z, ln, ws->work, ws->iwork, ws->ifail);
            done = (info == 0);
        }
    }
    if (!done) {
        /* The r largest eigenpairs by MRRR (ascending, like dstein's). */
        lapack_int m = 0, tryrac = 1;
        memcpy(ws->d2, ws->d, (size_t)n * sizeof(double));
        if (n > 1) memcpy(ws->e2, ws->e, (size_t)(n - 1) * sizeof(double));
        info = LAPACKE_dstemr_work(LAPACK_COL_MAJOR, 'V', 'I', ln, ws->d2, ws->e2, 0.0, 0.0,
                                   ln - lr + 1, ln, &m, ws->w, ws->z, ln, lr, ws->isuppz, &tryrac,
                                   ws->work, ws->lwork, ws->iwork, ws->liwork);
        if (info == 0 && m != lr) info = -1000;
        if (info != 0)
            return gbtd_error(GBTD_ENUMERIC, "tucker: symmetric eigensolver failed (info %d)",
                              (int)info);
    }
    info = LAPACKE_dormtr_work(LAPACK_COL_MAJOR, 'L', 'L', 'N', ln, lr, ws->gram, ln, ws->tau,
                               ws->z, ln, ws->work, ws->lwork);
    if (info != 0)
        return gbtd_error(GBTD_ENUMERIC, "tucker: eigenvector back-transformation failed (%d)",
                          (int)info);
    return GBTD_OK;
}

/* Via the Gram of the other modes (order n = P or Q < I_n), for the first or last mode:
 * U = Y^T V Lambda^(-1/2), then one Cholesky-QR pass restores orthonormality to rounding.
 * Returns 1 (nothing written) when the requested singular values are too small for this path. */
static int lsv_other(lsv_ws *ws, const double *y, int64_t p, int64_t in, int64_t q, int64_t r,
                     double *u)
{
    const bool last = (q == 1);
    const int64_t n = last ? p : q;
    if (last)
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (blasint)n, (blasint)in, 1.0, y,
                    (blasint)in, 0.0, ws->gram, (blasint)n);
    else
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (blasint)n, (blasint)in, 1.0, y,
                    (blasint)n, 0.0, ws->gram, (blasint)n);
    GBTD_CHECK(lsv_eig(ws, n, r));
    const double lmax = ws->w[r - 1], lmin = ws->w[0];
    if (!(lmin > lmax * 1e3 * (double)n * DBL_EPSILON)) return 1;
    for (int64_t k = 0; k < r; k++) {
        const int64_t src = r - 1 - k;
        const double s = 1.0 / sqrt(ws->w[src]);
        for (int64_t j = 0; j < n; j++) ws->zs[k * n + j] = ws->z[j + src * n] * s;
    }
    if (last)
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasTrans, (blasint)in, (blasint)r, (blasint)n,
                    1.0, y, (blasint)in, ws->zs, (blasint)n, 0.0, u, (blasint)r);
    else
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)in, (blasint)r,
                    (blasint)n, 1.0, y, (blasint)n, ws->zs, (blasint)n, 0.0, u, (blasint)r);
    /* Cholesky QR: C = U^T U = L L^T, U <- U L^-T. */
    cblas_dsyrk(CblasRowMajor, CblasLower, CblasTrans, (blasint)r, (blasint)in, 1.0, u,
                (blasint)r, 0.0, ws->gram, (blasint)r);
    const lapack_int info = LAPACKE_dpotrf_work(LAPACK_ROW_MAJOR, 'L', (lapack_int)r, ws->gram,
                                                (lapack_int)r);
    if (info != 0) return 1;
    cblas_dtrsm(CblasRowMajor, CblasRight, CblasLower, CblasTrans, CblasNonUnit, (blasint)in,
                (blasint)r, 1.0, ws->gram, (blasint)r, u, (blasint)r);
    return GBTD_OK;
}

/* u (I_mode x r, row-major) <- leading r left singular vectors of the mode-`mode` unfolding
 * of the contiguous tensor y. Allocates nothing. */
static int lsv_compute(lsv_ws *ws, const double *y, int ndim, const int64_t *shape, int mode,
                       int64_t r, double *u)
{
    int64_t p = 1, q = 1;
    for (int k = 0; k < mode; k++) p *= shape[k];
    for (int k = mode + 1; k < ndim; k++) q *= shape[k];
    const int64_t in = shape[mode];
    blasint chk;
    GBTD_CHECK(gbtd_blas_int(p * q, &chk));
    GBTD_CHECK(gbtd_blas_int(in * q, &chk));
    if (p * q < in && r <= p * q && (p == 1 || q == 1) && p * q <= ws->nmax) {
        const int rc = lsv_other(ws, y, p, in, q, r, u);
        if (rc <= 0) return rc;
    }
    if (q == 1) /* last mode: Y is P x I_n, one syrk of Y^T Y */
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (blasint)in, (blasint)p, 1.0, y,
                    (blasint)in, 0.0, ws->gram, (blasint)in);
    else
        for (int64_t s = 0; s < p; s++)
            cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, (blasint)in, (blasint)q, 1.0,
                        y + s * in * q, (blasint)q, s ? 1.0 : 0.0, ws->gram, (blasint)in);
    GBTD_CHECK(lsv_eig(ws, in, r));
    for (int64_t i = 0; i < in; i++)
        for (int64_t k = 0; k < r; k++) u[i * r + k] = ws->z[i + (r - 1 - k) * in];
    return GBTD_OK;
}

/* All eigenvalues (descending, n of them, n = I_mode) of the mode-`mode` Gram of x, computed
 * from the smaller Gram (the missing ones are zero). Allocates: for rank selection only. */
static int mode_sv2(const gbtd_tensor *x, int mode, double *sv2)
{
    int64_t p = 1, q = 1;
    for (int k = 0; k < mode; k++) p *= x->shape[k];
    for (int k = mode + 1; k < x->ndim; k++) q *= x->shape[k];
    const int64_t in = x->shape[mode];
    const bool other = p * q < in && (p == 1 || q == 1);
    const int64_t n = other ? p * q : in;
    lapack_int ln = 0;
    blasint chk;
    GBTD_CHECK(gbtd_lapack_int(n, &ln));
    GBTD_CHECK(gbtd_blas_int(in * q, &chk));
    GBTD_CHECK(gbtd_blas_int(p * q, &chk));
    size_t nn;
    GBTD_CHECK(gbtd_mul_size((size_t)n, (size_t)n, &nn));
    double *g = gbtd_malloc(nn * sizeof(double));
    double *w = gbtd_malloc((size_t)n * sizeof(double));
    if (g == NULL || w == NULL) {
        gbtd_free(g);
        gbtd_free(w);
        return GBTD_ENOMEM;
    }
    if (other && q == 1)
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, ln, (blasint)in, 1.0, x->data,
                    (blasint)in, 0.0, g, ln);
    else if (other)
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, ln, (blasint)in, 1.0, x->data, ln,
                    0.0, g, ln);
    else if (q == 1)
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, ln, (blasint)p, 1.0, x->data,
                    (blasint)in, 0.0, g, ln);
    else
        for (int64_t s = 0; s < p; s++)
            cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, ln, (blasint)q, 1.0,
                        x->data + s * in * q, (blasint)q, s ? 1.0 : 0.0, g, ln);
    const lapack_int info = LAPACKE_dsyev(LAPACK_ROW_MAJOR, 'N', 'U', ln, g, ln, w);
    int rc = GBTD_OK;
    if (info != 0) {
        rc = gbtd_error(info == LAPACK_WORK_MEMORY_ERROR ? GBTD_ENOMEM : GBTD_ENUMERIC,
                        "tucker: eigenvalues of the mode-%d Gram failed (info %d)", mode,
                        (int)info);
    } else {
        for (int64_t i = 0; i < in; i++) sv2[i] = i < n ? fmax(w[n - 1 - i], 0.0) : 0.0;
    }
    gbtd_free(g);
    gbtd_free(w);
    return rc;
}

/* ---- argument checks ------------------------------------------------------------------ */

static int check_modes(const char *what, int ndim, const int *modes, int nmodes)
{
    if (modes == NULL) return gbtd_error(GBTD_EINVAL, "%s: NULL mode list", what);
    if (nmodes < 1 || nmodes > ndim)
        return gbtd_error(GBTD_ERANGE, "%s: %d modes requested for a %d-way tensor", what,
                          nmodes, ndim);
    for (int k = 0; k < nmodes; k++) {
        if (modes[k] < 0 || modes[k] >= ndim)
            return gbtd_error(GBTD_ERANGE, "%s: mode %d does not exist in a %d-way tensor", what,
                              modes[k], ndim);
        for (int j = 0; j < k; j++)
            if (modes[j] == modes[k])
                return gbtd_error(GBTD_EINVAL, "%s: mode %d listed twice", what, modes[k]);
    }
    return GBTD_OK;
}

int gbtd_tucker_ranks_for_error(const gbtd_tensor *x, const int *modes, int nmodes,
                                double target, int64_t *ranks)
{
    double nx2;
    GBTD_CHECK(gbtd_tc_check_input(x, "tucker_ranks_for_error", &nx2));
    GBTD_CHECK(check_modes("tucker_ranks_for_error", x->ndim, modes, nmodes));
    if (ranks == NULL) return gbtd_error(GBTD_EINVAL, "tucker_ranks_for_error: NULL ranks");
    if (!(target > 0.0) || !isfinite(target))
        return gbtd_error(GBTD_EINVAL, "tucker_ranks_for_error: target %g must be positive",
                          target);
    gbtd_tensor xc = {0};
    const gbtd_tensor *xs = x;
    if (!gbtd_tensor_is_contiguous(x)) {
        GBTD_CHECK(gbtd_tensor_clone(&xc, x));
        xs = &xc;
    }
    int64_t imax = 0;
    for (int k = 0; k < nmodes; k++)
        if (x->shape[modes[k]] > imax) imax = x->shape[modes[k]];
    double *sv2 = gbtd_malloc((size_t)imax * sizeof(double));
    if (sv2 == NULL) {
        gbtd_tensor_free(&xc);
        return GBTD_ENOMEM;
    }
    /* Discarded energy of mode k bounded by target^2 ||X||^2 / nmodes: the HOSVD error
     * satisfies ||X - X_hat||^2 <= sum_k (discarded energy of mode k). */
    int rc = GBTD_OK;
    for (int k = 0; k < nmodes && rc == GBTD_OK; k++) {
        const int m = modes[k];
        const int64_t in = x->shape[m];
        rc = mode_sv2(xs, m, sv2);
        if (rc != GBTD_OK) break;
        double total = 0.0;
        for (int64_t i = 0; i < in; i++) total += sv2[i];
        const double budget = target * target * total / (double)nmodes;
        int64_t r = in;
        double tail = 0.0;
        while (r > 1 && tail + sv2[r - 1] <= budget) {
            tail += sv2[r - 1];
            r--;
        }
        ranks[k] = r;
    }
    gbtd_free(sv2);
    gbtd_tensor_free(&xc);
    return rc;
}

/* ---- projections X x_{k != skip} U_k^T through two buffers ---------------------------- */

static int chain_order(const gbtd_tucker *t, int skip, int *order)
{
    int c = 0;
    for (int k = 0; k < t->nmodes; k++)
        if (k != skip) order[c++] = k;
    /* Largest reduction (smallest R/I) first: it shrinks the tensor before the other products. */
    for (int i = 1; i < c; i++)
        for (int j = i; j > 0; j--) {
            const int a = order[j - 1], b = order[j];
            const double ra = (double)t->factors[a].shape[1] / (double)t->factors[a].shape[0];
            const double rb = (double)t->factors[b].shape[1] / (double)t->factors[b].shape[0];
            if (rb < ra) {
                order[j - 1] = b;
                order[j] = a;
            }
        }
    return c;
}

static int64_t chain_max_numel(const gbtd_tucker *t, const int64_t *shape0, int skip)
{
    int order[GBTD_MAX_MODES];
    const int c = chain_order(t, skip, order);
    int64_t shape[GBTD_MAX_MODES], best = 0;
    memcpy(shape, shape0, sizeof shape);
    for (int s = 0; s < c; s++) {
        const int k = order[s];
        shape[t->modes[k]] = t->factors[k].shape[1];
        int64_t n = 1;
        for (int d = 0; d < t->ndim; d++) n *= shape[d];
        if (n > best) best = n;
    }
    return best;
}

static int project(const gbtd_tensor *x, const gbtd_tucker *t, int skip, double *b0, double *b1,
                   gbtd_tensor *res)
{
    int order[GBTD_MAX_MODES];
    const int c = chain_order(t, skip, order);
    int64_t shape[GBTD_MAX_MODES];
    memcpy(shape, x->shape, sizeof shape);
    GBTD_CHECK(gbtd_tensor_wrap(x->data, x->ndim, shape, res));
    for (int s = 0; s < c; s++) {
        const int k = order[s];
        shape[t->modes[k]] = t->factors[k].shape[1];
        gbtd_tensor dst;
        GBTD_CHECK(gbtd_tensor_wrap(s % 2 == 0 ? b0 : b1, x->ndim, shape, &dst));
        GBTD_CHECK(gbtd_ttm(res, &t->factors[k], t->modes[k], GBTD_TRANS, &dst));
        *res = dst;
    }
    return GBTD_OK;
}

/* ---- the driver ----------------------------------------------------------------------- */

static int tucker_run(const char *what, const gbtd_tensor *x_in, const int *modes_in, int nmodes,
                      const int64_t *ranks_in, bool hooi, gbtd_tucker *out,
                      const gbtd_tucker_opts *opts_in, gbtd_decomp_info *info)
{
    const double t0 = gbtd_wall_time();
    if (out == NULL) return gbtd_error(GBTD_EINVAL, "%s: NULL output", what);
    memset(out, 0, sizeof *out);
    const gbtd_tucker_opts opts = opts_in ? *opts_in : gbtd_tucker_opts_default();
    double nx2;
    GBTD_CHECK(gbtd_tc_check_input(x_in, what, &nx2));
    const int ndim = x_in->ndim;
    GBTD_CHECK(check_modes(what, ndim, modes_in, nmodes));
    if (hooi && opts.max_iter < 1)
        return gbtd_error(GBTD_EINVAL, "%s: max_iter is %d; at least one iteration is needed",
                          what, opts.max_iter);
    if (!(opts.tol >= 0.0) || !isfinite(opts.tol))
        return gbtd_error(GBTD_EINVAL, "%s: tol %g must be finite and >= 0", what, opts.tol);
    if (opts.init != GBTD_TUCKER_INIT_HOSVD && opts.init != GBTD_TUCKER_INIT_RANDOM)
        return gbtd_error(GBTD_EINVAL, "%s: unknown init %d", what, (int)opts.init);

    int64_t ranks_sel[GBTD_MAX_MODES];
    if (ranks_in == NULL) {
        if (!(opts.error_target > 0.0))
            return gbtd_error(GBTD_EINVAL, "%s: no ranks and no error target given", what);
        GBTD_CHECK(gbtd_tucker_ranks_for_error(x_in, modes_in, nmodes, opts.error_target,
                                               ranks_sel));
    } else {
        for (int k = 0; k < nmodes; k++) ranks_sel[k] = ranks_in[k];
    }
    for (int k = 0; k < nmodes; k++) {
        const int64_t in = x_in->shape[modes_in[k]];
        if (ranks_sel[k] < 1 || ranks_sel[k] > in)
            return gbtd_error(GBTD_ERANGE,
                              "%s: rank %lld for mode %d is outside 1..%lld (the mode's size)",
                              what, (long long)ranks_sel[k], modes_in[k], (long long)in);
    }

    /* Modes sorted increasing, ranks carried along. */
    int modes[GBTD_MAX_MODES];
    int64_t ranks[GBTD_MAX_MODES];
    for (int k = 0; k < nmodes; k++) {
        modes[k] = modes_in[k];
        ranks[k] = ranks_sel[k];
    }
    for (int i = 1; i < nmodes; i++)
        for (int j = i; j > 0 && modes[j] < modes[j - 1]; j--) {
            const int tm = modes[j];
            modes[j] = modes[j - 1];
            modes[j - 1] = tm;
            const int64_t tr = ranks[j];
            ranks[j] = ranks[j - 1];
            ranks[j - 1] = tr;
        }

    int rc = gbtd_tc_info_start(info, hooi ? opts.max_iter : 1);
    if (rc != GBTD_OK) return rc;

    gbtd_tensor xc = {0};
    const gbtd_tensor *x = x_in;
    double *b0 = NULL, *b1 = NULL;
    lsv_ws ws;
    memset(&ws, 0, sizeof ws);
    gbtd_rng *rng = NULL;

    /* Output. */
    out->ndim = ndim;
    memcpy(out->shape, x_in->shape, sizeof out->shape);
    out->nmodes = nmodes;
    int64_t cshape[GBTD_MAX_MODES];
    memcpy(cshape, x_in->shape, sizeof cshape);
    for (int k = 0; k < nmodes; k++) {
        out->modes[k] = modes[k];
        cshape[modes[k]] = ranks[k];
        rc = gbtd_matrix_alloc(&out->factors[k], x_in->shape[modes[k]], ranks[k]);
        if (rc != GBTD_OK) goto fail;
    }
    rc = gbtd_tensor_alloc(&out->core, ndim, cshape);
    if (rc != GBTD_OK) goto fail;

    if (!gbtd_tensor_is_contiguous(x_in)) {
        rc = gbtd_tensor_clone(&xc, x_in);
        if (rc != GBTD_OK) goto fail;
        x = &xc;
    }

    /* Workspaces: projection buffers and the eigensolver. */
    int64_t bmax = 1, nmax = 1, rmax = 1;
    for (int k = -1; k < nmodes; k++) {
        const int64_t b = chain_max_numel(out, x->shape, k);
        if (b > bmax) bmax = b;
    }
    for (int k = 0; k < nmodes; k++) {
        if (x->shape[modes[k]] > nmax) nmax = x->shape[modes[k]];
        if (ranks[k] > rmax) rmax = ranks[k];
    }
    b0 = gbtd_malloc((size_t)bmax * sizeof(double));
    b1 = gbtd_malloc((size_t)bmax * sizeof(double));
    if (b0 == NULL || b1 == NULL) {
        rc = GBTD_ENOMEM;
        goto fail;
    }
    rc = lsv_alloc(&ws, nmax, rmax);
    if (rc != GBTD_OK) goto fail;

    /* Initialisation. */
    if (opts.init == GBTD_TUCKER_INIT_RANDOM && hooi) {
        rc = gbtd_rng_alloc(opts.seed, &rng);
        if (rc != GBTD_OK) goto fail;
        for (int k = 0; k < nmodes; k++) {
            gbtd_tensor_fill_normal(&out->factors[k], rng, 0.0, 1.0);
            rc = gbtd_tc_orthonormalize(&out->factors[k]);
            if (rc != GBTD_OK) goto fail;
        }
    } else {
        /* HOOI's first sweep overwrites the first factor before reading it (its update uses
         * only the other factors), so its HOSVD value would never be used: it is skipped. The
         * iterates are those of HOOI from the full HOSVD. */
        for (int k = hooi ? 1 : 0; k < nmodes; k++) {
            rc = lsv_compute(&ws, x->data, ndim, x->shape, modes[k], ranks[k],
                             out->factors[k].data);
            if (rc != GBTD_OK) goto fail;
        }
    }
    const double t1 = gbtd_wall_time();
    if (info) info->time_init = t1 - t0;

    double err2 = 0.0;
    int iter = 0;
    gbtd_stop_reason stop = GBTD_STOP_EXACT;
    const int last = nmodes - 1;
    if (!hooi) {
        gbtd_tensor y;
        rc = project(x, out, last, b0, b1, &y);
        if (rc == GBTD_OK) rc = gbtd_ttm(&y, &out->factors[last], modes[last], GBTD_TRANS, &out->core);
        if (rc != GBTD_OK) goto fail;
        err2 = nx2 - gbtd_tc_sumsq(out->core.data, gbtd_tensor_numel(&out->core));
        rc = gbtd_tc_info_push(info, sqrt(fmax(err2, 0.0) / nx2));
        if (rc != GBTD_OK) goto fail;
    } else {
        double prev = -1.0;
        stop = GBTD_STOP_MAX_ITER;
        for (iter = 1; iter <= opts.max_iter; iter++) {
            gbtd_tensor y;
            for (int k = 0; k < nmodes; k++) {
                rc = project(x, out, k, b0, b1, &y);
                if (rc == GBTD_OK)
                    rc = lsv_compute(&ws, y.data, ndim, y.shape, modes[k], ranks[k],
                                     out->factors[k].data);
                if (rc != GBTD_OK) goto fail;
            }
            /* y is X projected on every factored mode but the last: one more product gives G. */
            rc = gbtd_ttm(&y, &out->factors[last], modes[last], GBTD_TRANS, &out->core);
            if (rc != GBTD_OK) goto fail;
            err2 = nx2 - gbtd_tc_sumsq(out->core.data, gbtd_tensor_numel(&out->core));
            const double e = sqrt(fmax(err2, 0.0) / nx2);
            rc = gbtd_tc_info_push(info, e);
            if (rc != GBTD_OK) goto fail;
            const double now = gbtd_wall_time();
            if (opts.callback && opts.callback(iter, e, now - t0, opts.callback_ctx)) {
                stop = GBTD_STOP_CALLBACK;
                break;
            }
            /* The identity cannot resolve errors below ~sqrt(eps): stop at that floor. */
            if (err2 <= 1e3 * DBL_EPSILON * nx2) {
                stop = GBTD_STOP_EXACT;
                break;
            }
            if (prev >= 0.0 && fabs(prev - e) <= opts.tol * prev) {
                stop = GBTD_STOP_TOL;
                break;
            }
            if (opts.time_budget > 0.0 && now - t1 >= opts.time_budget) {
                stop = GBTD_STOP_TIME;
                break;
            }
            prev = e;
        }
        if (iter > opts.max_iter) iter = opts.max_iter;
    }
    const double t2 = gbtd_wall_time();

    /* Below ~1e-5 the identity has lost digits: measure the error directly. */
    double rel = sqrt(fmax(err2, 0.0) / nx2);
    if (err2 < 1e-10 * nx2) {
        gbtd_tensor xh = {0};
        rc = gbtd_tucker_reconstruct_alloc(out, &xh);
        if (rc == GBTD_OK) rc = gbtd_relative_error(x, &xh, &rel);
        gbtd_tensor_free(&xh);
        if (rc != GBTD_OK) goto fail;
        if (info && info->history_len > 0) info->error_history[info->history_len - 1] = rel;
    }
    if (info) {
        info->iterations = iter;
        info->rel_error = rel;
        info->stop = stop;
        info->time_iterate = t2 - t1;
        info->time_total = gbtd_wall_time() - t0;
        info->restarts = 1;
        info->best_restart = 0;
    }
    gbtd_free(b0);
    gbtd_free(b1);
    lsv_free(&ws);
    gbtd_rng_free(rng);
    gbtd_tensor_free(&xc);
    return GBTD_OK;

fail:
    gbtd_free(b0);
    gbtd_free(b1);
    lsv_free(&ws);
    gbtd_rng_free(rng);
    gbtd_tensor_free(&xc);
    gbtd_tucker_free(out);
    if (info) {
        gbtd_decomp_info_free(info);
        gbtd_decomp_info_init(info);
    }
    return rc;
}

static int all_modes(const gbtd_tensor *x, int *modes)
{
    if (x == NULL) return 0;
    const int n = x->ndim > GBTD_MAX_MODES ? GBTD_MAX_MODES : (x->ndim < 0 ? 0 : x->ndim);
    for (int k = 0; k < n; k++) modes[k] = k;
    return n;
}

int gbtd_tucker_hosvd(const gbtd_tensor *x, const int64_t *ranks, gbtd_tucker *out,
                      const gbtd_tucker_opts *opts, gbtd_decomp_info *info)
{
    int modes[GBTD_MAX_MODES];
    const int n = all_modes(x, modes);
    return tucker_run("tucker_hosvd", x, modes, n, ranks, false, out, opts, info);
}

int gbtd_tucker_hooi(const gbtd_tensor *x, const int64_t *ranks, gbtd_tucker *out,
                     const gbtd_tucker_opts *opts, gbtd_decomp_info *info)
{
    int modes[GBTD_MAX_MODES];
    const int n = all_modes(x, modes);
    return tucker_run("tucker_hooi", x, modes, n, ranks, true, out, opts, info);
}

int gbtd_tucker_partial_hosvd(const gbtd_tensor *x, const int *modes, int nmodes,
                              const int64_t *ranks, gbtd_tucker *out,
                              const gbtd_tucker_opts *opts, gbtd_decomp_info *info)
{
    return tucker_run("tucker_partial_hosvd", x, modes, nmodes, ranks, false, out, opts, info);
}

int gbtd_tucker_partial_hooi(const gbtd_tensor *x, const int *modes, int nmodes,
                             const int64_t *ranks, gbtd_tucker *out,
                             const gbtd_tucker_opts *opts, gbtd_decomp_info *info)
{
    return tucker_run("tucker_partial_hooi", x, modes, nmodes, ranks, true, out, opts, info);
}
