/* gbtd linalg: unfold / fold, Kronecker and Khatri-Rao products. */
#include <stdio.h>
#include <string.h>

#include "linalg/internal.h"

/* ---- unfold / fold -------------------------------------------------------------------- */

/* Checks shared by unfold and fold: t is the full tensor, m the I_n x R matrix. */
static int check_unfold_args(const char *op, const gbtd_tensor *t, const gbtd_tensor *m,
                             int mode)
{
    if (t == NULL || m == NULL) return gbtd_error(GBTD_EINVAL, "%s: NULL tensor argument", op);
    if (mode < 0 || mode >= t->ndim)
        return gbtd_error(GBTD_ERANGE, "%s: mode %d out of range for a %d-way tensor", op, mode,
                          t->ndim);
    int64_t rest = 1;
    for (int k = 0; k < t->ndim; k++)
        if (k != mode) GBTD_CHECK(gbtd_mul_i64(rest, t->shape[k], &rest));
    if (m->ndim != 2 || m->shape[0] != t->shape[mode] || m->shape[1] != rest) {
        char a[128], b[128];
        return gbtd_error(GBTD_ESHAPE, "%s: tensor %s, mode %d needs a %lld x %lld matrix, got %s",
                          op, gbtd_shape_str(t->ndim, t->shape, a, sizeof a), mode,
                          (long long)t->shape[mode], (long long)rest,
                          gbtd_shape_str(m->ndim, m->shape, b, sizeof b));
    }
    if (la_overlap(t, m)) return gbtd_error(GBTD_EINVAL, "%s: output aliases the input", op);
    return GBTD_OK;
}

/* The two views that make unfold/fold a plain strided copy: `tp` is t with mode n moved to
 * the front; `mv` is the matrix m seen with the shape of tp (its column index split into the
 * other modes, which is valid for any strides of m). */
static void unfold_views(const gbtd_tensor *t, const gbtd_tensor *m, int mode, gbtd_tensor *tp,
                         gbtd_tensor *mv)
{
    int perm[GBTD_MAX_MODES];
    perm[0] = mode;
    for (int k = 0, j = 1; k < t->ndim; k++)
        if (k != mode) perm[j++] = k;
    gbtd_tensor_view_permute(t, perm, tp); /* cannot fail: perm is a permutation */
    *mv = *tp;
    mv->owned = NULL;
    mv->data = m->data;
    mv->stride[0] = m->stride[0];
    int64_t s = m->stride[1];
    for (int k = t->ndim - 1; k >= 1; k--) {
        mv->stride[k] = s;
        s *= tp->shape[k];
    }
}

/* Both contiguous: rows of Q elements move as blocks. dir 0 unfolds, 1 folds. */
static void unfold_blocks(double *t, double *m, const int64_t *shape, int ndim, int mode,
                          int dir)
{
    int64_t p_n = 1, q_n = 1;
    for (int k = 0; k < mode; k++) p_n *= shape[k];
    for (int k = mode + 1; k < ndim; k++) q_n *= shape[k];
    const int64_t in = shape[mode], cols = p_n * q_n;
    const size_t bytes = (size_t)q_n * sizeof(double);
    for (int64_t p = 0; p < p_n; p++)
        for (int64_t i = 0; i < in; i++) {
            double *tt = t + (p * in + i) * q_n, *mm = m + i * cols + p * q_n;
            if (dir == 0) memcpy(mm, tt, bytes);
            else memcpy(tt, mm, bytes);
        }
}

int gbtd_unfold(const gbtd_tensor *x, int mode, gbtd_tensor *out)
{
    GBTD_CHECK(check_unfold_args("unfold", x, out, mode));
    if (gbtd_tensor_numel(x) == 0) return GBTD_OK;
    if (gbtd_tensor_is_contiguous(x) && gbtd_tensor_is_contiguous(out)) {
        unfold_blocks(x->data, out->data, x->shape, x->ndim, mode, 0);
        return GBTD_OK;
    }
    gbtd_tensor xp, ov;
    unfold_views(x, out, mode, &xp, &ov);
    return gbtd_tensor_copy(&ov, &xp);
}

int gbtd_unfold_alloc(const gbtd_tensor *x, int mode, gbtd_tensor *out)
{
    if (out == NULL) return gbtd_error(GBTD_EINVAL, "unfold: NULL output");
    memset(out, 0, sizeof *out);
    if (x == NULL) return gbtd_error(GBTD_EINVAL, "unfold: NULL tensor argument");
    if (mode < 0 || mode >= x->ndim)
        return gbtd_error(GBTD_ERANGE, "unfold: mode %d out of range for a %d-way tensor", mode,
                          x->ndim);
    int64_t rest = 1;
    for (int k = 0; k < x->ndim; k++)
        if (k != mode) GBTD_CHECK(gbtd_mul_i64(rest, x->shape[k], &rest));
    GBTD_CHECK(gbtd_matrix_alloc(out, x->shape[mode], rest));
    const int rc = gbtd_unfold(x, mode, out);
    if (rc != GBTD_OK) gbtd_tensor_free(out);
    return rc;
}

