/* gbtd decomp: block term decomposition (BTD) of a dense tensor.
 *
 * The model. X (N-way, shape I_0 x ... x I_{N-1}) is approximated by a sum of R Tucker blocks
 * over a chosen set of K modes m_0 < m_1 < ... < m_{K-1} (the "factored" modes):
 *
 *     X ~ sum_{r=0}^{R-1}  G_r  x_{m_0} U_{r,0}  x_{m_1} U_{r,1}  ...  x_{m_{K-1}} U_{r,K-1}
 *
 * U_{r,k} is I_{m_k} x L_{r,k}; the core G_r has size L_{r,k} on mode m_k and the full size I_n
 * on every mode n that is not factored (those modes are carried in full by each term's core).
 * Ranks may differ per term and per mode. For a convolution kernel K[h, w, i, o]
 * (kh x kw x C_in x C_out) the factored modes are {2, 3}: term r is a grouped 3x3 core between a
 * 1x1 reduce (U_{r,0}, C_in x L) and a 1x1 expand (U_{r,1}, C_out x L), i.e. one ResNeXt group.
 * CP (all ranks 1, all modes factored) and Tucker / partial Tucker (R = 1) are the extreme cases.
 * Each term is only defined up to an invertible transform of each of its factors (absorbed by
 * its core) and terms of equal ranks may be permuted: compare models by reconstruction error or
 * by gbtd_btd_subspace_angles, never by raw entries.
 *
 * The solvers (gbtd_btd_decompose, gbtd_btd_refine):
 *  - ALS: for each factored mode n, all terms' factors of mode n at once by the exact
 *    least-squares update  [U_{0,n} ... U_{R-1,n}] = X_(n) W (W^T W)^{-1}, where W's blocks are
 *    never formed: the right-hand side is one batched GEMM over all terms plus small core
 *    contractions, W^T W comes from factor Gramians and core contractions. Then all cores at
 *    once from the block normal equations (full modes decouple; a dense Cholesky when the
 *    system is small, matrix-free CG otherwise). After each factor update the new blocks are
 *    re-orthonormalised (QR of each term's factor) and the triangular factors absorbed into
 *    the cores (the model is unchanged), so the factors stay orthonormal per term.
 *  - NLS: damped Gauss-Newton (Levenberg-Marquardt) on 1/2 ||model - X||^2 over all factors and
 *    cores. J^T J is applied matrix-free from factor Gramians and small core contractions (cost
 *    independent of the size of X; batched into GEMMs over all term pairs for two factored
 *    modes); the gradient costs the same batched projections of X as an ALS sweep (model part
 *    from the Gramians); each step is solved inexactly by CG with a block-Jacobi
 *    preconditioner; trial points are accepted on their residual, from the identity
 *    ||X - T||^2 = ||X||^2 - 2 <X, T> + ||T||^2 with the projection the gradient then reuses
 *    (formed explicitly where the identity's rounding could matter: near an exact fit or
 *    under a tight tolerance).
 *  Initialisation: random (normal entries, seeded), deterministic from a truncated HOSVD
 *  whose leading singular vectors are dealt out across the terms, or algebraic (GEVD, the
 *  default: exact for exact data, see gbtd_btd_init); random starts are swamp-prone for BTD.
 *  Restarts: `restarts` runs with seeds seed, seed+1, ..., keeping the best (a run that
 *  reaches error_tol ends the restarts).
 *  Compression (optional): X is first projected on its leading mode subspaces (truncated HOSVD
 *  of the factored modes, of sizes min(I, sum of the term ranks)), the model is fitted to the
 *  small tensor, expanded, then refined on the full tensor (max_iter applies to each phase;
 *  the compressed phase counts as initialisation in the info).
 *
 * Requests that cannot be met are refused before any work (model left empty):
 *   GBTD_EINVAL       NULL argument, nterms < 1, nmodes < 1, max_iter < 1, restarts < 1,
 *                     negative tol / budget, X identically zero;
 *   GBTD_ERANGE       a mode outside 0..N-1 or repeated, a rank < 1 or > I_{m_k}, a rank larger
 *                     than the product of that term's other core sizes (a degenerate core), or
 *                     sum_r L_{r,k} > prod_{n != m_k} I_n (what the data can hold: the
 *                     least-squares problem for mode m_k would be singular);
 *   GBTD_ENONFINITE   NaN or Inf in X;
 *   GBTD_ENOMEM / GBTD_EOVERFLOW, GBTD_ENUMERIC (LAPACK failure).
 * A callback that asks to stop is not an error: the model so far is returned with GBTD_OK and
 * info->stop = GBTD_STOP_CALLBACK (no further restarts).
 * The library never prints. The default options are deterministic (fixed seed). */
