/* gbtd cru: the paper's unification, executable. A bottleneck / ResNeXt unit's three
 * convolutions are the factors of a block term decomposition of its effective kernel, and a
 * stage's kernels stacked along the output mode are factored jointly (the collective BTD).
 *
 * Layouts. Weights are float32 in PyTorch order:
 *   W1 [D, C_in]            1x1 reduce      (D = R * d inner channels, R groups of width d)
 *   W2 [D, d, kh, kw]       kh x kw conv with R groups
 *   W3 [C_out, D]           1x1 expand
 * The unit without nonlinearities and batch-norm shifts is one kh x kw convolution with kernel
 *   K[h, w, i, o] = sum_r sum_{a,b} A_r[i, a] G_r[h, w, a, b] B_r[o, b]
 *   A_r = W1[r d:(r+1) d, :]^T  (C_in x d),  G_r[h, w, a, b] = W2[r d + b, a, h, w],
 *   B_r = W3[:, r d:(r+1) d]  (C_out x d),
 * i.e. a BTD (lib/decomp/btd.h) of K (kh x kw x C_in x C_out) over modes {2, 3} with R terms of
 * rank (d, d). R = 1 is the vanilla / wide ResNet bottleneck (a Tucker-2), R = 32, d = 4 is
 * ResNeXt 32x4d. Batch-norm folding multiplies the output channels of each convolution by the
 * BN scale gamma / sqrt(var + eps) (the shifts are biases and do not enter the kernel). */
#ifndef GBTD_CRU_UNIT_H
#define GBTD_CRU_UNIT_H

#include <stdint.h>

#include "core/tensor.h"
#include "decomp/btd.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Shapes and weights of one bottleneck unit. scale1/2/3 (length D, D, C_out) are the per-output
 * channel multipliers of the folded batch norms, or NULL for none. */
typedef struct gbtd_unit_weights {
    int64_t c_in, inner, c_out; /* C_in, D, C_out */
    int64_t kh, kw;
    int groups;                 /* R; D must be a multiple of R */
    const float *w1, *w2, *w3;
    const float *scale1, *scale2, *scale3;
} gbtd_unit_weights;

/* Per-channel batch-norm scale gamma / sqrt(var + eps) into out (n values). */
void gbtd_bn_fold_scale(const float *gamma, const float *var, double eps, int64_t n, float *out);

/* The unit's exact BTD: a new model (kh x kw x C_in x C_out, modes {2, 3}, R terms of rank
 * (d, d)) in *out (free with gbtd_btd_free). Errors: GBTD_EINVAL (NULL weights, groups not
 * dividing D, sizes < 1), GBTD_ENOMEM. Factors are NOT orthonormalised: they are the weights. */
int gbtd_unit_to_btd(const gbtd_unit_weights *u, gbtd_btd *out);

/* The unit's effective kernel K (kh x kw x C_in x C_out), allocated into *k. */
int gbtd_unit_effective_kernel(const gbtd_unit_weights *u, gbtd_tensor *k);

/* The inverse map: weights of a unit whose function is the BTD model m (4-way, modes {2, 3},
 * every term of rank (d_in, d_out) with the same d_in and the same d_out). Writes
 * W1 [R d_in, C_in], W2 [R d_out, d_in, kh, kw] (groups = R), W3 [C_out, R d_out]; each buffer
 * must hold that many floats. Errors: GBTD_EINVAL (layout not of that form). */
int gbtd_btd_to_unit(const gbtd_btd *m, float *w1, float *w2, float *w3);

/* ---- collective factorization of a stage ------------------------------------------------
 * The kernels K_1..K_L of a stage (equal kh, kw, C_in, C_out) concatenated along the output
 * mode: X+ = [K_1, ..., K_L], kh x kw x C_in x (L C_out), allocated into *out. */
int gbtd_stage_stack(const gbtd_tensor *const *kernels, int count, gbtd_tensor *out);

/* View of unit l's block of the output factor of term r of a collective model of L units:
 * rows l C_out .. (l+1) C_out - 1 of B_r+ (the factor of mode 3). */
int gbtd_stage_unit_factor(const gbtd_btd *m, int units, int unit, int term, gbtd_tensor *view);

#ifdef __cplusplus
}
#endif
#endif