int gbtd_fold(const gbtd_tensor *m, int mode, gbtd_tensor *out)
{
    GBTD_CHECK(check_unfold_args("fold", out, m, mode));
    if (gbtd_tensor_numel(out) == 0) return GBTD_OK;
    if (gbtd_tensor_is_contiguous(out) && gbtd_tensor_is_contiguous(m)) {
        unfold_blocks(out->data, m->data, out->shape, out->ndim, mode, 1);
        return GBTD_OK;
    }
    gbtd_tensor op, mv;
    unfold_views(out, m, mode, &op, &mv);
    return gbtd_tensor_copy(&op, &mv);
}

int gbtd_fold_alloc(const gbtd_tensor *m, int mode, int ndim, const int64_t *shape,
                    gbtd_tensor *out)
{
    if (out == NULL) return gbtd_error(GBTD_EINVAL, "fold: NULL output");
    memset(out, 0, sizeof *out);
    if (m == NULL || shape == NULL) return gbtd_error(GBTD_EINVAL, "fold: NULL argument");
    if (ndim < 1 || ndim > GBTD_MAX_MODES)
        return gbtd_error(GBTD_EINVAL, "fold: %d modes (1..%d allowed)", ndim, GBTD_MAX_MODES);
    if (mode < 0 || mode >= ndim)
        return gbtd_error(GBTD_ERANGE, "fold: mode %d out of range for a %d-way tensor", mode,
                          ndim);
    /* Check the shape against m before allocating, so that a wrong shape costs nothing. */
    gbtd_tensor probe;
    memset(&probe, 0, sizeof probe);
    probe.ndim = ndim;
    for (int k = 0; k < ndim; k++) {
        if (shape[k] < 0) return gbtd_error(GBTD_EINVAL, "fold: negative size in mode %d", k);
        probe.shape[k] = shape[k];
    }
    GBTD_CHECK(check_unfold_args("fold", &probe, m, mode));
    GBTD_CHECK(gbtd_tensor_alloc(out, ndim, shape));
    const int rc = gbtd_fold(m, mode, out);
    if (rc != GBTD_OK) gbtd_tensor_free(out);
    return rc;
}

/* ---- Kronecker -------------------------------------------------------------------------- */

static int need_matrix(const char *op, const char *name, const gbtd_tensor *a)
{
    if (a == NULL) return gbtd_error(GBTD_EINVAL, "%s: NULL %s", op, name);
    if (a->ndim != 2)
        return gbtd_error(GBTD_ESHAPE, "%s: %s must be a matrix, it has %d modes", op, name,
                          a->ndim);
    return GBTD_OK;
}

static int kron_shape(const gbtd_tensor *a, const gbtd_tensor *b, int64_t *rows, int64_t *cols)
{
    GBTD_CHECK(need_matrix("kron", "A", a));
    GBTD_CHECK(need_matrix("kron", "B", b));
    GBTD_CHECK(gbtd_mul_i64(a->shape[0], b->shape[0], rows));
    GBTD_CHECK(gbtd_mul_i64(a->shape[1], b->shape[1], cols));
    return GBTD_OK;
}

int gbtd_kron(const gbtd_tensor *a, const gbtd_tensor *b, gbtd_tensor *out)
{
    int64_t rows, cols;
    GBTD_CHECK(kron_shape(a, b, &rows, &cols));
    GBTD_CHECK(need_matrix("kron", "output", out));
    if (out->shape[0] != rows || out->shape[1] != cols)
        return gbtd_error(GBTD_ESHAPE, "kron: output is %lld x %lld, expected %lld x %lld",
                          (long long)out->shape[0], (long long)out->shape[1], (long long)rows,
                          (long long)cols);
    if (la_overlap(out, a) || la_overlap(out, b))
        return gbtd_error(GBTD_EINVAL, "kron: output aliases an input");
    const int64_t ia = a->shape[0], ja = a->shape[1], ib = b->shape[0], jb = b->shape[1];
    const int64_t sa0 = a->stride[0], sa1 = a->stride[1], sb0 = b->stride[0], sb1 = b->stride[1];
    const int64_t so0 = out->stride[0], so1 = out->stride[1];
    for (int64_t i = 0; i < ia; i++)
        for (int64_t k = 0; k < ib; k++) {
            double *orow = out->data + (i * ib + k) * so0;
            for (int64_t j = 0; j < ja; j++) {
                const double aij = a->data[i * sa0 + j * sa1];
                double *o = orow + j * jb * so1;
                const double *brow = b->data + k * sb0;
                for (int64_t l = 0; l < jb; l++) o[l * so1] = aij * brow[l * sb1];
            }
        }
    return GBTD_OK;
}

