/* Internal to lib/decomp: raw kernels and helpers shared by the BTD files. Not installed. */
#ifndef GBTD_DECOMP_BTD_INTERNAL_H
#define GBTD_DECOMP_BTD_INTERNAL_H

#include <stdint.h>

/* Validate a BTD layout (see btd.h for the rules). sorted[k] receives the modes in increasing
 * order and order[k] the index into `modes` of sorted[k]. */
int gbtd_btd_check_layout_(int ndim, const int64_t *shape, int nmodes, const int *modes,
                           int nterms, const int64_t *ranks, int *sorted, int *order);

/* GBTD_EOVERFLOW unless n fits the BLAS integer type. */
int gbtd_btd_blas_fits_(int64_t n);

/* y = beta * y + x x_mode op(U), x contiguous with shape sh (nd modes, sh[mode] = I).
 * trans == 0: U is J x I (row-major, leading dimension ldu); trans == 1: U is I x J and
 * op(U) = U^T. y is contiguous with size J on `mode`. Sizes must fit the BLAS integer type. */
void gbtd_btd_ttm_(const double *x, int nd, const int64_t *sh, int mode, const double *u,
                   int64_t ldu, int64_t J, int trans, double beta, double *y);

/* out (Ia x Ib, leading dimension ldo) = beta * out + sum_{p,q} A[p, i, q] B[p, j, q] for
 * contiguous A (P x Ia x Q) and B (P x Ib x Q): the contraction over all modes but one. */
void gbtd_btd_contract_(const double *a, const double *b, int64_t P, int64_t Ia, int64_t Ib,
                        int64_t Q, double beta, double *out, int64_t ldo);

/* Self-check for the tests: at model m (on tensor x, random directions from seed) compares the
 * gradient with a central difference of the objective (grad_rel), v^T J^T J v with ||J v||^2
 * from central differences of the model (jtj_rel), and the symmetry u^T J^T J v = v^T J^T J u
 * (sym_rel). Relative differences. */
struct gbtd_tensor;
struct gbtd_btd;
int gbtd_btd_check_derivatives_(const struct gbtd_tensor *x, const struct gbtd_btd *m,
                                uint64_t seed, double *grad_rel, double *jtj_rel,
                                double *sym_rel);

#endif
