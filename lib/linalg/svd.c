/* gbtd linalg: Gram matrices of unfoldings and leading singular vectors through dsyevd. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "linalg/internal.h"

int gbtd_unfold_gram(const gbtd_tensor *x, int mode, gbtd_tensor *g)
{
    if (x == NULL || g == NULL) return gbtd_error(GBTD_EINVAL, "unfold_gram: NULL tensor argument");
    if (mode < 0 || mode >= x->ndim)
        return gbtd_error(GBTD_ERANGE, "unfold_gram: mode %d out of range for a %d-way tensor",
                          mode, x->ndim);
    const int64_t i_n = x->shape[mode];
    if (g->ndim != 2 || g->shape[0] != i_n || g->shape[1] != i_n)
        return gbtd_error(GBTD_ESHAPE, "unfold_gram: output must be %lld x %lld", (long long)i_n,
                          (long long)i_n);
    if (!gbtd_tensor_is_contiguous(x))
        return gbtd_error(GBTD_EINVAL, "unfold_gram: X must be contiguous");
    if (!gbtd_tensor_is_contiguous(g))
        return gbtd_error(GBTD_EINVAL, "unfold_gram: output must be contiguous");
    if (la_overlap(x, g)) return gbtd_error(GBTD_EINVAL, "unfold_gram: output aliases X");
    int64_t p_n = 1, q_n = 1;
    for (int k = 0; k < mode; k++) p_n *= x->shape[k];
    for (int k = mode + 1; k < x->ndim; k++) q_n *= x->shape[k];
    if (i_n == 0) return GBTD_OK;
    gbtd_tensor_fill(g, 0.0);
    if (p_n == 0 || q_n == 0) return GBTD_OK;
    blasint bi = 0, bp = 0, bq = 0;
    GBTD_CHECK(gbtd_blas_int(i_n, &bi));
    double *c = g->data;
    if (q_n == 1) {
        /* Last mode: X is P x I and X_(n) = X^T, so G = X^T X. */
        GBTD_CHECK(gbtd_blas_int(p_n, &bp));
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, bi, bp, 1.0, x->data, bi, 0.0, c, bi);
    } else {
        /* G = sum_p X_p X_p^T over the I x Q slabs X_p. */
        GBTD_CHECK(gbtd_blas_int(q_n, &bq));
        for (int64_t p = 0; p < p_n; p++)
            cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, bi, bq, 1.0,
                        x->data + p * i_n * q_n, bq, p ? 1.0 : 0.0, c, bi);
    }
    for (int64_t i = 0; i < i_n; i++)
        for (int64_t k = 0; k < i; k++) c[i * i_n + k] = c[k * i_n + i];
    return GBTD_OK;
}

/* Symmetric eigendecomposition of the n x n matrix a (overwritten by the eigenvectors, one per
 * row of the row-major buffer, since LAPACK works column-major and a is symmetric), with the
 * eigenvalues ascending in w. Workspace through the library allocator. */
static int sym_eig(double *a, int64_t n, double *w)
{
    lapack_int ln = 0, info, liwork = -1, iwq = 0;
    double wq = 0.0;
    GBTD_CHECK(gbtd_lapack_int(n, &ln));
    info = LAPACKE_dsyevd_work(LAPACK_COL_MAJOR, 'V', 'U', ln, a, ln > 0 ? ln : 1, w, &wq, -1,
                               &iwq, liwork);
    if (info != 0)
        return gbtd_error(GBTD_ENUMERIC, "dsyevd workspace query failed (info %d)", (int)info);
    const size_t lwork = (size_t)wq, nliw = (size_t)iwq;
    double *work = gbtd_malloc(lwork * sizeof(double));
    if (work == NULL) return GBTD_ENOMEM;
    lapack_int *iwork = gbtd_malloc(nliw * sizeof(lapack_int));
    if (iwork == NULL) {
        gbtd_free(work);
        return GBTD_ENOMEM;
    }
    info = LAPACKE_dsyevd_work(LAPACK_COL_MAJOR, 'V', 'U', ln, a, ln > 0 ? ln : 1, w, work,
                               (lapack_int)lwork, iwork, (lapack_int)nliw);
    gbtd_free(iwork);
    gbtd_free(work);
    if (info != 0)
        return gbtd_error(GBTD_ENUMERIC, "dsyevd failed on a %lld x %lld Gram matrix (info %d)",
                          (long long)n, (long long)n, (int)info);
    return GBTD_OK;
}

