/* gbtd nn: depthwise and grouped convolution through phase planes (see conv_phase.h). */
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "nn/conv_phase.h"
#include "nn/gemm_small.h"
#include "nn/ops_internal.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define DW_X86 1
#include <immintrin.h>
#endif

enum { DW_MAX_TAPS = 64, DW_BLOCK = 16 };

/* Geometry of the phase planes for one shape; lengths in floats, all multiples of 8. */
typedef struct dw_geom {
    int64_t s, kh, kw, pad, h, w, ho, wo, m, ntaps, nph;
    int64_t ws;   /* phase row width ceil((w + 2 pad) / s) */
    int64_t lout; /* extended output plane: ho rows of ws, rounded up */
    int64_t lu;   /* phase plane core: ceil((h + 2 pad) / s) rows of ws, rounded up */
    int64_t lp;   /* allocated phase plane: room for reads at offsets up to maxoff past lout */
    int64_t m0;   /* zero margin in front of the extended dy plane (>= maxoff) */
    int64_t ldy;  /* extended dy plane with its margin */
    int64_t ph[DW_MAX_TAPS], off[DW_MAX_TAPS]; /* phase and offset of tap (p, q) */
    /* per-thread workspace layout */
    size_t o_y, o_dy, o_dx, o_acc, per_thread;
    /* grouped layout: cig input and cog output planes per group */
    int64_t cig, cog, kg;
    size_t go_y, go_dy, go_dx, go_wt, go_dyt, go_dwt, go_dw, g_per_thread;
} dw_geom;

static int64_t r8(int64_t v) { return (v + 7) / 8 * 8; }

static int geom_make(const gbtd_conv2d_shape *s, dw_geom *g)
{
    /* at most DW_MAX_TAPS taps and 16 phases; larger kernels or strides take the direct loops */
    if (s->kh * s->kw > DW_MAX_TAPS || s->stride > 4) return 0;
    g->s = s->stride;
    g->kh = s->kh;
    g->kw = s->kw;
    g->pad = s->pad;
    g->h = s->h;
    g->w = s->w;
    g->ho = s->h_out;
    g->wo = s->w_out;
    g->m = s->c_out / s->c_in;
    g->ntaps = s->kh * s->kw;
    g->nph = g->s * g->s;
    const int64_t hs = (s->h + 2 * s->pad + g->s - 1) / g->s;
    g->ws = (s->w + 2 * s->pad + g->s - 1) / g->s;
    /* Stride 1: the right padding of a row is the left padding of the next (row width w + pad
     * instead of w + 2 pad), so fewer scratch columns go through the GEMMs: 56 instead of 64
     * on a 7x7 map with padding 1. An output j < w_out reads padded columns up to w + 2 pad - 1,
     * those past the row landing in the next row's left padding; backward-data at an interior
     * column reads dy columns down to pad - (kw - 1), a negative one landing in the previous
     * row's kw - 1 - pad scratch columns (zero). pad < kw keeps w_out within the row width, so
     * no row of outputs or of dy runs into the next. Measured (AMD EPYC Zen 3, 2 threads, batch
     * 128, medians of 40 alternating with the old width in one process): dense 128 > 128 on 7x7
     * forward 1.01-1.05x, backward-data 1.05x, weight gradient 1.1x; grouped 3x3 (8 groups on
     * 14x14 and 28x28, 32 on 7x7) 1.01-1.05x. GBTD_NN_NO_SHARED_PAD set (and not "0") keeps the
     * old width. */
    if (g->s == 1 && s->pad < s->kw && !nn_switched_off("GBTD_NN_NO_SHARED_PAD")) g->ws = s->w + s->pad;
    const int64_t maxoff = ((g->kh - 1) / g->s) * g->ws + (g->kw - 1) / g->s;
    g->lout = r8(g->ho * g->ws);
    g->lu = r8(hs * g->ws);
    g->lp = r8(g->lu > g->lout + maxoff ? g->lu : g->lout + maxoff);
    g->m0 = r8(maxoff);
    g->ldy = g->m0 + (g->lu > g->lout ? g->lu : g->lout);
    for (int64_t p = 0; p < g->kh; p++)
        for (int64_t q = 0; q < g->kw; q++) {
            g->ph[p * g->kw + q] = (p % g->s) * g->s + q % g->s;
            g->off[p * g->kw + q] = (p / g->s) * g->ws + q / g->s;
        }
    g->o_y = (size_t)(g->nph * g->lp);
    g->o_dy = g->o_y + (size_t)g->lout;
    g->o_dx = g->o_dy + (size_t)g->ldy;
    g->o_acc = g->o_dx + (size_t)(g->nph * g->lu);
    /* dw accumulators: DW_BLOCK channels of m * ntaps doubles (plus a float to align them) */
    g->per_thread = (size_t)r8((int64_t)g->o_acc + 2 * DW_BLOCK * g->m * g->ntaps + 1);
    g->cig = s->c_in / s->groups;
    g->cog = s->c_out / s->groups;
    g->kg = g->cig * g->ntaps;
    g->go_y = (size_t)(g->cig * g->nph * g->lp);
    g->go_dy = g->go_y + (size_t)(g->cog * g->lout);
    g->go_dx = g->go_dy + (size_t)(g->cog * g->ldy);
    g->go_wt = g->go_dx + (size_t)(g->cig * g->nph * g->lu);
    g->go_dyt = g->go_wt + (size_t)r8(g->cog * g->kg);
    g->go_dwt = g->go_dyt + (size_t)(g->lout * g->cog);
    g->go_dw = g->go_dwt + (size_t)r8(g->cog * g->kg);
    /* a private weight gradient for the whole layer when threads split the images */
    g->g_per_thread = g->go_dw + (size_t)r8(s->c_out * g->kg);
    return 1;
}

size_t nn_dw_per_thread(const gbtd_conv2d_shape *s)
{
    dw_geom g;
    return geom_make(s, &g) ? g.per_thread : 0;
}

size_t nn_grp_per_thread(const gbtd_conv2d_shape *s)
{
    dw_geom g;
    return geom_make(s, &g) ? g.g_per_thread : 0;
}

/* ---- packing ---------------------------------------------------------------------------------
 * Only the positions that hold data are written; the zero padding of the phase planes and of the
 * extended dy plane comes from one memset of the thread's workspace per call. */

/* Rows are short (7 to 56 floats): a plain loop beats a call to memcpy per row. */
static inline void copy_row(float *restrict dst, const float *restrict src, int64_t len)
{
    for (int64_t j = 0; j < len; j++) dst[j] = src[j];
}

