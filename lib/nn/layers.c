/* gbtd nn: ReLU, residual add, pooling, linear, softmax cross-entropy, option-A shortcut. */
#include <float.h>
#include <math.h>
#include <string.h>

#include "core/blas.h"
#include "nn/gemm_small.h"
#include "nn/ops_internal.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define LAYERS_X86 1
#include <immintrin.h>
#endif

int64_t nn_stream_bytes = (int64_t)32 << 20;

#ifdef LAYERS_X86
__attribute__((target("avx2"))) static void add_stream_avx2(int64_t len, int relu,
                                                             const float *a, const float *b,
                                                             float *y)
{
    const __m256 z = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i < len && ((uintptr_t)(y + i) & 31u); i++) {
        const float v = a[i] + b[i];
        y[i] = relu ? (v > 0.0f ? v : 0.0f) : v;
    }
    /* max(v, 0) returns its second operand for NaN and for -0, as the scalar select does */
    for (; i + 8 <= len; i += 8) {
        __m256 v = _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
        if (relu) v = _mm256_max_ps(v, z);
        _mm256_stream_ps(y + i, v);
    }
    for (; i < len; i++) {
        const float v = a[i] + b[i];
        y[i] = relu ? (v > 0.0f ? v : 0.0f) : v;
    }
}
#endif

#ifdef LAYERS_X86
/* Non-temporal da = db = dy masked by y > 0 (relu); the and-mask of a compare equals the scalar
 * select (0 where y > 0 fails, NaN included). Unaligned heads and tails store plainly. */
__attribute__((target("avx2"))) static void add_bwd_stream_avx2(int64_t len, int relu,
                                                                 const float *y, const float *dy,
                                                                 float *da, float *db)
{
    const __m256 z = _mm256_setzero_ps();
    /* a common 32-byte phase of da and db is needed for streaming both */
    const int both = da && db;
    const float *al = da ? da : db;
    int64_t i = 0;
    if (!both || (((uintptr_t)da ^ (uintptr_t)db) & 31u) == 0) {
        for (; i < len && ((uintptr_t)(al + i) & 31u); i++) {
            const float d = dy[i], g = relu ? (y[i] > 0.0f ? d : 0.0f) : d;
            if (da) da[i] = g;
            if (db) db[i] = g;
        }
        for (; i + 8 <= len; i += 8) {
            __m256 g = _mm256_loadu_ps(dy + i);
            if (relu) g = _mm256_and_ps(g, _mm256_cmp_ps(_mm256_loadu_ps(y + i), z, _CMP_GT_OQ));
            if (da) _mm256_stream_ps(da + i, g);
            if (db) _mm256_stream_ps(db + i, g);
        }
    }
    for (; i < len; i++) {
        const float d = dy[i], g = relu ? (y[i] > 0.0f ? d : 0.0f) : d;
        if (da) da[i] = g;
        if (db) db[i] = g;
    }
}
#endif

int nn_add_stream(int64_t len, int relu, const float *a, const float *b, float *y)
{
#ifdef LAYERS_X86
    if (nn_have_avx2()) {
        add_stream_avx2(len, relu, a, b, y);
        return 1;
    }
#endif
    (void)len, (void)relu, (void)a, (void)b, (void)y;
    return 0;
}

void nn_stream_fence(void)
{
#ifdef LAYERS_X86
    _mm_sfence();
#endif
}

/* Large adds in chunks of non-temporal stores (nn_stream_bytes); 0 when not taken. */
static int add_forward_stream(int64_t len, int relu, const float *a, const float *b, float *y)
{
    if (len * (int64_t)sizeof(float) <= nn_stream_bytes || !nn_have_avx2()) return 0;
    const int64_t chunk = 16384;
#pragma omp parallel
    {
#pragma omp for schedule(static) nowait
        for (int64_t i0 = 0; i0 < len; i0 += chunk)
            nn_add_stream(len - i0 < chunk ? len - i0 : chunk, relu, a + i0, b + i0, y + i0);
        nn_stream_fence();
    }
    return 1;
}

/* ---- element-wise ------------------------------------------------------------------------- */

int gbtd_relu_forward(int64_t len, const float *x, float *y)
{
    NN_ATLEAST("relu_forward", len, 1);
    NN_NONNULL("relu_forward", x);
    NN_NONNULL("relu_forward", y);
#pragma omp parallel for schedule(static) if (len > 65536)
    for (int64_t i = 0; i < len; i++) y[i] = x[i] > 0.0f ? x[i] : 0.0f;
    return GBTD_OK;
}

