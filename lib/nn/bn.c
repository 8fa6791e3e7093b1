/* gbtd nn: batch normalisation (training and evaluation, optionally fused with ReLU), OpenMP
 * over blocks of channels (dynamic schedule: channels are independent, so the result never
 * depends on it or on the block size). Plane sums use eight float partial sums (vectorisable)
 * added into doubles. */
#include <math.h>
#include <stdint.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "nn/gemm_small.h"
#include "nn/ops_internal.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define BN_X86 1
#include <immintrin.h>
#endif

/* The ReLU mask of a backward pass over one plane: none (y NULL, map 0), y > 0 (y the forward's
 * output), or (map) x sc + sh > 0, recomputed from the input with the forward's affine map by the
 * operations apply() did (a multiply, then an add): the same mask, without reading y. */
typedef struct bn_mask {
    const float *y;
    int map;
    float sc, sh;
} bn_mask;

/* The gate of element i: dy[i] where the mask lets it through, else 0. */
static inline float gate_(const bn_mask *mk, const float *x, const float *dy, int64_t i)
{
    const float d = dy[i];
    if (mk->y) return mk->y[i] > 0.0f ? d : 0.0f;
    if (mk->map) {
        const float v = x[i] * mk->sc + mk->sh;
        return v > 0.0f ? d : 0.0f;
    }
    return d;
}

/* Eight-way partial sums let the compiler vectorise reductions without -ffast-math. */
/* Sum of x - pivot over a plane (pivot 0: the plain sum). */
static float plane_sum_generic(const float *x, int64_t len, float pivot)
{
    float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= len; i += 8)
        for (int j = 0; j < 8; j++) a[j] += x[i + j] - pivot;
    float t = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    for (; i < len; i++) t += x[i] - pivot;
    return t;
}

static float plane_sq_dev_generic(const float *x, int64_t len, float mu)
{
    float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= len; i += 8)
        for (int j = 0; j < 8; j++) {
            const float d = x[i + j] - mu;
            a[j] += d * d;
        }
    float t = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    for (; i < len; i++) t += (x[i] - mu) * (x[i] - mu);
    return t;
}

/* Sums of dy' and dy' (x - mu) over one plane, dy' = dy through the mask. */
static void plane_bwd_sums_generic(const float *x, const bn_mask *mk0, const float *dy,
                                   int64_t len, float mu, double *sdy, double *sdyx)
{
    const bn_mask mask = *mk0, *mk = &mask;
    float a[8] = {0, 0, 0, 0, 0, 0, 0, 0}, b[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    const float *y = mk->y;
    if (y) {
        for (; i + 8 <= len; i += 8)
            for (int j = 0; j < 8; j++) {
                /* both loads unconditional, so the select vectorises (a blend, no branch) */
                const float d = dy[i + j], yv = y[i + j];
                const float g = yv > 0.0f ? d : 0.0f;
                a[j] += g;
                b[j] += g * (x[i + j] - mu);
            }
    } else if (mk->map) {
        for (; i + 8 <= len; i += 8)
            for (int j = 0; j < 8; j++) {
                const float d = dy[i + j], v = x[i + j] * mk->sc + mk->sh;
                const float g = v > 0.0f ? d : 0.0f;
                a[j] += g;
                b[j] += g * (x[i + j] - mu);
            }
    } else {
        for (; i + 8 <= len; i += 8)
            for (int j = 0; j < 8; j++) {
                a[j] += dy[i + j];
                b[j] += dy[i + j] * (x[i + j] - mu);
            }
    }
    float ta = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    float tb = ((b[0] + b[1]) + (b[2] + b[3])) + ((b[4] + b[5]) + (b[6] + b[7]));
    for (; i < len; i++) {
        const float g = gate_(mk, x, dy, i);
        ta += g;
        tb += g * (x[i] - mu);
    }
    *sdy += ta;
    *sdyx += tb;
}

static void apply_generic(const float *x, float *y, int64_t len, float scale, float shift,
                          int relu)
{
    if (relu)
        for (int64_t i = 0; i < len; i++) {
            const float v = x[i] * scale + shift;
            y[i] = v > 0.0f ? v : 0.0f;
        }
    else
        for (int64_t i = 0; i < len; i++) y[i] = x[i] * scale + shift;
}

/* One element of a dy' + bx (x - mu) + k, dy' = dy through the mask (the AVX2 kernel's tails
 * use it too, so that they compute exactly what the portable loop does). */
static inline float dx_at_(const bn_mask *mk, const float *xs, const float *ds, int64_t i,
                           float mu, float a, float bx, float k)
{
    return a * gate_(mk, xs, ds, i) + bx * (xs[i] - mu) + k;
}

/* dx += a dy' + bx (x - mu) + k (set: dx = ...), dy' = dy through the mask. */
static void plane_dx_generic(const float *xs, const bn_mask *mk0, const float *ds, float *o,
                             int64_t len, float mu, float a, float bx, float k, int set)
{
    /* a local copy: the stores to o could otherwise alias the mask's fields */
    const bn_mask mask = *mk0, *mk = &mask;
    if (mk->y || mk->map) {
        for (int64_t i = 0; i < len; i++) {
            const float v = dx_at_(mk, xs, ds, i, mu, a, bx, k);
            o[i] = set ? v : o[i] + v;
        }
    } else {
        for (int64_t i = 0; i < len; i++) {
            const float v = a * ds[i] + bx * (xs[i] - mu) + k;
            o[i] = set ? v : o[i] + v;
        }
    }
}

#ifdef BN_X86
/* AVX2 twins, bit for bit equal to the portable loops: eight lanes summed in the same order as
 * the eight-way partial sums, and separate multiplies and adds (no FMA) in the same order, so
 * the ReLU masks and every statistic do not depend on the instruction set. */
__attribute__((target("avx2,fma"))) static float lanes_sum(__m256 v)
{
    float a[8];
    _mm256_storeu_ps(a, v);
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

__attribute__((target("avx2,fma"))) static float plane_sum_avx2(const float *x, int64_t len,
                                                                 float pivot)
{
    const __m256 pv = _mm256_set1_ps(pivot);
    __m256 a = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= len; i += 8) a = _mm256_add_ps(a, _mm256_sub_ps(_mm256_loadu_ps(x + i), pv));
    float t = lanes_sum(a);
    for (; i < len; i++) t += x[i] - pivot;
    return t;
}

__attribute__((target("avx2,fma"))) static float plane_sq_dev_avx2(const float *x, int64_t len,
                                                                    float mu)
{
    const __m256 m = _mm256_set1_ps(mu);
    __m256 a = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= len; i += 8) {
        const __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + i), m);
        a = _mm256_add_ps(a, _mm256_mul_ps(d, d));
    }
    float t = lanes_sum(a);
    for (; i < len; i++) t += (x[i] - mu) * (x[i] - mu);
    return t;
}

