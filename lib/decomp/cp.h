/* gbtd decomp: CP (CANDECOMP/PARAFAC) decomposition by alternating least squares.
 *
 * Model: X ~ sum_r w_r a^0_r o a^1_r o ... o a^{N-1}_r, factor A_n = [a^n_1 .. a^n_R] of shape
 * I_n x R with unit-norm columns, weights w (length R, non-negative after normalisation), so
 * unfold(X, n) ~ A_n diag(w) khatri_rao(A_m, m != n)^T (TensorLy's convention).
 *
 * ALS: A_n <- MTTKRP_n(X) V_n^+ with V_n the Hadamard product of the Gramians A_m^T A_m
 * (m != n), then columns normalised into w. MTTKRP is computed without any Khatri-Rao matrix:
 * one GEMM contracts X's last mode with A_{N-1} and serves every mode but the last; a second
 * GEMM contracts the first mode with A_0 for the last mode; the remaining small contractions
 * are loops over the reduced tensors. Each sweep thus costs two passes over X (2 numel R flops
 * each).
 *
 * Error from the identity ||X - X_hat||^2 = ||X||^2 - 2 <X, X_hat> + ||X_hat||^2, with
 * <X, X_hat> from the last MTTKRP and ||X_hat||^2 = w^T (*_m A_m^T A_m) w; when the relative
 * error computed this way falls below 1e-5 (where cancellation leaves only ~sqrt(eps) accuracy)
 * the error is computed explicitly from slabs of X_hat, without storing X_hat.
 *
 * Line search (opts.line_search): after each sweep k >= 2, the extrapolated point
 * P_k + s (P_k - P_{k-1}) with s = k^(1/h) (Bro's rule; h grows after each rejection) is kept
 * when its error is lower; its evaluation reuses the GEMM that the next sweep needs.
 *
 * Errors: GBTD_EINVAL (NULL arguments, bad options, zero tensor, fewer than 2 modes,
 * max_iter < 1), GBTD_ERANGE (rank < 1), GBTD_ENONFINITE, GBTD_ENUMERIC, GBTD_ENOMEM,
 * GBTD_EOVERFLOW. */
#ifndef GBTD_DECOMP_CP_H
#define GBTD_DECOMP_CP_H

#include <stdbool.h>
#include <stdint.h>

#include "core/tensor.h"
#include "decomp/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A CP decomposition; owns weights and factors (gbtd_cp_free). A zeroed struct is empty. */
typedef struct gbtd_cp {
    int ndim;
    int64_t rank;
    gbtd_tensor weights;                 /* length R */
    gbtd_tensor factors[GBTD_MAX_MODES]; /* I_n x R */
} gbtd_cp;

typedef enum gbtd_cp_init {
    GBTD_CP_INIT_RANDOM = 0, /* standard normal entries (seeded) */
    GBTD_CP_INIT_SVD = 1     /* leading left singular vectors of each unfolding; columns beyond
                                I_n drawn at random */
} gbtd_cp_init;

typedef struct gbtd_cp_opts {
    int max_iter;        /* ALS sweeps per run, >= 1 (default 500) */
    double tol;          /* stop when |e_{k-1} - e_k| <= tol * e_{k-1} (default 1e-10) */
    double error_target; /* stop once the relative error is <= this (default 0: off) */
    double time_budget;  /* seconds for all runs; <= 0: none (default 0) */
    gbtd_cp_init init;   /* default GBTD_CP_INIT_RANDOM */
    uint64_t seed;       /* default 42; run j uses seed + j */
    int restarts;        /* runs from different random starts, best kept (default 1) */
    bool line_search;    /* extrapolation after each sweep (default true) */
    gbtd_iter_callback callback;
    void *callback_ctx;
} gbtd_cp_opts;

gbtd_cp_opts gbtd_cp_opts_default(void);

/* Rank-R CP of x (>= 2 modes). `out` is overwritten. info may be NULL. With restarts, info's
 * history is the kept run's. An exactly representable tensor stops with GBTD_STOP_EXACT once
 * its relative error reaches ~1e-14. */
int gbtd_cp_als(const gbtd_tensor *x, int64_t rank, gbtd_cp *out, const gbtd_cp_opts *opts,
                gbtd_decomp_info *info);

/* X_hat = sum_r w_r a^0_r o ... (new contiguous tensor). */
int gbtd_cp_reconstruct_alloc(const gbtd_cp *cp, gbtd_tensor *out);
/* ||x - X_hat|| / ||x|| computed slab by slab (no full X_hat is stored). */
int gbtd_cp_relative_error(const gbtd_tensor *x, const gbtd_cp *cp, double *out);
/* R + R sum_n I_n. */
int64_t gbtd_cp_param_count(const gbtd_cp *cp);
/* Allocate an empty model of the given shape and rank (zero factors, unit weights). */
int gbtd_cp_alloc(gbtd_cp *cp, int ndim, const int64_t *shape, int64_t rank);
void gbtd_cp_free(gbtd_cp *cp);

#ifdef __cplusplus
}
#endif
#endif
