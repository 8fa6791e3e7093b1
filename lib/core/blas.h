/* gbtd core: the one place that includes CBLAS (OpenBLAS) and LAPACKE, plus checked casts
 * of int64 sizes to the integer types those interfaces take. Internal to the library. */
#ifndef GBTD_CORE_BLAS_H
#define GBTD_CORE_BLAS_H

#include <cblas.h>
#include <lapacke.h>
#include <limits.h>
#include <stdint.h>

#include "core/status.h"

/* Checked int64 -> blasint / lapack_int conversion. Returns GBTD_EOVERFLOW when v does not fit. */
static inline int gbtd_blas_int(int64_t v, blasint *out)
{
    if (v < 0 || (sizeof(blasint) < sizeof(int64_t) && v > (int64_t)INT32_MAX))
        return gbtd_error(GBTD_EOVERFLOW, "dimension %lld does not fit the BLAS integer type",
                          (long long)v);
    *out = (blasint)v;
    return GBTD_OK;
}

static inline int gbtd_lapack_int(int64_t v, lapack_int *out)
{
    if (v < 0 || (sizeof(lapack_int) < sizeof(int64_t) && v > (int64_t)INT32_MAX))
        return gbtd_error(GBTD_EOVERFLOW, "dimension %lld does not fit the LAPACK integer type",
                          (long long)v);
    *out = (lapack_int)v;
    return GBTD_OK;
}

#endif