static void pack_x_generic(const dw_geom *g, const float *x, float *P)
{
    if (g->s == 1) {
        for (int64_t r = 0; r < g->h; r++)
            copy_row(P + (r + g->pad) * g->ws + g->pad, x + r * g->w, g->w);
        return;
    }
    for (int64_t r = 0; r < g->h; r++) {
        const int64_t rp = r + g->pad;
        float *row = P + (rp % g->s) * g->s * g->lp + (rp / g->s) * g->ws;
        const float *xr = x + r * g->w;
        for (int64_t c0 = 0; c0 < g->s && c0 < g->w; c0++) {
            /* columns c0, c0 + s, ... share the phase column (c0 + pad) % s */
            const int64_t cp = c0 + g->pad;
            float *dst = row + (cp % g->s) * g->lp + cp / g->s;
            for (int64_t c = c0; c < g->w; c += g->s) *dst++ = xr[c];
        }
    }
}

static void pack_dy_generic(const dw_geom *g, const float *dy, float *D)
{
    for (int64_t i = 0; i < g->ho; i++)
        copy_row(D + g->m0 + i * g->ws, dy + i * g->wo, g->wo);
}

static void unpack_y_generic(const dw_geom *g, const float *Y, float bias, float *y)
{
    for (int64_t i = 0; i < g->ho; i++) {
        const float *src = Y + i * g->ws;
        float *dst = y + i * g->wo;
        for (int64_t j = 0; j < g->wo; j++) dst[j] = src[j] + bias;
    }
}

/* dx (+)= the phase planes DX interleaved back (set: dx =, every element written once). */
static void unpack_dx_add_generic(const dw_geom *g, const float *DX, float *dx, int set)
{
    if (g->s == 1) {
        for (int64_t r = 0; r < g->h; r++) {
            const float *src = DX + (r + g->pad) * g->ws + g->pad;
            float *dst = dx + r * g->w;
            if (set)
                memcpy(dst, src, sizeof(float) * (size_t)g->w);
            else
                for (int64_t c = 0; c < g->w; c++) dst[c] += src[c];
        }
        return;
    }
    for (int64_t r = 0; r < g->h; r++) {
        const int64_t rp = r + g->pad;
        const float *row = DX + (rp % g->s) * g->s * g->lu + (rp / g->s) * g->ws;
        float *dst = dx + r * g->w;
        for (int64_t c0 = 0; c0 < g->s && c0 < g->w; c0++) {
            const int64_t cp = c0 + g->pad;
            const float *src = row + (cp % g->s) * g->lu + cp / g->s;
            if (set)
                for (int64_t c = c0; c < g->w; c += g->s) dst[c] = *src++;
            else
                for (int64_t c = c0; c < g->w; c += g->s) dst[c] += *src++;
        }
    }
}

/* ---- inner kernels ---------------------------------------------------------------------------
 * taps_sum: dst[t] (=|+=) sum_k w[k] base[k][t] for t < len (len a multiple of 8).
 * taps_dot: acc[k] += sum_t d[t] base[k][t]. */

static void taps_sum_generic(int64_t nt, const float *const *base, const float *w, float *dst,
                             int64_t len, int add)
{
    if (!add) memset(dst, 0, sizeof(float) * (size_t)len);
    for (int64_t k = 0; k < nt; k++) {
        const float wk = w[k], *b = base[k];
        for (int64_t t = 0; t < len; t++) dst[t] += wk * b[t];
    }
}

static void taps_dot_generic(int64_t nt, const float *const *base, const float *d, int64_t len,
                             double *acc)
{
    for (int64_t k = 0; k < nt; k++) {
        const float *b = base[k];
        float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        for (int64_t t = 0; t < len; t += 8)
            for (int j = 0; j < 8; j++) a[j] += d[t + j] * b[t + j];
        acc[k] += (double)(((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7])));
    }
}

#ifdef DW_X86
__attribute__((target("avx2,fma"))) static void taps_sum_avx2(int64_t nt,
                                                               const float *const *base,
                                                               const float *w, float *dst,
                                                               int64_t len, int add)
{
    int64_t t = 0;
    for (; t + 32 <= len; t += 32) {
        __m256 a0, a1, a2, a3;
        if (add) {
            a0 = _mm256_loadu_ps(dst + t);
            a1 = _mm256_loadu_ps(dst + t + 8);
            a2 = _mm256_loadu_ps(dst + t + 16);
            a3 = _mm256_loadu_ps(dst + t + 24);
        } else {
            a0 = a1 = a2 = a3 = _mm256_setzero_ps();
        }
        for (int64_t k = 0; k < nt; k++) {
            const __m256 wk = _mm256_broadcast_ss(w + k);
            const float *b = base[k] + t;
            a0 = _mm256_fmadd_ps(wk, _mm256_loadu_ps(b), a0);
            a1 = _mm256_fmadd_ps(wk, _mm256_loadu_ps(b + 8), a1);
            a2 = _mm256_fmadd_ps(wk, _mm256_loadu_ps(b + 16), a2);
            a3 = _mm256_fmadd_ps(wk, _mm256_loadu_ps(b + 24), a3);
        }
        _mm256_storeu_ps(dst + t, a0);
        _mm256_storeu_ps(dst + t + 8, a1);
        _mm256_storeu_ps(dst + t + 16, a2);
        _mm256_storeu_ps(dst + t + 24, a3);
    }
    for (; t < len; t += 8) {
        __m256 a0 = add ? _mm256_loadu_ps(dst + t) : _mm256_setzero_ps();
        for (int64_t k = 0; k < nt; k++)
            a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(w + k), _mm256_loadu_ps(base[k] + t), a0);
        _mm256_storeu_ps(dst + t, a0);
    }
}

__attribute__((target("avx2,fma"))) static inline double hsum_d(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return (double)_mm_cvtss_f32(s);
}

/* Up to nine taps in one pass over d: one accumulator per tap (nine chains hide the FMA latency);
 * nk is a literal at every call, so the tap loops unroll and the accumulators stay in registers. */
__attribute__((target("avx2,fma"))) static inline __attribute__((always_inline)) void
dot_block(const float *const *base, const float *d, int64_t len, double *acc, const int nk)
{
    __m256 a[9];
    const float *b[9];
    for (int k = 0; k < nk; k++) {
        a[k] = _mm256_setzero_ps();
        b[k] = base[k];
    }
    for (int64_t t = 0; t < len; t += 8) {
        const __m256 dv = _mm256_loadu_ps(d + t);
        for (int k = 0; k < nk; k++) a[k] = _mm256_fmadd_ps(dv, _mm256_loadu_ps(b[k] + t), a[k]);
    }
    for (int k = 0; k < nk; k++) acc[k] += hsum_d(a[k]);
}

