/* gbtd nn: single-precision layer kernels (forward / backward pairs), NCHW.
 *
 * Conventions shared by every kernel in this header:
 *  - Activations are float32, row-major NCHW: element (n, c, y, x) of an (N, C, H, W) buffer sits
 *    at ((n * C + c) * H + y) * W + x. Matrices (linear layers, logits) are row-major.
 *  - Weights use PyTorch's layouts: conv W[c_out, c_in / groups, kh, kw], linear W[out, in], so
 *    state dicts move between gbtd and PyTorch without transposes.
 *  - `_forward` WRITES its output (overwrites it) and fills the caller-provided cache that its
 *    `_backward` needs (batch-norm statistics, max-pool argmax, softmax probabilities).
 *  - `_backward` ACCUMULATES: dx += ..., dw += ..., db += .... Callers zero gradient buffers once
 *    per step. This is what makes weight sharing work: one weight buffer used by several layers
 *    (the CRU's shared 1x1 and depthwise 3x3, a projection used at two strides) receives the sum
 *    of the gradients of all its uses when each use's backward is called with the same dw.
 *    No kernel ever overwrites a gradient buffer. Any gradient pointer may be NULL (not wanted).
 *  - Nothing allocates per step. Kernels that need scratch memory take `ws` / `ws_len` (counted
 *    in FLOATS, not bytes) sized by the matching `_workspace_size()` query; a workspace sized
 *    for T threads lets the kernel use up to T OpenMP threads (fewer if fewer are running).
 *    One workspace may be shared by all layers of a network if it has the maximum size.
 *  - Threads: the fast kernels parallelise with OpenMP over images or channels and call OpenBLAS
 *    single-threaded inside such loops; gbtd_set_threads() sets both counts. Results do not
 *    depend on the thread count except for the order of float summation in weight gradients.
 *  - Return values: GBTD_OK, or GBTD_EINVAL (NULL pointer, size < 1, workspace too small),
 *    GBTD_ESHAPE (inconsistent shape), GBTD_ERANGE (label out of range), GBTD_EOVERFLOW.
 *    Shapes are validated on every call (cheap) with a one-line detail in gbtd_last_error().
 *  - Aliasing: outputs must not overlap inputs unless a function says so (ReLU, add).
 *  - Every kernel with a fast path (conv, batch norm, linear) has a naive `_ref` twin with the
 *    same signature (minus the workspace), written as plain loops, kept forever as the reference
 *    the tests compare against; every kernel has a `_refd` double-precision twin of the same
 *    loops (one macro-templated source), used by the finite-difference tests. Element-wise and
 *    pooling kernels are plain loops themselves; their `_refd` twin is their reference.
 *
 * Parameter layout note for the network builder: the kernels take raw pointers, so parameters
 * can live in one slab (llm.c style) and gradients in a parallel slab; BN running statistics are
 * buffers, not parameters (never pass them to the optimiser).
 */