/* Eight lanes of dy through the mask (xv: the same lanes of x). */
__attribute__((target("avx2,fma"))) static inline __m256 gate_lanes_(const bn_mask *mk,
                                                                     const float *dy, int64_t i,
                                                                     __m256 xv)
{
    const __m256 z = _mm256_setzero_ps(), g = _mm256_loadu_ps(dy + i);
    if (mk->y) return _mm256_and_ps(g, _mm256_cmp_ps(_mm256_loadu_ps(mk->y + i), z, _CMP_GT_OQ));
    if (mk->map) {
        const __m256 v = _mm256_add_ps(_mm256_mul_ps(xv, _mm256_set1_ps(mk->sc)),
                                       _mm256_set1_ps(mk->sh));
        return _mm256_and_ps(g, _mm256_cmp_ps(v, z, _CMP_GT_OQ));
    }
    return g;
}

__attribute__((target("avx2,fma"))) static void plane_bwd_sums_avx2(const float *x,
                                                                     const bn_mask *mk0,
                                                                     const float *dy,
                                                                     int64_t len, float mu,
                                                                     double *sdy, double *sdyx)
{
    const bn_mask mask = *mk0, *mk = &mask;
    const __m256 m = _mm256_set1_ps(mu), z = _mm256_setzero_ps();
    __m256 a = z, b = z;
    int64_t i = 0;
    for (; i + 8 <= len; i += 8) {
        const __m256 xv = _mm256_loadu_ps(x + i), g = gate_lanes_(mk, dy, i, xv);
        a = _mm256_add_ps(a, g);
        b = _mm256_add_ps(b, _mm256_mul_ps(g, _mm256_sub_ps(xv, m)));
    }
    float ta = lanes_sum(a), tb = lanes_sum(b);
    for (; i < len; i++) {
        const float g = gate_(mk, x, dy, i);
        ta += g;
        tb += g * (x[i] - mu);
    }
    *sdy += ta;
    *sdyx += tb;
}