int gbtd_relu_backward(int64_t len, const float *y, const float *dy, float *dx)
{
    NN_ATLEAST("relu_backward", len, 1);
    NN_NONNULL("relu_backward", y);
    NN_NONNULL("relu_backward", dy);
    if (!dx) return GBTD_OK;
#pragma omp parallel for schedule(static) if (len > 65536)
    for (int64_t i = 0; i < len; i++) {
        const float d = dy[i]; /* loaded unconditionally: the select then vectorises */
        dx[i] += y[i] > 0.0f ? d : 0.0f;
    }
    return GBTD_OK;
}

int gbtd_add_forward(int64_t len, const float *a, const float *b, float *y)
{
    NN_ATLEAST("add_forward", len, 1);
    NN_NONNULL("add_forward", a);
    NN_NONNULL("add_forward", b);
    NN_NONNULL("add_forward", y);
    if (add_forward_stream(len, 0, a, b, y)) return GBTD_OK;
#pragma omp parallel for schedule(static) if (len > 65536)
    for (int64_t i = 0; i < len; i++) y[i] = a[i] + b[i];
    return GBTD_OK;
}

int gbtd_add_backward(int64_t len, const float *dy, float *da, float *db)
{
    NN_ATLEAST("add_backward", len, 1);
    NN_NONNULL("add_backward", dy);
#pragma omp parallel for schedule(static) if (len > 65536)
    for (int64_t i = 0; i < len; i++) {
        if (da) da[i] += dy[i];
        if (db) db[i] += dy[i];
    }
    return GBTD_OK;
}

int gbtd_add_relu_forward(int64_t len, const float *a, const float *b, float *y)
{
    NN_ATLEAST("add_relu_forward", len, 1);
    NN_NONNULL("add_relu_forward", a);
    NN_NONNULL("add_relu_forward", b);
    NN_NONNULL("add_relu_forward", y);
    if (add_forward_stream(len, 1, a, b, y)) return GBTD_OK;
#pragma omp parallel for schedule(static) if (len > 65536)
    for (int64_t i = 0; i < len; i++) {
        const float v = a[i] + b[i];
        y[i] = v > 0.0f ? v : 0.0f;
    }
    return GBTD_OK;
}

int gbtd_add_relu_backward(int64_t len, const float *y, const float *dy, float *da, float *db)
{
    NN_ATLEAST("add_relu_backward", len, 1);
    NN_NONNULL("add_relu_backward", y);
    NN_NONNULL("add_relu_backward", dy);
#pragma omp parallel for schedule(static) if (len > 65536)
    for (int64_t i = 0; i < len; i++) {
        const float g = y[i] > 0.0f ? dy[i] : 0.0f;
        if (da) da[i] += g;
        if (db) db[i] += g;
    }
    return GBTD_OK;
}

/* One span of the residual add's backward, for nn_add_backward_store. The restrict-qualified
 * pointers and the select written as a blend (no branch on the sign of y, which is a coin flip
 * for ReLU outputs) let the compiler vectorise each of the eight store / accumulate cases. */
static void add_bwd_span(int64_t len, int relu, const float *restrict y,
                         const float *restrict dy, float *restrict da, int ma,
                         float *restrict db, int mb)
{
#define NN_ADD_LOOP(A, B)                                                                         \
    do {                                                                                          \
        if (relu)                                                                                 \
            for (int64_t i = 0; i < len; i++) {                                                   \
                const float d = dy[i];                                                            \
                const float g = y[i] > 0.0f ? d : 0.0f;                                           \
                A;                                                                                \
                B;                                                                                \
            }                                                                                     \
        else                                                                                      \
            for (int64_t i = 0; i < len; i++) {                                                   \
                const float g = dy[i];                                                            \
                A;                                                                                \
                B;                                                                                \
            }                                                                                     \
    } while (0)
    switch (ma * 3 + mb) {
    case 1: NN_ADD_LOOP((void)0, db[i] += g); break;
    case 2: NN_ADD_LOOP((void)0, db[i] = g); break;
    case 3: NN_ADD_LOOP(da[i] += g, (void)0); break;
    case 4: NN_ADD_LOOP(da[i] += g, db[i] += g); break;
    case 5: NN_ADD_LOOP(da[i] += g, db[i] = g); break;
    case 6: NN_ADD_LOOP(da[i] = g, (void)0); break;
    case 7: NN_ADD_LOOP(da[i] = g, db[i] += g); break;
    case 8: NN_ADD_LOOP(da[i] = g, db[i] = g); break;
    default: break;
    }
#undef NN_ADD_LOOP
}

