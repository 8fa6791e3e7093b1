#include "decomp/tc_internal.h"

#include <math.h>
#include <string.h>

#include "core/blas.h"
#include "core/status.h"

int gbtd_tc_check_input(const gbtd_tensor *x, const char *what, double *norm2)
{
    if (x == NULL || (x->data == NULL && gbtd_tensor_numel(x) > 0))
        return gbtd_error(GBTD_EINVAL, "%s: NULL tensor", what);
    if (x->ndim < 1 || x->ndim > GBTD_MAX_MODES)
        return gbtd_error(GBTD_EINVAL, "%s: tensor has %d modes (allowed 1..%d)", what, x->ndim,
                          GBTD_MAX_MODES);
    for (int k = 0; k < x->ndim; k++)
        if (x->shape[k] < 1)
            return gbtd_error(GBTD_EINVAL, "%s: mode %d is empty", what, k);
    GBTD_CHECK(gbtd_tensor_check_finite(x, what));
    const double nrm = gbtd_tensor_norm(x);
    if (!(nrm > 0.0))
        return gbtd_error(GBTD_EINVAL, "%s: the tensor is all zeros (nothing to decompose)", what);
    if (!isfinite(nrm * nrm))
        return gbtd_error(GBTD_ERANGE, "%s: the tensor's norm %g overflows when squared", what,
                          nrm);
    *norm2 = nrm * nrm;
    return GBTD_OK;
}

int gbtd_tc_info_start(gbtd_decomp_info *info, int n)
{
    if (info == NULL) return GBTD_OK;
    gbtd_decomp_info_free(info);
    gbtd_decomp_info_init(info);
    if (n < 1) n = 1;
    double *h = gbtd_malloc((size_t)n * sizeof(double));
    if (h == NULL) return GBTD_ENOMEM;
    info->error_history = h;
    info->history_cap = n;
    return GBTD_OK;
}

int gbtd_tc_info_push(gbtd_decomp_info *info, double e)
{
    if (info == NULL) return GBTD_OK;
    if (info->history_len < info->history_cap) {
        info->error_history[info->history_len++] = e;
        return GBTD_OK;
    }
    return gbtd_decomp_info_push(info, e);
}

int gbtd_tc_orthonormalize(gbtd_tensor *a)
{
    const int64_t m = a->shape[0], n = a->shape[1];
    lapack_int lm = 0, ln = 0;
    GBTD_CHECK(gbtd_lapack_int(m, &lm));
    GBTD_CHECK(gbtd_lapack_int(n, &ln));
    if (n > m) return gbtd_error(GBTD_ERANGE, "orthonormalize: %lld columns > %lld rows",
                                 (long long)n, (long long)m);
    double *tau = gbtd_malloc((size_t)n * sizeof(double));
    if (tau == NULL) return GBTD_ENOMEM;
    int rc = GBTD_OK;
    lapack_int info = LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, lm, ln, a->data, ln, tau);
    if (info == 0) info = LAPACKE_dorgqr(LAPACK_ROW_MAJOR, lm, ln, ln, a->data, ln, tau);
    if (info != 0)
        rc = gbtd_error(info == LAPACK_WORK_MEMORY_ERROR ? GBTD_ENOMEM : GBTD_ENUMERIC,
                        "orthonormalize: LAPACK QR failed (info %d)", (int)info);
    gbtd_free(tau);
    return rc;
}

double gbtd_tc_sumsq(const double *v, int64_t n)
{
    /* dnrm2 scales internally; chunks keep each call within the BLAS integer range. */
    double total = 0.0;
    while (n > 0) {
        const int64_t c = n > (int64_t)1 << 30 ? (int64_t)1 << 30 : n;
        const double r = cblas_dnrm2((blasint)c, v, 1);
        total += r * r;
        v += c;
        n -= c;
    }
    return total;
}
