/* gbtd linalg: unfold/fold, Kronecker and Khatri-Rao products, mode-n products (TTM),
 * and small dense helpers (Gram matrices, leading singular vectors) on LAPACKE.
 * The conventions are written out in docs/conventions.md and pinned by tests/linalg.
 *
 * Naming: gbtd_<op>(inputs..., out) writes into a caller-allocated `out` whose shape is
 * checked (GBTD_ESHAPE on mismatch); gbtd_<op>_alloc(inputs..., out) allocates `out` (free it
 * with gbtd_tensor_free; on error `out` is left empty). The writing forms allocate nothing
 * unless a workspace is noted, so iterative methods can call them inside their loops. Inputs
 * may be strided views unless a function says otherwise; outputs are contiguous unless said
 * otherwise. Output must not alias inputs (GBTD_EINVAL when it does). NULL tensor arguments
 * give GBTD_EINVAL. */
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
 * shape. Here both the input and the output may be strided (any strides). */
int gbtd_unfold(const gbtd_tensor *x, int mode, gbtd_tensor *out);
int gbtd_unfold_alloc(const gbtd_tensor *x, int mode, gbtd_tensor *out);
int gbtd_fold(const gbtd_tensor *m, int mode, gbtd_tensor *out); /* out carries the shape */
int gbtd_fold_alloc(const gbtd_tensor *m, int mode, int ndim, const int64_t *shape,
                    gbtd_tensor *out);

/* ---- Kronecker / Khatri-Rao ------------------------------------------------------------
 * kron(A, B)[i*Ib + k, j*Jb + l] = A[i, j] B[k, l]  (NumPy's kron; A varies slowest).
 * khatri_rao(A_0..A_{K-1}) of matrices with R columns each: row index
 * ((i_0 * I_1 + i_1) * I_2 + ...) , column r = kron of the columns r (TensorLy's khatri_rao).
 * `skip` >= 0 leaves out matrix number `skip` (the usual "all but mode n"), -1 uses all.
 * With every matrix skipped the result is the 1 x R row of ones (the empty product).
 * Output may be strided here. */
int gbtd_kron(const gbtd_tensor *a, const gbtd_tensor *b, gbtd_tensor *out);
int gbtd_kron_alloc(const gbtd_tensor *a, const gbtd_tensor *b, gbtd_tensor *out);
int gbtd_khatri_rao(const gbtd_tensor *const *mats, int count, int skip, gbtd_tensor *out);
int gbtd_khatri_rao_alloc(const gbtd_tensor *const *mats, int count, int skip, gbtd_tensor *out);

/* ---- mode-n product (TTM) --------------------------------------------------------------
 * Y = X x_n op(U): op(U) = U (J x I_n) for GBTD_NOTRANS, U^T for GBTD_TRANS (U is I_n x J).
 * Y[..., j, ...] = sum_i op(U)[j, i] X[..., i, ...]; Y has X's shape with I_n replaced by J.
 * X is viewed as P x I_n x Q (P = product of the sizes before mode n, Q after), which merges
 * the contiguous modes around n. The product is one GEMM when P == 1 or Q == 1 and a batch of
 * P GEMMs (op(U) times the I_n x Q slab p) otherwise, never a permuted copy. When the slab
 * GEMMs are small or P splits evenly over the threads, the batch runs as an OpenMP loop with
 * OpenBLAS set to one thread for its duration (it changes the process-wide OpenBLAS thread
 * count meanwhile, so do not call BLAS from other threads at the same time). Workspace: for
 * the last mode with J <= 128, a block buffer of at most 512 KiB per thread is allocated per
 * call (GBTD_ENOMEM when that fails); every other case allocates nothing.
 * X and Y must be contiguous (GBTD_EINVAL otherwise; use gbtd_tensor_clone first); U may be
 * any strided matrix with one unit stride (GBTD_EINVAL otherwise).
 * Errors: GBTD_EINVAL, GBTD_ERANGE (mode), GBTD_ESHAPE, GBTD_EOVERFLOW (a GEMM dimension does
 * not fit the BLAS integer). */
int gbtd_ttm(const gbtd_tensor *x, const gbtd_tensor *u, int mode, gbtd_trans trans,
             gbtd_tensor *y);
int gbtd_ttm_alloc(const gbtd_tensor *x, const gbtd_tensor *u, int mode, gbtd_trans trans,
                   gbtd_tensor *y);
/* Y = beta * Y + alpha * (X x_n op(U)), for accumulating sums of products. With beta == 0
 * the previous contents of Y are not read (NaN there does not propagate). */
int gbtd_ttm_acc(double alpha, const gbtd_tensor *x, const gbtd_tensor *u, int mode,
                 gbtd_trans trans, double beta, gbtd_tensor *y);
/* Naive reference of gbtd_ttm (triple loop in double, any strides for X, U and Y), kept for
 * tests and as the readable definition. Same errors as gbtd_ttm except contiguity. */
