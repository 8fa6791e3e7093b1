/* gbtd decomp: comparing decompositions — factor-match score and congruence of CP models
 * after permutation and sign alignment, principal angles between subspaces, compression.
 *
 * Errors: GBTD_EINVAL (NULL arguments), GBTD_ESHAPE (models or matrices that do not match),
 * GBTD_ENUMERIC (LAPACK failure), GBTD_ENOMEM. */
#ifndef GBTD_DECOMP_METRICS_H
#define GBTD_DECOMP_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/tensor.h"
#include "decomp/cp.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Factor-match score of `est` against `ref` (same ndim, shape and rank; factors need not be
 * normalised). For components r of ref and s of est the congruence is
 *   c(r, s) = prod_n |<a^n_r, b^n_s>| / (||a^n_r|| ||b^n_s||),
 * which ignores the signs (a sign flip in two modes leaves a component unchanged) and, with
 * use_weights, is multiplied by 1 - |l_r - m_s| / max(l_r, m_s), l and m the components' total
 * magnitudes w_r prod_n ||a^n_r||. The components are paired by the permutation that maximises
 * the total score (Hungarian algorithm); *score is the mean over pairs, in [0, 1], 1 for
 * identical models up to permutation, scaling and sign. Optional outputs: perm[r] = component
 * of est paired with component r of ref, and *min_congruence the smallest paired c(r, s). */
int gbtd_cp_factor_match(const gbtd_cp *ref, const gbtd_cp *est, bool use_weights,
                         double *score, double *min_congruence, int64_t *perm);

/* Sine of the largest principal angle between the column spaces of a (I x p) and b (I x q),
 * p <= q: ||(I - Q_b Q_b^T) Q_a||_2 with Q_a, Q_b orthonormal bases (accurate near 0, unlike
 * acos of the cosines). 0 when range(a) lies in range(b). Columns must be independent. */
int gbtd_subspace_sin_angle(const gbtd_tensor *a, const gbtd_tensor *b, double *sin_max);

/* Compression ratio numel(shape) / params (0 when params <= 0). */
double gbtd_compression_ratio(int ndim, const int64_t *shape, int64_t params);

#ifdef __cplusplus
}
#endif
#endif