__attribute__((target("avx2,fma"))) static void apply_avx2(const float *x, float *y, int64_t len,
                                                            float scale, float shift, int relu,
                                                            int stream)
{
    const __m256 sc = _mm256_set1_ps(scale), sh = _mm256_set1_ps(shift), z = _mm256_setzero_ps();
    int64_t i = 0;
    if (stream) {
        /* non-temporal stores from the first 32-byte boundary: no read of y's lines first */
        for (; i < len && ((uintptr_t)(y + i) & 31u); i++) {
            const float v = x[i] * scale + shift;
            y[i] = relu ? (v > 0.0f ? v : 0.0f) : v;
        }
        for (; i + 8 <= len; i += 8) {
            __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), sc), sh);
            if (relu) v = _mm256_max_ps(v, z);
            _mm256_stream_ps(y + i, v);
        }
    }
    for (; i + 8 <= len; i += 8) {
        __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(x + i), sc), sh);
        if (relu) v = _mm256_max_ps(v, z);
        _mm256_storeu_ps(y + i, v);
    }
    for (; i < len; i++) {
        const float v = x[i] * scale + shift;
        y[i] = relu ? (v > 0.0f ? v : 0.0f) : v;
    }
}

/* Eight lanes (from i) of a dy' + bx (x - mu) + k, dy' = dy through the mask, in the portable
 * loop's order (separate multiplies and adds). */
__attribute__((target("avx2,fma"))) static inline __m256 dx_lanes_(const float *xs,
                                                                   const bn_mask *mk,
                                                                   const float *ds, int64_t i,
                                                                   __m256 va, __m256 vb,
                                                                   __m256 vk, __m256 m)
{
    const __m256 xv = _mm256_loadu_ps(xs + i), g = gate_lanes_(mk, ds, i, xv);
    const __m256 t = _mm256_add_ps(_mm256_mul_ps(va, g), _mm256_mul_ps(vb, _mm256_sub_ps(xv, m)));
    return _mm256_add_ps(t, vk);
}

__attribute__((target("avx2,fma"))) static void plane_dx_avx2(const float *xs,
                                                               const bn_mask *mk0,
                                                               const float *ds, float *o,
                                                               int64_t len, float mu, float a,
                                                               float bx, float k, int set,
                                                               int stream)
{
    const bn_mask mask = *mk0, *mk = &mask; /* see plane_dx_generic */
    const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(bx), vk = _mm256_set1_ps(k);
    const __m256 m = _mm256_set1_ps(mu);
    int64_t i = 0;
    if (set && stream) {
        /* stored, not accumulated: non-temporal stores from the first 32-byte boundary */
        for (; i < len && ((uintptr_t)(o + i) & 31u); i++)
            o[i] = dx_at_(mk, xs, ds, i, mu, a, bx, k);
        for (; i + 8 <= len; i += 8)
            _mm256_stream_ps(o + i, dx_lanes_(xs, mk, ds, i, va, vb, vk, m));
    }
    for (; i + 8 <= len; i += 8) {
        const __m256 v = dx_lanes_(xs, mk, ds, i, va, vb, vk, m);
        _mm256_storeu_ps(o + i, set ? v : _mm256_add_ps(_mm256_loadu_ps(o + i), v));
    }
    /* the last len % 8 elements in line: a call to the portable loop per plane (with a copy of
     * the mask) cost a bottleneck-29 step 3 % on an AMD Zen 3, where planes of 7x7 and 14x14 maps
     * end in 1 and 4 of them (same operations, same values) */
    for (; i < len; i++) {
        const float v = dx_at_(mk, xs, ds, i, mu, a, bx, k);
        o[i] = set ? v : o[i] + v;
    }
}
#endif

static float plane_sum(const float *x, int64_t len, float pivot)
{
#ifdef BN_X86
    if (nn_have_avx2()) return plane_sum_avx2(x, len, pivot);
#endif
    return plane_sum_generic(x, len, pivot);
}

static float plane_sq_dev(const float *x, int64_t len, float mu)
{
#ifdef BN_X86
    if (nn_have_avx2()) return plane_sq_dev_avx2(x, len, mu);
#endif
    return plane_sq_dev_generic(x, len, mu);
}

static void plane_bwd_sums(const float *x, const bn_mask *mk, const float *dy, int64_t len,
                           float mu, double *sdy, double *sdyx)
{
#ifdef BN_X86
    if (nn_have_avx2()) {
        plane_bwd_sums_avx2(x, mk, dy, len, mu, sdy, sdyx);
        return;
    }
#endif
    plane_bwd_sums_generic(x, mk, dy, len, mu, sdy, sdyx);
}

static void apply(const float *x, float *y, int64_t len, float scale, float shift, int relu,
                  int stream)
{
#ifdef BN_X86
    if (nn_have_avx2()) {
        apply_avx2(x, y, len, scale, shift, relu, stream);
        return;
    }
#endif
    (void)stream;
    apply_generic(x, y, len, scale, shift, relu);
}

/* Outputs larger than nn_stream_bytes are written with non-temporal stores (ops_internal.h). */
static int stream_out(int64_t count) { return count * (int64_t)sizeof(float) > nn_stream_bytes; }

