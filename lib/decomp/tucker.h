/* gbtd decomp: Tucker decompositions — truncated HOSVD, HOOI, and partial Tucker (Tucker-2)
 * over a chosen set of modes.
 *
 * Model: X ~ G x_{m_0} U_0 x_{m_1} U_1 ... over the factored modes m_k (all modes for a full
 * Tucker, for instance modes 2 and 3 of a conv kernel kh x kw x C_in x C_out for Tucker-2).
 * U_k is I_{m_k} x R_k with orthonormal columns; the core G has R_k on factored modes and the
 * full size on the others. With orthonormal factors the fit obeys the identity
 * ||X - G x U||^2 = ||X||^2 - ||G||^2, which HOOI uses instead of rebuilding the tensor.
 *
 * Algorithms:
 *  - truncated HOSVD: U_k = leading R_k left singular vectors of the mode-m_k unfolding of X
 *    (eigenvectors of the smaller Gram matrix), G = X x_k U_k^T;
 *  - HOOI: alternately U_k = leading left singular vectors of the unfolding of
 *    X x_{j != k} U_j^T, from the HOSVD (default) or a random orthonormal start; stops when the
 *    relative change of the error falls below tol, after max_iter sweeps, or on the time budget.
 *  - ranks from an error target: per mode the smallest R_k whose discarded squared singular
 *    values are at most target^2 ||X||^2 / (number of factored modes); the truncated HOSVD
 *    then has relative error <= target (and HOOI no more than the HOSVD it starts from).
 *
 * Errors (all functions): GBTD_EINVAL (NULL arguments, bad options, zero tensor, max_iter < 1
 * for HOOI, repeated modes), GBTD_ERANGE (mode outside 0..ndim-1, rank < 1 or larger than the
 * size of its mode), GBTD_ENONFINITE (NaN/Inf in X), GBTD_ENUMERIC (eigensolver failure),
 * GBTD_ENOMEM, GBTD_EOVERFLOW, GBTD_ECANCELLED is never returned: a callback that asks to stop
 * ends the run normally with info->stop = GBTD_STOP_CALLBACK. */
#ifndef GBTD_DECOMP_TUCKER_H
#define GBTD_DECOMP_TUCKER_H

#include <stdint.h>

#include "core/tensor.h"
#include "decomp/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A (partial) Tucker decomposition. Owns core and factors; release with gbtd_tucker_free.
 * A zeroed struct is a valid empty one. */
typedef struct gbtd_tucker {
    int ndim;                            /* modes of the approximated tensor */
    int64_t shape[GBTD_MAX_MODES];       /* its shape */
    int nmodes;                          /* number of factored modes */
    int modes[GBTD_MAX_MODES];           /* factored modes, increasing */
    gbtd_tensor core;                    /* ndim-way core */
    gbtd_tensor factors[GBTD_MAX_MODES]; /* factors[k]: shape[modes[k]] x R_k, orthonormal */
} gbtd_tucker;

typedef enum gbtd_tucker_init {
    GBTD_TUCKER_INIT_HOSVD = 0, /* truncated HOSVD */
    GBTD_TUCKER_INIT_RANDOM = 1 /* random orthonormal factors (seeded) */
} gbtd_tucker_init;

typedef struct gbtd_tucker_opts {
    int max_iter;        /* HOOI sweeps, >= 1 (default 100) */
    double tol;          /* stop when |e_{k-1} - e_k| <= tol * e_{k-1} (default 1e-10) */
    double time_budget;  /* seconds of iteration; <= 0 means none (default 0) */
    gbtd_tucker_init init;
    uint64_t seed;       /* random start (default 42) */
    double error_target; /* used when ranks == NULL: choose ranks for this relative error */
    gbtd_iter_callback callback; /* optional, called after every HOOI sweep */
    void *callback_ctx;
} gbtd_tucker_opts;

gbtd_tucker_opts gbtd_tucker_opts_default(void);

/* Full Tucker: ranks[k] for mode k (ndim values), or NULL with opts->error_target > 0.
 * `out` is overwritten (its previous contents are not freed). info may be NULL; when given it
 * is reset and filled (HOSVD: iterations 0, stop GBTD_STOP_EXACT). */
int gbtd_tucker_hosvd(const gbtd_tensor *x, const int64_t *ranks, gbtd_tucker *out,
                      const gbtd_tucker_opts *opts, gbtd_decomp_info *info);
int gbtd_tucker_hooi(const gbtd_tensor *x, const int64_t *ranks, gbtd_tucker *out,
                     const gbtd_tucker_opts *opts, gbtd_decomp_info *info);

/* Partial Tucker over `nmodes` distinct modes (any order); ranks[k] belongs to modes[k].
 * Tucker-2 of a conv kernel K[h, w, i, o]: modes = {2, 3}. */
int gbtd_tucker_partial_hosvd(const gbtd_tensor *x, const int *modes, int nmodes,
                              const int64_t *ranks, gbtd_tucker *out,
                              const gbtd_tucker_opts *opts, gbtd_decomp_info *info);
int gbtd_tucker_partial_hooi(const gbtd_tensor *x, const int *modes, int nmodes,
                             const int64_t *ranks, gbtd_tucker *out,
                             const gbtd_tucker_opts *opts, gbtd_decomp_info *info);

/* Ranks for a relative-error target (see the top of this file): ranks[k] for modes[k].
 * target in (0, 1]; target >= 1 gives rank 1 everywhere. */
int gbtd_tucker_ranks_for_error(const gbtd_tensor *x, const int *modes, int nmodes,
                                double target, int64_t *ranks);

/* X_hat = G x_k U_k, a new contiguous tensor of the original shape. */
int gbtd_tucker_reconstruct_alloc(const gbtd_tucker *t, gbtd_tensor *out);
/* Number of stored values: numel(G) + sum_k numel(U_k). */
int64_t gbtd_tucker_param_count(const gbtd_tucker *t);
void gbtd_tucker_free(gbtd_tucker *t);

#ifdef __cplusplus
}
#endif
#endif
