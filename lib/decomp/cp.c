#include "decomp/cp.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "core/blas.h"
#include "core/rng.h"
#include "core/status.h"
#include "decomp/tc_internal.h"
#include "linalg/linalg.h"

gbtd_cp_opts gbtd_cp_opts_default(void)
{
    gbtd_cp_opts o;
    memset(&o, 0, sizeof o);
    o.max_iter = 500;
    o.tol = 1e-10;
    o.error_target = 0.0;
    o.time_budget = 0.0;
    o.init = GBTD_CP_INIT_RANDOM;
    o.seed = 42;
    o.restarts = 1;
    o.line_search = true;
    return o;
}

void gbtd_cp_free(gbtd_cp *cp)
{
    if (cp == NULL) return;
    gbtd_tensor_free(&cp->weights);
    for (int k = 0; k < GBTD_MAX_MODES; k++) gbtd_tensor_free(&cp->factors[k]);
    memset(cp, 0, sizeof *cp);
}

int gbtd_cp_alloc(gbtd_cp *cp, int ndim, const int64_t *shape, int64_t rank)
{
    if (cp == NULL || shape == NULL) return gbtd_error(GBTD_EINVAL, "cp_alloc: NULL argument");
    memset(cp, 0, sizeof *cp);
    if (ndim < 1 || ndim > GBTD_MAX_MODES)
        return gbtd_error(GBTD_EINVAL, "cp_alloc: %d modes (allowed 1..%d)", ndim,
                          GBTD_MAX_MODES);
    if (rank < 1) return gbtd_error(GBTD_ERANGE, "cp_alloc: rank %lld < 1", (long long)rank);
    cp->ndim = ndim;
    cp->rank = rank;
    const int64_t one = rank;
    int rc = gbtd_tensor_alloc(&cp->weights, 1, &one);
    for (int n = 0; n < ndim && rc == GBTD_OK; n++)
        rc = gbtd_matrix_alloc(&cp->factors[n], shape[n], rank);
    if (rc != GBTD_OK) {
        gbtd_cp_free(cp);
        return rc;
    }
    gbtd_tensor_fill(&cp->weights, 1.0);
    return GBTD_OK;
}

int64_t gbtd_cp_param_count(const gbtd_cp *cp)
{
    if (cp == NULL || cp->weights.data == NULL) return 0;
    int64_t n = cp->rank;
    for (int k = 0; k < cp->ndim; k++) n += gbtd_tensor_numel(&cp->factors[k]);
    return n;
}

static int check_model(const gbtd_cp *cp, const char *what)
{
    if (cp == NULL || cp->weights.data == NULL || cp->ndim < 1 || cp->rank < 1)
        return gbtd_error(GBTD_EINVAL, "%s: NULL or empty CP model", what);
    for (int n = 0; n < cp->ndim; n++)
        if (cp->factors[n].data == NULL || cp->factors[n].ndim != 2 ||
            cp->factors[n].shape[1] != cp->rank || !gbtd_tensor_is_contiguous(&cp->factors[n]))
            return gbtd_error(GBTD_EINVAL, "%s: factor %d is not a contiguous I x %lld matrix",
                              what, n, (long long)cp->rank);
    return GBTD_OK;
}

/* ---- slab-wise evaluation of X_hat ----------------------------------------------------- */

/* Workspace for walking X_hat in slabs over its last two modes. */
typedef struct slab_ws {
    double *b;    /* I_{N-2} x R */
    double *slab; /* I_{N-2} x I_{N-1} */
    double *w;    /* R */
} slab_ws;

static void slab_free(slab_ws *s)
{
    gbtd_free(s->b);
    gbtd_free(s->slab);
    gbtd_free(s->w);
    memset(s, 0, sizeof *s);
}

static int slab_alloc(slab_ws *s, int ndim, const int64_t *shape, int64_t r)
{
    memset(s, 0, sizeof *s);
    const int64_t rows = ndim >= 2 ? shape[ndim - 2] : 1, cols = shape[ndim - 1];
    s->b = gbtd_malloc((size_t)(rows * r) * sizeof(double));
    s->slab = gbtd_malloc((size_t)(rows * cols) * sizeof(double));
    s->w = gbtd_malloc((size_t)r * sizeof(double));
    if (!s->b || !s->slab || !s->w) {
        slab_free(s);
        return GBTD_ENOMEM;
    }
    return GBTD_OK;
}

/* Visit X_hat slab by slab (the last two modes); with x given, returns ||x - X_hat||^2, and
 * with dst given, writes X_hat into dst. Both contiguous. */