/* Orders the non-temporal stores of this thread before what follows the parallel region. */
static void stream_fence(int stream)
{
#ifdef BN_X86
    if (stream && nn_have_avx2()) _mm_sfence();
#else
    (void)stream;
#endif
}

static void plane_dx(const float *xs, const bn_mask *mk, const float *ds, float *o, int64_t len,
                     float mu, float a, float bx, float k, int set, int stream)
{
#ifdef BN_X86
    if (nn_have_avx2()) {
        plane_dx_avx2(xs, mk, ds, o, len, mu, a, bx, k, set, stream);
        return;
    }
#endif
    (void)stream;
    plane_dx_generic(xs, mk, ds, o, len, mu, a, bx, k, set);
}

/* ---- blocks of channels ---------------------------------------------------------------------
 * A channel's planes lie C HW floats apart: reading a tensor channel by channel, plane by plane,
 * the hardware prefetchers restart at every plane (measured, 2 threads, 128 x 128 x 28 x 28: 18
 * GB/s, against 30 GB/s image by image; 16 against 34 GB/s at 512 x 7 x 7). The passes therefore
 * take a block of consecutive channels at a time and, inside it, image by image: an image's
 * planes of the block are one contiguous run. A block (all images) is sized to stay in the
 * last-level cache from one pass to the next (nn_bn_block_bytes, ops_internal.h). Each channel
 * still adds its planes in image order, so every statistic is the one of a channel at a time, bit
 * for bit. */
enum { BN_MAX_BLOCK = 256 };
int64_t nn_bn_block_bytes = (int64_t)4 << 20;

/* Channels per block for passes over `arrays` tensors: at most nn_bn_block_bytes of them, at
 * most BN_MAX_BLOCK, and at least two blocks per thread where the channels allow. */
static int64_t block_channels(const gbtd_bn_shape *s, int arrays)
{
    const int64_t per = s->n * s->hw * (int64_t)sizeof(float) * arrays;
    int64_t cb = nn_bn_block_bytes / per;
    int nt = 1;
#ifdef _OPENMP
    nt = omp_get_max_threads();
#endif
    const int64_t fair = (s->c + 2 * nt - 1) / (2 * nt);
    if (cb > fair) cb = fair;
    if (cb > BN_MAX_BLOCK) cb = BN_MAX_BLOCK;
    return cb < 1 ? 1 : cb;
}

/* Batch statistics of the nc channels c0 .. c0 + nc - 1 of x (two passes: the means, then squared
 * deviations from them, no cancellation), the running averages updated, the means and 1 / sd
 * stored for the backward, and the affine maps y = scale[j] x + shift[j] (j = c - c0) that
 * normalise the channels. */
static void train_block_(const gbtd_bn_shape *s, int64_t c0, int64_t nc, const float *x,
                         const float *gamma, const float *beta, float eps, float momentum,
                         float *running_mean, float *running_var, float *mean, float *rstd,
                         float *scale, float *shift)
{
    const int64_t N = s->n, C = s->c, HW = s->hw, m = N * HW;
    /* A single pass merging per-plane statistics saves one read of x (from the cache: a
     * block's planes stay there between the passes), but moves the rounding of the statistics;
     * the whole-net PyTorch checks, whose float64 reference does not guard the ReLU kinks, flip
     * at such changes, so the statistics stay as the portable loops had them. */
    double sum[BN_MAX_BLOCK], sq[BN_MAX_BLOCK];
    float muf[BN_MAX_BLOCK];
    for (int64_t j = 0; j < nc; j++) sum[j] = sq[j] = 0.0;
    for (int64_t n = 0; n < N; n++) {
        const float *xn = x + (n * C + c0) * HW;
        for (int64_t j = 0; j < nc; j++) sum[j] += (double)plane_sum(xn + j * HW, HW, 0.0f);
    }
    for (int64_t j = 0; j < nc; j++) muf[j] = (float)(sum[j] / (double)m);
    for (int64_t n = 0; n < N; n++) {
        const float *xn = x + (n * C + c0) * HW;
        for (int64_t j = 0; j < nc; j++) sq[j] += plane_sq_dev(xn + j * HW, HW, muf[j]);
    }
    for (int64_t j = 0; j < nc; j++) {
        const int64_t c = c0 + j;
        const double mu = sum[j] / (double)m;
        /* The float mean's rounding error shifts sq by m (mu - (float)mu)^2: negligible. */
        const double var = sq[j] / (double)m;
        const double r = 1.0 / sqrt(var + (double)eps);
        const double g = gamma ? (double)gamma[c] : 1.0, b = beta ? (double)beta[c] : 0.0;
        scale[j] = (float)(g * r);
        shift[j] = (float)(b - g * r * mu);
        mean[c] = (float)mu;
        rstd[c] = (float)r;
        if (running_mean)
            running_mean[c] = (float)((1.0 - momentum) * running_mean[c] + (double)momentum * mu);
        if (running_var)
            running_var[c] = (float)((1.0 - momentum) * running_var[c] +
                                     (double)momentum * var * (double)m / (double)(m - 1));
    }
}