__attribute__((target("avx2,fma"))) static void taps_dot_avx2(int64_t nt,
                                                               const float *const *base,
                                                               const float *d, int64_t len,
                                                               double *acc)
{
    for (int64_t k0 = 0; k0 < nt; k0 += 9) {
        switch (nt - k0 < 9 ? nt - k0 : 9) {
        case 1: dot_block(base + k0, d, len, acc + k0, 1); break;
        case 2: dot_block(base + k0, d, len, acc + k0, 2); break;
        case 3: dot_block(base + k0, d, len, acc + k0, 3); break;
        case 4: dot_block(base + k0, d, len, acc + k0, 4); break;
        case 5: dot_block(base + k0, d, len, acc + k0, 5); break;
        case 6: dot_block(base + k0, d, len, acc + k0, 6); break;
        case 7: dot_block(base + k0, d, len, acc + k0, 7); break;
        case 8: dot_block(base + k0, d, len, acc + k0, 8); break;
        default: dot_block(base + k0, d, len, acc + k0, 9); break;
        }
    }
}

/* Short rows (7 to 56 floats) in registers, the tail through a plain loop: cheaper than memcpy
 * calls, and than AVX2 masked loads and stores on AMD Zen (whole steps alternating with the
 * masked tails in one process on a Zen 3: ResNet-20 2.5 %, ResNeXt-29 8x4d 0-2 %,
 * bottleneck-29 0.5 % faster). A copy's tail is one more block ending at the row's end,
 * overlapping the one before (8 floats, or 4 for rows of 4 to 7: a 7x7 map's rows went through
 * the plain loop whole); an addition's, one block of 4 and then the plain loop. Against the
 * plain-loop tails (AMD EPYC Zen 3, 2 threads, batch 128, forward + backward, medians of 30
 * alternating in one process): dense 128 > 128 on 7x7 1.03x, 8 groups of 16 on 14x14
 * 1.04-1.06x, 32 groups of 8 on 7x7 1.1-1.14x. */

__attribute__((target("avx2,fma"))) static inline void row_copy_avx2(float *d, const float *s,
                                                                      int64_t n, float bias)
{
    const __m256 b = _mm256_set1_ps(bias);
    int64_t j = 0;
    if (n >= 8) {
        for (; j + 8 <= n; j += 8)
            _mm256_storeu_ps(d + j, _mm256_add_ps(_mm256_loadu_ps(s + j), b));
        if (j < n) _mm256_storeu_ps(d + n - 8, _mm256_add_ps(_mm256_loadu_ps(s + n - 8), b));
    } else if (n >= 4) {
        const __m128 b4 = _mm256_castps256_ps128(b);
        _mm_storeu_ps(d, _mm_add_ps(_mm_loadu_ps(s), b4));
        _mm_storeu_ps(d + n - 4, _mm_add_ps(_mm_loadu_ps(s + n - 4), b4));
    } else {
        for (; j < n; j++) d[j] = s[j] + bias;
    }
}

__attribute__((target("avx2,fma"))) static inline void row_add_avx2(float *d, const float *s,
                                                                     int64_t n)
{
    int64_t j = 0;
    for (; j + 8 <= n; j += 8)
        _mm256_storeu_ps(d + j, _mm256_add_ps(_mm256_loadu_ps(d + j), _mm256_loadu_ps(s + j)));
    if (j + 4 <= n) {
        _mm_storeu_ps(d + j, _mm_add_ps(_mm_loadu_ps(d + j), _mm_loadu_ps(s + j)));
        j += 4;
    }
    for (; j < n; j++) d[j] += s[j];
}

__attribute__((target("avx2,fma"))) static void pack_x_s1_avx2(const dw_geom *g, const float *x,
                                                                float *P)
{
    for (int64_t r = 0; r < g->h; r++)
        row_copy_avx2(P + (r + g->pad) * g->ws + g->pad, x + r * g->w, g->w, 0.0f);
}

__attribute__((target("avx2,fma"))) static void pack_dy_avx2(const dw_geom *g, const float *dy,
                                                              float *D)
{
    for (int64_t i = 0; i < g->ho; i++) row_copy_avx2(D + g->m0 + i * g->ws, dy + i * g->wo, g->wo, 0.0f);
}

__attribute__((target("avx2,fma"))) static void unpack_y_avx2(const dw_geom *g, const float *Y,
                                                               float bias, float *y)
{
    for (int64_t i = 0; i < g->ho; i++) row_copy_avx2(y + i * g->wo, Y + i * g->ws, g->wo, bias);
}

__attribute__((target("avx2,fma"))) static void unpack_dx_add_s1_avx2(const dw_geom *g,
                                                                       const float *DX, float *dx,
                                                                       int set)
{
    for (int64_t r = 0; r < g->h; r++) {
        if (set)
            row_copy_avx2(dx + r * g->w, DX + (r + g->pad) * g->ws + g->pad, g->w, 0.0f);
        else
            row_add_avx2(dx + r * g->w, DX + (r + g->pad) * g->ws + g->pad, g->w);
    }
}

/* Stride 2: de-interleave rows into the two column phases eight pairs at a time (pack), and
 * interleave them back while adding into dx (unpack). With AVX-512VL the ragged end of a row goes
 * through mask registers (the bodies below, as macros over the masked load and store); with AVX2
 * only, through plain loops (pack_x_s2_avx2, unpack_dx_add_s2_avx2): its masked store is
 * microcoded and slow on some CPUs. */
#define KMASK(n) ((__mmask8)((n) <= 0 ? 0 : (n) >= 8 ? 0xFF : (1u << (n)) - 1u))
#define MLOAD_512(p, n) _mm256_maskz_loadu_ps(KMASK(n), (p))
#define MSTORE_512(p, n, v) _mm256_mask_storeu_ps((p), KMASK(n), (v))