static double slab_walk(const gbtd_cp *cp, const double *const *fac, const double *lambda,
                        const int64_t *shape, const double *x, double *dst, slab_ws *s)
{
    const int nd = cp->ndim;
    const int64_t r = cp->rank;
    const int64_t rows = nd >= 2 ? shape[nd - 2] : 1, cols = shape[nd - 1];
    const double *arow = nd >= 2 ? fac[nd - 2] : NULL;
    const double *acol = fac[nd - 1];
    int64_t outer = 1;
    for (int k = 0; k < nd - 2; k++) outer *= shape[k];
    int64_t idx[GBTD_MAX_MODES] = {0};
    double acc = 0.0;
    const int64_t sz = rows * cols;
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t c = 0; c < r; c++) {
            double w = lambda[c];
            for (int k = 0; k < nd - 2; k++) w *= fac[k][idx[k] * r + c];
            s->w[c] = w;
        }
        for (int64_t i = 0; i < rows; i++)
            for (int64_t c = 0; c < r; c++) s->b[i * r + c] = (arow ? arow[i * r + c] : 1.0) * s->w[c];
        double *out = dst ? dst + o * sz : s->slab;
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)rows, (blasint)cols,
                    (blasint)r, 1.0, s->b, (blasint)r, acol, (blasint)r, 0.0, out, (blasint)cols);
        if (x) {
            const double *xs = x + o * sz;
            for (int64_t i = 0; i < sz; i++) {
                const double d = xs[i] - out[i];
                acc += d * d;
            }
        }
        for (int k = nd - 3; k >= 0; k--) {
            if (++idx[k] < shape[k]) break;
            idx[k] = 0;
        }
    }
    return acc;
}

static int shape_of(const gbtd_cp *cp, int64_t *shape)
{
    for (int n = 0; n < cp->ndim; n++) shape[n] = cp->factors[n].shape[0];
    blasint chk;
    const int64_t rows = cp->ndim >= 2 ? shape[cp->ndim - 2] : 1;
    GBTD_CHECK(gbtd_blas_int(rows * shape[cp->ndim - 1], &chk));
    return GBTD_OK;
}

int gbtd_cp_reconstruct_alloc(const gbtd_cp *cp, gbtd_tensor *out)
{
    if (out == NULL) return gbtd_error(GBTD_EINVAL, "cp_reconstruct: NULL output");
    memset(out, 0, sizeof *out);
    GBTD_CHECK(check_model(cp, "cp_reconstruct"));
    int64_t shape[GBTD_MAX_MODES];
    GBTD_CHECK(shape_of(cp, shape));
    GBTD_CHECK(gbtd_tensor_alloc(out, cp->ndim, shape));
    slab_ws s;
    int rc = slab_alloc(&s, cp->ndim, shape, cp->rank);
    if (rc != GBTD_OK) {
        gbtd_tensor_free(out);
        return rc;
    }
    const double *fac[GBTD_MAX_MODES];
    for (int n = 0; n < cp->ndim; n++) fac[n] = cp->factors[n].data;
    slab_walk(cp, fac, cp->weights.data, shape, NULL, out->data, &s);
    slab_free(&s);
    return GBTD_OK;
}

int gbtd_cp_relative_error(const gbtd_tensor *x, const gbtd_cp *cp, double *out)
{
    if (x == NULL || out == NULL) return gbtd_error(GBTD_EINVAL, "cp_relative_error: NULL argument");
    GBTD_CHECK(check_model(cp, "cp_relative_error"));
    int64_t shape[GBTD_MAX_MODES];
    GBTD_CHECK(shape_of(cp, shape));
    bool same = x->ndim == cp->ndim;
    for (int n = 0; same && n < x->ndim; n++) same = x->shape[n] == shape[n];
    if (!same) {
        char a[128], b[128];
        return gbtd_error(GBTD_ESHAPE, "cp_relative_error: tensor %s, model %s",
                          gbtd_shape_str(x->ndim, x->shape, a, sizeof a),
                          gbtd_shape_str(cp->ndim, shape, b, sizeof b));
    }
    gbtd_tensor xc = {0};
    const gbtd_tensor *xs = x;
    if (!gbtd_tensor_is_contiguous(x)) {
        GBTD_CHECK(gbtd_tensor_clone(&xc, x));
        xs = &xc;
    }
    slab_ws s;
    int rc = slab_alloc(&s, cp->ndim, shape, cp->rank);
    if (rc == GBTD_OK) {
        const double *fac[GBTD_MAX_MODES];
        for (int n = 0; n < cp->ndim; n++) fac[n] = cp->factors[n].data;
        const double e2 = slab_walk(cp, fac, cp->weights.data, shape, xs->data, NULL, &s);
        const double nx = gbtd_tensor_norm(xs);
        *out = nx > 0.0 ? sqrt(e2) / nx : sqrt(e2);
        slab_free(&s);
    }
    gbtd_tensor_free(&xc);
    return rc;
}

/* ---- ALS ----------------------------------------------------------------------------- */

/* One set of factors with their Gramians and weights. */
typedef struct cp_state {
    double *a[GBTD_MAX_MODES]; /* I_n x R, unit columns (or zero) */
    double *g[GBTD_MAX_MODES]; /* R x R Gramians */
    double *lambda;            /* R */
} cp_state;