/* da = db = dy (masked by y > 0 when y is given), either may be NULL, with non-temporal stores
 * where AVX2 is in use (the values of add_bwd_span's store cases). */
static void add_bwd_stream(int64_t len, int relu, const float *y, const float *dy, float *da,
                           float *db)
{
#ifdef LAYERS_X86
    if (nn_have_avx2()) {
        add_bwd_stream_avx2(len, relu, y, dy, da, db);
        return;
    }
#endif
    add_bwd_span(len, relu, y, dy, da, da ? 2 : 0, db, db ? 2 : 0);
}

/* The residual add's backward for the network runner: with `set_a` / `set_b` the gradient is
 * stored rather than accumulated, so a slot that this layer is the first to write needs neither a
 * memset beforehand nor a read here. `relu`: y is the add's ReLU output and gates dy. Arguments
 * as gbtd_add(_relu)_backward; y and dy must not overlap da or db. */
void nn_add_backward_store(int64_t len, int relu, const float *y, const float *dy, float *da,
                           int set_a, float *db, int set_b)
{
    if (da && da == db) { /* both inputs are one value: it receives the gradient twice */
        nn_add_backward_store(len, relu, y, dy, da, set_a || set_b, NULL, 0);
        nn_add_backward_store(len, relu, y, dy, da, 0, NULL, 0);
        return;
    }
    const int ma = da ? (set_a ? 2 : 1) : 0, mb = db ? (set_b ? 2 : 1) : 0;
    if (ma + mb == 0) return;
    if (ma != 1 && mb != 1 && len * (int64_t)sizeof(float) > nn_stream_bytes && nn_have_avx2()) {
        /* both gradients stored, large: non-temporal stores (nn_stream_bytes) */
        const int64_t chunk = 16384;
#pragma omp parallel
        {
#pragma omp for schedule(static) nowait
            for (int64_t i0 = 0; i0 < len; i0 += chunk)
                add_bwd_stream(len - i0 < chunk ? len - i0 : chunk, relu, relu ? y + i0 : NULL,
                               dy + i0, da ? da + i0 : NULL, db ? db + i0 : NULL);
            nn_stream_fence();
        }
        return;
    }
    const int64_t chunk = 8192;
#pragma omp parallel for schedule(static) if (len > 65536)
    for (int64_t i0 = 0; i0 < len; i0 += chunk) {
        const int64_t m = len - i0 < chunk ? len - i0 : chunk;
        add_bwd_span(m, relu, relu ? y + i0 : NULL, dy + i0, da ? da + i0 : NULL, ma,
                     db ? db + i0 : NULL, mb);
    }
}

/* ---- pooling ------------------------------------------------------------------------------ */

int gbtd_maxpool2d_forward(const gbtd_pool2d_shape *s0, const float *x, float *y,
                           int32_t *argmax)
{
    static const char *fn = "maxpool2d_forward";
    gbtd_pool2d_shape s;
    GBTD_CHECK(nn_pool_shape(fn, s0, &s));
    NN_NONNULL(fn, x);
    NN_NONNULL(fn, y);
    NN_NONNULL(fn, argmax);
    const int64_t planes = s.n * s.c, hw = s.h * s.w, hwo = s.h_out * s.w_out;
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *xp = x + pl * hw;
        for (int64_t i = 0; i < s.h_out; i++)
            for (int64_t j = 0; j < s.w_out; j++) {
                float best = -FLT_MAX;
                int64_t arg = -1;
                for (int64_t p = 0; p < s.k; p++) {
                    const int64_t iy = i * s.stride + p - s.pad;
                    if (iy < 0 || iy >= s.h) continue;
                    for (int64_t q = 0; q < s.k; q++) {
                        const int64_t ix = j * s.stride + q - s.pad;
                        if (ix < 0 || ix >= s.w) continue;
                        const float v = xp[iy * s.w + ix];
                        if (arg < 0 || v > best || isnan(v)) {
                            best = v;
                            arg = iy * s.w + ix;
                            if (isnan(v)) goto found; /* NaN propagates, as in PyTorch */
                        }
                    }
                }
            found:
                y[pl * hwo + i * s.w_out + j] = best;
                argmax[pl * hwo + i * s.w_out + j] = (int32_t)arg;
            }
    }
    return GBTD_OK;
}

