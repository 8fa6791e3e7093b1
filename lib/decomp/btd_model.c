/* BTD model: layout checks, allocation, reconstruction, parameter count, subspace angles. */
#include <math.h>
#include <string.h>

#include "core/blas.h"
#include "core/status.h"
#include "decomp/btd.h"
#include "decomp/btd_internal.h"

#undef I /* <complex.h>, pulled in by LAPACKE, defines I; here it is a size */

/* a * b saturated at INT64_MAX (sizes here are positive). */
static int64_t sat_mul(int64_t a, int64_t b)
{
    if (a != 0 && b > INT64_MAX / a) return INT64_MAX;
    return a * b;
}

int gbtd_btd_check_layout_(int ndim, const int64_t *shape, int nmodes, const int *modes,
                           int nterms, const int64_t *ranks, int *sorted, int *order)
{
    if (shape == NULL || modes == NULL || ranks == NULL)
        return gbtd_error(GBTD_EINVAL, "btd: NULL shape, modes or ranks");
    if (ndim < 1 || ndim > GBTD_MAX_MODES)
        return gbtd_error(GBTD_EINVAL, "btd: %d modes (allowed 1..%d)", ndim, GBTD_MAX_MODES);
    for (int n = 0; n < ndim; n++)
        if (shape[n] < 1)
            return gbtd_error(GBTD_EINVAL, "btd: size %lld of mode %d (must be >= 1)",
                              (long long)shape[n], n);
    if (nmodes < 1 || nmodes > ndim)
        return gbtd_error(GBTD_EINVAL, "btd: %d factored modes for a %d-way tensor", nmodes, ndim);
    if (nterms < 1) return gbtd_error(GBTD_EINVAL, "btd: %d terms (need >= 1)", nterms);
    for (int k = 0; k < nmodes; k++) {
        if (modes[k] < 0 || modes[k] >= ndim)
            return gbtd_error(GBTD_ERANGE, "btd: mode %d does not exist in a %d-way tensor",
                              modes[k], ndim);
        for (int j = 0; j < k; j++)
            if (modes[j] == modes[k])
                return gbtd_error(GBTD_ERANGE, "btd: mode %d listed twice", modes[k]);
    }
    /* order[k] = index into `modes` of the k-th smallest mode. */
    for (int k = 0; k < nmodes; k++) order[k] = k;
    for (int a = 1; a < nmodes; a++)
        for (int b = a; b > 0 && modes[order[b - 1]] > modes[order[b]]; b--) {
            const int t = order[b];
            order[b] = order[b - 1];
            order[b - 1] = t;
        }
    for (int k = 0; k < nmodes; k++) sorted[k] = modes[order[k]];
    for (int r = 0; r < nterms; r++)
        for (int k = 0; k < nmodes; k++) {
            const int64_t l = ranks[(int64_t)r * nmodes + k];
            if (l < 1 || l > shape[modes[k]])
                return gbtd_error(GBTD_ERANGE,
                                  "btd: rank %lld of term %d on mode %d outside 1..%lld",
                                  (long long)l, r, modes[k], (long long)shape[modes[k]]);
        }
    /* A core whose rank on one mode exceeds the product of its other sizes is degenerate. */
    for (int r = 0; r < nterms; r++)
        for (int k = 0; k < nmodes; k++) {
            int64_t other = 1;
            for (int n = 0; n < ndim; n++) {
                int kk = -1;
                for (int j = 0; j < nmodes; j++)
                    if (modes[j] == n) kk = j;
                if (n == modes[k]) continue;
                other = sat_mul(other, kk >= 0 ? ranks[(int64_t)r * nmodes + kk] : shape[n]);
            }
            const int64_t l = ranks[(int64_t)r * nmodes + k];
            if (l > other)
                return gbtd_error(GBTD_ERANGE,
                                  "btd: rank %lld of term %d on mode %d exceeds the product %lld "
                                  "of its other core sizes",
                                  (long long)l, r, modes[k], (long long)other);
        }
    /* What the data can hold: the columns of all terms on one mode against the other sizes. */
    for (int k = 0; k < nmodes; k++) {
        int64_t sum = 0, other = 1;
        for (int r = 0; r < nterms; r++) sum += ranks[(int64_t)r * nmodes + k];
        for (int n = 0; n < ndim; n++)
            if (n != modes[k]) other = sat_mul(other, shape[n]);
        if (sum > other)
            return gbtd_error(GBTD_ERANGE,
                              "btd: %d terms need %lld columns on mode %d but the data holds at "
                              "most %lld (product of the other sizes)",
                              nterms, (long long)sum, modes[k], (long long)other);
    }
    return GBTD_OK;
}