int gbtd_kron_alloc(const gbtd_tensor *a, const gbtd_tensor *b, gbtd_tensor *out)
{
    if (out == NULL) return gbtd_error(GBTD_EINVAL, "kron: NULL output");
    memset(out, 0, sizeof *out);
    int64_t rows, cols;
    GBTD_CHECK(kron_shape(a, b, &rows, &cols));
    GBTD_CHECK(gbtd_matrix_alloc(out, rows, cols));
    const int rc = gbtd_kron(a, b, out);
    if (rc != GBTD_OK) gbtd_tensor_free(out);
    return rc;
}

/* ---- Khatri-Rao ------------------------------------------------------------------------- */

static int kr_shape(const gbtd_tensor *const *mats, int count, int skip, int64_t *rows,
                    int64_t *cols)
{
    if (mats == NULL) return gbtd_error(GBTD_EINVAL, "khatri_rao: NULL matrix list");
    if (count < 1) return gbtd_error(GBTD_EINVAL, "khatri_rao: %d matrices (need >= 1)", count);
    if (skip < -1 || skip >= count)
        return gbtd_error(GBTD_ERANGE, "khatri_rao: skip %d out of range for %d matrices", skip,
                          count);
    int64_t r = -1, n = 1;
    for (int m = 0; m < count; m++) {
        char name[32];
        snprintf(name, sizeof name, "matrix %d", m);
        GBTD_CHECK(need_matrix("khatri_rao", name, mats[m]));
        if (m == skip) continue;
        if (r < 0) r = mats[m]->shape[1];
        else if (mats[m]->shape[1] != r)
            return gbtd_error(GBTD_ESHAPE,
                              "khatri_rao: matrix %d has %lld columns, the others %lld", m,
                              (long long)mats[m]->shape[1], (long long)r);
        GBTD_CHECK(gbtd_mul_i64(n, mats[m]->shape[0], &n));
    }
    if (r < 0) r = mats[skip]->shape[1];
    *rows = n;
    *cols = r;
    return GBTD_OK;
}

int gbtd_khatri_rao(const gbtd_tensor *const *mats, int count, int skip, gbtd_tensor *out)
{
    int64_t rows, cols;
    GBTD_CHECK(kr_shape(mats, count, skip, &rows, &cols));
    GBTD_CHECK(need_matrix("khatri_rao", "output", out));
    if (out->shape[0] != rows || out->shape[1] != cols)
        return gbtd_error(GBTD_ESHAPE,
                          "khatri_rao: output is %lld x %lld, expected %lld x %lld",
                          (long long)out->shape[0], (long long)out->shape[1], (long long)rows,
                          (long long)cols);
    for (int m = 0; m < count; m++)
        if (m != skip && la_overlap(out, mats[m]))
            return gbtd_error(GBTD_EINVAL, "khatri_rao: output aliases matrix %d", m);
    if (rows == 0 || cols == 0) return GBTD_OK;
    const int64_t so0 = out->stride[0], so1 = out->stride[1];
    double *o = out->data;
    for (int64_t r = 0; r < cols; r++) o[r * so1] = 1.0;
    /* Expand in place: after matrix m the first n rows hold the product of the matrices so far;
     * row a * I_m + i of the next stage is row a times row i of A_m. Walking a and i downwards
     * writes each row only after the rows it overwrites have been read (a * I_m + i >= a). */
    int64_t n = 1;
    for (int m = 0; m < count; m++) {
        if (m == skip) continue;
        const gbtd_tensor *am = mats[m];
        const int64_t im = am->shape[0], s0 = am->stride[0], s1 = am->stride[1];
        for (int64_t a = n - 1; a >= 0; a--)
            for (int64_t i = im - 1; i >= 0; i--) {
                double *dst = o + (a * im + i) * so0;
                const double *src = o + a * so0;
                const double *arow = am->data + i * s0;
                for (int64_t r = 0; r < cols; r++) dst[r * so1] = src[r * so1] * arow[r * s1];
            }
        n *= im;
    }
    return GBTD_OK;
}

int gbtd_khatri_rao_alloc(const gbtd_tensor *const *mats, int count, int skip, gbtd_tensor *out)
{
    if (out == NULL) return gbtd_error(GBTD_EINVAL, "khatri_rao: NULL output");
    memset(out, 0, sizeof *out);
    int64_t rows, cols;
    GBTD_CHECK(kr_shape(mats, count, skip, &rows, &cols));
    GBTD_CHECK(gbtd_matrix_alloc(out, rows, cols));
    const int rc = gbtd_khatri_rao(mats, count, skip, out);
    if (rc != GBTD_OK) gbtd_tensor_free(out);
    return rc;
}