int gbtd_maxpool2d_backward(const gbtd_pool2d_shape *s0, const int32_t *argmax, const float *dy,
                            float *dx)
{
    static const char *fn = "maxpool2d_backward";
    gbtd_pool2d_shape s;
    GBTD_CHECK(nn_pool_shape(fn, s0, &s));
    NN_NONNULL(fn, argmax);
    NN_NONNULL(fn, dy);
    if (!dx) return GBTD_OK;
    const int64_t planes = s.n * s.c, hw = s.h * s.w, hwo = s.h_out * s.w_out;
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < planes; pl++)
        for (int64_t t = 0; t < hwo; t++) {
            const int32_t a = argmax[pl * hwo + t];
            if (a >= 0 && a < hw) dx[pl * hw + a] += dy[pl * hwo + t];
        }
    return GBTD_OK;
}

int gbtd_avgpool2d_forward(const gbtd_pool2d_shape *s0, const float *x, float *y)
{
    static const char *fn = "avgpool2d_forward";
    gbtd_pool2d_shape s;
    GBTD_CHECK(nn_pool_shape(fn, s0, &s));
    NN_NONNULL(fn, x);
    NN_NONNULL(fn, y);
    const int64_t planes = s.n * s.c, hw = s.h * s.w, hwo = s.h_out * s.w_out;
    const float inv = 1.0f / (float)(s.k * s.k);
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < planes; pl++)
        for (int64_t i = 0; i < s.h_out; i++)
            for (int64_t j = 0; j < s.w_out; j++) {
                float acc = 0.0f;
                for (int64_t p = 0; p < s.k; p++) {
                    const int64_t iy = i * s.stride + p - s.pad;
                    if (iy < 0 || iy >= s.h) continue;
                    for (int64_t q = 0; q < s.k; q++) {
                        const int64_t ix = j * s.stride + q - s.pad;
                        if (ix >= 0 && ix < s.w) acc += x[pl * hw + iy * s.w + ix];
                    }
                }
                y[pl * hwo + i * s.w_out + j] = acc * inv;
            }
    return GBTD_OK;
}

int gbtd_avgpool2d_backward(const gbtd_pool2d_shape *s0, const float *dy, float *dx)
{
    static const char *fn = "avgpool2d_backward";
    gbtd_pool2d_shape s;
    GBTD_CHECK(nn_pool_shape(fn, s0, &s));
    NN_NONNULL(fn, dy);
    if (!dx) return GBTD_OK;
    const int64_t planes = s.n * s.c, hw = s.h * s.w, hwo = s.h_out * s.w_out;
    const float inv = 1.0f / (float)(s.k * s.k);
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < planes; pl++)
        for (int64_t i = 0; i < s.h_out; i++)
            for (int64_t j = 0; j < s.w_out; j++) {
                const float g = dy[pl * hwo + i * s.w_out + j] * inv;
                for (int64_t p = 0; p < s.k; p++) {
                    const int64_t iy = i * s.stride + p - s.pad;
                    if (iy < 0 || iy >= s.h) continue;
                    for (int64_t q = 0; q < s.k; q++) {
                        const int64_t ix = j * s.stride + q - s.pad;
                        if (ix >= 0 && ix < s.w) dx[pl * hw + iy * s.w + ix] += g;
                    }
                }
            }
    return GBTD_OK;
}

int gbtd_global_avgpool_forward(int64_t n, int64_t c, int64_t hw, const float *x, float *y)
{
    static const char *fn = "global_avgpool_forward";
    NN_ATLEAST(fn, n, 1);
    NN_ATLEAST(fn, c, 1);
    NN_ATLEAST(fn, hw, 1);
    NN_NONNULL(fn, x);
    NN_NONNULL(fn, y);
    const int64_t planes = n * c;
#pragma omp parallel for schedule(static) if (planes * hw > 65536)
    for (int64_t pl = 0; pl < planes; pl++) {
        double acc = 0.0;
        for (int64_t t = 0; t < hw; t++) acc += x[pl * hw + t];
        y[pl] = (float)(acc / (double)hw);
    }
    return GBTD_OK;
}

