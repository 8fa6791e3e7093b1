/* gbtd nn: helpers shared by the layer kernels (not installed). */
#ifndef GBTD_NN_OPS_INTERNAL_H
#define GBTD_NN_OPS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "core/status.h"
#include "nn/ops.h"

/* GBTD_EINVAL naming `what` in function `fn` when p is NULL. */
#define NN_NONNULL(fn, p)                                                                         \
    do {                                                                                          \
        if (!(p)) return gbtd_error(GBTD_EINVAL, "%s: %s is NULL", (fn), #p);                    \
    } while (0)

/* GBTD_EINVAL when v < lo. */
#define NN_ATLEAST(fn, v, lo)                                                                     \
    do {                                                                                          \
        if ((int64_t)(v) < (int64_t)(lo))                                                         \
            return gbtd_error(GBTD_EINVAL, "%s: %s = %lld must be >= %lld", (fn), #v,            \
                              (long long)(v), (long long)(lo));                                   \
    } while (0)

/* An environment switch that turns a kernel path off: set, and not "0". */
static inline int nn_switched_off(const char *name)
{
    const char *off = getenv(name);
    return off && off[0] && !(off[0] == '0' && off[1] == 0);
}

/* Product of sizes, checked against overflow; 0 on success. */
int nn_numel(const char *fn, int64_t *out, int count, ...);

/* Validated copy of a conv / pool shape (the caller's struct is const). */
int nn_conv_shape(const char *fn, const gbtd_conv2d_shape *in, gbtd_conv2d_shape *out);
int nn_pool_shape(const char *fn, const gbtd_pool2d_shape *in, gbtd_pool2d_shape *out);
int nn_bn_shape(const char *fn, const gbtd_bn_shape *s);

/* Residual add backward that stores (set_a / set_b) or accumulates each gradient (layers.c). */
void nn_add_backward_store(int64_t len, int relu, const float *y, const float *dy, float *da,
                           int set_a, float *db, int set_b);

/* Batch-norm backward (y given: the fused-ReLU variant) and convolution backward that store the
 * input gradient when set_dx (dx = ..., the buffer's old contents ignored) instead of adding to it:
 * no zeroing pass before them. */
int nn_bn_backward_set(const gbtd_bn_shape *s, const float *x, const float *gamma,
                       const float *mean, const float *rstd, const float *y, const float *dy,
                       float *dx, float *dgamma, float *dbeta, int set_dx);
int nn_conv2d_backward_set(const gbtd_conv2d_shape *s, const float *x, const float *wt,
                           const float *dy, float *dx, float *dw, float *db, float *ws,
                           size_t ws_len, int set_dx);

/* One operand of nn_bn_add_forward: x itself, or (bn) x through a batch norm without ReLU whose
 * output nobody else reads. Training fills mean / rstd (for the backward) and updates the
 * running statistics; evaluation reads them. scale / shift (per channel, out) receive the
 * affine map used, from which nn_bn_apply materialises the batch norm's output when asked. */
typedef struct nn_bn_side {
    const float *x;
    int bn;
    const float *gamma, *beta;
    float eps, momentum;
    float *running_mean, *running_var;
    float *mean, *rstd;
    float *scale, *shift;
} nn_bn_side;

/* y = a' + b' (then ReLU when relu), a' and b' the two sides, normalised where asked: the batch
 * norms before a residual add computed in the add's pass (each channel's statistics, then its
 * sum while the planes are still cached), so that the normalised values are never written and
 * read back. Bit for bit the values of the separate layers. */
int nn_bn_add_forward(const gbtd_bn_shape *s, const nn_bn_side *a, const nn_bn_side *b,
                      int training, int relu, float *y);
/* Batch norm + ReLU, training forward, that also stores each channel's affine map y = max(scale x
 * + shift, 0) (C floats each); and the backward that takes the ReLU mask from x through that map
 * (the float operations of the forward: the same mask as y > 0) instead of reading y. Bit for bit
 * gbtd_bn_relu_forward_train / nn_bn_backward_set with y. */
int nn_bn_relu_forward_train_map(const gbtd_bn_shape *s, const float *x, const float *gamma,
                                 const float *beta, float eps, float momentum,
                                 float *running_mean, float *running_var, float *mean,
                                 float *rstd, float *y, float *scale, float *shift);
int nn_bn_relu_backward_map(const gbtd_bn_shape *s, const float *x, const float *gamma,
                            const float *mean, const float *rstd, const float *scale,
                            const float *shift, const float *dy, float *dx, float *dgamma,
                            float *dbeta, int set_dx);
/* y = scale[c] x + shift[c] per channel: a deferred batch norm's output. */
void nn_bn_apply(const gbtd_bn_shape *s, const float *x, const float *scale, const float *shift,
                 float *y);

/* Outputs of batch norm and the residual add larger than this many bytes (default 32 MiB, more
 * than a last-level cache holds for the next reader) are written with non-temporal stores,
 * which skip reading each line before overwriting it. The tests lower it to reach those paths
 * on small shapes; the values written do not depend on it. */
extern int64_t nn_stream_bytes;

/* Batch norm's passes take blocks of consecutive channels, image by image inside a block, each
 * block (all images, every tensor a pass reads) at most this many bytes (default 4 MiB, to stay
 * in the last-level cache between passes; at least one channel). Every statistic still adds a
 * channel's planes in image order: the values do not depend on it (tested). */
extern int64_t nn_bn_block_bytes;

/* Non-temporal y[i] = a[i] + b[i] (then max(0, .) with relu) for len elements, when AVX2 is in
 * use; 0 (nothing done) otherwise. The caller issues nn_stream_fence() before others read y. */
int nn_add_stream(int64_t len, int relu, const float *a, const float *b, float *y);
void nn_stream_fence(void);

/* OpenBLAS thread count around OpenMP regions that call BLAS from several threads. */
int nn_blas_single_begin(int omp_threads);
void nn_blas_single_end(int saved);

#endif
