/* Helpers shared by the linalg sources (not installed). */
#ifndef GBTD_LINALG_INTERNAL_H
#define GBTD_LINALG_INTERNAL_H

#include "core/blas.h"
#include "linalg/linalg.h"

/* Lowest and one-past-highest element address a tensor touches (lo == hi when empty). */
static inline void la_extent(const gbtd_tensor *t, const double **lo, const double **hi)
{
    int64_t a = 0, b = 0;
    for (int k = 0; k < t->ndim; k++) {
        if (t->shape[k] == 0) {
            *lo = *hi = t->data;
            return;
        }
        const int64_t span = (t->shape[k] - 1) * t->stride[k];
        if (span < 0) a += span;
        else b += span;
    }
    *lo = t->data + a;
    *hi = t->data + b + 1;
}

/* True when the memory ranges of a and b overlap. */
static inline int la_overlap(const gbtd_tensor *a, const gbtd_tensor *b)
{
    const double *alo, *ahi, *blo, *bhi;
    la_extent(a, &alo, &ahi);
    la_extent(b, &blo, &bhi);
    if (alo == ahi || blo == bhi) return 0;
    return alo < bhi && blo < ahi;
}

/* A 2-way tensor as a row-major BLAS operand: the memory matrix M with leading dimension *ld
 * and *flip such that the tensor equals M (flip 0) or M^T (flip 1). GBTD_EINVAL when neither
 * mode has a unit stride (with a positive leading stride), GBTD_EOVERFLOW when ld does not
 * fit blasint. */
static inline int la_blas_operand(const char *op, const char *name, const gbtd_tensor *a,
                                  blasint *ld, int *flip)
{
    const int64_t r = a->shape[0], c = a->shape[1];
    const int64_t s0 = a->stride[0], s1 = a->stride[1];
    const int64_t c1 = c > 1 ? c : 1, r1 = r > 1 ? r : 1;
    int64_t l;
    if ((s1 == 1 || c <= 1) && (r <= 1 || s0 >= c1)) {
        l = r <= 1 ? c1 : s0;
        *flip = 0;
    } else if ((s0 == 1 || r <= 1) && (c <= 1 || s1 >= r1)) {
        l = c <= 1 ? r1 : s1;
        *flip = 1;
    } else {
        return gbtd_error(GBTD_EINVAL,
                          "%s: %s has strides (%lld, %lld): a BLAS operand needs a unit stride "
                          "on one mode and a positive leading stride",
                          op, name, (long long)s0, (long long)s1);
    }
    return gbtd_blas_int(l, ld);
}

static inline CBLAS_TRANSPOSE la_cblas_trans(int t) { return t ? CblasTrans : CblasNoTrans; }

#endif