int gbtd_global_avgpool_backward(int64_t n, int64_t c, int64_t hw, const float *dy, float *dx)
{
    static const char *fn = "global_avgpool_backward";
    NN_ATLEAST(fn, n, 1);
    NN_ATLEAST(fn, c, 1);
    NN_ATLEAST(fn, hw, 1);
    NN_NONNULL(fn, dy);
    if (!dx) return GBTD_OK;
    const int64_t planes = n * c;
#pragma omp parallel for schedule(static) if (planes * hw > 65536)
    for (int64_t pl = 0; pl < planes; pl++) {
        const float g = dy[pl] / (float)hw;
        for (int64_t t = 0; t < hw; t++) dx[pl * hw + t] += g;
    }
    return GBTD_OK;
}

/* ---- linear ------------------------------------------------------------------------------- */

static int linear_check(const char *fn, int64_t n, int64_t in, int64_t out)
{
    NN_ATLEAST(fn, n, 1);
    NN_ATLEAST(fn, in, 1);
    NN_ATLEAST(fn, out, 1);
    blasint t;
    GBTD_CHECK(gbtd_blas_int(n, &t));
    GBTD_CHECK(gbtd_blas_int(in, &t));
    GBTD_CHECK(gbtd_blas_int(out, &t));
    int64_t e;
    GBTD_CHECK(nn_numel(fn, &e, 2, n, in));
    GBTD_CHECK(nn_numel(fn, &e, 2, n, out));
    return nn_numel(fn, &e, 2, out, in);
}

int gbtd_linear_forward(int64_t n, int64_t in, int64_t out, const float *x, const float *wt,
                        const float *b, float *y)
{
    static const char *fn = "linear_forward";
    GBTD_CHECK(linear_check(fn, n, in, out));
    NN_NONNULL(fn, x);
    NN_NONNULL(fn, wt);
    NN_NONNULL(fn, y);
    if (b)
        for (int64_t r = 0; r < n; r++) memcpy(y + r * out, b, sizeof(float) * (size_t)out);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)n, (blasint)out, (blasint)in,
                1.0f, x, (blasint)in, wt, (blasint)in, b ? 1.0f : 0.0f, y, (blasint)out);
    return GBTD_OK;
}

int gbtd_linear_backward(int64_t n, int64_t in, int64_t out, const float *x, const float *wt,
                         const float *dy, float *dx, float *dw, float *db)
{
    static const char *fn = "linear_backward";
    GBTD_CHECK(linear_check(fn, n, in, out));
    NN_NONNULL(fn, x);
    NN_NONNULL(fn, wt);
    NN_NONNULL(fn, dy);
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)n, (blasint)in,
                    (blasint)out, 1.0f, dy, (blasint)out, wt, (blasint)in, 1.0f, dx, (blasint)in);
    if (dw)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)out, (blasint)in, (blasint)n,
                    1.0f, dy, (blasint)out, x, (blasint)in, 1.0f, dw, (blasint)in);
    if (db)
        for (int64_t o = 0; o < out; o++) {
            double acc = 0.0;
            for (int64_t r = 0; r < n; r++) acc += dy[r * out + o];
            db[o] += (float)acc;
        }
    return GBTD_OK;
}

/* ---- softmax cross-entropy ---------------------------------------------------------------- */

int gbtd_xent_forward(int64_t n, int64_t k, const float *logits, const int32_t *labels,
                      float smoothing, float *probs, float *losses, float *loss)
{
    static const char *fn = "xent_forward";
    NN_ATLEAST(fn, n, 1);
    NN_ATLEAST(fn, k, 1);
    NN_NONNULL(fn, logits);
    NN_NONNULL(fn, labels);
    NN_NONNULL(fn, probs);
    NN_NONNULL(fn, loss);
    if (!(smoothing >= 0.0f && smoothing <= 1.0f))
        return gbtd_error(GBTD_EINVAL, "%s: label smoothing %g not in [0, 1]", fn, (double)smoothing);
    for (int64_t r = 0; r < n; r++)
        if (labels[r] < 0 || labels[r] >= k)
            return gbtd_error(GBTD_ERANGE, "%s: label %d of row %lld not in [0, %lld)", fn,
                              (int)labels[r], (long long)r, (long long)k);
    double total = 0.0;
    for (int64_t r = 0; r < n; r++) {
        const float *z = logits + r * k;
        float *p = probs + r * k;
        float mx = z[0];
        for (int64_t j = 1; j < k; j++) mx = z[j] > mx ? z[j] : mx;
        double se = 0.0, sz = 0.0;
        for (int64_t j = 0; j < k; j++) {
            const float e = expf(z[j] - mx);
            p[j] = e;
            se += e;
            sz += (double)z[j] - mx;
        }
        const float inv = (float)(1.0 / se);
        for (int64_t j = 0; j < k; j++) p[j] *= inv;
        const double lse = log(se); /* log-sum-exp of z - mx */
        const double nll = lse - ((double)z[labels[r]] - mx);
        const double l = (1.0 - smoothing) * nll + smoothing * (lse - sz / (double)k);
        if (losses) losses[r] = (float)l;
        total += l;
    }
    *loss = (float)(total / (double)n);
    return GBTD_OK;
}