typedef struct cp_ws {
    int nd;
    int64_t shape[GBTD_MAX_MODES];
    int64_t r, numel, lrows, rcols, imax, kr_rows;
    const double *x;
    double nx2;
    double *wbuf[2]; /* two W buffers: L x R, W = X_(L x I_{N-1}) A_{N-1} */
    double *u;       /* R x (numel / I_0): A_0^T X_(I_0 x rest) */
    double *m;       /* I_max x R, MTTKRP */
    double *v, *vsave, *chol, *evec, *ew, *work; /* R x R (4), R, lwork */
    lapack_int lwork;
    double *kr;   /* R x kr_rows: columns of small Khatri-Rao products, transposed */
    double *lrow; /* R */
    double *acc;  /* R */
    cp_state cur, prev, trial, best;
    slab_ws slab;
    double *hist; /* run history */
} cp_ws;

static void state_free(cp_state *s, int nd)
{
    for (int n = 0; n < nd; n++) {
        gbtd_free(s->a[n]);
        gbtd_free(s->g[n]);
    }
    gbtd_free(s->lambda);
    memset(s, 0, sizeof *s);
}

static int state_alloc(cp_state *s, int nd, const int64_t *shape, int64_t r)
{
    memset(s, 0, sizeof *s);
    bool ok = true;
    for (int n = 0; n < nd; n++) {
        s->a[n] = gbtd_malloc((size_t)(shape[n] * r) * sizeof(double));
        s->g[n] = gbtd_malloc((size_t)(r * r) * sizeof(double));
        ok = ok && s->a[n] && s->g[n];
    }
    s->lambda = gbtd_malloc((size_t)r * sizeof(double));
    if (!ok || !s->lambda) {
        state_free(s, nd);
        return GBTD_ENOMEM;
    }
    return GBTD_OK;
}

static void state_copy(cp_state *dst, const cp_state *src, const cp_ws *w)
{
    for (int n = 0; n < w->nd; n++) {
        memcpy(dst->a[n], src->a[n], (size_t)(w->shape[n] * w->r) * sizeof(double));
        memcpy(dst->g[n], src->g[n], (size_t)(w->r * w->r) * sizeof(double));
    }
    memcpy(dst->lambda, src->lambda, (size_t)w->r * sizeof(double));
}

static void ws_free(cp_ws *w)
{
    gbtd_free(w->wbuf[0]);
    gbtd_free(w->wbuf[1]);
    gbtd_free(w->u);
    gbtd_free(w->m);
    gbtd_free(w->v);
    gbtd_free(w->vsave);
    gbtd_free(w->chol);
    gbtd_free(w->evec);
    gbtd_free(w->ew);
    gbtd_free(w->work);
    gbtd_free(w->kr);
    gbtd_free(w->lrow);
    gbtd_free(w->acc);
    gbtd_free(w->hist);
    state_free(&w->cur, w->nd);
    state_free(&w->prev, w->nd);
    state_free(&w->trial, w->nd);
    state_free(&w->best, w->nd);
    slab_free(&w->slab);
}

