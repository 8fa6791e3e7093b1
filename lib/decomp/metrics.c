#include "decomp/metrics.h"

#include <math.h>
#include <string.h>

#include "core/blas.h"
#include "core/status.h"
#include "decomp/tc_internal.h"

/* Minimum-cost assignment of an n x n cost matrix (row-major) by the Hungarian method with
 * row/column potentials, O(n^3). assign[i] = column given to row i. Workspace: 5 (n + 1)
 * doubles/ints in `dw` and `iw`. */
static void assign_min_cost(const double *cost, int64_t n, int64_t *assign, double *dw,
                            int64_t *iw)
{
    double *pu = dw, *pv = dw + (n + 1), *minv = dw + 2 * (n + 1);
    int64_t *match = iw, *way = iw + (n + 1), *used = iw + 2 * (n + 1);
    for (int64_t j = 0; j <= n; j++) {
        pu[j] = pv[j] = 0.0;
        match[j] = 0;
        way[j] = 0;
    }
    for (int64_t i = 1; i <= n; i++) {
        match[0] = i;
        int64_t j0 = 0;
        for (int64_t j = 0; j <= n; j++) {
            minv[j] = INFINITY;
            used[j] = 0;
        }
        do {
            used[j0] = 1;
            const int64_t i0 = match[j0];
            double delta = INFINITY;
            int64_t j1 = 0;
            for (int64_t j = 1; j <= n; j++) {
                if (used[j]) continue;
                const double c = cost[(i0 - 1) * n + (j - 1)] - pu[i0] - pv[j];
                if (c < minv[j]) {
                    minv[j] = c;
                    way[j] = j0;
                }
                if (minv[j] < delta) {
                    delta = minv[j];
                    j1 = j;
                }
            }
            for (int64_t j = 0; j <= n; j++) {
                if (used[j]) {
                    pu[match[j]] += delta;
                    pv[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
        } while (match[j0] != 0);
        do {
            const int64_t j1 = way[j0];
            match[j0] = match[j1];
            j0 = j1;
        } while (j0 != 0);
    }
    for (int64_t j = 1; j <= n; j++) assign[match[j] - 1] = j - 1;
}

static int check_cp(const gbtd_cp *m, const char *which)
{
    if (m == NULL || m->weights.data == NULL || m->rank < 1 || m->ndim < 1)
        return gbtd_error(GBTD_EINVAL, "cp_factor_match: %s model is NULL or empty", which);
    for (int n = 0; n < m->ndim; n++)
        if (m->factors[n].data == NULL || m->factors[n].ndim != 2 ||
            m->factors[n].shape[1] != m->rank)
            return gbtd_error(GBTD_EINVAL, "cp_factor_match: %s factor %d is not I x %lld", which,
                              n, (long long)m->rank);
    return GBTD_OK;
}

static double col_dot(const gbtd_tensor *a, int64_t ca, const gbtd_tensor *b, int64_t cb)
{
    double s = 0.0;
    for (int64_t i = 0; i < a->shape[0]; i++)
        s += a->data[i * a->stride[0] + ca * a->stride[1]] *
             b->data[i * b->stride[0] + cb * b->stride[1]];
    return s;
}

int gbtd_cp_factor_match(const gbtd_cp *ref, const gbtd_cp *est, bool use_weights,
                         double *score, double *min_congruence, int64_t *perm)
{
    GBTD_CHECK(check_cp(ref, "reference"));
    GBTD_CHECK(check_cp(est, "estimated"));
    if (score == NULL) return gbtd_error(GBTD_EINVAL, "cp_factor_match: NULL score");
    if (ref->ndim != est->ndim || ref->rank != est->rank)
        return gbtd_error(GBTD_ESHAPE, "cp_factor_match: models differ (%d modes rank %lld vs "
                          "%d modes rank %lld)", ref->ndim, (long long)ref->rank, est->ndim,
                          (long long)est->rank);
    for (int n = 0; n < ref->ndim; n++)
        if (ref->factors[n].shape[0] != est->factors[n].shape[0])
            return gbtd_error(GBTD_ESHAPE, "cp_factor_match: mode %d has size %lld vs %lld", n,
                              (long long)ref->factors[n].shape[0],
                              (long long)est->factors[n].shape[0]);
    const int64_t r = ref->rank;
    const int nd = ref->ndim;
    size_t rr;
    GBTD_CHECK(gbtd_mul_size((size_t)r, (size_t)r, &rr));
    double *sim = gbtd_malloc(rr * sizeof(double));
    double *cong = gbtd_malloc(rr * sizeof(double));
    double *nrm = gbtd_malloc((size_t)(2 * r * (nd + 1)) * sizeof(double));
    double *dw = gbtd_malloc((size_t)(3 * (r + 1)) * sizeof(double));
    int64_t *iw = gbtd_malloc((size_t)(3 * (r + 1)) * sizeof(int64_t));
    int64_t *asg = gbtd_malloc((size_t)r * sizeof(int64_t));
    int rc = GBTD_OK;
    if (!sim || !cong || !nrm || !dw || !iw || !asg) {
        rc = GBTD_ENOMEM;
        goto done;
    }
    /* nrm[(n * 2 + side) * r + c]: column norms; the last block holds total magnitudes. */
    for (int side = 0; side < 2; side++) {
        const gbtd_cp *m = side ? est : ref;
        for (int64_t c = 0; c < r; c++) {
            double mag = fabs(m->weights.data[c * m->weights.stride[0]]);
            for (int n = 0; n < nd; n++) {
                const double v = sqrt(col_dot(&m->factors[n], c, &m->factors[n], c));
                nrm[(n * 2 + side) * r + c] = v;
                mag *= v;
            }
            nrm[(nd * 2 + side) * r + c] = mag;
        }
    }
    for (int64_t a = 0; a < r; a++)
        for (int64_t b = 0; b < r; b++) {
            double c = 1.0;
            for (int n = 0; n < nd; n++) {
                const double den = nrm[(n * 2) * r + a] * nrm[(n * 2 + 1) * r + b];
                c *= den > 0.0 ? fabs(col_dot(&ref->factors[n], a, &est->factors[n], b)) / den
                               : 0.0;
            }
            cong[a * r + b] = c;
            double s = c;
            if (use_weights) {
                const double la = nrm[(nd * 2) * r + a], lb = nrm[(nd * 2 + 1) * r + b];
                const double mx = fmax(la, lb);
                s *= mx > 0.0 ? 1.0 - fabs(la - lb) / mx : 1.0;
            }
            sim[a * r + b] = -s; /* minimise the negated score */
        }
    assign_min_cost(sim, r, asg, dw, iw);
    double total = 0.0, cmin = INFINITY;
    for (int64_t a = 0; a < r; a++) {
        total += -sim[a * r + asg[a]];
        cmin = fmin(cmin, cong[a * r + asg[a]]);
        if (perm) perm[a] = asg[a];
    }
    *score = total / (double)r;
    if (min_congruence) *min_congruence = cmin;
done:
    gbtd_free(sim);
    gbtd_free(cong);
    gbtd_free(nrm);
    gbtd_free(dw);
    gbtd_free(iw);
    gbtd_free(asg);
    return rc;
}

int gbtd_subspace_sin_angle(const gbtd_tensor *a, const gbtd_tensor *b, double *sin_max)
{
    if (a == NULL || b == NULL || sin_max == NULL)
        return gbtd_error(GBTD_EINVAL, "subspace_sin_angle: NULL argument");
    if (a->ndim != 2 || b->ndim != 2 || a->shape[0] != b->shape[0] || a->shape[1] > b->shape[1] ||
        a->shape[1] < 1 || b->shape[1] > b->shape[0])
        return gbtd_error(GBTD_ESHAPE,
                          "subspace_sin_angle: need a (I x p) and b (I x q) with 1 <= p <= q <= I");
    const int64_t in = a->shape[0], p = a->shape[1], q = b->shape[1];
    lapack_int li = 0;
    GBTD_CHECK(gbtd_lapack_int(in * q, &li));
    gbtd_tensor qa = {0}, qb = {0}, c = {0};
    double *sv = NULL, *superb = NULL;
    int rc = gbtd_tensor_clone(&qa, a);
    if (rc == GBTD_OK) rc = gbtd_tensor_clone(&qb, b);
    if (rc == GBTD_OK) rc = gbtd_matrix_alloc(&c, q, p);
    if (rc == GBTD_OK) rc = gbtd_tc_orthonormalize(&qa);
    if (rc == GBTD_OK) rc = gbtd_tc_orthonormalize(&qb);
    if (rc != GBTD_OK) goto done;
    /* C = Qb^T Qa; Qa <- Qa - Qb C, whose largest singular value is the sine. */
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)q, (blasint)p, (blasint)in, 1.0,
                qb.data, (blasint)q, qa.data, (blasint)p, 0.0, c.data, (blasint)p);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)in, (blasint)p, (blasint)q,
                -1.0, qb.data, (blasint)q, c.data, (blasint)p, 1.0, qa.data, (blasint)p);
    sv = gbtd_malloc((size_t)p * sizeof(double));
    superb = gbtd_malloc((size_t)(p > 1 ? p : 1) * sizeof(double));
    if (!sv || !superb) {
        rc = GBTD_ENOMEM;
        goto done;
    }
    const lapack_int info = LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'N', 'N', (lapack_int)in,
                                           (lapack_int)p, qa.data, (lapack_int)p, sv, NULL, 1,
                                           NULL, 1, superb);
    if (info != 0)
        rc = gbtd_error(info == LAPACK_WORK_MEMORY_ERROR ? GBTD_ENOMEM : GBTD_ENUMERIC,
                        "subspace_sin_angle: SVD failed (info %d)", (int)info);
    else
        *sin_max = fmin(sv[0], 1.0);
done:
    gbtd_free(sv);
    gbtd_free(superb);
    gbtd_tensor_free(&qa);
    gbtd_tensor_free(&qb);
    gbtd_tensor_free(&c);
    return rc;
}

double gbtd_compression_ratio(int ndim, const int64_t *shape, int64_t params)
{
    if (params <= 0 || shape == NULL) return 0.0;
    double n = 1.0;
    for (int k = 0; k < ndim; k++) n *= (double)shape[k];
    return n / (double)params;
}