#ifndef GBTD_DECOMP_BTD_H
#define GBTD_DECOMP_BTD_H

#include <stdint.h>

#include "core/rng.h"
#include "core/tensor.h"
#include "decomp/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the model ------------------------------------------------------------------------- */

typedef struct gbtd_btd {
    int ndim;                       /* N, modes of X */
    int64_t shape[GBTD_MAX_MODES];  /* I_0 .. I_{N-1} */
    int nmodes;                     /* K, factored modes */
    int modes[GBTD_MAX_MODES];      /* m_0 < ... < m_{K-1} */
    int nterms;                     /* R */
    int64_t *ranks;                 /* R x K, ranks[r * K + k] = L_{r,k} */
    gbtd_tensor *cores;             /* R cores, contiguous, G_r as described above */
    gbtd_tensor *factors;           /* R x K matrices, factors[r * K + k] = U_{r,k} (I_{m_k} x L_{r,k}) */
} gbtd_btd;

/* Allocate a zero-filled model. `modes` (nmodes entries) need not be sorted; they are stored
 * sorted and `ranks` (nterms x nmodes, row r = the ranks of term r in the order of `modes` as
 * given) is reordered with them. Errors as listed above for the shape checks (GBTD_EINVAL,
 * GBTD_ERANGE, GBTD_EOVERFLOW, GBTD_ENOMEM). On error *m is left empty (safe to free). */
int gbtd_btd_alloc(gbtd_btd *m, int ndim, const int64_t *shape, int nmodes, const int *modes,
                   int nterms, const int64_t *ranks);
/* Same layout, R terms all of the same ranks (ranks has nmodes entries). */
int gbtd_btd_alloc_uniform(gbtd_btd *m, int ndim, const int64_t *shape, int nmodes,
                           const int *modes, int nterms, const int64_t *ranks);
/* Release the model and clear the struct. Accepts NULL and empty models. */
void gbtd_btd_free(gbtd_btd *m);
/* dst <- a new model equal to src. */
int gbtd_btd_clone(gbtd_btd *dst, const gbtd_btd *src);
/* Fill every factor and core with independent standard normal numbers drawn from rng. */
void gbtd_btd_fill_normal(gbtd_btd *m, gbtd_rng *rng);

/* out (contiguous, the model's shape) <- sum of the R terms. GBTD_ESHAPE if out's shape
 * differs; out must not alias the model. */
int gbtd_btd_reconstruct(const gbtd_btd *m, gbtd_tensor *out);
int gbtd_btd_reconstruct_alloc(const gbtd_btd *m, gbtd_tensor *out);
/* ||X - model|| / ||X|| computed from the explicit residual. */
int gbtd_btd_relative_error(const gbtd_tensor *x, const gbtd_btd *m, double *out);
/* Number of stored parameters: sum over terms of the core size plus the factor sizes. */
int64_t gbtd_btd_num_params(const gbtd_btd *m);

/* Compare the block column spaces of two models of the same layout (shape, modes, R; terms may
 * be in any order). For each term of `ref` and each factored mode, the largest principal angle
 * (radians, in [0, pi/2]) between span(U_{r,k}) of ref and of the matched term of `est`; terms
 * are matched greedily by smallest worst angle among terms of equal ranks.
 * Outputs (each may be NULL): max_angle = the largest of all; perm[r] = the term of est matched
 * to term r of ref (nterms entries); angles[r * K + k] (nterms x nmodes entries).
 * Errors: GBTD_ESHAPE (layouts differ), GBTD_ERANGE (ranks cannot be matched), GBTD_ENOMEM. */
int gbtd_btd_subspace_angles(const gbtd_btd *ref, const gbtd_btd *est, double *max_angle,
                             int *perm, double *angles);

/* ---- fitting --------------------------------------------------------------------------- */

typedef enum gbtd_btd_solver {
    GBTD_BTD_NLS = 0, /* Levenberg-Marquardt Gauss-Newton with matrix-free CG (the default) */
    GBTD_BTD_ALS = 1  /* alternating least squares */
} gbtd_btd_solver;