#ifndef GBTD_NN_OPS_H
#define GBTD_NN_OPS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ============================================================================================
 * Convolution (2-d, dilation 1, zero padding, groups)
 *
 *   x  (n, c_in, h, w)                     input
 *   wt (c_out, c_in / groups, kh, kw)      weight (PyTorch layout)
 *   b  (c_out)                             bias, may be NULL
 *   y  (n, c_out, h_out, w_out)            h_out = (h + 2 pad - kh) / stride + 1 (floor), same for w
 *   y[n, o, i, j] = b[o] + sum_{c in group(o), p, q} wt[o, c - g0, p, q] x[n, c, i*s + p - pad, j*s + q - pad]
 *   where group(o) = channels g0 .. g0 + c_in/groups - 1 with g0 = (o / (c_out/groups)) * (c_in/groups).
 * 1x1 stride-1 pad-0: one GEMM per image (and group), no im2col; dense ones on maps whose pixel
 *   count is a multiple of 16 (28x28, 16x16, 12x12), with AVX2 but not AVX-512 (or with
 *   GBTD_NN_NO_AVX512=1), through gbtd's streaming GEMM (forward and backward-data: no packing,
 *   the next 16-pixel panel prefetched, outputs stored non-temporally; the backward makes the
 *   weight gradient from the same panels, in one pass over dy and x, off with
 *   GBTD_NN_NO_FUSED_BWD=1), the rest through OpenBLAS sgemm. Off with GBTD_NN_NO_STREAM=1;
 * dense 3x3 stride-1 pad-1 with c_in >= 64 on maps of 144+ outputs, or c_in >= 32 on 784+ (half
 *   those channel counts where AVX-512 is not in use), up to 1,024 2x2 tiles per image (about
 *   62x62):
 *   Winograd F(2x2, 3x3) (16 multiplications per 2x2 outputs instead of 36; forward, backward-
 *   data on the rotated weights, backward-weight by F(3x3, 2x2)), the 16 products summed over
 *   channels as GEMMs over the tiles of a few images at once. Its error bound is normwise (a
 *   tile's transforms mix all 16 inputs under it), but measured against float64 it is as
 *   accurate as the direct sums (relative 2-norm error 2-4e-7 against 3-6e-7 at 32-128
 *   channels). Off with GBTD_NN_NO_WINOGRAD=1;
 * grouped (1 < groups < c_in), and dense k x k (k > 1) with c_in <= 128: each (image, group)
 *   packed into zero-padded phase planes (stride x stride of them) and an implicit-im2col GEMM
 *   with register-blocked AVX-512 / AVX2 kernels (no im2col copy), OpenMP over images x groups;
 * dense with c_in > 128, and dense 1x1 with a stride: im2col (a subsample for 1x1) + OpenBLAS
 *   sgemm;
 * dense through OpenBLAS on maps of under 102 output pixels: the im2col matrices (the inputs
 *   themselves for 1x1 stride 1) of several images side by side, one GEMM per chunk of images;
 * groups = c_in (depthwise, any channel multiplier c_out / c_in): phase planes and one
 *   register-blocked pass per output plane; given no workspace (or a stride above 4, more than
 *   64 taps) it falls back to direct loops, so depthwise calls never fail for lack of workspace.
 * Environment: GBTD_NN_NO_AVX512=1 keeps the kernels to AVX2, GBTD_NN_NO_SIMD=1 to portable C.
 * ============================================================================================ */
typedef struct gbtd_conv2d_shape {
    int64_t n, c_in, h, w;   /* input batch, channels, height, width */
    int64_t c_out, kh, kw;   /* output channels, kernel height and width */
    int64_t stride, pad;     /* same in both spatial directions; stride >= 1, pad >= 0 */
    int64_t groups;          /* divides c_in and c_out; 1 = dense, c_in = depthwise */
    int64_t h_out, w_out;    /* filled by gbtd_conv2d_shape_init */
} gbtd_conv2d_shape;

/* Fill s->h_out / s->w_out and validate the shape. GBTD_EINVAL for sizes < 1 (n may be >= 1 only),
 * pad < 0, a kernel larger than the padded input; GBTD_ESHAPE if groups does not divide
 * c_in and c_out. Every conv kernel calls this itself; callers use it to size buffers. */
int gbtd_conv2d_shape_init(gbtd_conv2d_shape *s);
/* A shape with the usual fields set (h_out / w_out filled, validity NOT checked: call _init). */
gbtd_conv2d_shape gbtd_conv2d_shape_make(int64_t n, int64_t c_in, int64_t h, int64_t w,
                                         int64_t c_out, int64_t k, int64_t stride, int64_t pad,
                                         int64_t groups);
/* Number of weight elements c_out * (c_in / groups) * kh * kw. */
int64_t gbtd_conv2d_weight_count(const gbtd_conv2d_shape *s);
/* Multiply-adds of one forward pass (n * c_out * h_out * w_out * (c_in/groups) * kh * kw). */
int64_t gbtd_conv2d_macs(const gbtd_conv2d_shape *s);
/* Workspace (in floats) that forward and backward need to run on up to `threads` threads
 * (threads <= 0 means gbtd_get_threads()). Enough for both directions; 0 is possible. */
size_t gbtd_conv2d_workspace_size(const gbtd_conv2d_shape *s, int threads);

/* y = conv(x, wt) + b. y is overwritten. */
int gbtd_conv2d_forward(const gbtd_conv2d_shape *s, const float *x, const float *wt,
                        const float *b, float *y, float *ws, size_t ws_len);
/* Given dy (n, c_out, h_out, w_out): dx += conv^T(dy) (backward-data), dw += dy (*) x
 * (backward-weight), db += sum over n, i, j of dy. Each of dx, dw, db may be NULL. */
int gbtd_conv2d_backward(const gbtd_conv2d_shape *s, const float *x, const float *wt,
                         const float *dy, float *dx, float *dw, float *db, float *ws,
                         size_t ws_len);
int gbtd_conv2d_forward_ref(const gbtd_conv2d_shape *s, const float *x, const float *wt,
                            const float *b, float *y);
int gbtd_conv2d_backward_ref(const gbtd_conv2d_shape *s, const float *x, const float *wt,
                             const float *dy, float *dx, float *dw, float *db);
int gbtd_conv2d_forward_refd(const gbtd_conv2d_shape *s, const double *x, const double *wt,
                             const double *b, double *y);
int gbtd_conv2d_backward_refd(const gbtd_conv2d_shape *s, const double *x, const double *wt,
                              const double *dy, double *dx, double *dw, double *db);

/* ============================================================================================
 * Batch normalisation over (n, hw) per channel, PyTorch semantics
 *
 *   x, y (n, c, hw)   hw = h * w; gamma, beta (c); running_mean, running_var (c)
 *   mean (c), rstd (c): cache written by the training forward, read by the backward.
 * Training:   mu = mean over (n, hw), var = biased variance, rstd = 1 / sqrt(var + eps),
 *             y = gamma * (x - mu) * rstd + beta;
 *             running_mean = (1 - momentum) running_mean + momentum mu,
 *             running_var  = (1 - momentum) running_var  + momentum var * m / (m - 1), m = n*hw
 *             (PyTorch's momentum, default 0.1; MXNet's momentum 0.9 is PyTorch's 0.1).
 *             running_mean / running_var may be NULL (no update). m = 1 gives GBTD_EINVAL.
 * Evaluation: y = gamma * (x - running_mean) / sqrt(running_var + eps) + beta.
 * Backward (training statistics): with xh = (x - mu) rstd,
 *             dx += gamma rstd (dy - mean(dy) - xh mean(dy xh)),  dgamma += sum dy xh,
 *             dbeta += sum dy.
 * The _relu variants fuse y = max(0, bn(x)); their backward takes y to mask dy (y > 0).
 * gamma may be NULL (1) and beta NULL (0) in the forward (affine = False).
 * ============================================================================================ */
typedef struct gbtd_bn_shape {
    int64_t n, c, hw;
} gbtd_bn_shape;

int gbtd_bn_forward_train(const gbtd_bn_shape *s, const float *x, const float *gamma,
                          const float *beta, float eps, float momentum, float *running_mean,
                          float *running_var, float *mean, float *rstd, float *y);
int gbtd_bn_forward_eval(const gbtd_bn_shape *s, const float *x, const float *gamma,
                         const float *beta, float eps, const float *running_mean,
                         const float *running_var, float *y);
int gbtd_bn_backward(const gbtd_bn_shape *s, const float *x, const float *gamma,
                     const float *mean, const float *rstd, const float *dy, float *dx,
                     float *dgamma, float *dbeta);
int gbtd_bn_relu_forward_train(const gbtd_bn_shape *s, const float *x, const float *gamma,
                               const float *beta, float eps, float momentum,
                               float *running_mean, float *running_var, float *mean,
                               float *rstd, float *y);
int gbtd_bn_relu_forward_eval(const gbtd_bn_shape *s, const float *x, const float *gamma,
                              const float *beta, float eps, const float *running_mean,
                              const float *running_var, float *y);
/* y is the output of gbtd_bn_relu_forward_train; gamma NULL means 1. */
int gbtd_bn_relu_backward(const gbtd_bn_shape *s, const float *x, const float *gamma,
                          const float *mean, const float *rstd, const float *y,
                          const float *dy, float *dx, float *dgamma, float *dbeta);
int gbtd_bn_forward_train_ref(const gbtd_bn_shape *s, const float *x, const float *gamma,
                              const float *beta, float eps, float momentum,
                              float *running_mean, float *running_var, float *mean,
                              float *rstd, float *y);
int gbtd_bn_forward_eval_ref(const gbtd_bn_shape *s, const float *x, const float *gamma,
                             const float *beta, float eps, const float *running_mean,
                             const float *running_var, float *y);
int gbtd_bn_backward_ref(const gbtd_bn_shape *s, const float *x, const float *gamma,
                         const float *mean, const float *rstd, const float *dy, float *dx,
                         float *dgamma, float *dbeta);
int gbtd_bn_forward_train_refd(const gbtd_bn_shape *s, const double *x, const double *gamma,
                               const double *beta, double eps, double momentum,
                               double *running_mean, double *running_var, double *mean,
                               double *rstd, double *y);
int gbtd_bn_forward_eval_refd(const gbtd_bn_shape *s, const double *x, const double *gamma,
                              const double *beta, double eps, const double *running_mean,
                              const double *running_var, double *y);
int gbtd_bn_backward_refd(const gbtd_bn_shape *s, const double *x, const double *gamma,
                          const double *mean, const double *rstd, const double *dy,
                          double *dx, double *dgamma, double *dbeta);

/* ============================================================================================
 * ReLU and residual add (element-wise, any length `len`)
 *   relu:     y = max(0, x)            backward: dx += dy * (y > 0)   (y may alias x)
 *   add:      y = a + b                backward: da += dy, db += dy   (y may alias a or b)
 *   add_relu: y = max(0, a + b)        backward: da += dy (y > 0), db += dy (y > 0)
 * ============================================================================================ */
int gbtd_relu_forward(int64_t len, const float *x, float *y);
int gbtd_relu_backward(int64_t len, const float *y, const float *dy, float *dx);
int gbtd_add_forward(int64_t len, const float *a, const float *b, float *y);
int gbtd_add_backward(int64_t len, const float *dy, float *da, float *db);
int gbtd_add_relu_forward(int64_t len, const float *a, const float *b, float *y);
int gbtd_add_relu_backward(int64_t len, const float *y, const float *dy, float *da, float *db);
int gbtd_relu_forward_refd(int64_t len, const double *x, double *y);
int gbtd_relu_backward_refd(int64_t len, const double *y, const double *dy, double *dx);

/* ============================================================================================
 * Pooling
 *   x (n, c, h, w) -> y (n, c, h_out, w_out), h_out = (h + 2 pad - k) / stride + 1 (floor, as
 *   PyTorch with ceil_mode = False); pad <= k / 2.
 *   max: padding never wins (acts as -inf); argmax (n, c, h_out, w_out) int32 cache holds the
 *        index y * w + x of the winner inside its input plane (first maximum in scan order);
 *        backward: dx[argmax] += dy.
 *   avg: mean over the k x k window INCLUDING zero padding (PyTorch count_include_pad = True);
 *        backward: dx[window] += dy / (k k).
 *   global average pool: x (n, c, h, w) -> y (n, c) mean over h w; backward dx += dy / (h w).
 * ============================================================================================ */
typedef struct gbtd_pool2d_shape {
    int64_t n, c, h, w;
    int64_t k, stride, pad;
    int64_t h_out, w_out; /* filled by gbtd_pool2d_shape_init */
} gbtd_pool2d_shape;

int gbtd_pool2d_shape_init(gbtd_pool2d_shape *s);
gbtd_pool2d_shape gbtd_pool2d_shape_make(int64_t n, int64_t c, int64_t h, int64_t w, int64_t k,
                                         int64_t stride, int64_t pad);

int gbtd_maxpool2d_forward(const gbtd_pool2d_shape *s, const float *x, float *y,
                           int32_t *argmax);
int gbtd_maxpool2d_backward(const gbtd_pool2d_shape *s, const int32_t *argmax, const float *dy,
                            float *dx);
int gbtd_avgpool2d_forward(const gbtd_pool2d_shape *s, const float *x, float *y);
int gbtd_avgpool2d_backward(const gbtd_pool2d_shape *s, const float *dy, float *dx);
int gbtd_global_avgpool_forward(int64_t n, int64_t c, int64_t hw, const float *x, float *y);
int gbtd_global_avgpool_backward(int64_t n, int64_t c, int64_t hw, const float *dy, float *dx);
int gbtd_maxpool2d_forward_refd(const gbtd_pool2d_shape *s, const double *x, double *y,
                                int32_t *argmax);
int gbtd_maxpool2d_backward_refd(const gbtd_pool2d_shape *s, const int32_t *argmax,
                                 const double *dy, double *dx);
int gbtd_avgpool2d_forward_refd(const gbtd_pool2d_shape *s, const double *x, double *y);
int gbtd_avgpool2d_backward_refd(const gbtd_pool2d_shape *s, const double *dy, double *dx);
int gbtd_global_avgpool_forward_refd(int64_t n, int64_t c, int64_t hw, const double *x,
                                     double *y);
int gbtd_global_avgpool_backward_refd(int64_t n, int64_t c, int64_t hw, const double *dy,
                                      double *dx);

/* ============================================================================================
 * Linear layer: x (n, in) -> y (n, out) = x wt^T + b,  wt (out, in), b (out) or NULL
 *   backward: dx += dy wt, dw += dy^T x, db += sum over rows of dy.
 * ============================================================================================ */
int gbtd_linear_forward(int64_t n, int64_t in, int64_t out, const float *x, const float *wt,
                        const float *b, float *y);
int gbtd_linear_backward(int64_t n, int64_t in, int64_t out, const float *x, const float *wt,
                         const float *dy, float *dx, float *dw, float *db);
int gbtd_linear_forward_ref(int64_t n, int64_t in, int64_t out, const float *x,
                            const float *wt, const float *b, float *y);
int gbtd_linear_backward_ref(int64_t n, int64_t in, int64_t out, const float *x,
                             const float *wt, const float *dy, float *dx, float *dw, float *db);
int gbtd_linear_forward_refd(int64_t n, int64_t in, int64_t out, const double *x,
                             const double *wt, const double *b, double *y);
int gbtd_linear_backward_refd(int64_t n, int64_t in, int64_t out, const double *x,
                              const double *wt, const double *dy, double *dx, double *dw,
                              double *db);

/* ============================================================================================
 * Softmax cross-entropy with label smoothing, mean over the batch (PyTorch
 * F.cross_entropy(logits, labels, label_smoothing = eps)):
 *   logits (n, k), labels (n) in [0, k), probs (n, k) cache = softmax(logits) per row,
 *   q = (1 - eps) onehot(label) + eps / k,  loss = (1/n) sum_rows -sum_j q_j log p_j.
 *   losses (n) per-row loss, may be NULL. Labels out of range: GBTD_ERANGE (nothing written).
 *   backward: dlogits += dloss (p - q) / n  (dloss = 1 for a plain loss).
 * ============================================================================================ */
int gbtd_xent_forward(int64_t n, int64_t k, const float *logits, const int32_t *labels,
                      float smoothing, float *probs, float *losses, float *loss);
int gbtd_xent_backward(int64_t n, int64_t k, const float *probs, const int32_t *labels,
                       float smoothing, float dloss, float *dlogits);
int gbtd_xent_forward_refd(int64_t n, int64_t k, const double *logits, const int32_t *labels,
                           double smoothing, double *probs, double *losses, double *loss);
int gbtd_xent_backward_refd(int64_t n, int64_t k, const double *probs, const int32_t *labels,
                            double smoothing, double dloss, double *dlogits);

/* ============================================================================================
 * "Option A" shortcut of the CIFAR ResNets: subsample by 2 and pad channels with zeros.
 *   x (n, c, h, w) -> y (n, c + 2 pad_c, (h + 1) / 2, (w + 1) / 2),
 *   y[n, pad_c + c', i, j] = x[n, c', 2 i, 2 j]; the pad_c channels before and after are 0.
 *   (PyTorch: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad_c, pad_c)); pad_c = c_out / 4.)
 *   backward: dx[n, c', 2 i, 2 j] += dy[n, pad_c + c', i, j].
 * ============================================================================================ */
int gbtd_shortcut_a_forward(int64_t n, int64_t c, int64_t h, int64_t w, int64_t pad_c,
                            const float *x, float *y);
int gbtd_shortcut_a_backward(int64_t n, int64_t c, int64_t h, int64_t w, int64_t pad_c,
                             const float *dy, float *dx);
int gbtd_shortcut_a_forward_refd(int64_t n, int64_t c, int64_t h, int64_t w, int64_t pad_c,
                                 const double *x, double *y);
int gbtd_shortcut_a_backward_refd(int64_t n, int64_t c, int64_t h, int64_t w, int64_t pad_c,
                                  const double *dy, double *dx);

#ifdef __cplusplus
}
#endif
#endif