/* The affine map of channel c from the running statistics (evaluation). */
static void eval_channel_(int64_t c, const float *gamma, const float *beta, float eps,
                          const float *running_mean, const float *running_var, float *scale,
                          float *shift)
{
    const double r = 1.0 / sqrt((double)running_var[c] + (double)eps);
    const double g = gamma ? (double)gamma[c] : 1.0, b = beta ? (double)beta[c] : 0.0;
    *scale = (float)(g * r);
    *shift = (float)(b - g * r * running_mean[c]);
}

static int forward_train(const char *fn, const gbtd_bn_shape *s, const float *x,
                         const float *gamma, const float *beta, float eps, float momentum,
                         float *running_mean, float *running_var, float *mean, float *rstd,
                         float *y, int relu, float *map_scale, float *map_shift)
{
    GBTD_CHECK(nn_bn_shape(fn, s));
    NN_NONNULL(fn, x);
    NN_NONNULL(fn, mean);
    NN_NONNULL(fn, rstd);
    NN_NONNULL(fn, y);
    const int64_t N = s->n, C = s->c, HW = s->hw, m = N * HW;
    if (m < 2) return gbtd_error(GBTD_EINVAL, "%s: batch statistics need n*h*w >= 2", fn);
    if (!(eps > 0.0f)) return gbtd_error(GBTD_EINVAL, "%s: eps = %g must be > 0", fn, (double)eps);
    const int stream = stream_out(m * C);
    const int64_t cb = block_channels(s, 1);
#pragma omp parallel
    {
#pragma omp for schedule(dynamic, 1) nowait
    for (int64_t c0 = 0; c0 < C; c0 += cb) {
        const int64_t nc = C - c0 < cb ? C - c0 : cb;
        float sc_own[BN_MAX_BLOCK], sh_own[BN_MAX_BLOCK];
        /* the affine maps go straight to the caller's map when it keeps one */
        float *scale = map_scale ? map_scale + c0 : sc_own;
        float *shift = map_shift ? map_shift + c0 : sh_own;
        train_block_(s, c0, nc, x, gamma, beta, eps, momentum, running_mean, running_var, mean,
                     rstd, scale, shift);
        /* the last images' planes are the ones most likely still cached after the statistics:
         * the element-wise pass takes the images in reverse order (each output is computed
         * alone, so the order does not change it) */
        for (int64_t n = N - 1; n >= 0; n--)
            for (int64_t j = 0; j < nc; j++) {
                const int64_t off = (n * C + c0 + j) * HW;
                apply(x + off, y + off, HW, scale[j], shift[j], relu, stream);
            }
    }
    stream_fence(stream);
    }
    return GBTD_OK;
}

static int forward_eval(const char *fn, const gbtd_bn_shape *s, const float *x,
                        const float *gamma, const float *beta, float eps,
                        const float *running_mean, const float *running_var, float *y, int relu)
{
    GBTD_CHECK(nn_bn_shape(fn, s));
    NN_NONNULL(fn, x);
    NN_NONNULL(fn, running_mean);
    NN_NONNULL(fn, running_var);
    NN_NONNULL(fn, y);
    const int64_t N = s->n, C = s->c, HW = s->hw;
    const int stream = stream_out(N * C * HW);
    /* no statistics to gather: plane after plane in memory order (see block_channels) */
#pragma omp parallel
    {
#pragma omp for schedule(static) nowait
    for (int64_t t = 0; t < N * C; t++) {
        float scale, shift;
        eval_channel_(t % C, gamma, beta, eps, running_mean, running_var, &scale, &shift);
        apply(x + t * HW, y + t * HW, HW, scale, shift, relu, stream);
    }
    stream_fence(stream);
    }
    return GBTD_OK;
}

/* ---- batch norm fused into the residual add ------------------------------------------------ */

/* Eight lanes of one side of the add: x scale + shift (a separate multiply and add, as apply
 * computes it) for a normalised side, x itself otherwise. */
static inline float side_(float x, int bn, float sc, float sh) { return bn ? x * sc + sh : x; }

static void plane_bn_add_generic(const float *a, int bna, float sa, float ha, const float *b,
                                 int bnb, float sb, float hb, float *y, int64_t len, int relu)
{
    for (int64_t i = 0; i < len; i++) {
        const float v = side_(a[i], bna, sa, ha) + side_(b[i], bnb, sb, hb);
        y[i] = relu ? (v > 0.0f ? v : 0.0f) : v;
    }
}