int gbtd_btd_alloc(gbtd_btd *m, int ndim, const int64_t *shape, int nmodes, const int *modes,
                   int nterms, const int64_t *ranks)
{
    if (m == NULL) return gbtd_error(GBTD_EINVAL, "btd_alloc: NULL model");
    memset(m, 0, sizeof *m);
    int sorted[GBTD_MAX_MODES], order[GBTD_MAX_MODES];
    GBTD_CHECK(gbtd_btd_check_layout_(ndim, shape, nmodes, modes, nterms, ranks, sorted, order));
    m->ndim = ndim;
    for (int n = 0; n < ndim; n++) m->shape[n] = shape[n];
    m->nmodes = nmodes;
    for (int k = 0; k < nmodes; k++) m->modes[k] = sorted[k];
    m->nterms = nterms;
    m->ranks = gbtd_malloc((size_t)nterms * (size_t)nmodes * sizeof(int64_t));
    m->cores = gbtd_calloc((size_t)nterms, sizeof(gbtd_tensor));
    m->factors = gbtd_calloc((size_t)nterms * (size_t)nmodes, sizeof(gbtd_tensor));
    if (m->ranks == NULL || m->cores == NULL || m->factors == NULL) goto fail;
    for (int r = 0; r < nterms; r++)
        for (int k = 0; k < nmodes; k++)
            m->ranks[r * nmodes + k] = ranks[(int64_t)r * nmodes + order[k]];
    for (int r = 0; r < nterms; r++) {
        int64_t cs[GBTD_MAX_MODES];
        for (int n = 0; n < ndim; n++) cs[n] = shape[n];
        for (int k = 0; k < nmodes; k++) {
            cs[m->modes[k]] = m->ranks[r * nmodes + k];
            if (gbtd_matrix_alloc(&m->factors[r * nmodes + k], shape[m->modes[k]],
                                  m->ranks[r * nmodes + k]) != GBTD_OK)
                goto fail;
        }
        if (gbtd_tensor_alloc(&m->cores[r], ndim, cs) != GBTD_OK) goto fail;
    }
    return GBTD_OK;
fail:
    gbtd_btd_free(m);
    return gbtd_error(GBTD_ENOMEM, "btd_alloc: out of memory");
}

int gbtd_btd_alloc_uniform(gbtd_btd *m, int ndim, const int64_t *shape, int nmodes,
                           const int *modes, int nterms, const int64_t *ranks)
{
    if (m == NULL) return gbtd_error(GBTD_EINVAL, "btd_alloc: NULL model");
    memset(m, 0, sizeof *m);
    if (ranks == NULL) return gbtd_error(GBTD_EINVAL, "btd_alloc: NULL ranks");
    if (nterms < 1 || nmodes < 1 || nmodes > GBTD_MAX_MODES)
        return gbtd_error(GBTD_EINVAL, "btd_alloc: %d terms, %d modes", nterms, nmodes);
    int64_t *all = gbtd_malloc((size_t)nterms * (size_t)nmodes * sizeof(int64_t));
    if (all == NULL) return GBTD_ENOMEM;
    for (int r = 0; r < nterms; r++)
        for (int k = 0; k < nmodes; k++) all[r * nmodes + k] = ranks[k];
    const int rc = gbtd_btd_alloc(m, ndim, shape, nmodes, modes, nterms, all);
    gbtd_free(all);
    return rc;
}