int gbtd_ttm_ref(const gbtd_tensor *x, const gbtd_tensor *u, int mode, gbtd_trans trans,
                 gbtd_tensor *y);

/* Multi-mode product: Y = X x_{modes[0]} op(U[0]) x_{modes[1]} op(U[1]) ... over `count`
 * distinct modes (a Tucker reconstruction is G with all modes and NOTRANS; a projection onto
 * factors is X with all modes and TRANS). Products on distinct modes commute; they are
 * applied in the order of least total flop count, found exactly by dynamic programming over
 * the subsets of the modes (step cost 2 * J_k * numel(current tensor)); ties go to the lower
 * position in `modes`. Workspace: two internal temporaries of the largest intermediate size
 * (plus a contiguous copy of X when X is strided). count == 0 gives a copy of X. */
int gbtd_multi_ttm_alloc(const gbtd_tensor *x, const gbtd_tensor *const *u, const int *modes,
                         int count, gbtd_trans trans, gbtd_tensor *y);
/* The order gbtd_multi_ttm_alloc uses: order[s] is the position in `modes` applied at step s;
 * *flops (may be NULL) receives its total flop count. Same shape checks. */
int gbtd_multi_ttm_order(const gbtd_tensor *x, const gbtd_tensor *const *u, const int *modes,
                         int count, gbtd_trans trans, int *order, double *flops);

/* ---- matrices --------------------------------------------------------------------------
 * C = alpha op(A) op(B) + beta C for 2-way tensors (dgemm with shape checks; A, B, C may be
 * strided views with a unit stride on one mode). With beta == 0 C is not read. */
int gbtd_gemm(gbtd_trans ta, gbtd_trans tb, double alpha, const gbtd_tensor *a,
              const gbtd_tensor *b, double beta, gbtd_tensor *c);

/* Gram matrix of the mode-n unfolding, G = X_(n) X_(n)^T (I_n x I_n, both triangles written),
 * computed as a sum of SYRKs over the I_n x Q slabs of X, without forming the unfolding.
 * X must be contiguous (GBTD_EINVAL), G contiguous. */
int gbtd_unfold_gram(const gbtd_tensor *x, int mode, gbtd_tensor *g);

/* Leading `rank` left singular vectors of the mode-n unfolding of X, as the columns of an
 * I_n x rank matrix (orthonormal), and optionally all I_n squared singular values of the
 * unfolding in decreasing order (sv2 of length I_n, may be NULL). Uses the eigenvectors of the
 * smaller Gram matrix: X_(n) X_(n)^T when I_n <= prod(others) (gbtd_sym_eig_top: the `rank`
 * wanted ones only), else X_(n)^T X_(n) (dsyevd)
 * with U = X_(n) V diag(1/sigma), completed to `rank` orthonormal columns when the unfolding
 * has lower rank. Signs are fixed so that the entry of largest magnitude in each column is
 * positive (ties: the first). The Gram matrix squares the condition number: vectors of
 * singular values below about sqrt(eps) * sigma_max are not accurate. X may be strided (it is
 * copied then). Errors: GBTD_EINVAL, GBTD_ERANGE (mode, rank > I_n or rank < 1),
 * GBTD_ENONFINITE, GBTD_ENUMERIC, GBTD_ENOMEM. */
int gbtd_leading_singular_vectors(const gbtd_tensor *x, int mode, int64_t rank,
                                  gbtd_tensor *u_out /* alloc'd */, double *sv2);

/* The r largest eigenpairs of a symmetric n x n matrix, in place of a full eigensolver when
 * only a leading subspace is wanted. A is row-major with leading dimension n; only its upper
 * triangle (A[i][j], j >= i) is read, and A is destroyed. Method: Householder
 * tridiagonalisation (dsytrd), every eigenvalue by root-free QR (dsterf, O(n^2)), eigenvectors
 * of the r largest only by inverse iteration (dstein), back-transformation of those r vectors
 * (dormtr); MRRR (dstemr) over the wanted index range when the tridiagonal matrix splits or
 * inverse iteration does not converge. Backward stable like dsyevr (which uses the same
 * vectors, but finds the eigenvalues by bisection: several times slower for r ~ n / 8 .. n / 2).
 * evals (may be NULL): all n eigenvalues, decreasing. vecs: n x r row-major with leading
 * dimension ldv >= r; column c is the unit eigenvector of the (c+1)-th largest eigenvalue, sign
 * as LAPACK returns it. Workspace: O(n r + n) doubles, allocated per call.
 * Errors: GBTD_EINVAL (NULL pointers, ldv < r), GBTD_ERANGE (r outside 1..n),
 * GBTD_ENONFINITE (NaN/Inf in the upper triangle), GBTD_ENUMERIC, GBTD_ENOMEM, GBTD_EOVERFLOW. */
int gbtd_sym_eig_top(double *a, int64_t n, int64_t r, double *evals, double *vecs, int64_t ldv);

#ifdef __cplusplus
}
#endif
#endif