static int ws_alloc(cp_ws *w, const gbtd_tensor *x, int64_t r, int hist_len)
{
    const int nd = x->ndim;
    w->nd = nd;
    w->r = r;
    memcpy(w->shape, x->shape, sizeof w->shape);
    w->numel = gbtd_tensor_numel(x);
    w->lrows = w->numel / x->shape[nd - 1];
    w->rcols = w->numel / x->shape[0];
    w->imax = 0;
    for (int n = 0; n < nd; n++)
        if (x->shape[n] > w->imax) w->imax = x->shape[n];
    /* Small Khatri-Rao columns: modes 1..N-2 for the last mode, modes n+1..N-2 for mode n. */
    w->kr_rows = w->numel / (x->shape[0] * x->shape[nd - 1]);
    if (w->kr_rows < 1) w->kr_rows = 1;
    blasint chk;
    GBTD_CHECK(gbtd_blas_int(w->numel, &chk));
    size_t bytes;
    GBTD_CHECK(gbtd_mul_size((size_t)w->lrows, (size_t)r, &bytes));
    GBTD_CHECK(gbtd_mul_size(bytes, sizeof(double), &bytes));
    size_t ubytes;
    GBTD_CHECK(gbtd_mul_size((size_t)w->rcols, (size_t)r, &ubytes));
    GBTD_CHECK(gbtd_mul_size(ubytes, sizeof(double), &ubytes));
    w->wbuf[0] = gbtd_malloc(bytes);
    w->wbuf[1] = gbtd_malloc(bytes);
    w->u = gbtd_malloc(ubytes);
    w->m = gbtd_malloc((size_t)(w->imax * r) * sizeof(double));
    w->v = gbtd_malloc((size_t)(r * r) * sizeof(double));
    w->vsave = gbtd_malloc((size_t)(r * r) * sizeof(double));
    w->chol = gbtd_malloc((size_t)(r * r) * sizeof(double));
    w->evec = gbtd_malloc((size_t)(r * r) * sizeof(double));
    w->ew = gbtd_malloc((size_t)r * sizeof(double));
    w->kr = gbtd_malloc((size_t)(w->kr_rows * r) * sizeof(double));
    w->lrow = gbtd_malloc((size_t)r * sizeof(double));
    w->acc = gbtd_malloc((size_t)r * sizeof(double));
    w->hist = gbtd_malloc((size_t)(hist_len > 0 ? hist_len : 1) * sizeof(double));
    if (!w->wbuf[0] || !w->wbuf[1] || !w->u || !w->m || !w->v || !w->vsave || !w->chol || !w->evec ||
        !w->ew || !w->kr || !w->lrow || !w->acc || !w->hist)
        return GBTD_ENOMEM;
    GBTD_CHECK(state_alloc(&w->cur, nd, x->shape, r));
    GBTD_CHECK(state_alloc(&w->prev, nd, x->shape, r));
    GBTD_CHECK(state_alloc(&w->trial, nd, x->shape, r));
    GBTD_CHECK(state_alloc(&w->best, nd, x->shape, r));
    GBTD_CHECK(slab_alloc(&w->slab, nd, x->shape, r));
    /* Eigen-solver workspace for the pseudo-inverse fallback. */
    double wq = 0.0;
    lapack_int lr = 0;
    GBTD_CHECK(gbtd_lapack_int(r, &lr));
    memset(w->evec, 0, (size_t)(r * r) * sizeof(double));
    lapack_int info = LAPACKE_dsyev_work(LAPACK_COL_MAJOR, 'V', 'L', lr, w->evec, lr, w->ew, &wq, -1);
    if (info != 0) return gbtd_error(GBTD_ENUMERIC, "cp_als: workspace query failed (%d)", (int)info);
    w->lwork = (lapack_int)wq > 3 * lr ? (lapack_int)wq : 3 * lr;
    w->work = gbtd_malloc((size_t)w->lwork * sizeof(double));
    if (!w->work) return GBTD_ENOMEM;
    return GBTD_OK;
}

/* G = A^T A (R x R, full). */
static void gram(const double *a, int64_t rows, int64_t r, double *g)
{
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)r, (blasint)r, (blasint)rows,
                1.0, a, (blasint)r, a, (blasint)r, 0.0, g, (blasint)r);
}

/* Normalise the columns of a into lambda and refresh its Gramian from the unnormalised one. */
static void normalize(double *a, int64_t rows, int64_t r, double *lambda, double *g)
{
    for (int64_t c = 0; c < r; c++) {
        const double nrm = sqrt(fmax(g[c * r + c], 0.0));
        lambda[c] = nrm;
    }
    for (int64_t i = 0; i < rows; i++)
        for (int64_t c = 0; c < r; c++)
            if (lambda[c] > 0.0) a[i * r + c] /= lambda[c];
    for (int64_t c = 0; c < r; c++)
        for (int64_t d = 0; d < r; d++) {
            const double s = lambda[c] * lambda[d];
            g[c * r + d] = s > 0.0 ? g[c * r + d] / s : 0.0;
        }
}

/* W = X (as L x I_{N-1}) A_{N-1}. */
static void compute_w(cp_ws *w, const double *alast, double *wout)
{
    const int64_t il = w->shape[w->nd - 1];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)w->lrows, (blasint)w->r,
                (blasint)il, 1.0, w->x, (blasint)il, alast, (blasint)w->r, 0.0, wout,
                (blasint)w->r);
}

/* M_n for n < N-1 from W (indexed i_0..i_{N-2}, r): contract every mode of W but n with its
 * factor. W viewed as P x I_n x S x R with S = prod_{n<m<N-1} I_m; the S x R Khatri-Rao of
 * modes n+1..N-2 is built in w->kr (S <= kr_rows). */