int gbtd_sym_eig_top(double *a, int64_t n, int64_t r, double *evals, double *vecs, int64_t ldv)
{
    if (a == NULL || vecs == NULL) return gbtd_error(GBTD_EINVAL, "sym_eig_top: NULL argument");
    if (n < 1 || r < 1 || r > n)
        return gbtd_error(GBTD_ERANGE, "sym_eig_top: %lld eigenpairs of a %lld x %lld matrix",
                          (long long)r, (long long)n, (long long)n);
    if (ldv < r)
        return gbtd_error(GBTD_EINVAL, "sym_eig_top: leading dimension %lld < %lld columns",
                          (long long)ldv, (long long)r);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = i; j < n; j++)
            if (!isfinite(a[i * n + j]))
                return gbtd_error(GBTD_ENONFINITE,
                                  "sym_eig_top: non-finite matrix entry (%lld, %lld)",
                                  (long long)i, (long long)j);
    lapack_int ln = 0, lr = 0;
    GBTD_CHECK(gbtd_lapack_int(n, &ln));
    GBTD_CHECK(gbtd_lapack_int(r, &lr));
    size_t nr, n13;
    GBTD_CHECK(gbtd_mul_size((size_t)n, (size_t)r, &nr));
    GBTD_CHECK(gbtd_mul_size((size_t)n, 13, &n13));
    const size_t nn = (size_t)n;
    int rc = GBTD_OK;
    double *work = NULL;
    lapack_int *iw = NULL;
    double *d = gbtd_malloc(6 * nn * sizeof(double)); /* d, e, tau, d2, e2, w */
    double *z = gbtd_malloc(nr * sizeof(double));     /* n x r, column-major */
    if (!d || !z) {
        rc = GBTD_ENOMEM;
        goto done;
    }
    double *e = d + nn, *tau = d + 2 * nn, *d2 = d + 3 * nn, *e2 = d + 4 * nn, *w = d + 5 * nn;
    /* Workspace: dsytrd and dormtr by query, dstein 5n, dstemr 18n (doubles); 10n integers for
     * dstein / dstemr plus dstein's block description and failure list (n each). */
    double q1 = 0.0, q2 = 0.0;
    lapack_int info = LAPACKE_dsytrd_work(LAPACK_COL_MAJOR, 'L', ln, a, ln, d, e, tau, &q1, -1);
    if (info == 0)
        info = LAPACKE_dormtr_work(LAPACK_COL_MAJOR, 'L', 'L', 'N', ln, lr, a, ln, tau, z, ln,
                                   &q2, -1);
    if (info != 0) {
        rc = gbtd_error(GBTD_ENUMERIC, "sym_eig_top: workspace query failed (info %d)",
                        (int)info);
        goto done;
    }
    double lw = q1 > q2 ? q1 : q2;
    if (lw < 18.0 * (double)n) lw = 18.0 * (double)n;
    const lapack_int lwork = (lapack_int)lw;
    work = gbtd_malloc((size_t)lwork * sizeof(double));
    iw = gbtd_malloc(n13 * sizeof(lapack_int));
    if (!work || !iw) {
        rc = GBTD_ENOMEM;
        goto done;
    }
    lapack_int *iwork = iw, *iblock = iw + 10 * nn, *isplit = iw + 11 * nn,
               *ifail = iw + 12 * nn;
    info = LAPACKE_dsytrd_work(LAPACK_COL_MAJOR, 'L', ln, a, ln, d, e, tau, work, lwork);
    if (info != 0) {
        rc = gbtd_error(GBTD_ENUMERIC, "sym_eig_top: tridiagonalisation failed (info %d)",
                        (int)info);
        goto done;
    }
    /* Every eigenvalue, ascending (dsterf deals with a split matrix itself). */
    memcpy(d2, d, nn * sizeof(double));
    if (n > 1) memcpy(e2, e, (nn - 1) * sizeof(double));
    info = LAPACKE_dsterf_work(ln, d2, e2);
    if (info != 0) {
        rc = gbtd_error(GBTD_ENUMERIC, "sym_eig_top: eigenvalues did not converge (info %d)",
                        (int)info);
        goto done;
    }
    if (evals)
        for (int64_t i = 0; i < n; i++) evals[i] = d2[n - 1 - i];
    /* Inverse iteration wants one unreduced block: dstebz's splitting test must find nothing. */
    int split = 0;
    for (int64_t i = 0; i + 1 < n; i++)
        if (fabs(e[i]) <= DBL_EPSILON * sqrt(fabs(d[i])) * sqrt(fabs(d[i + 1]))) split = 1;
    int have = 0;
    if (!split) {
        for (int64_t i = 0; i < r; i++) iblock[i] = 1;
        isplit[0] = ln;
        info = LAPACKE_dstein_work(LAPACK_COL_MAJOR, ln, d, e, lr, d2 + (n - r), iblock, isplit,
                                   z, ln, work, iwork, ifail);
        have = info == 0;
    }
    if (!have) {
        /* MRRR over the wanted index range; its support list (2r integers) reuses iblock and
         * isplit, which follow each other. */
        lapack_int m = 0, tryrac = 1;
        memcpy(d2, d, nn * sizeof(double));
        if (n > 1) memcpy(e2, e, (nn - 1) * sizeof(double));
        info = LAPACKE_dstemr_work(LAPACK_COL_MAJOR, 'V', 'I', ln, d2, e2, 0.0, 0.0, ln - lr + 1,
                                   ln, &m, w, z, ln, lr, iblock, &tryrac, work, lwork, iwork,
                                   10 * ln);
        if (info == 0 && m != lr) info = -1000;
        if (info != 0) {
            rc = gbtd_error(GBTD_ENUMERIC, "sym_eig_top: eigenvectors failed (info %d)",
                            (int)info);
            goto done;
        }
    }
    info = LAPACKE_dormtr_work(LAPACK_COL_MAJOR, 'L', 'L', 'N', ln, lr, a, ln, tau, z, ln, work,
                               lwork);
    if (info != 0) {
        rc = gbtd_error(GBTD_ENUMERIC, "sym_eig_top: back-transformation failed (info %d)",
                        (int)info);
        goto done;
    }
    /* z column j (ascending order) -> vecs column r - 1 - j. */
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < r; j++) vecs[i * ldv + (r - 1 - j)] = z[i + j * n];
done:
    gbtd_free(d);
    gbtd_free(z);
    gbtd_free(work);
    gbtd_free(iw);
    return rc;
}