void gbtd_btd_free(gbtd_btd *m)
{
    if (m == NULL) return;
    if (m->cores)
        for (int r = 0; r < m->nterms; r++) gbtd_tensor_free(&m->cores[r]);
    if (m->factors)
        for (int i = 0; i < m->nterms * m->nmodes; i++) gbtd_tensor_free(&m->factors[i]);
    gbtd_free(m->cores);
    gbtd_free(m->factors);
    gbtd_free(m->ranks);
    memset(m, 0, sizeof *m);
}

int gbtd_btd_clone(gbtd_btd *dst, const gbtd_btd *src)
{
    if (dst == NULL || src == NULL || src->ranks == NULL)
        return gbtd_error(GBTD_EINVAL, "btd_clone: NULL or empty model");
    GBTD_CHECK(gbtd_btd_alloc(dst, src->ndim, src->shape, src->nmodes, src->modes, src->nterms,
                              src->ranks));
    for (int r = 0; r < src->nterms; r++) {
        gbtd_tensor_copy(&dst->cores[r], &src->cores[r]);
        for (int k = 0; k < src->nmodes; k++)
            gbtd_tensor_copy(&dst->factors[r * src->nmodes + k],
                             &src->factors[r * src->nmodes + k]);
    }
    return GBTD_OK;
}

void gbtd_btd_fill_normal(gbtd_btd *m, gbtd_rng *rng)
{
    for (int r = 0; r < m->nterms; r++) {
        for (int k = 0; k < m->nmodes; k++)
            gbtd_tensor_fill_normal(&m->factors[r * m->nmodes + k], rng, 0.0, 1.0);
        gbtd_tensor_fill_normal(&m->cores[r], rng, 0.0, 1.0);
    }
}

int64_t gbtd_btd_num_params(const gbtd_btd *m)
{
    if (m == NULL || m->cores == NULL) return 0;
    int64_t n = 0;
    for (int r = 0; r < m->nterms; r++) {
        n += gbtd_tensor_numel(&m->cores[r]);
        for (int k = 0; k < m->nmodes; k++) n += gbtd_tensor_numel(&m->factors[r * m->nmodes + k]);
    }
    return n;
}

static int check_model(const gbtd_btd *m, const char *fn)
{
    if (m == NULL || m->cores == NULL || m->factors == NULL || m->ranks == NULL)
        return gbtd_error(GBTD_EINVAL, "%s: NULL or empty model", fn);
    for (int r = 0; r < m->nterms; r++) {
        if (!gbtd_tensor_is_contiguous(&m->cores[r]))
            return gbtd_error(GBTD_EINVAL, "%s: core %d is not contiguous", fn, r);
        for (int k = 0; k < m->nmodes; k++)
            if (!gbtd_tensor_is_contiguous(&m->factors[r * m->nmodes + k]))
                return gbtd_error(GBTD_EINVAL, "%s: factor (%d, %d) is not contiguous", fn, r, k);
    }
    return GBTD_OK;
}

int gbtd_btd_reconstruct(const gbtd_btd *m, gbtd_tensor *out)
{
    GBTD_CHECK(check_model(m, "btd_reconstruct"));
    if (out == NULL || out->data == NULL || out->ndim != m->ndim || !gbtd_tensor_is_contiguous(out))
        return gbtd_error(GBTD_ESHAPE, "btd_reconstruct: output must be a contiguous %d-way tensor",
                          m->ndim);
    for (int n = 0; n < m->ndim; n++)
        if (out->shape[n] != m->shape[n]) {
            char a[128], b[128];
            return gbtd_error(GBTD_ESHAPE, "btd_reconstruct: output %s, model %s",
                              gbtd_shape_str(out->ndim, out->shape, a, sizeof a),
                              gbtd_shape_str(m->ndim, m->shape, b, sizeof b));
        }
    const int64_t numel = gbtd_tensor_numel(out);
    GBTD_CHECK(gbtd_btd_blas_fits_(numel));
    double *t1 = gbtd_malloc((size_t)numel * sizeof(double));
    double *t2 = gbtd_malloc((size_t)numel * sizeof(double));
    if (t1 == NULL || t2 == NULL) {
        gbtd_free(t1);
        gbtd_free(t2);
        return GBTD_ENOMEM;
    }
    memset(out->data, 0, (size_t)numel * sizeof(double));
    const int K = m->nmodes;
    for (int r = 0; r < m->nterms; r++) {
        int64_t sh[GBTD_MAX_MODES];
        for (int n = 0; n < m->ndim; n++) sh[n] = m->cores[r].shape[n];
        const double *src = m->cores[r].data;
        for (int k = 0; k < K; k++) {
            const gbtd_tensor *u = &m->factors[r * K + k];
            const int mode = m->modes[k];
            double *dst = k == K - 1 ? out->data : (src == t1 ? t2 : t1);
            gbtd_btd_ttm_(src, m->ndim, sh, mode, u->data, u->shape[1], u->shape[0], 0,
                          k == K - 1 ? 1.0 : 0.0, dst);
            sh[mode] = u->shape[0];
            src = dst;
        }
    }
    gbtd_free(t1);
    gbtd_free(t2);
    return GBTD_OK;
}