static void mttkrp_from_w(cp_ws *w, const double *wmat, double *const *a, int n, double *m)
{
    const int64_t r = w->r, in = w->shape[n];
    int64_t p = 1, s = 1;
    for (int k = 0; k < n; k++) p *= w->shape[k];
    for (int k = n + 1; k < w->nd - 1; k++) s *= w->shape[k];
    /* Khatri-Rao rows of modes n+1..N-2 (row-major S x R, last mode fastest). */
    double *kr = w->kr;
    for (int64_t c = 0; c < r; c++) kr[c] = 1.0;
    int64_t len = 1;
    for (int k = n + 1; k < w->nd - 1; k++) {
        const int64_t ik = w->shape[k];
        for (int64_t j = len - 1; j >= 0; j--)
            for (int64_t i = ik - 1; i >= 0; i--)
                for (int64_t c = 0; c < r; c++)
                    kr[(j * ik + i) * r + c] = kr[j * r + c] * a[k][i * r + c];
        len *= ik;
    }
    memset(m, 0, (size_t)(in * r) * sizeof(double));
    int64_t idx[GBTD_MAX_MODES] = {0};
    for (int64_t pp = 0; pp < p; pp++) {
        for (int64_t c = 0; c < r; c++) {
            double v = 1.0;
            for (int k = 0; k < n; k++) v *= a[k][idx[k] * r + c];
            w->lrow[c] = v;
        }
        for (int64_t i = 0; i < in; i++) {
            const double *wp = wmat + ((pp * in + i) * s) * r;
            for (int64_t c = 0; c < r; c++) w->acc[c] = 0.0;
            for (int64_t j = 0; j < s; j++)
                for (int64_t c = 0; c < r; c++) w->acc[c] += wp[j * r + c] * kr[j * r + c];
            for (int64_t c = 0; c < r; c++) m[i * r + c] += w->acc[c] * w->lrow[c];
        }
        for (int k = n - 1; k >= 0; k--) {
            if (++idx[k] < w->shape[k]) break;
            idx[k] = 0;
        }
    }
}

/* M_{N-1} from U = A_0^T X (R x (I_1 ... I_{N-1})): for each r, M[:, r] = U[r]^T k_r with k_r
 * the Khatri-Rao column of modes 1..N-2. */
static void mttkrp_last(cp_ws *w, double *const *a, double *m)
{
    const int nd = w->nd;
    const int64_t r = w->r, il = w->shape[nd - 1];
    const int64_t s = w->rcols / il;
    /* kr transposed: R x S. */
    double *kr = w->kr;
    for (int64_t c = 0; c < r; c++) {
        double *col = kr + c * s;
        col[0] = 1.0;
        int64_t len = 1;
        for (int k = 1; k < nd - 1; k++) {
            const int64_t ik = w->shape[k];
            for (int64_t j = len - 1; j >= 0; j--)
                for (int64_t i = ik - 1; i >= 0; i--) col[j * ik + i] = col[j] * a[k][i * r + c];
            len *= ik;
        }
    }
    for (int64_t c = 0; c < r; c++)
        cblas_dgemv(CblasRowMajor, CblasTrans, (blasint)s, (blasint)il, 1.0, w->u + c * w->rcols,
                    (blasint)il, kr + c * s, 1, 0.0, m + c, (blasint)r);
}

/* V = Hadamard product of the Gramians of every mode but n. */
static void hadamard_except(const cp_ws *w, double *const *g, int n, double *v)
{
    const int64_t rr = w->r * w->r;
    for (int64_t i = 0; i < rr; i++) v[i] = 1.0;
    for (int k = 0; k < w->nd; k++)
        if (k != n)
            for (int64_t i = 0; i < rr; i++) v[i] *= g[k][i];
}

/* a (rows x R) <- m V^+ : Cholesky when V is positive definite, else an eigen pseudo-inverse.
 * m is overwritten. */
static int solve_factor(cp_ws *w, double *m, int64_t rows, const double *v, double *a)
{
    const int64_t r = w->r;
    const lapack_int lr = (lapack_int)r, lrows = (lapack_int)rows;
    memcpy(w->chol, v, (size_t)(r * r) * sizeof(double));
    lapack_int info = LAPACKE_dpotrf_work(LAPACK_COL_MAJOR, 'L', lr, w->chol, lr);
    if (info == 0) {
        /* Reject a numerically singular Cholesky factor (pivot ratio below sqrt(eps)). */
        double dmin = INFINITY, dmax = 0.0;
        for (int64_t c = 0; c < r; c++) {
            const double d = fabs(w->chol[c * r + c]);
            dmin = fmin(dmin, d);
            dmax = fmax(dmax, d);
        }
        if (dmin > dmax * 1e-7) {
            /* m (row-major rows x R) is column-major R x rows: solve V Y = m^T in place. */
            info = LAPACKE_dpotrs_work(LAPACK_COL_MAJOR, 'L', lr, lrows, w->chol, lr, m, lr);
            if (info != 0)
                return gbtd_error(GBTD_ENUMERIC, "cp_als: Cholesky solve failed (%d)", (int)info);
            memcpy(a, m, (size_t)(rows * r) * sizeof(double));
            return GBTD_OK;
        }
    }
    memcpy(w->evec, v, (size_t)(r * r) * sizeof(double));
    info = LAPACKE_dsyev_work(LAPACK_COL_MAJOR, 'V', 'L', lr, w->evec, lr, w->ew, w->work,
                              w->lwork);
    if (info != 0)
        return gbtd_error(GBTD_ENUMERIC, "cp_als: eigen-decomposition of the Gramian failed (%d)",
                          (int)info);
    const double cut = w->ew[r - 1] * (double)r * DBL_EPSILON;
    /* evec column-major = row-major Q^T. a = m Q D^+ Q^T. */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, lrows, lr, lr, 1.0, m, lr, w->evec, lr,
                0.0, a, lr);
    for (int64_t i = 0; i < rows; i++)
        for (int64_t c = 0; c < r; c++) a[i * r + c] *= w->ew[c] > cut ? 1.0 / w->ew[c] : 0.0;
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, lrows, lr, lr, 1.0, a, lr, w->evec, lr,
                0.0, m, lr);
    memcpy(a, m, (size_t)(rows * r) * sizeof(double));
    return GBTD_OK;
}