/* Make the entry of largest magnitude of column c of the rows x cols matrix u positive. */
static void fix_sign(double *u, int64_t rows, int64_t cols, int64_t c)
{
    int64_t at = 0;
    for (int64_t i = 1; i < rows; i++)
        if (fabs(u[i * cols + c]) > fabs(u[at * cols + c])) at = i;
    if (rows > 0 && u[at * cols + c] < 0.0)
        for (int64_t i = 0; i < rows; i++) u[i * cols + c] = -u[i * cols + c];
}

/* Orthonormalise column c of u (rows x cols) against columns 0..c-1 (two passes of
 * Gram-Schmidt); returns its norm after projection (before normalisation). */
static double orth_column(double *u, int64_t rows, int64_t cols, int64_t c)
{
    for (int pass = 0; pass < 2; pass++)
        for (int64_t k = 0; k < c; k++) {
            double d = 0.0;
            for (int64_t i = 0; i < rows; i++) d += u[i * cols + k] * u[i * cols + c];
            for (int64_t i = 0; i < rows; i++) u[i * cols + c] -= d * u[i * cols + k];
        }
    double s = 0.0;
    for (int64_t i = 0; i < rows; i++) s += u[i * cols + c] * u[i * cols + c];
    s = sqrt(s);
    if (s > 0.0)
        for (int64_t i = 0; i < rows; i++) u[i * cols + c] /= s;
    return s;
}

/* Fill columns from..cols-1 of u with an orthonormal completion: at each step the unit vector
 * e_j whose projection on the complement of the columns so far is longest (its squared length
 * is at least (rows - filled) / rows > 0, so the choice is never degenerate). */
static void complete_basis(double *u, int64_t rows, int64_t cols, int64_t from)
{
    for (int64_t c = from; c < cols; c++) {
        int64_t best = 0;
        double best_len = -1.0;
        for (int64_t j = 0; j < rows; j++) {
            double len = 1.0; /* |e_j - U U^T e_j|^2 = 1 - |row j of U|^2 */
            for (int64_t k = 0; k < c; k++) len -= u[j * cols + k] * u[j * cols + k];
            if (len > best_len) {
                best_len = len;
                best = j;
            }
        }
        for (int64_t i = 0; i < rows; i++) u[i * cols + c] = i == best ? 1.0 : 0.0;
        orth_column(u, rows, cols, c);
    }
}