int gbtd_btd_reconstruct_alloc(const gbtd_btd *m, gbtd_tensor *out)
{
    GBTD_CHECK(check_model(m, "btd_reconstruct"));
    GBTD_CHECK(gbtd_tensor_alloc(out, m->ndim, m->shape));
    const int rc = gbtd_btd_reconstruct(m, out);
    if (rc != GBTD_OK) gbtd_tensor_free(out);
    return rc;
}

int gbtd_btd_relative_error(const gbtd_tensor *x, const gbtd_btd *m, double *out)
{
    if (x == NULL || out == NULL) return gbtd_error(GBTD_EINVAL, "btd_relative_error: NULL argument");
    gbtd_tensor y;
    GBTD_CHECK(gbtd_btd_reconstruct_alloc(m, &y));
    const int rc = gbtd_relative_error(x, &y, out);
    gbtd_tensor_free(&y);
    return rc;
}

/* Largest principal angle between span(A) and span(B), A and B of I rows (contiguous, cols
 * ca and cb, ca <= cb): QR both, then the smallest singular value s of Qa^T Qb gives
 * acos(s); for accuracy near 0 the angle is taken as asin(||Qa - Qb Qb^T Qa||_2). */
static int principal_angle(const double *a, int64_t rows, int64_t ca, const double *b, int64_t cb,
                           double *work, double *angle)
{
    double *qa = work, *qb = qa + rows * ca, *c = qb + rows * cb, *d = c + ca * cb;
    double *tau = d + rows * ca, *s = tau + (ca > cb ? ca : cb);
    lapack_int ir = 0, ica = 0, icb = 0;
    GBTD_CHECK(gbtd_lapack_int(rows, &ir));
    GBTD_CHECK(gbtd_lapack_int(ca, &ica));
    GBTD_CHECK(gbtd_lapack_int(cb, &icb));
    memcpy(qa, a, (size_t)(rows * ca) * sizeof(double));
    memcpy(qb, b, (size_t)(rows * cb) * sizeof(double));
    if (LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, ir, ica, qa, ica, tau) != 0 ||
        LAPACKE_dorgqr(LAPACK_ROW_MAJOR, ir, ica, ica, qa, ica, tau) != 0 ||
        LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, ir, icb, qb, icb, tau) != 0 ||
        LAPACKE_dorgqr(LAPACK_ROW_MAJOR, ir, icb, icb, qb, icb, tau) != 0)
        return gbtd_error(GBTD_ENUMERIC, "btd_subspace_angles: QR failed");
    /* c = Qb^T Qa (cb x ca); d = Qa - Qb c (rows x ca). */
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, icb, ica, ir, 1.0, qb, icb, qa, ica, 0.0,
                c, ica);
    memcpy(d, qa, (size_t)(rows * ca) * sizeof(double));
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ir, ica, icb, -1.0, qb, icb, c, ica,
                1.0, d, ica);
    if (LAPACKE_dgesdd(LAPACK_ROW_MAJOR, 'N', ir, ica, d, ica, s, NULL, ir, NULL, ica) != 0)
        return gbtd_error(GBTD_ENUMERIC, "btd_subspace_angles: SVD failed");
    const double sn = s[0] > 1.0 ? 1.0 : s[0];
    *angle = asin(sn);
    return GBTD_OK;
}