static double sum_product(const double *a, const double *b, int64_t n)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* ||X_hat||^2 = lambda^T (Hadamard of all Gramians) lambda. */
static double model_norm2(cp_ws *w, const cp_state *st)
{
    const int64_t r = w->r;
    hadamard_except(w, st->g, -1, w->v);
    double s = 0.0;
    for (int64_t c = 0; c < r; c++)
        for (int64_t d = 0; d < r; d++) s += st->lambda[c] * st->lambda[d] * w->v[c * r + d];
    return s;
}

static double explicit_err2(cp_ws *w, const cp_state *st, const gbtd_cp *shape_model)
{
    const double *fac[GBTD_MAX_MODES];
    for (int n = 0; n < w->nd; n++) fac[n] = st->a[n];
    return slab_walk(shape_model, fac, st->lambda, w->shape, w->x, NULL, &w->slab);
}

/* Error of state st given W computed from st's A_{N-1}: <X, X_hat> from M_0. */
static double err2_from_w(cp_ws *w, cp_state *st, const double *wmat)
{
    const int64_t r = w->r, i0 = w->shape[0];
    mttkrp_from_w(w, wmat, st->a, 0, w->m);
    double inner = 0.0;
    for (int64_t i = 0; i < i0; i++)
        for (int64_t c = 0; c < r; c++) inner += st->lambda[c] * w->m[i * r + c] * st->a[0][i * r + c];
    return w->nx2 - 2.0 * inner + model_norm2(w, st);
}

/* Extrapolated state t = P + s (P - Q) for the current state P and the previous Q. The
 * weights travel with the last factor (diag(lambda) A_{N-1}); t is renormalised. */
static void extrapolate(cp_ws *w, double s)
{
    const int nd = w->nd;
    const int64_t r = w->r;
    cp_state *t = &w->trial;
    const cp_state *p = &w->cur, *q = &w->prev;
    for (int64_t c = 0; c < r; c++) t->lambda[c] = 1.0;
    for (int n = 0; n < nd; n++) {
        const int64_t rows = w->shape[n];
        const bool last = (n == nd - 1);
        for (int64_t i = 0; i < rows; i++)
            for (int64_t c = 0; c < r; c++) {
                const double pv = p->a[n][i * r + c] * (last ? p->lambda[c] : 1.0);
                const double qv = q->a[n][i * r + c] * (last ? q->lambda[c] : 1.0);
                t->a[n][i * r + c] = pv + s * (pv - qv);
            }
        gram(t->a[n], rows, r, t->g[n]);
        normalize(t->a[n], rows, r, w->lrow, t->g[n]);
        for (int64_t c = 0; c < r; c++) t->lambda[c] *= w->lrow[c];
    }
}