typedef enum gbtd_btd_init {
    GBTD_BTD_INIT_RANDOM = 0, /* normal entries from the seed (one seed per restart) */
    GBTD_BTD_INIT_HOSVD = 1,  /* leading singular vectors dealt out over the terms; the first
                                 run only, further restarts are random */
    GBTD_BTD_INIT_GEVD = 2,   /* algebraic start, every run with fresh random slice weights: for
                                 two factored modes a, b with equal ranks per term and
                                 I_a, I_b >= sum of the ranks, X is compressed on both, two
                                 random combinations of its (a, b) slices form a pencil whose
                                 eigenvectors, grouped into terms by the block structure they
                                 share with further combinations, span the blocks of mode a;
                                 mode b and the other modes follow by small solves. Exact for
                                 an exact BTD in general position; with noise the grouping
                                 uses the commutant of the pencil (sum of ranks <= 32). Falls
                                 back to HOSVD where it does not apply. */
    GBTD_BTD_INIT_AUTO = 3    /* GEVD (the default) */
} gbtd_btd_init;

typedef enum gbtd_btd_compress {
    GBTD_BTD_COMPRESS_AUTO = 0, /* compress when it shrinks X by at least 4x and X has at
                                   least 2^16 entries */
    GBTD_BTD_COMPRESS_OFF = 1,
    GBTD_BTD_COMPRESS_ON = 2
} gbtd_btd_compress;

typedef struct gbtd_btd_opts {
    uint64_t seed;              /* default 42 */
    gbtd_btd_solver solver;     /* default GBTD_BTD_NLS */
    gbtd_btd_init init;         /* default GBTD_BTD_INIT_AUTO */
    int restarts;               /* runs, >= 1; default 1 */
    double tol;                 /* stop when (e_prev - e) / e_prev < tol for the relative error e
                                   (only on non-increasing steps); default 1e-10 */
    double error_tol;           /* stop when e <= error_tol; default 1e-13 (an exact fit) */
    int max_iter;               /* per run, >= 1; default 500 */
    double time_budget;         /* seconds for the whole call, 0 = none; default 0 */
    gbtd_btd_compress compress; /* default GBTD_BTD_COMPRESS_AUTO */
    int cg_max_iter;            /* NLS: CG iterations per step (and ALS core CG); default 25 */
    double cg_tol;              /* NLS: relative residual of the inner CG; default 1e-6 */
    gbtd_iter_callback callback; /* may be NULL; called after every iteration of every run */
    void *callback_ctx;
} gbtd_btd_opts;

gbtd_btd_opts gbtd_btd_opts_default(void);

/* Iterations, final relative error, history of the best run, stop reason, times per phase. */
typedef gbtd_decomp_info gbtd_btd_info;

/* Fit a BTD with R = nterms terms over `modes` (nmodes entries) with ranks (nterms x nmodes,
 * as for gbtd_btd_alloc) to X (any strides). `model` receives a new model (free it with
 * gbtd_btd_free); on error it is left empty. `info` may be NULL; when given it is
 * (re)initialised and then owned by the caller (gbtd_decomp_info_free). opts NULL = defaults.
 * On return each term's factors have orthonormal columns. */
int gbtd_btd_decompose(const gbtd_tensor *x, int nmodes, const int *modes, int nterms,
                       const int64_t *ranks, gbtd_btd *model, gbtd_btd_info *info,
                       const gbtd_btd_opts *opts);

/* Continue fitting from the given model (its layout must match X: GBTD_ESHAPE otherwise);
 * init, restarts and compress are ignored. The model is updated in place. */
int gbtd_btd_refine(const gbtd_tensor *x, gbtd_btd *model, gbtd_btd_info *info,
                    const gbtd_btd_opts *opts);

/* Floating-point operations of one iteration of `solver` on a model of this layout, counting
 * its level-3 work: the batched projections of X (2 numel(X) sum_r L_{r,k'} per factored mode,
 * k' the mode projected first), for ALS also the factor updates (triangular solves and
 * Gramian, 3 (sum_r L_{r,k})^2 I_k per mode); for NLS the projections only (the trial
 * point's error reuses them; the CG iterations, whose number varies, and an explicit residual
 * near an exact fit are not counted). What
 * benchmarks divide the seconds per iteration by to report a fraction of the dgemm rate. */
double gbtd_btd_iteration_flops(const gbtd_btd *m, gbtd_btd_solver solver);

#ifdef __cplusplus
}
#endif
#endif