#ifdef BN_X86
__attribute__((target("avx2,fma"))) static inline __m256 side_lanes_(const float *x, int bn,
                                                                     __m256 sc, __m256 sh)
{
    const __m256 v = _mm256_loadu_ps(x);
    return bn ? _mm256_add_ps(_mm256_mul_ps(v, sc), sh) : v;
}

__attribute__((target("avx2,fma"))) static void plane_bn_add_avx2(const float *a, int bna,
                                                                   float sa, float ha,
                                                                   const float *b, int bnb,
                                                                   float sb, float hb, float *y,
                                                                   int64_t len, int relu,
                                                                   int stream)
{
    const __m256 vsa = _mm256_set1_ps(sa), vha = _mm256_set1_ps(ha), z = _mm256_setzero_ps();
    const __m256 vsb = _mm256_set1_ps(sb), vhb = _mm256_set1_ps(hb);
    int64_t i = 0;
    if (stream) {
        while (i < len && ((uintptr_t)(y + i) & 31u)) i++;
        plane_bn_add_generic(a, bna, sa, ha, b, bnb, sb, hb, y, i, relu);
        for (; i + 8 <= len; i += 8) {
            __m256 v = _mm256_add_ps(side_lanes_(a + i, bna, vsa, vha), side_lanes_(b + i, bnb, vsb, vhb));
            if (relu) v = _mm256_max_ps(v, z);
            _mm256_stream_ps(y + i, v);
        }
    }
    for (; i + 8 <= len; i += 8) {
        __m256 v = _mm256_add_ps(side_lanes_(a + i, bna, vsa, vha), side_lanes_(b + i, bnb, vsb, vhb));
        if (relu) v = _mm256_max_ps(v, z);
        _mm256_storeu_ps(y + i, v);
    }
    if (i < len)
        plane_bn_add_generic(a + i, bna, sa, ha, b + i, bnb, sb, hb, y + i, len - i, relu);
}
#endif

static void plane_bn_add(const float *a, int bna, float sa, float ha, const float *b, int bnb,
                         float sb, float hb, float *y, int64_t len, int relu, int stream)
{
#ifdef BN_X86
    if (nn_have_avx2()) {
        plane_bn_add_avx2(a, bna, sa, ha, b, bnb, sb, hb, y, len, relu, stream);
        return;
    }
#endif
    (void)stream;
    plane_bn_add_generic(a, bna, sa, ha, b, bnb, sb, hb, y, len, relu);
}

/* The affine maps of channels c0 .. c0 + nc - 1 of one side (training: from the batch, which
 * also updates the side's statistics), kept in side->scale / shift for a later materialisation. */
static void side_block_(const gbtd_bn_shape *s, int64_t c0, int64_t nc, const nn_bn_side *d,
                        int training, float *sc, float *sh)
{
    if (!d->bn) {
        for (int64_t j = 0; j < nc; j++) {
            sc[j] = 1.0f;
            sh[j] = 0.0f;
        }
        return;
    }
    if (training)
        train_block_(s, c0, nc, d->x, d->gamma, d->beta, d->eps, d->momentum, d->running_mean,
                     d->running_var, d->mean, d->rstd, sc, sh);
    else
        for (int64_t j = 0; j < nc; j++)
            eval_channel_(c0 + j, d->gamma, d->beta, d->eps, d->running_mean, d->running_var,
                          sc + j, sh + j);
    for (int64_t j = 0; j < nc; j++) {
        d->scale[c0 + j] = sc[j];
        d->shift[c0 + j] = sh[j];
    }
}