/* One ALS run from w->cur (normalised, Gramians set). Writes the history into w->hist. */
static int als_run(cp_ws *w, const gbtd_cp_opts *o, const gbtd_cp *shape_model, double t_start,
                   int *iters, double *final_err, gbtd_stop_reason *stop, int *hist_len)
{
    const int nd = w->nd;
    const int64_t r = w->r;
    const double floor_rel = 64.0 * DBL_EPSILON;
    int wi = 0;
    bool w_valid = false;
    double prev_e = -1.0, e = 1.0, h = 3.0;
    *stop = GBTD_STOP_MAX_ITER;
    *hist_len = 0;
    int it;
    for (it = 1; it <= o->max_iter; it++) {
        if (o->line_search) state_copy(&w->prev, &w->cur, w);
        if (!w_valid) compute_w(w, w->cur.a[nd - 1], w->wbuf[wi]);
        w_valid = false;
        double err2 = 0.0;
        for (int n = 0; n < nd; n++) {
            const int64_t in = w->shape[n];
            double *a = w->cur.a[n];
            if (n < nd - 1) {
                mttkrp_from_w(w, w->wbuf[wi], w->cur.a, n, w->m);
                hadamard_except(w, w->cur.g, n, w->v);
                GBTD_CHECK(solve_factor(w, w->m, in, w->v, a));
                gram(a, in, r, w->cur.g[n]);
            } else {
                cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)r,
                            (blasint)w->rcols, (blasint)w->shape[0], 1.0, w->cur.a[0], (blasint)r,
                            w->x, (blasint)w->rcols, 0.0, w->u, (blasint)w->rcols);
                mttkrp_last(w, w->cur.a, w->m);
                hadamard_except(w, w->cur.g, n, w->v);
                /* Keep M and V: with the weights inside A_n, <X, X_hat> = sum(M .* A_n) and
                 * ||X_hat||^2 = sum((A_n^T A_n) .* V). U is consumed: it holds the copy of M. */
                memcpy(w->vsave, w->v, (size_t)(r * r) * sizeof(double));
                memcpy(w->u, w->m, (size_t)(in * r) * sizeof(double));
                GBTD_CHECK(solve_factor(w, w->m, in, w->v, a));
                gram(a, in, r, w->cur.g[n]);
                const double inner = sum_product(w->u, a, in * r);
                const double nh = sum_product(w->cur.g[n], w->vsave, r * r);
                err2 = w->nx2 - 2.0 * inner + nh;
            }
            normalize(a, in, r, w->cur.lambda, w->cur.g[n]);
        }
        /* Below a relative error of 1e-5 the identity keeps only ~sqrt(eps) accuracy. */
        if (err2 < 1e-10 * w->nx2) err2 = explicit_err2(w, &w->cur, shape_model);
        e = sqrt(fmax(err2, 0.0) / w->nx2);

        /* Bro's extrapolation with step it^(1/h), kept only when it lowers the error; the W
         * it needs is the next sweep's W when it is kept. */
        if (o->line_search && it >= 2 && e > 1e-5) {
            extrapolate(w, pow((double)it, 1.0 / h));
            compute_w(w, w->trial.a[nd - 1], w->wbuf[1 - wi]);
            const double et = sqrt(fmax(err2_from_w(w, &w->trial, w->wbuf[1 - wi]), 0.0) / w->nx2);
            if (et < e) {
                state_copy(&w->cur, &w->trial, w);
                wi = 1 - wi;
                w_valid = true;
                e = et;
            } else {
                h += 1.0;
            }
        }

        w->hist[(*hist_len)++] = e;
        const double now = gbtd_wall_time();
        if (o->callback && o->callback(it, e, now - t_start, o->callback_ctx)) {
            *stop = GBTD_STOP_CALLBACK;
            break;
        }
        if (o->error_target > 0.0 && e <= o->error_target) {
            *stop = GBTD_STOP_ERROR_TOL;
            break;
        }
        if (e <= floor_rel) {
            *stop = GBTD_STOP_EXACT;
            break;
        }
        if (prev_e >= 0.0 && fabs(prev_e - e) <= o->tol * prev_e) {
            *stop = GBTD_STOP_TOL;
            break;
        }
        if (o->time_budget > 0.0 && now - t_start >= o->time_budget) {
            *stop = GBTD_STOP_TIME;
            break;
        }
        prev_e = e;
    }
    *iters = it > o->max_iter ? o->max_iter : it;
    *final_err = e;
    return GBTD_OK;
}

static int init_state(cp_ws *w, const gbtd_tensor *x, gbtd_cp_init init, gbtd_rng *rng)
{
    const int nd = w->nd;
    const int64_t r = w->r;
    for (int n = 0; n < nd; n++) {
        const int64_t in = w->shape[n];
        gbtd_tensor an;
        const int64_t sh[2] = {in, r};
        GBTD_CHECK(gbtd_tensor_wrap(w->cur.a[n], 2, sh, &an));
        gbtd_tensor_fill_normal(&an, rng, 0.0, 1.0);
        if (init == GBTD_CP_INIT_SVD) {
            const int64_t k = r < in ? r : in;
            gbtd_tensor u = {0};
            GBTD_CHECK(gbtd_leading_singular_vectors(x, n, k, &u, NULL));
            for (int64_t i = 0; i < in; i++)
                for (int64_t c = 0; c < k; c++) w->cur.a[n][i * r + c] = u.data[i * k + c];
            gbtd_tensor_free(&u);
        }
        gram(w->cur.a[n], in, r, w->cur.g[n]);
        normalize(w->cur.a[n], in, r, w->lrow, w->cur.g[n]);
    }
    for (int64_t c = 0; c < r; c++) w->cur.lambda[c] = 1.0;
    return GBTD_OK;
}