#define PACK_S2_BODY(MLOAD, MSTORE)                                                               \
    const int64_t pe = g->pad % 2, se = g->pad / 2, po = (g->pad + 1) % 2, so = (g->pad + 1) / 2; \
    for (int64_t r = 0; r < g->h; r++) {                                                          \
        const int64_t rp = r + g->pad;                                                            \
        float *row = P + (rp % 2) * 2 * g->lp + (rp / 2) * g->ws;                                 \
        float *ev = row + pe * g->lp + se, *od = row + po * g->lp + so;                           \
        const float *xr = x + r * g->w;                                                           \
        for (int64_t k = 0; 2 * k < g->w; k += 8) {                                               \
            const int64_t left = g->w - 2 * k; /* columns 2k .. 2k + 15, left of them exist */    \
            const int full = left >= 16;                                                          \
            const __m256 v0 = full ? _mm256_loadu_ps(xr + 2 * k) : MLOAD(xr + 2 * k, left);       \
            const __m256 v1 = full ? _mm256_loadu_ps(xr + 2 * k + 8)                              \
                                   : MLOAD(xr + 2 * k + 8, left - 8);                             \
            const __m256 e = _mm256_shuffle_ps(v0, v1, _MM_SHUFFLE(2, 0, 2, 0));                  \
            const __m256 o = _mm256_shuffle_ps(v0, v1, _MM_SHUFFLE(3, 1, 3, 1));                  \
            const __m256 es = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8)); \
            const __m256 os = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), 0xD8)); \
            if (full) {                                                                           \
                _mm256_storeu_ps(ev + k, es);                                                     \
                _mm256_storeu_ps(od + k, os);                                                     \
            } else {                                                                              \
                MSTORE(ev + k, (left + 1) / 2, es);                                               \
                MSTORE(od + k, left / 2, os);                                                     \
            }                                                                                     \
        }                                                                                         \
    }

/* set: added to zero, which gives what accumulating onto a zeroed dx gives */
#define UNPACK_S2_BODY(MLOAD, MSTORE)                                                             \
    const int64_t pe = g->pad % 2, se = g->pad / 2, po = (g->pad + 1) % 2, so = (g->pad + 1) / 2; \
    const __m256 z = _mm256_setzero_ps();                                                         \
    for (int64_t r = 0; r < g->h; r++) {                                                          \
        const int64_t rp = r + g->pad;                                                            \
        const float *row = DX + (rp % 2) * 2 * g->lu + (rp / 2) * g->ws;                          \
        const float *ev = row + pe * g->lu + se, *od = row + po * g->lu + so;                     \
        float *dst = dx + r * g->w;                                                               \
        for (int64_t k = 0; 2 * k < g->w; k += 8) {                                               \
            const int64_t left = g->w - 2 * k;                                                    \
            const int full = left >= 16;                                                          \
            const __m256 e = full ? _mm256_loadu_ps(ev + k) : MLOAD(ev + k, (left + 1) / 2);      \
            const __m256 o = full ? _mm256_loadu_ps(od + k) : MLOAD(od + k, left / 2);            \
            const __m256 lo = _mm256_unpacklo_ps(e, o), hi = _mm256_unpackhi_ps(e, o);            \
            const __m256 v0 = _mm256_permute2f128_ps(lo, hi, 0x20);                               \
            const __m256 v1 = _mm256_permute2f128_ps(lo, hi, 0x31);                               \
            if (full) {                                                                           \
                _mm256_storeu_ps(dst + 2 * k,                                                     \
                                 _mm256_add_ps(set ? z : _mm256_loadu_ps(dst + 2 * k), v0));      \
                _mm256_storeu_ps(dst + 2 * k + 8,                                                 \
                                 _mm256_add_ps(set ? z : _mm256_loadu_ps(dst + 2 * k + 8), v1));  \
            } else {                                                                              \
                MSTORE(dst + 2 * k, left,                                                         \
                       _mm256_add_ps(set ? z : MLOAD(dst + 2 * k, left), v0));                    \
                MSTORE(dst + 2 * k + 8, left - 8,                                                 \
                       _mm256_add_ps(set ? z : MLOAD(dst + 2 * k + 8, left - 8), v1));            \
            }                                                                                     \
        }                                                                                         \
    }

__attribute__((target("avx512f,avx512vl,avx2,fma"))) static void
pack_x_s2_avx512(const dw_geom *g, const float *x, float *P)
{
    PACK_S2_BODY(MLOAD_512, MSTORE_512)
}

__attribute__((target("avx512f,avx512vl,avx2,fma"))) static void
unpack_dx_add_s2_avx512(const dw_geom *g, const float *DX, float *dx, int set)
{
    UNPACK_S2_BODY(MLOAD_512, MSTORE_512)
}

/* Eight pairs x[j0 .. j0 + 16) de-interleaved: the even ones to ev, the odd ones to od. */
__attribute__((target("avx2,fma"))) static inline void split16(const float *x, float *ev,
                                                                float *od)
{
    const __m256 v0 = _mm256_loadu_ps(x), v1 = _mm256_loadu_ps(x + 8);
    const __m256d e = _mm256_castps_pd(_mm256_shuffle_ps(v0, v1, _MM_SHUFFLE(2, 0, 2, 0)));
    const __m256d o = _mm256_castps_pd(_mm256_shuffle_ps(v0, v1, _MM_SHUFFLE(3, 1, 3, 1)));
    _mm256_storeu_ps(ev, _mm256_castpd_ps(_mm256_permute4x64_pd(e, 0xD8)));
    _mm256_storeu_ps(od, _mm256_castpd_ps(_mm256_permute4x64_pd(o, 0xD8)));
}

/* Four pairs x[j0 .. j0 + 8) de-interleaved. */
__attribute__((target("avx2,fma"))) static inline void split8(const float *x, float *ev, float *od)
{
    const __m128 v0 = _mm_loadu_ps(x), v1 = _mm_loadu_ps(x + 4);
    _mm_storeu_ps(ev, _mm_shuffle_ps(v0, v1, _MM_SHUFFLE(2, 0, 2, 0)));
    _mm_storeu_ps(od, _mm_shuffle_ps(v0, v1, _MM_SHUFFLE(3, 1, 3, 1)));
}

/* Eight pairs (ev[k], od[k]) interleaved into dst[0 .. 16): added to dst, or (set) stored as
 * 0 + the value, as the plain loop below does. */
__attribute__((target("avx2,fma"))) static inline void join16(const float *ev, const float *od,
                                                               float *dst, int set)
{
    const __m256 e = _mm256_loadu_ps(ev), o = _mm256_loadu_ps(od);
    const __m256 lo = _mm256_unpacklo_ps(e, o), hi = _mm256_unpackhi_ps(e, o);
    const __m256 z = _mm256_setzero_ps();
    _mm256_storeu_ps(dst, _mm256_add_ps(set ? z : _mm256_loadu_ps(dst),
                                        _mm256_permute2f128_ps(lo, hi, 0x20)));
    _mm256_storeu_ps(dst + 8, _mm256_add_ps(set ? z : _mm256_loadu_ps(dst + 8),
                                            _mm256_permute2f128_ps(lo, hi, 0x31)));
}

