/* gbtd nn: dense 3x3 convolution, stride 1, padding 1, through Winograd's minimal filtering
 * algorithm F(2x2, 3x3), internal.
 *
 * Each 2x2 block of outputs ("tile") is computed from the 4x4 block of padded input under it:
 *   Y = A^T [ sum_c (G g_kc G^T) .* (B^T d_c B) ] A,
 * with 16 multiplications per tile and channel pair where the direct sum needs 36. The 16
 * element-wise products summed over channels are 16 GEMMs (one per transform point xi) over the
 * tiles: M_xi (K x T) = U_xi (K x C) V_xi (C x T). Backward-data is the same forward on dy with
 * the weights rotated by 180 degrees and transposed; backward-weight is the transposed algorithm
 * F(3x3, 2x2): dW = G^T [ sum_tiles (A dy A^T) .* (B^T d B) ] G, one GEMM per xi over the tiles.
 *
 * Tiles are numbered t = ti ws + tj with a row width ws = ceil(w / 2) + 1; the last column of
 * each row is scratch (computed, never stored), which makes every element of a tile's 4x4 input
 * one constant offset from t in the stride-2 phase planes of the padded input (conv_phase.h). */
#ifndef GBTD_NN_CONV_WINO_H
#define GBTD_NN_CONV_WINO_H

#include <stddef.h>

#include "nn/ops.h"

/* Floats of workspace one thread needs; 0 when the shape is not a dense 3x3, stride 1, pad 1
 * convolution. The shape must be validated. */
size_t nn_wino_per_thread(const gbtd_conv2d_shape *s);
/* y = conv(x, wt) + b (b may be NULL) on nt threads; ws holds nt * per_thread floats. */
void nn_wino_forward(const gbtd_conv2d_shape *s, const float *x, const float *wt, const float *b,
                     float *y, float *ws, size_t per_thread, int nt);
/* dx += conv^T(dy) (set_dx: dx =, every element written once), dw += dy (*) x; either may be
 * NULL. Threads split the images; their private weight gradients (in ws) are summed in thread
 * order, so the result depends on the thread count but not on the schedule. */
void nn_wino_backward(const gbtd_conv2d_shape *s, const float *x, const float *wt,
                      const float *dy, float *dx, float *dw, float *ws, size_t per_thread,
                      int nt, int set_dx);

#endif