int nn_bn_add_forward(const gbtd_bn_shape *s, const nn_bn_side *a, const nn_bn_side *b,
                      int training, int relu, float *y)
{
    static const char *fn = "bn_add_forward";
    GBTD_CHECK(nn_bn_shape(fn, s));
    NN_NONNULL(fn, a);
    NN_NONNULL(fn, b);
    NN_NONNULL(fn, y);
    const int64_t N = s->n, C = s->c, HW = s->hw;
    const nn_bn_side *side[2] = {a, b};
    for (int k = 0; k < 2; k++) {
        const nn_bn_side *d = side[k];
        NN_NONNULL(fn, d->x);
        if (!d->bn) continue;
        if (!d->scale || !d->shift || (training && (!d->mean || !d->rstd)) ||
            (!training && (!d->running_mean || !d->running_var)))
            return gbtd_error(GBTD_EINVAL, "%s: a normalised side lacks its statistics buffers", fn);
        if (training && N * HW < 2)
            return gbtd_error(GBTD_EINVAL, "%s: batch statistics need n*h*w >= 2", fn);
        if (!(d->eps > 0.0f))
            return gbtd_error(GBTD_EINVAL, "%s: eps = %g must be > 0", fn, (double)d->eps);
    }
    const int stream = stream_out(N * C * HW);
    const int64_t cb = block_channels(s, 2);
#pragma omp parallel
    {
#pragma omp for schedule(dynamic, 1) nowait
    for (int64_t c0 = 0; c0 < C; c0 += cb) {
        /* the statistics passes leave the block's planes in the cache for the add */
        const int64_t nc = C - c0 < cb ? C - c0 : cb;
        float sa[BN_MAX_BLOCK], ha[BN_MAX_BLOCK], sb[BN_MAX_BLOCK], hb[BN_MAX_BLOCK];
        side_block_(s, c0, nc, a, training, sa, ha);
        side_block_(s, c0, nc, b, training, sb, hb);
        for (int64_t n = N - 1; n >= 0; n--) /* reverse: see forward_train */
            for (int64_t j = 0; j < nc; j++) {
                const int64_t off = (n * C + c0 + j) * HW;
                plane_bn_add(a->x + off, a->bn, sa[j], ha[j], b->x + off, b->bn, sb[j], hb[j],
                             y + off, HW, relu, stream);
            }
    }
    stream_fence(stream);
    }
    return GBTD_OK;
}

void nn_bn_apply(const gbtd_bn_shape *s, const float *x, const float *scale, const float *shift,
                 float *y)
{
    const int64_t N = s->n, C = s->c, HW = s->hw;
#pragma omp parallel for schedule(static) if (N * C * HW > 65536)
    for (int64_t t = 0; t < N * C; t++) {
        const int64_t c = t % C;
        apply(x + t * HW, y + t * HW, HW, scale[c], shift[c], 0, 0);
    }
}

/* The mask of the plane at offset off of channel c: y > 0 (y given), the map's x sc + sh > 0 (msc
 * and msh given), or none. */
static inline bn_mask mask_at_(const float *y, const float *msc, const float *msh, int64_t c,
                               int64_t off)
{
    const int map = !y && msc && msh;
    const bn_mask mk = {y ? y + off : NULL, map, map ? msc[c] : 0.0f, map ? msh[c] : 0.0f};
    return mk;
}

static int backward(const char *fn, const gbtd_bn_shape *s, const float *x, const float *gamma,
                    const float *mean, const float *rstd, const float *y, const float *msc,
                    const float *msh, const float *dy, float *dx, float *dgamma, float *dbeta,
                    int set)
{
    GBTD_CHECK(nn_bn_shape(fn, s));
    NN_NONNULL(fn, x);
    NN_NONNULL(fn, mean);
    NN_NONNULL(fn, rstd);
    NN_NONNULL(fn, dy);
    const int64_t N = s->n, C = s->c, HW = s->hw;
    const double m = (double)(N * HW);
    const int stream = set && dx && stream_out(N * C * HW);
    const int64_t cb = block_channels(s, y ? 3 : 2);
#pragma omp parallel
    {
#pragma omp for schedule(dynamic, 1) nowait
    for (int64_t c0 = 0; c0 < C; c0 += cb) {
        const int64_t nc = C - c0 < cb ? C - c0 : cb;
        double sdy[BN_MAX_BLOCK], sdyx[BN_MAX_BLOCK];
        float a[BN_MAX_BLOCK], bx[BN_MAX_BLOCK], k[BN_MAX_BLOCK];
        for (int64_t j = 0; j < nc; j++) sdy[j] = sdyx[j] = 0.0;
        for (int64_t n = 0; n < N; n++)
            for (int64_t j = 0; j < nc; j++) {
                const int64_t off = (n * C + c0 + j) * HW;
                const bn_mask mk = mask_at_(y, msc, msh, c0 + j, off);
                plane_bwd_sums(x + off, &mk, dy + off, HW, mean[c0 + j], &sdy[j], &sdyx[j]);
            }
        for (int64_t j = 0; j < nc; j++) {
            const int64_t c = c0 + j;
            const double r = rstd[c];
            const double sdyxh = sdyx[j] * r;
            if (dgamma) dgamma[c] += (float)sdyxh;
            if (dbeta) dbeta[c] += (float)sdy[j];
            /* dx = g r (dy - sdy/m - (x - mu) r^2 sdyx / m) = a dy + bx (x - mu) + k */
            const double g = gamma ? (double)gamma[c] : 1.0;
            a[j] = (float)(g * r);
            bx[j] = (float)(-g * r * r * r * sdyx[j] / m);
            k[j] = (float)(-g * r * sdy[j] / m);
        }
        if (!dx) continue;
        for (int64_t n = N - 1; n >= 0; n--) /* reverse: see forward_train */
            for (int64_t j = 0; j < nc; j++) {
                const int64_t off = (n * C + c0 + j) * HW;
                const bn_mask mk = mask_at_(y, msc, msh, c0 + j, off);
                plane_dx(x + off, &mk, dy + off, dx + off, HW, mean[c0 + j], a[j], bx[j], k[j], set,
                         stream);
            }
    }
    stream_fence(stream);
    }
    return GBTD_OK;
}