/* Four pairs interleaved, as join16. */
__attribute__((target("avx2,fma"))) static inline void join8(const float *ev, const float *od,
                                                              float *dst, int set)
{
    const __m128 e = _mm_loadu_ps(ev), o = _mm_loadu_ps(od), z = _mm_setzero_ps();
    _mm_storeu_ps(dst, _mm_add_ps(set ? z : _mm_loadu_ps(dst), _mm_unpacklo_ps(e, o)));
    _mm_storeu_ps(dst + 4, _mm_add_ps(set ? z : _mm_loadu_ps(dst + 4), _mm_unpackhi_ps(e, o)));
}

/* AVX2 without AVX-512: plain loops instead of vmaskmov for what is left of a row, whose stores
 * are slow on AMD Zen (a whole bottleneck-29 step alternating with the masked version in one
 * process on a Zen 3: 1-3 % faster at the best step, 3-5 % at the median; ResNet-20 1-3 %).
 * Rows of 8 floats or more take no scalar steps but for an odd row's last element: the blocks
 * of 16 (or 8) run to the row's end, the last one starting at the last even position from which
 * a whole block fits, overlapping the one before (the same values are stored twice). Unpacking
 * adds into dx, so it cannot overlap: blocks of 16, one of 8, then scalar pairs. Against
 * blocks of 16 and scalar pairs for the rest (12 of 28 floats on 28x28, all of a 14-float row),
 * measured on an AMD EPYC (Zen 3), 2 threads, batch 128, forward + backward, medians of 30
 * alternating in one process: Winograd 32 > 32 on 28x28 1.07x, 64 > 64 on 14x14 1.04-1.09x,
 * 3x3 stride 2 64 > 64 from 28x28 1.03-1.05x, 128 > 128 from 14x14 1.05x. */
__attribute__((target("avx2,fma"))) static void pack_x_s2_avx2(const dw_geom *g, const float *x,
                                                                float *P)
{
    const int64_t pe = g->pad % 2, se = g->pad / 2, po = (g->pad + 1) % 2, so = (g->pad + 1) / 2;
    const int64_t w = g->w, blk = w >= 16 ? 16 : w >= 8 ? 8 : 0;
    const int64_t last = blk ? (w - blk) & ~(int64_t)1 : 0; /* start of the last block */
    for (int64_t r = 0; r < g->h; r++) {
        const int64_t rp = r + g->pad;
        float *row = P + (rp % 2) * 2 * g->lp + (rp / 2) * g->ws;
        float *ev = row + pe * g->lp + se, *od = row + po * g->lp + so;
        const float *xr = x + r * w;
        int64_t j = 0;
        if (blk == 16) {
            for (; j < last; j += 16) split16(xr + j, ev + j / 2, od + j / 2);
            split16(xr + last, ev + last / 2, od + last / 2);
            j = last + 16;
        } else if (blk == 8) {
            split8(xr, ev, od);
            split8(xr + last, ev + last / 2, od + last / 2);
            j = last + 8;
        }
        for (; j < w; j += 2) {
            ev[j / 2] = xr[j];
            if (j + 1 < w) od[j / 2] = xr[j + 1];
        }
    }
}

__attribute__((target("avx2,fma"))) static void unpack_dx_add_s2_avx2(const dw_geom *g,
                                                                       const float *DX, float *dx,
                                                                       int set)
{
    const int64_t pe = g->pad % 2, se = g->pad / 2, po = (g->pad + 1) % 2, so = (g->pad + 1) / 2;
    const int64_t w = g->w;
    for (int64_t r = 0; r < g->h; r++) {
        const int64_t rp = r + g->pad;
        const float *row = DX + (rp % 2) * 2 * g->lu + (rp / 2) * g->ws;
        const float *ev = row + pe * g->lu + se, *od = row + po * g->lu + so;
        float *dst = dx + r * w;
        int64_t k = 0;
        for (; 2 * k + 16 <= w; k += 8) join16(ev + k, od + k, dst + 2 * k, set);
        /* set: a last block of 8 pairs ending at the last even position from which it fits,
         * overlapping the one before */
        if (set && 2 * k < w && w >= 16) {
            k = (w - 16) / 2;
            join16(ev + k, od + k, dst + 2 * k, 1);
            k += 8;
        }
        /* then four pairs (without set, no overlap: dx is added to), and with set, four more
         * overlapping them */
        if (2 * k + 8 <= w) {
            join8(ev + k, od + k, dst + 2 * k, set);
            k += 4;
        }
        if (set && 2 * k < w && w >= 8) {
            k = (w - 8) / 2;
            join8(ev + k, od + k, dst + 2 * k, 1);
            k += 4;
        }
        for (int64_t j = 2 * k; j < g->w; j += 2) {
            dst[j] = (set ? 0.0f : dst[j]) + ev[j / 2];
            if (j + 1 < g->w) dst[j + 1] = (set ? 0.0f : dst[j + 1]) + od[j / 2];
        }
    }
}
#endif

static void pack_x(int avx2, const dw_geom *g, const float *x, float *P)
{
#ifdef DW_X86
    if (avx2 && g->s <= 2) {
        if (g->s == 1)
            pack_x_s1_avx2(g, x, P);
        else if (nn_have_avx512vl())
            pack_x_s2_avx512(g, x, P);
        else
            pack_x_s2_avx2(g, x, P);
        return;
    }
#endif
    (void)avx2;
    pack_x_generic(g, x, P);
}

static void pack_dy(int avx2, const dw_geom *g, const float *dy, float *D)
{
#ifdef DW_X86
    if (avx2) {
        pack_dy_avx2(g, dy, D);
        return;
    }
#endif
    (void)avx2;
    pack_dy_generic(g, dy, D);
}

static void unpack_y(int avx2, const dw_geom *g, const float *Y, float bias, float *y)
{
#ifdef DW_X86
    if (avx2) {
        unpack_y_avx2(g, Y, bias, y);
        return;
    }
#endif
    (void)avx2;
    unpack_y_generic(g, Y, bias, y);
}

static void unpack_dx_add(int avx2, const dw_geom *g, const float *DX, float *dx, int set)
{
#ifdef DW_X86
    if (avx2 && g->s <= 2) {
        if (g->s == 1)
            unpack_dx_add_s1_avx2(g, DX, dx, set);
        else if (nn_have_avx512vl())
            unpack_dx_add_s2_avx512(g, DX, dx, set);
        else
            unpack_dx_add_s2_avx2(g, DX, dx, set);
        return;
    }
#endif
    (void)avx2;
    unpack_dx_add_generic(g, DX, dx, set);
}

