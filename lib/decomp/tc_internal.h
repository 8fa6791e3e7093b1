/* gbtd decomp: helpers shared by tucker.c, cp.c and metrics.c (not installed, not public). */
#ifndef GBTD_DECOMP_TC_INTERNAL_H
#define GBTD_DECOMP_TC_INTERNAL_H

#include <stdint.h>

#include "core/tensor.h"
#include "decomp/common.h"

/* Checks a decomposition input: non-NULL, 1..GBTD_MAX_MODES modes, no empty mode, finite,
 * not all zeros. Stores ||x||^2 (computed with scaling). `what` names the caller in messages. */
int gbtd_tc_check_input(const gbtd_tensor *x, const char *what, double *norm2);

/* Reset info (when non-NULL) and reserve room for n history entries so that iterations never
 * allocate. */
int gbtd_tc_info_start(gbtd_decomp_info *info, int n);
/* Append without allocating when room was reserved (falls back to gbtd_decomp_info_push). */
int gbtd_tc_info_push(gbtd_decomp_info *info, double e);

/* Orthonormalise the columns of a contiguous I x R matrix (R <= I) in place (Householder QR).
 * Allocates LAPACK workspace: for initialisation only. */
int gbtd_tc_orthonormalize(gbtd_tensor *a);

/* Sum of squares of a contiguous buffer, computed with scaling. */
double gbtd_tc_sumsq(const double *v, int64_t n);

#endif