int gbtd_btd_subspace_angles(const gbtd_btd *ref, const gbtd_btd *est, double *max_angle,
                             int *perm, double *angles)
{
    GBTD_CHECK(check_model(ref, "btd_subspace_angles"));
    GBTD_CHECK(check_model(est, "btd_subspace_angles"));
    const int R = ref->nterms, K = ref->nmodes;
    int same = ref->ndim == est->ndim && R == est->nterms && K == est->nmodes;
    for (int n = 0; same && n < ref->ndim; n++) same = ref->shape[n] == est->shape[n];
    for (int k = 0; same && k < K; k++) same = ref->modes[k] == est->modes[k];
    if (!same) return gbtd_error(GBTD_ESHAPE, "btd_subspace_angles: the two models differ in layout");
    int64_t maxi = 1, maxl = 1;
    for (int k = 0; k < K; k++) maxi = ref->shape[ref->modes[k]] > maxi ? ref->shape[ref->modes[k]] : maxi;
    for (int i = 0; i < R * K; i++) {
        maxl = ref->ranks[i] > maxl ? ref->ranks[i] : maxl;
        maxl = est->ranks[i] > maxl ? est->ranks[i] : maxl;
    }
    size_t wn = (size_t)(4 * maxi * maxl + 2 * maxl * maxl + 4 * maxl);
    double *work = gbtd_malloc(wn * sizeof(double));
    double *cost = gbtd_malloc((size_t)R * (size_t)R * (size_t)K * sizeof(double));
    int *used = gbtd_calloc((size_t)R, sizeof(int));
    int rc = GBTD_OK;
    if (work == NULL || cost == NULL || used == NULL) {
        rc = GBTD_ENOMEM;
        goto done;
    }
    /* cost[(r * R + s) * K + k]: angle between term r of ref and term s of est on mode k. */
    for (int r = 0; r < R; r++)
        for (int s = 0; s < R; s++) {
            int match = 1;
            for (int k = 0; k < K; k++) match &= ref->ranks[r * K + k] == est->ranks[s * K + k];
            for (int k = 0; k < K; k++) {
                double *c = &cost[((size_t)r * R + s) * K + k];
                if (!match) {
                    *c = INFINITY;
                    continue;
                }
                const gbtd_tensor *a = &ref->factors[r * K + k], *b = &est->factors[s * K + k];
                rc = principal_angle(a->data, a->shape[0], a->shape[1], b->data, b->shape[1],
                                     work, c);
                if (rc != GBTD_OK) goto done;
            }
        }
    /* Greedy matching by the smallest worst angle over the modes. */
    double worst = 0.0;
    for (int step = 0; step < R; step++) {
        int br = -1, bs = -1;
        double best = INFINITY;
        for (int r = 0; r < R; r++) {
            if (used[r] & 2) continue; /* bit 1: ref term r matched */
            for (int s = 0; s < R; s++) {
                if (used[s] & 1) continue; /* bit 0: est term s matched */
                double w = 0.0;
                for (int k = 0; k < K; k++) {
                    const double c = cost[((size_t)r * R + s) * K + k];
                    w = c > w ? c : w;
                }
                if (br < 0 || w < best) {
                    best = w;
                    br = r;
                    bs = s;
                }
            }
        }
        if (best == INFINITY) {
            rc = gbtd_error(GBTD_ERANGE, "btd_subspace_angles: the term ranks cannot be matched");
            goto done;
        }
        used[br] |= 2;
        used[bs] |= 1;
        if (perm) perm[br] = bs;
        if (angles)
            for (int k = 0; k < K; k++) angles[br * K + k] = cost[((size_t)br * R + bs) * K + k];
        worst = best > worst ? best : worst;
    }
    if (max_angle) *max_angle = worst;
done:
    gbtd_free(work);
    gbtd_free(cost);
    gbtd_free(used);
    return rc;
}