static void taps_sum(int avx2, int64_t nt, const float *const *base, const float *w, float *dst,
                     int64_t len, int add)
{
#ifdef DW_X86
    if (avx2) {
        taps_sum_avx2(nt, base, w, dst, len, add);
        return;
    }
#endif
    (void)avx2;
    taps_sum_generic(nt, base, w, dst, len, add);
}

static void taps_dot(int avx2, int64_t nt, const float *const *base, const float *d, int64_t len,
                     double *acc)
{
#ifdef DW_X86
    if (avx2) {
        taps_dot_avx2(nt, base, d, len, acc);
        return;
    }
#endif
    (void)avx2;
    taps_dot_generic(nt, base, d, len, acc);
}

/* Planes are short and visited out of address order (channel blocks, images): fetch the next
 * ones while this one is computed instead of waiting on their first touch. */
static void prefetch_plane(const float *p, int64_t len, int write)
{
    for (int64_t i = 0; i < len; i += 16) {
        if (write)
            __builtin_prefetch(p + i, 1, 3);
        else
            __builtin_prefetch(p + i, 0, 3);
    }
}

/* ---- forward ------------------------------------------------------------------------------- */

void nn_dw_forward(const gbtd_conv2d_shape *s, const float *x, const float *wt, const float *b,
                   float *y, float *ws, size_t per_thread, int nt)
{
    dw_geom g;
    geom_make(s, &g);
    const int avx2 = nn_have_avx2();
    const int64_t C = s->c_in, items = s->n * C, hw = s->h * s->w, hwo = g.ho * g.wo;
#pragma omp parallel num_threads(nt)
    {
        float *P = ws + (size_t)nn_thread_id() * per_thread, *Y = P + g.o_y;
        memset(P, 0, sizeof(float) * g.o_dy);
        const float *base[DW_MAX_TAPS];
        for (int64_t k = 0; k < g.ntaps; k++) base[k] = P + g.ph[k] * g.lp + g.off[k];
        /* dynamic: items write disjoint outputs, so the schedule never changes the result, and a
         * thread that the OS deschedules (shared machines) does not hold the others back */
#pragma omp for schedule(dynamic, 16)
        for (int64_t t = 0; t < items; t++) {
            const int64_t n = t / C, ci = t % C;
            if (t + 2 < items) prefetch_plane(x + (t + 2) * hw, hw, 0);
            pack_x(avx2, &g, x + t * hw, P);
            for (int64_t o = ci * g.m; o < (ci + 1) * g.m; o++) {
                taps_sum(avx2, g.ntaps, base, wt + o * g.ntaps, Y, g.lout, 0);
                unpack_y(avx2, &g, Y, b ? b[o] : 0.0f, y + (n * s->c_out + o) * hwo);
            }
        }
    }
}

/* ---- backward ------------------------------------------------------------------------------ */

void nn_dw_backward(const gbtd_conv2d_shape *s, const float *x, const float *wt, const float *dy,
                    float *dx, float *dw, float *ws, size_t per_thread, int nt, int set_dx)
{
    dw_geom g;
    geom_make(s, &g);
    const int avx2 = nn_have_avx2();
    const int64_t C = s->c_in, hw = s->h * s->w, hwo = g.ho * g.wo;
    /* channel blocks: at most DW_BLOCK, and at least two blocks per thread when C allows */
    int64_t cb = C / (2 * (int64_t)nt);
    cb = cb < 1 ? 1 : cb > DW_BLOCK ? DW_BLOCK : cb;
#pragma omp parallel num_threads(nt)
    {
        float *P = ws + (size_t)nn_thread_id() * per_thread, *D = P + g.o_dy, *DX = P + g.o_dx;
        float *accf = P + g.o_acc;
        if ((uintptr_t)accf % sizeof(double)) accf++;
        double *acc = (double *)(void *)accf;
        memset(P, 0, sizeof(float) * g.o_acc);
        const float *xbase[DW_MAX_TAPS];
        for (int64_t k = 0; k < g.ntaps; k++) xbase[k] = P + g.ph[k] * g.lp + g.off[k];
        /* backward-data, per phase: the taps that land in it and their dy offsets */
        const float *dbase[DW_MAX_TAPS];
        int64_t tap_of[DW_MAX_TAPS], first[DW_MAX_TAPS + 1];
        {
            int64_t c = 0;
            for (int64_t ph = 0; ph < g.nph; ph++) {
                first[ph] = c;
                for (int64_t k = 0; k < g.ntaps; k++)
                    if (g.ph[k] == ph) {
                        tap_of[c] = k;
                        dbase[c] = D + g.m0 - g.off[k];
                        c++;
                    }
            }
            first[g.nph] = c;
        }
        /* Threads own blocks of consecutive channels (their weight gradients are private, summed
         * over the images in the same order whatever the thread count); inside a block the
         * planes of one image are contiguous in memory, which the prefetchers follow. */
        const int64_t nblk = (C + cb - 1) / cb;
#pragma omp for schedule(dynamic, 1)
        for (int64_t blk = 0; blk < nblk; blk++) {
            const int64_t c0 = blk * cb, c1 = c0 + cb < C ? c0 + cb : C;
            if (dw)
                for (int64_t k = 0; k < (c1 - c0) * g.m * g.ntaps; k++) acc[k] = 0.0;
            for (int64_t n = 0; n < s->n; n++)
            for (int64_t ci = c0; ci < c1; ci++) {
                double *acc_c = acc + (ci - c0) * g.m * g.ntaps;
                {
                    /* the next plane of this block: next channel, or first channel of n + 1 */
                    const int64_t nn = ci + 1 < c1 ? n : n + 1, nc = ci + 1 < c1 ? ci + 1 : c0;
                    if (nn < s->n) {
                        if (dw) prefetch_plane(x + (nn * C + nc) * hw, hw, 0);
                        if (dx) prefetch_plane(dx + (nn * C + nc) * hw, hw, 1);
                        prefetch_plane(dy + (nn * s->c_out + nc * g.m) * hwo, g.m * hwo, 0);
                    }
                }
                if (dw) pack_x(avx2, &g, x + (n * C + ci) * hw, P);
                for (int64_t j = 0; j < g.m; j++) {
                    const int64_t o = ci * g.m + j;
                    pack_dy(avx2, &g, dy + (n * s->c_out + o) * hwo, D);
                    if (dw) taps_dot(avx2, g.ntaps, xbase, D + g.m0, g.lout, acc_c + j * g.ntaps);
                    if (dx)
                        for (int64_t ph = 0; ph < g.nph; ph++) {
                            float wsel[DW_MAX_TAPS];
                            const int64_t cnt = first[ph + 1] - first[ph];
                            for (int64_t c = 0; c < cnt; c++)
                                wsel[c] = wt[o * g.ntaps + tap_of[first[ph] + c]];
                            if (cnt > 0)
                                taps_sum(avx2, cnt, dbase + first[ph], wsel, DX + ph * g.lu, g.lu,
                                         j > 0);
                            else if (j == 0)
                                memset(DX + ph * g.lu, 0, sizeof(float) * (size_t)g.lu);
                        }
                }
                if (dx) unpack_dx_add(avx2, &g, DX, dx + (n * C + ci) * hw, set_dx);
            }
            if (dw)
                for (int64_t k = 0; k < (c1 - c0) * g.m * g.ntaps; k++)
                    dw[c0 * g.m * g.ntaps + k] += (float)acc[k];
        }
    }
}