int gbtd_leading_singular_vectors(const gbtd_tensor *x, int mode, int64_t rank,
                                  gbtd_tensor *u_out, double *sv2)
{
    if (u_out == NULL) return gbtd_error(GBTD_EINVAL, "leading_singular_vectors: NULL output");
    memset(u_out, 0, sizeof *u_out);
    if (x == NULL) return gbtd_error(GBTD_EINVAL, "leading_singular_vectors: NULL tensor");
    if (mode < 0 || mode >= x->ndim)
        return gbtd_error(GBTD_ERANGE,
                          "leading_singular_vectors: mode %d out of range for a %d-way tensor",
                          mode, x->ndim);
    const int64_t i_n = x->shape[mode];
    if (rank < 1 || rank > i_n)
        return gbtd_error(GBTD_ERANGE,
                          "leading_singular_vectors: rank %lld outside 1..%lld (size of mode %d)",
                          (long long)rank, (long long)i_n, mode);
    int64_t rest = 1;
    for (int k = 0; k < x->ndim; k++)
        if (k != mode) GBTD_CHECK(gbtd_mul_i64(rest, x->shape[k], &rest));

    int rc = GBTD_OK;
    gbtd_tensor xc, g, xu;
    double *w = NULL;
    memset(&xc, 0, sizeof xc);
    memset(&g, 0, sizeof g);
    memset(&xu, 0, sizeof xu);
    const gbtd_tensor *xx = x;
    const int small_side = rest < i_n; /* Gram of the columns is the smaller one */
    if (!small_side && !gbtd_tensor_is_contiguous(x)) {
        rc = gbtd_tensor_clone(&xc, x);
        if (rc != GBTD_OK) goto done;
        xx = &xc;
    }
    rc = gbtd_matrix_alloc(u_out, i_n, rank);
    if (rc != GBTD_OK) goto done;
    const int64_t n = small_side ? rest : i_n;
    rc = gbtd_matrix_alloc(&g, n, n);
    if (rc != GBTD_OK) goto done;
    w = gbtd_malloc((size_t)n * sizeof(double) + 1);
    if (w == NULL) {
        rc = GBTD_ENOMEM;
        goto done;
    }
    if (!small_side) {
        rc = gbtd_unfold_gram(xx, mode, &g);
    } else {
        /* Unfolding copy (I_n x R, R < I_n): G = X_(n)^T X_(n). */
        rc = gbtd_unfold_alloc(x, mode, &xu);
        if (rc == GBTD_OK && n > 0) {
            blasint bi = 0, br = 0;
            rc = gbtd_blas_int(i_n, &bi);
            if (rc == GBTD_OK) rc = gbtd_blas_int(n, &br);
            if (rc == GBTD_OK) {
                cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, br, bi, 1.0, xu.data, br, 0.0,
                            g.data, br);
                for (int64_t i = 0; i < n; i++)
                    for (int64_t k = 0; k < i; k++) g.data[i * n + k] = g.data[k * n + i];
            }
        }
    }
    if (rc != GBTD_OK) goto done;
    rc = gbtd_tensor_check_finite(&g, "leading_singular_vectors: Gram matrix of X");
    if (rc != GBTD_OK) goto done;
    double *u = u_out->data;
    if (!small_side) {
        /* Only the wanted eigenvectors (gbtd_sym_eig_top), straight into U; all eigenvalues,
         * decreasing, into w. */
        rc = gbtd_sym_eig_top(g.data, n, rank, w, u, rank);
        if (rc != GBTD_OK) goto done;
        for (int64_t c = 0; c < n / 2; c++) { /* ascending, as the other path leaves them */
            const double t = w[c];
            w[c] = w[n - 1 - c];
            w[n - 1 - c] = t;
        }
    } else {
        rc = sym_eig(g.data, n, w);
        if (rc != GBTD_OK) goto done;
        /* u_c = X_(n) v_c / sigma_c for the nonzero singular values, then a completion. */
        const double lmax = n > 0 ? w[n - 1] : 0.0;
        const double tol = (double)i_n * DBL_EPSILON * lmax; /* below this, sigma^2 is noise */
        int64_t filled = 0;
        for (int64_t c = 0; c < rank && c < n; c++) {
            const double lam = w[n - 1 - c];
            if (!(lam > tol)) break;
            const double *v = g.data + (n - 1 - c) * n;
            for (int64_t i = 0; i < i_n; i++) {
                double s = 0.0;
                for (int64_t r = 0; r < n; r++) s += xu.data[i * n + r] * v[r];
                u[i * rank + c] = s;
            }
            if (orth_column(u, i_n, rank, c) <= 0.0) break;
            filled = c + 1;
        }
        complete_basis(u, i_n, rank, filled);
    }
    for (int64_t c = 0; c < rank; c++) fix_sign(u, i_n, rank, c);
    if (sv2)
        for (int64_t c = 0; c < i_n; c++) sv2[c] = c < n && w[n - 1 - c] > 0.0 ? w[n - 1 - c] : 0.0;
done:
    gbtd_free(w);
    gbtd_tensor_free(&xu);
    gbtd_tensor_free(&g);
    gbtd_tensor_free(&xc);
    if (rc != GBTD_OK) gbtd_tensor_free(u_out);
    return rc;
}
