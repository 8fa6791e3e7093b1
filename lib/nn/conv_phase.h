/* gbtd nn: fast depthwise (groups == c_in, any channel multiplier) and grouped convolution,
 * internal.
 *
 * Each (image, input channel) plane is copied into a zero-padded buffer split into stride x stride
 * phase planes (phase (a, b) holds the padded input at rows s r + a, columns s c + b). In phase
 * coordinates every tap (p, q) of the kernel becomes one constant offset, so an output plane laid
 * out with the phase row width Ws ("extended": the columns past w_out are scratch) is a sum of
 * kh kw shifted copies of contiguous vectors, computed in registers. Backward-data is the
 * transposed gather per phase, backward-weight one dot product per tap. Grouped convolutions use
 * the same planes as the B operand of an implicit GEMM (no im2col copy): see nn_gemm_conv_nn. */
#ifndef GBTD_NN_CONV_DW_H
#define GBTD_NN_CONV_DW_H

#include <stddef.h>
#include <stdint.h>

#include "nn/ops.h"

#ifdef _OPENMP
#include <omp.h>
#endif

/* The calling thread's number in its OpenMP team (0 without OpenMP). */
static inline int nn_thread_id(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* Floats of workspace one thread needs (0: the fast path does not handle this shape). The shape
 * must be a validated depthwise shape (groups == c_in). */
size_t nn_dw_per_thread(const gbtd_conv2d_shape *s);
/* y = conv(x, wt) + b on nt threads; ws holds nt * per_thread floats. */
void nn_dw_forward(const gbtd_conv2d_shape *s, const float *x, const float *wt, const float *b,
                   float *y, float *ws, size_t per_thread, int nt);
/* dx += conv^T(dy) (set_dx: dx =, each element written once), dw += dy (*) x (either may be
 * NULL) on nt threads. */
void nn_dw_backward(const gbtd_conv2d_shape *s, const float *x, const float *wt, const float *dy,
                    float *dx, float *dw, float *ws, size_t per_thread, int nt, int set_dx);

/* Grouped (1 < groups < c_in): floats of workspace per thread, 0 if not handled. */
size_t nn_grp_per_thread(const gbtd_conv2d_shape *s);
void nn_grp_forward(const gbtd_conv2d_shape *s, const float *x, const float *wt, const float *b,
                    float *y, float *ws, size_t per_thread, int nt);
/* When nt > groups the threads split the images: nt private weight gradients live in ws and
 * are summed into dw at the end. set_dx: dx = conv^T(dy), its old contents ignored (each
 * element is written once), instead of dx +=. */
void nn_grp_backward(const gbtd_conv2d_shape *s, const float *x, const float *wt, const float *dy,
                     float *dx, float *dw, float *ws, size_t per_thread, int nt, int set_dx);

/* One h x w plane, zero-padded by pad, written into s x s phase planes of row width ws spaced lp
 * floats apart: P[(rp s + cp) lp + i ws + j] = xpad[i s + rp][j s + cp]. Only the positions that
 * hold data are written (the padding stays as the caller left it: zero it once). unpack is the
 * inverse: x (+)= the data positions (set: x =). */
void nn_phase_pack(int64_t s, int64_t pad, int64_t h, int64_t w, int64_t ws, int64_t lp,
                   const float *x, float *P);
void nn_phase_unpack(int64_t s, int64_t pad, int64_t h, int64_t w, int64_t ws, int64_t lp,
                     const float *P, float *x, int set);

#endif