/* ---- grouped --------------------------------------------------------------------------------
 * One (image, group) item: its cig input planes packed into phase planes; the forward is the
 * implicit GEMM y_ext (cog x lout) = W_g (cog x cig taps) B, B's row (c, tap) being phase plane
 * ph(tap) of channel c shifted by off(tap). Backward-weight is the same B against dy_ext;
 * backward-data, per phase, the GEMM of the transposed weights of the taps of that phase with
 * dy_ext shifted back by their offsets. */

typedef struct grp_ctx {
    const gbtd_conv2d_shape *s;
    dw_geom g;
    int avx2;
    int64_t hw, hwo;
    int64_t boff[DW_MAX_TAPS];  /* forward / dw: offset of tap k inside a channel's phase planes */
    int64_t dboff[DW_MAX_TAPS]; /* dx: minus the offset of the j-th tap of each phase (in order) */
    int64_t tap_of[DW_MAX_TAPS], first[DW_MAX_TAPS + 1];
    /* weight gradient as dwT (cig taps x cog) += planes x dy^T when cog is a multiple of 8 (no
     * horizontal sums); otherwise dw += dy x planes^T with sums per output */
    int tn;
} grp_ctx;

static void grp_ctx_make(const gbtd_conv2d_shape *s, grp_ctx *c)
{
    c->s = s;
    geom_make(s, &c->g);
    c->avx2 = nn_have_avx2();
    c->hw = s->h * s->w;
    c->hwo = s->h_out * s->w_out;
    const dw_geom *g = &c->g;
    for (int64_t k = 0; k < g->ntaps; k++) c->boff[k] = g->ph[k] * g->lp + g->off[k];
    int64_t n = 0;
    for (int64_t ph = 0; ph < g->nph; ph++) {
        c->first[ph] = n;
        for (int64_t k = 0; k < g->ntaps; k++)
            if (g->ph[k] == ph) {
                c->tap_of[n] = k;
                c->dboff[n] = g->m0 - g->off[k];
                n++;
            }
    }
    c->first[g->nph] = n;
    c->tn = g->cog % 8 == 0;
}

static void grp_pack_x(const grp_ctx *c, const float *xg, float *P)
{
    const dw_geom *g = &c->g;
    for (int64_t ch = 0; ch < g->cig; ch++) pack_x(c->avx2, g, xg + ch * c->hw, P + ch * g->nph * g->lp);
}

void nn_grp_forward(const gbtd_conv2d_shape *s, const float *x, const float *wt, const float *b,
                    float *y, float *ws, size_t per_thread, int nt)
{
    grp_ctx c;
    grp_ctx_make(s, &c);
    const dw_geom *g = &c.g;
    const int64_t G = s->groups, items = s->n * G;
#pragma omp parallel num_threads(nt)
    {
        float *P = ws + (size_t)nn_thread_id() * per_thread, *Y = P + g->go_y;
        memset(P, 0, sizeof(float) * g->go_y);
#pragma omp for schedule(dynamic, 2)
        for (int64_t t = 0; t < items; t++) {
            const int64_t n = t / G, gi = t % G;
            grp_pack_x(&c, x + (n * s->c_in + gi * g->cig) * c.hw, P);
            nn_gemm_conv_nn(g->cog, g->lout, g->cig, g->ntaps, wt + gi * g->cog * g->kg, g->kg, P,
                            g->nph * g->lp, c.boff, Y, g->lout, 1);
            for (int64_t o = 0; o < g->cog; o++) {
                const int64_t oc = gi * g->cog + o;
                unpack_y(c.avx2, g, Y + o * g->lout, b ? b[oc] : 0.0f, y + (n * s->c_out + oc) * c.hwo);
            }
        }
    }
}

/* Transposed weights of group gi for backward-data: per phase, WT[c][o ntp + j] = w[o][c][tap_j]. */
static void grp_weights_t(const grp_ctx *c, const float *wg, float *WT)
{
    const dw_geom *g = &c->g;
    for (int64_t ph = 0; ph < g->nph; ph++) {
        const int64_t j0 = c->first[ph], ntp = c->first[ph + 1] - j0;
        float *W = WT + g->cig * g->cog * j0;
        for (int64_t ch = 0; ch < g->cig; ch++)
            for (int64_t o = 0; o < g->cog; o++)
                for (int64_t j = 0; j < ntp; j++)
                    W[(ch * g->cog + o) * ntp + j] = wg[o * g->kg + ch * g->ntaps + c->tap_of[j0 + j]];
    }
}

