/* gbtd linalg: unfold/fold, Kronecker and Khatri-Rao products, mode-n products (TTM),
 * and small dense helpers (Gram matrices, leading singular vectors) on LAPACKE.
 *
 * Naming: gbtd_<op>(inputs..., out) writes into a caller-allocated `out` whose shape is
 * checked (GBTD_ESHAPE on mismatch); gbtd_<op>_alloc(inputs..., out) allocates `out` (free it
 * with gbtd_tensor_free). The writing forms allocate nothing unless a workspace is noted, so
 * iterative methods can call them inside their loops. Inputs may be strided views unless a
 * function says otherwise; outputs are contiguous unless said otherwise. Output must not alias
 * inputs. */
#ifndef GBTD_LINALG_H
#define GBTD_LINALG_H

#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Operand transposition for products with a matrix. */
typedef enum gbtd_trans { GBTD_NOTRANS = 0, GBTD_TRANS = 1 } gbtd_trans;

/* ---- unfold / fold --------------------------------------------------------------------
 * unfold(X, n): matrix I_n x (prod_{k != n} I_k), column index = C-order index of the other
 * modes in increasing mode order (TensorLy's unfold). fold is its inverse given the full
 * shape. */
int gbtd_unfold(const gbtd_tensor *x, int mode, gbtd_tensor *out);
int gbtd_unfold_alloc(const gbtd_tensor *x, int mode, gbtd_tensor *out);
int gbtd_fold(const gbtd_tensor *m, int mode, gbtd_tensor *out); /* out carries the shape */
int gbtd_fold_alloc(const gbtd_tensor *m, int mode, int ndim, const int64_t *shape,
                    gbtd_tensor *out);

/* ---- Kronecker / Khatri-Rao ------------------------------------------------------------
 * kron(A, B)[i*Ib + k, j*Jb + l] = A[i, j] B[k, l]  (NumPy's kron; A varies slowest).
 * khatri_rao(A_0..A_{K-1}) of matrices with R columns each: row index
 * ((i_0 * I_1 + i_1) * I_2 + ...) , column r = kron of the columns r (TensorLy's khatri_rao).
 * `skip` >= 0 leaves out matrix number `skip` (the usual "all but mode n"), -1 uses all. */
int gbtd_kron(const gbtd_tensor *a, const gbtd_tensor *b, gbtd_tensor *out);
int gbtd_kron_alloc(const gbtd_tensor *a, const gbtd_tensor *b, gbtd_tensor *out);
int gbtd_khatri_rao(const gbtd_tensor *const *mats, int count, int skip, gbtd_tensor *out);
int gbtd_khatri_rao_alloc(const gbtd_tensor *const *mats, int count, int skip, gbtd_tensor *out);

/* ---- mode-n product (TTM) --------------------------------------------------------------
 * Y = X x_n op(U): op(U) = U (J x I_n) for GBTD_NOTRANS, U^T for GBTD_TRANS (U is I_n x J).
 * Y[..., j, ...] = sum_i op(U)[j, i] X[..., i, ...]; Y has X's shape with I_n replaced by J.
 * Computed with GEMMs on contiguous slabs of X (one GEMM for the first or last mode, a batch of
 * GEMMs otherwise), never by a permuted copy. X must be contiguous (GBTD_EINVAL otherwise; use
 * gbtd_tensor_clone first); U may be any strided matrix with one unit stride.
 * Errors: GBTD_ERANGE (mode), GBTD_ESHAPE. */
int gbtd_ttm(const gbtd_tensor *x, const gbtd_tensor *u, int mode, gbtd_trans trans,
             gbtd_tensor *y);
int gbtd_ttm_alloc(const gbtd_tensor *x, const gbtd_tensor *u, int mode, gbtd_trans trans,
                   gbtd_tensor *y);
/* Y = beta * Y + alpha * (X x_n op(U)), for accumulating sums of products. */
int gbtd_ttm_acc(double alpha, const gbtd_tensor *x, const gbtd_tensor *u, int mode,
                 gbtd_trans trans, double beta, gbtd_tensor *y);

/* Multi-mode product: Y = X x_{modes[0]} op(U[0]) x_{modes[1]} op(U[1]) ... over `count`
 * distinct modes (a Tucker reconstruction is G with all modes and NOTRANS; a projection onto
 * factors is X with all modes and TRANS). Applied in the order that minimises the flop count
 * (products commute on distinct modes), with two internal temporaries. */
int gbtd_multi_ttm_alloc(const gbtd_tensor *x, const gbtd_tensor *const *u, const int *modes,
                         int count, gbtd_trans trans, gbtd_tensor *y);

/* ---- matrices --------------------------------------------------------------------------
 * C = alpha op(A) op(B) + beta C for 2-way tensors (dgemm with shape checks; A, B, C may be
 * strided views with a unit stride on one mode). */
int gbtd_gemm(gbtd_trans ta, gbtd_trans tb, double alpha, const gbtd_tensor *a,
              const gbtd_tensor *b, double beta, gbtd_tensor *c);

/* Leading `rank` left singular vectors of the mode-n unfolding of X, as the columns of an
 * I_n x rank matrix (orthonormal), and optionally all I_n squared singular values of the
 * unfolding in decreasing order (sv2 of length I_n, may be NULL). Uses the eigenvectors of the
 * smaller Gram matrix (dsyevd). Errors: GBTD_ERANGE (rank > I_n or rank < 1), GBTD_ENUMERIC. */
int gbtd_leading_singular_vectors(const gbtd_tensor *x, int mode, int64_t rank,
                                  gbtd_tensor *u_out /* alloc'd */, double *sv2);

#ifdef __cplusplus
}
#endif
#endif