int gbtd_cp_als(const gbtd_tensor *x_in, int64_t rank, gbtd_cp *out, const gbtd_cp_opts *opts_in,
                gbtd_decomp_info *info)
{
    const double t0 = gbtd_wall_time();
    if (out == NULL) return gbtd_error(GBTD_EINVAL, "cp_als: NULL output");
    memset(out, 0, sizeof *out);
    const gbtd_cp_opts o = opts_in ? *opts_in : gbtd_cp_opts_default();
    double nx2;
    GBTD_CHECK(gbtd_tc_check_input(x_in, "cp_als", &nx2));
    const int nd = x_in->ndim;
    if (nd < 2) return gbtd_error(GBTD_EINVAL, "cp_als: a CP needs at least 2 modes (got %d)", nd);
    if (o.max_iter < 1)
        return gbtd_error(GBTD_EINVAL, "cp_als: max_iter is %d; at least one iteration is needed",
                          o.max_iter);
    if (!(o.tol >= 0.0) || !isfinite(o.tol))
        return gbtd_error(GBTD_EINVAL, "cp_als: tol %g must be finite and >= 0", o.tol);
    if (o.restarts < 1)
        return gbtd_error(GBTD_EINVAL, "cp_als: restarts is %d (at least 1)", o.restarts);
    if (o.init != GBTD_CP_INIT_RANDOM && o.init != GBTD_CP_INIT_SVD)
        return gbtd_error(GBTD_EINVAL, "cp_als: unknown init %d", (int)o.init);
    int64_t imax = 0;
    for (int n = 0; n < nd; n++)
        if (x_in->shape[n] > imax) imax = x_in->shape[n];
    const int64_t maxrank = gbtd_tensor_numel(x_in) / imax;
    if (rank < 1 || rank > maxrank)
        return gbtd_error(GBTD_ERANGE,
                          "cp_als: rank %lld is outside 1..%lld (no tensor of this shape has a "
                          "larger rank)",
                          (long long)rank, (long long)maxrank);

    GBTD_CHECK(gbtd_tc_info_start(info, o.max_iter));
    gbtd_tensor xc = {0};
    const gbtd_tensor *x = x_in;
    cp_ws w;
    memset(&w, 0, sizeof w);
    gbtd_rng *rng = NULL;
    int rc = GBTD_OK;
    if (!gbtd_tensor_is_contiguous(x_in)) {
        rc = gbtd_tensor_clone(&xc, x_in);
        if (rc != GBTD_OK) goto done;
        x = &xc;
    }
    rc = ws_alloc(&w, x, rank, o.max_iter);
    if (rc != GBTD_OK) goto done;
    w.x = x->data;
    w.nx2 = nx2;
    rc = gbtd_cp_alloc(out, nd, x->shape, rank);
    if (rc != GBTD_OK) goto done;
    rc = gbtd_rng_alloc(o.seed, &rng);
    if (rc != GBTD_OK) goto done;

    double best_err = INFINITY, t_init = 0.0, t_iter = 0.0;
    int best_run = 0, best_iters = 0, runs = 0;
    gbtd_stop_reason best_stop = GBTD_STOP_NONE;
    for (int run = 0; run < o.restarts; run++) {
        const double ta = gbtd_wall_time();
        gbtd_rng_seed(rng, o.seed + (uint64_t)run);
        rc = init_state(&w, x, run == 0 ? o.init : GBTD_CP_INIT_RANDOM, rng);
        if (rc != GBTD_OK) goto done;
        const double tb = gbtd_wall_time();
        int iters = 0, hlen = 0;
        double e = 0.0;
        gbtd_stop_reason stop;
        rc = als_run(&w, &o, out, t0, &iters, &e, &stop, &hlen);
        if (rc != GBTD_OK) goto done;
        t_init += tb - ta;
        t_iter += gbtd_wall_time() - tb;
        runs++;
        if (e < best_err) {
            best_err = e;
            best_run = run;
            best_iters = iters;
            best_stop = stop;
            state_copy(&w.best, &w.cur, &w);
            if (info) {
                info->history_len = 0;
                for (int i = 0; i < hlen; i++) {
                    rc = gbtd_tc_info_push(info, w.hist[i]);
                    if (rc != GBTD_OK) goto done;
                }
            }
        }
        if (stop == GBTD_STOP_CALLBACK || stop == GBTD_STOP_EXACT) break;
        if (o.time_budget > 0.0 && gbtd_wall_time() - t0 >= o.time_budget) break;
    }
    /* Output: weights non-negative (normalisation guarantees it), factors unit columns. */
    for (int n = 0; n < nd; n++)
        memcpy(out->factors[n].data, w.best.a[n], (size_t)(x->shape[n] * rank) * sizeof(double));
    memcpy(out->weights.data, w.best.lambda, (size_t)rank * sizeof(double));
    if (info) {
        info->iterations = best_iters;
        info->rel_error = best_err;
        info->stop = best_stop;
        info->time_init = t_init;
        info->time_iterate = t_iter;
        info->time_total = gbtd_wall_time() - t0;
        info->restarts = runs;
        info->best_restart = best_run;
    }

done:
    ws_free(&w);
    gbtd_rng_free(rng);
    gbtd_tensor_free(&xc);
    if (rc != GBTD_OK) {
        gbtd_cp_free(out);
        if (info) {
            gbtd_decomp_info_free(info);
            gbtd_decomp_info_init(info);
        }
    }
    return rc;
}