/* dw: with c->tn, the transposed accumulator (kg x cog) of group gi; else dw itself. */
static void grp_bwd_item(const grp_ctx *c, int64_t n, int64_t gi, const float *x, const float *wt,
                         const float *dy, float *dx, float *dw, float *P, int wt_ready,
                         int set_dx)
{
    const gbtd_conv2d_shape *s = c->s;
    const dw_geom *g = &c->g;
    float *D = P + g->go_dy, *DX = P + g->go_dx, *WT = P + g->go_wt, *DYT = P + g->go_dyt;
    const float *dyg = dy + (n * s->c_out + gi * g->cog) * c->hwo;
    if (dx || !c->tn)
        for (int64_t o = 0; o < g->cog; o++)
            pack_dy(c->avx2, g, dyg + o * c->hwo, D + o * g->ldy);
    if (dw) {
        grp_pack_x(c, x + (n * s->c_in + gi * g->cig) * c->hw, P);
        if (c->tn) {
            /* dy transposed to (pixel of the extended plane, output channel); the scratch
             * columns j >= w_out and rows past h_out stay zero from the initial memset */
            /* channel innermost: the stores run contiguously and the cog source rows being
             * read stay in L1, where storing channel by channel touched a new line each time */
            for (int64_t i = 0; i < g->ho; i++)
                for (int64_t j = 0; j < g->wo; j++) {
                    const float *src = dyg + i * g->wo + j;
                    float *dst = DYT + (i * g->ws + j) * g->cog;
                    for (int64_t o = 0; o < g->cog; o++) dst[o] = src[o * c->hwo];
                }
            nn_gemm_conv_tn(g->cig, g->ntaps, g->cog, g->lout, P, g->nph * g->lp, c->boff, DYT,
                            g->cog, dw, g->cog);
        } else {
            nn_gemm_conv_nt(g->cog, g->cig, g->ntaps, g->lout, D + g->m0, g->ldy, P,
                            g->nph * g->lp, c->boff, dw + gi * g->cog * g->kg, g->kg);
        }
    }
    if (dx) {
        if (!wt_ready) grp_weights_t(c, wt + gi * g->cog * g->kg, WT);
        /* Stride 1: only the columns that unpack reads, from the first interior position to
         * the last (rounded up to 8 inside the plane; 64 of 88 on a 7x7 map with padding 1). */
        int64_t lo = 0, cols = g->lu;
        if (g->s == 1) {
            lo = g->pad * g->ws + g->pad;
            cols = r8((g->h - 1) * g->ws + g->w);
            if (lo + cols > g->lu) cols = g->lu - lo;
        }
        for (int64_t ph = 0; ph < g->nph; ph++) {
            const int64_t j0 = c->first[ph], ntp = c->first[ph + 1] - j0;
            if (ntp == 0) {
                for (int64_t ch = 0; ch < g->cig; ch++)
                    memset(DX + (ch * g->nph + ph) * g->lu, 0, sizeof(float) * (size_t)g->lu);
                continue;
            }
            nn_gemm_conv_nn(g->cig, cols, g->cog, ntp, WT + g->cig * g->cog * j0, g->cog * ntp,
                            D + lo, g->ldy, c->dboff + j0, DX + ph * g->lu + lo, g->nph * g->lu, 1);
        }
        float *dxg = dx + (n * s->c_in + gi * g->cig) * c->hw;
        for (int64_t ch = 0; ch < g->cig; ch++)
            unpack_dx_add(c->avx2, g, DX + ch * g->nph * g->lu, dxg + ch * c->hw, set_dx);
    }
}

void nn_grp_backward(const gbtd_conv2d_shape *s, const float *x, const float *wt, const float *dy,
                     float *dx, float *dw, float *ws, size_t per_thread, int nt, int set_dx)
{
    grp_ctx c;
    grp_ctx_make(s, &c);
    const dw_geom *g = &c.g;
    const int64_t G = s->groups, wcount = s->c_out * g->kg;
    const int64_t gw = g->cog * g->kg; /* weights per group */
    if (G >= nt) {
        /* Threads own whole groups: their weight gradients and input channels are their own
         * (dynamic schedule: a descheduled thread does not hold the others back; the sums of
         * one group still run over the images in order, so the result does not change). */
#pragma omp parallel num_threads(nt)
        {
            float *P = ws + (size_t)nn_thread_id() * per_thread, *DWT = P + g->go_dwt;
            memset(P, 0, sizeof(float) * g->go_dwt);
#pragma omp for schedule(dynamic, 1)
            for (int64_t gi = 0; gi < G; gi++) {
                if (dw && c.tn) memset(DWT, 0, sizeof(float) * (size_t)gw);
                float *dwg = !dw ? NULL : c.tn ? DWT : dw;
                for (int64_t n = 0; n < s->n; n++)
                    grp_bwd_item(&c, n, gi, x, wt, dy, dx, dwg, P, n > 0, set_dx);
                if (dw && c.tn) {
                    float *d = dw + gi * gw;
                    for (int64_t o = 0; o < g->cog; o++)
                        for (int64_t m = 0; m < g->kg; m++) d[o * g->kg + m] += DWT[m * g->cog + o];
                }
            }
        }
        return;
    }
    /* Threads split the images, each with a private weight gradient, summed after. */
#pragma omp parallel num_threads(nt)
    {
        /* private gradients: per group, transposed (kg x cog) with c.tn, else as dw */
        float *P = ws + (size_t)nn_thread_id() * per_thread, *dwp = dw ? P + g->go_dw : NULL;
        memset(P, 0, sizeof(float) * g->go_dwt);
        if (dwp) memset(dwp, 0, sizeof(float) * (size_t)wcount);
        /* one group (a dense convolution): its transposed weights are made once per thread */
        int ready = 0;
#pragma omp for schedule(static)
        for (int64_t n = 0; n < s->n; n++)
            for (int64_t gi = 0; gi < G; gi++) {
                grp_bwd_item(&c, n, gi, x, wt, dy, dx, dwp ? (c.tn ? dwp + gi * gw : dwp) : NULL,
                             P, ready, set_dx);
                ready = G == 1 && dx;
            }
    }
    if (dw) {
        /* threads that got no images left their (zeroed) buffers untouched */
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t k = 0; k < wcount; k++) {
            /* k indexes dw (group, o, m); the private buffers may hold (group, m, o) */
            const int64_t gi = k / gw, o = (k % gw) / g->kg, m = k % g->kg;
            const size_t kp = (size_t)(c.tn ? gi * gw + m * g->cog + o : k);
            float acc = 0.0f;
            for (int t = 0; t < nt; t++) acc += ws[(size_t)t * per_thread + g->go_dw + kp];
            dw[k] += acc;
        }
    }
}

/* ---- phase planes for other kernels (conv_wino.c) ------------------------------------------ */

static dw_geom plane_geom(int64_t s, int64_t pad, int64_t h, int64_t w, int64_t ws, int64_t lp)
{
    dw_geom g;
    memset(&g, 0, sizeof g);
    g.s = s;
    g.pad = pad;
    g.h = h;
    g.w = w;
    g.ws = ws;
    g.lp = lp;
    g.lu = lp;
    return g;
}

void nn_phase_pack(int64_t s, int64_t pad, int64_t h, int64_t w, int64_t ws, int64_t lp,
                   const float *x, float *P)
{
    const dw_geom g = plane_geom(s, pad, h, w, ws, lp);
    pack_x(nn_have_avx2(), &g, x, P);
}

void nn_phase_unpack(int64_t s, int64_t pad, int64_t h, int64_t w, int64_t ws, int64_t lp,
                     const float *P, float *x, int set)
{
    const dw_geom g = plane_geom(s, pad, h, w, ws, lp);
    unpack_dx_add(nn_have_avx2(), &g, P, x, set);
}