int gbtd_bn_forward_train(const gbtd_bn_shape *s, const float *x, const float *gamma,
                          const float *beta, float eps, float momentum, float *running_mean,
                          float *running_var, float *mean, float *rstd, float *y)
{
    return forward_train("bn_forward_train", s, x, gamma, beta, eps, momentum, running_mean,
                         running_var, mean, rstd, y, 0, NULL, NULL);
}

int gbtd_bn_relu_forward_train(const gbtd_bn_shape *s, const float *x, const float *gamma,
                               const float *beta, float eps, float momentum,
                               float *running_mean, float *running_var, float *mean,
                               float *rstd, float *y)
{
    return forward_train("bn_relu_forward_train", s, x, gamma, beta, eps, momentum, running_mean,
                         running_var, mean, rstd, y, 1, NULL, NULL);
}

int gbtd_bn_forward_eval(const gbtd_bn_shape *s, const float *x, const float *gamma,
                         const float *beta, float eps, const float *running_mean,
                         const float *running_var, float *y)
{
    return forward_eval("bn_forward_eval", s, x, gamma, beta, eps, running_mean, running_var, y, 0);
}

int gbtd_bn_relu_forward_eval(const gbtd_bn_shape *s, const float *x, const float *gamma,
                              const float *beta, float eps, const float *running_mean,
                              const float *running_var, float *y)
{
    return forward_eval("bn_relu_forward_eval", s, x, gamma, beta, eps, running_mean, running_var,
                        y, 1);
}

int gbtd_bn_backward(const gbtd_bn_shape *s, const float *x, const float *gamma,
                     const float *mean, const float *rstd, const float *dy, float *dx,
                     float *dgamma, float *dbeta)
{
    return backward("bn_backward", s, x, gamma, mean, rstd, NULL, NULL, NULL, dy, dx, dgamma, dbeta,
                    0);
}

int gbtd_bn_relu_backward(const gbtd_bn_shape *s, const float *x, const float *gamma,
                          const float *mean, const float *rstd, const float *y,
                          const float *dy, float *dx, float *dgamma, float *dbeta)
{
    if (!y) return gbtd_error(GBTD_EINVAL, "bn_relu_backward: y is NULL");
    return backward("bn_relu_backward", s, x, gamma, mean, rstd, y, NULL, NULL, dy, dx, dgamma,
                    dbeta, 0);
}

int nn_bn_backward_set(const gbtd_bn_shape *s, const float *x, const float *gamma,
                       const float *mean, const float *rstd, const float *y, const float *dy,
                       float *dx, float *dgamma, float *dbeta, int set_dx)
{
    if (y)
        return backward("bn_relu_backward", s, x, gamma, mean, rstd, y, NULL, NULL, dy, dx, dgamma,
                        dbeta, set_dx);
    return backward("bn_backward", s, x, gamma, mean, rstd, NULL, NULL, NULL, dy, dx, dgamma, dbeta,
                    set_dx);
}

int nn_bn_relu_forward_train_map(const gbtd_bn_shape *s, const float *x, const float *gamma,
                                 const float *beta, float eps, float momentum,
                                 float *running_mean, float *running_var, float *mean,
                                 float *rstd, float *y, float *scale, float *shift)
{
    NN_NONNULL("bn_relu_forward_train", scale);
    NN_NONNULL("bn_relu_forward_train", shift);
    return forward_train("bn_relu_forward_train", s, x, gamma, beta, eps, momentum, running_mean,
                         running_var, mean, rstd, y, 1, scale, shift);
}

int nn_bn_relu_backward_map(const gbtd_bn_shape *s, const float *x, const float *gamma,
                            const float *mean, const float *rstd, const float *scale,
                            const float *shift, const float *dy, float *dx, float *dgamma,
                            float *dbeta, int set_dx)
{
    NN_NONNULL("bn_relu_backward", scale);
    NN_NONNULL("bn_relu_backward", shift);
    return backward("bn_relu_backward", s, x, gamma, mean, rstd, NULL, scale, shift, dy, dx, dgamma,
                    dbeta, set_dx);
}