int gbtd_xent_backward(int64_t n, int64_t k, const float *probs, const int32_t *labels,
                       float smoothing, float dloss, float *dlogits)
{
    static const char *fn = "xent_backward";
    NN_ATLEAST(fn, n, 1);
    NN_ATLEAST(fn, k, 1);
    NN_NONNULL(fn, probs);
    NN_NONNULL(fn, labels);
    if (!dlogits) return GBTD_OK;
    for (int64_t r = 0; r < n; r++)
        if (labels[r] < 0 || labels[r] >= k)
            return gbtd_error(GBTD_ERANGE, "%s: label %d of row %lld not in [0, %lld)", fn,
                              (int)labels[r], (long long)r, (long long)k);
    const float scale = dloss / (float)n, off = smoothing / (float)k;
    for (int64_t r = 0; r < n; r++) {
        for (int64_t j = 0; j < k; j++) dlogits[r * k + j] += scale * (probs[r * k + j] - off);
        dlogits[r * k + labels[r]] -= scale * (1.0f - smoothing);
    }
    return GBTD_OK;
}

/* ---- option-A shortcut -------------------------------------------------------------------- */

static int shortcut_check(const char *fn, int64_t n, int64_t c, int64_t h, int64_t w,
                          int64_t pad_c)
{
    NN_ATLEAST(fn, n, 1);
    NN_ATLEAST(fn, c, 1);
    NN_ATLEAST(fn, h, 1);
    NN_ATLEAST(fn, w, 1);
    NN_ATLEAST(fn, pad_c, 0);
    int64_t e;
    GBTD_CHECK(nn_numel(fn, &e, 4, n, c, h, w));
    return nn_numel(fn, &e, 4, n, c + 2 * pad_c, (h + 1) / 2, (w + 1) / 2);
}

int gbtd_shortcut_a_forward(int64_t n, int64_t c, int64_t h, int64_t w, int64_t pad_c,
                            const float *x, float *y)
{
    static const char *fn = "shortcut_a_forward";
    GBTD_CHECK(shortcut_check(fn, n, c, h, w, pad_c));
    NN_NONNULL(fn, x);
    NN_NONNULL(fn, y);
    const int64_t co = c + 2 * pad_c, ho = (h + 1) / 2, wo = (w + 1) / 2;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < n * co; t++) {
        const int64_t b = t / co, ci = t % co - pad_c;
        float *yp = y + t * ho * wo;
        if (ci < 0 || ci >= c) {
            memset(yp, 0, sizeof(float) * (size_t)(ho * wo));
            continue;
        }
        const float *xp = x + (b * c + ci) * h * w;
        for (int64_t i = 0; i < ho; i++)
            for (int64_t j = 0; j < wo; j++) yp[i * wo + j] = xp[2 * i * w + 2 * j];
    }
    return GBTD_OK;
}

int gbtd_shortcut_a_backward(int64_t n, int64_t c, int64_t h, int64_t w, int64_t pad_c,
                             const float *dy, float *dx)
{
    static const char *fn = "shortcut_a_backward";
    GBTD_CHECK(shortcut_check(fn, n, c, h, w, pad_c));
    NN_NONNULL(fn, dy);
    if (!dx) return GBTD_OK;
    const int64_t co = c + 2 * pad_c, ho = (h + 1) / 2, wo = (w + 1) / 2;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < n * c; t++) {
        const int64_t b = t / c, ci = t % c;
        const float *dp = dy + ((b * co + ci + pad_c) * ho) * wo;
        float *xp = dx + t * h * w;
        for (int64_t i = 0; i < ho; i++)
            for (int64_t j = 0; j < wo; j++) xp[2 * i * w + 2 * j] += dp[i * wo + j];
    }
    return GBTD_OK;
}
