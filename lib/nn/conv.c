/* gbtd nn: fast 2-d convolution (groups = 1 through OpenBLAS sgemm, grouped through im2col per
 * group and register-blocked small GEMMs, depthwise through direct loops), OpenMP over images,
 * groups or channels. See ops.h for the contract. */
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "core/blas.h"
#include "nn/conv_phase.h"
#include "nn/conv_wino.h"
#include "nn/gemm_small.h"
#include "nn/ops_internal.h"

typedef struct conv_plan {
    gbtd_conv2d_shape s;
    int64_t cig, cog, kg, hw, hwo, wcount;
    int direct;    /* 1x1, stride 1, pad 0: the input is its own im2col matrix */
    int depthwise; /* groups == c_in */
    int use_blas;  /* per-group GEMMs large enough for OpenBLAS */
    int phase_grp; /* grouped through phase planes and implicit-GEMM kernels (conv_phase.c) */
    int wino;      /* dense 3x3 stride 1 pad 1 through Winograd F(2x2, 3x3) (conv_wino.c) */
    /* Dense OpenBLAS path on small maps: nb images side by side in one GEMM (columns
     * j hwo .. (j + 1) hwo - 1 of a chunk belong to its image j), so that the weights are packed
     * once per chunk rather than once per image and the weight gradient's GEMM runs over
     * ld = nb hwo pixels instead of hwo. */
    int batched;
    int64_t nb, ld;
    size_t col_len, ybuf_len, per_thread;
    /* 1x1 stride 1 (dense, image by image): gbtd's streaming GEMM (gemm_small.c) instead of
     * OpenBLAS for the forward and backward-data; wt_off: each thread's transposed weights */
    int stream;
    size_t wt_off;
    /* with stream, and the gradient's vector side a multiple of 8: backward-data and the weight
     * gradient from one pass over each image's panels (nn_gemm_stream_bwd); t_off: its
     * transposed panel, 16 x max(c_in, c_out) floats per thread */
    int fused;
    size_t t_off;
} conv_plan;

/* Columns a batched chunk aims at (images per chunk: ceil(NN_CHUNK_COLS / hwo)); maps of fewer
 * than NN_CHUNK_COLS / 5 pixels are batched. Measured (2 threads, batch 128): 4-9 % faster at
 * 7x7 (1x1 128 > 512 and 512 > 128, 3x3 128 > 128, 1x1 stride 2 256 > 512 from 14x14), but
 * 0-15 % slower at 14x14, where one image's GEMM is already wide enough. */
enum { NN_CHUNK_COLS = 512 };

static size_t round16(size_t v) { return (v + 15) / 16 * 16; }

/* Winograd F(2x2, 3x3) for dense 3x3 stride-1 pad-1 convolutions with at least
 * NN_WINO_CHANNELS input channels on maps of NN_WINO_MIN_PIXELS outputs or more, or half as many
 * channels on maps of NN_WINO_WIDE_PIXELS. Measured (2 threads, batch 128, inputs and gradients
 * coming from memory as in a network, against the phase-plane path): backward 1.2x faster at
 * 32 channels on 28x28 and 64 on 14x14, forward 1.05-1.1x (1.25x when they are in cache); with
 * 16 channels on 28x28 or 32 on 14x14 the transforms' memory traffic eats the saving (0.9-1.0x),
 * and on 7x7 maps a third of the 2x2 tiles' outputs fall outside the map (0.8-1.1x at 64-256
 * channels). Those figures are from an Intel CPU with AVX-512. On an AMD EPYC (Zen 3, AVX2),
 * once Winograd's GEMMs got their own loop (conv_taps in gemm_small.c), 32 channels on 14x14
 * measured 1.15x forward and 1.17x backward against the phase planes, 16 on 28x28 1.03x and
 * 1.23x (7x7 maps still 0.8x), and ResNet-20's step 7-12 % faster (median, three alternating
 * runs), so without AVX-512 the channel thresholds are halved. GBTD_NN_NO_WINOGRAD set (and not
 * "0") turns it off. */
enum { NN_WINO_CHANNELS = 64, NN_WINO_MIN_PIXELS = 144, NN_WINO_WIDE_PIXELS = 784 };

static int wino_enabled(void) { return !nn_switched_off("GBTD_NN_NO_WINOGRAD"); }

static int plan_make(const char *fn, const gbtd_conv2d_shape *s0, conv_plan *p)
{
    GBTD_CHECK(nn_conv_shape(fn, s0, &p->s));
    const gbtd_conv2d_shape *s = &p->s;
    p->cig = s->c_in / s->groups;
    p->cog = s->c_out / s->groups;
    p->kg = p->cig * s->kh * s->kw;
    p->hw = s->h * s->w;
    p->hwo = s->h_out * s->w_out;
    p->wcount = s->c_out * p->kg;
    p->direct = s->kh == 1 && s->kw == 1 && s->stride == 1 && s->pad == 0;
    p->depthwise = s->groups > 1 && p->cig == 1;
    p->use_blas = s->groups == 1 || (p->cog >= 32 && p->kg >= 32);
    /* Phase planes + implicit GEMM for grouped convolutions, and for dense ones with up to 128
     * input channels (measured faster than im2col + OpenBLAS there: 3x at 16 channels, 1.3x at
     * 64; at 128 on 7x7 maps 1.18x forward, 1.02x backward against the batched OpenBLAS path, 2
     * threads, batch 128). Dense 1x1 convolutions stay plain GEMMs, on the subsampled input at
     * stride 2 (1.3x faster than phase planes at 32-64 channels, 1.4x at 128). */
    /* AVX2 without AVX-512: from half as many channels (see NN_WINO_CHANNELS) */
    const int64_t wc = nn_have_avx512vl() ? NN_WINO_CHANNELS : NN_WINO_CHANNELS / 2;
    p->wino = ((s->c_in >= wc && p->hwo >= NN_WINO_MIN_PIXELS) ||
               (2 * s->c_in >= wc && p->hwo >= NN_WINO_WIDE_PIXELS)) &&
              nn_wino_per_thread(s) > 0 && wino_enabled();
    p->phase_grp = (s->groups > 1 || (s->c_in <= 128 && s->kh * s->kw > 1)) && !p->depthwise &&
                   !p->direct && !p->wino && nn_grp_per_thread(s) > 0;
    p->batched = s->groups == 1 && !p->phase_grp && !p->wino && !p->depthwise &&
                 p->hwo < NN_CHUNK_COLS / 5 &&
                 s->n > 1;
    p->nb = p->batched ? (NN_CHUNK_COLS + p->hwo - 1) / p->hwo : 1;
    if (p->nb > s->n) p->nb = s->n;
    p->ld = p->nb * p->hwo;
    p->col_len = p->batched ? round16((size_t)(p->kg * p->ld))
                 : (p->direct || p->depthwise) ? 0 : round16((size_t)(p->kg * p->hwo));
    p->ybuf_len = p->batched ? round16((size_t)(p->cog * p->ld)) : 0;
    /* Depthwise: the phase-plane kernels' workspace; without it they fall back to direct loops. */
    p->per_thread = p->depthwise ? nn_dw_per_thread(s)
                    : p->wino      ? nn_wino_per_thread(s)
                    : p->phase_grp ? nn_grp_per_thread(s)
                                   : p->col_len + p->ybuf_len + round16((size_t)p->wcount);
    /* 1x1 stride 1 on maps of 16k pixels: forward and backward-data through gbtd's streaming
     * GEMM (gemm_small.c). Measured on an AMD EPYC (Zen 3), 2 threads, batch 128, inputs from
     * memory, alternating with OpenBLAS in one process: forward 1.2-1.4x on 28x28 maps (32 > 128
     * 9.5 -> 7.4 ms, 128 > 32 8.5 -> 7.0, 128 > 64 13.2 -> 10.0), backward-data storing dx 1.4x
     * (32 > 128), adding to it 0.9-1.05x; on 14x14 maps (196 pixels: a 16-pixel panel's rows
     * straddle cache lines) 0.9x, so those stay with OpenBLAS. Whole bottleneck-29 steps 2-4 %
     * faster (both orders). The weight gradient stays with OpenBLAS. Not where AVX-512 is in
     * use: there OpenBLAS's kernels are twice as wide as this AVX2 one (not measured). */
    p->stream = p->direct && s->groups == 1 && !p->batched && p->hwo % 16 == 0 &&
                nn_have_avx2() && !nn_have_avx512vl() && !nn_switched_off("GBTD_NN_NO_STREAM");
    /* room for the transposed weights whether or not the streaming GEMM is taken, so that the
     * workspace size does not depend on the CPU or the environment */
    p->wt_off = p->per_thread;
    if (p->direct && s->groups == 1 && !p->batched) p->per_thread += round16((size_t)p->wcount);
    p->t_off = p->per_thread;
    if (p->direct && s->groups == 1 && !p->batched)
        p->per_thread += round16((size_t)(16 * (s->c_in > s->c_out ? s->c_in : s->c_out)));
    /* The weight gradient through OpenBLAS image by image ran at 90-100 GF/s here (it packs dy
     * and x first, and dy is read from memory a second time for dx). Measured (AMD EPYC, Zen 3,
     * 2 threads, batch 128, 28x28, best of 30 alternating with the separate passes in one
     * process, dx stored / added): 32 > 128 15.9 / 17.5 against 18.1 / 19.3 ms, 128 > 32 12.7 /
     * 14.4 against 14.7 / 15.5, 32 > 32 5.4 / 5.5 against 6.1 / 6.0, 128 > 64 23.3 / 24.6
     * against 24.6 / 26.4 (1.05-1.15x). GBTD_NN_NO_FUSED_BWD set turns it off. */
    p->fused = p->stream &&
               (nn_stream_bwd_gtrans(s->c_in, s->c_out) ? s->c_out : s->c_in) % 8 == 0 &&
               !nn_switched_off("GBTD_NN_NO_FUSED_BWD");
    return GBTD_OK;
}

static int max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static int team_size(void)
{
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

size_t gbtd_conv2d_workspace_size(const gbtd_conv2d_shape *s, int threads)
{
    conv_plan p;
    if (plan_make("conv2d_workspace_size", s, &p) != GBTD_OK) return 0;
    if (threads <= 0) threads = gbtd_get_threads();
    if (threads < 1) threads = 1;
    return p.per_thread * (size_t)threads;
}

/* Threads the workspace allows, capped by `work` items; GBTD_EINVAL if it allows none. */
static int usable_threads(const char *fn, const conv_plan *p, const float *ws, size_t ws_len,
                          int64_t work, int *nt)
{
    int t = max_threads();
    if (p->per_thread > 0) {
        if (!ws || ws_len < p->per_thread)
            return gbtd_error(GBTD_EINVAL, "%s: workspace of %zu floats, need %zu (see "
                              "gbtd_conv2d_workspace_size)", fn, ws ? ws_len : (size_t)0,
                              p->per_thread);
        const size_t fit = ws_len / p->per_thread;
        if ((size_t)t > fit) t = (int)fit;
    }
    if ((int64_t)t > work) t = (int)work;
    *nt = t < 1 ? 1 : t;
    return GBTD_OK;
}

/* Depthwise: 1 (and the thread count) when the phase-plane kernels can run in this workspace;
 * 0 means the direct loops, which need no workspace. */
static int dw_fast_threads(const conv_plan *p, const float *ws, size_t ws_len, int64_t work,
                           int *nt)
{
    if (p->per_thread == 0 || !ws || ws_len < p->per_thread) return 0;
    const size_t fit = ws_len / p->per_thread;
    int t = max_threads();
    if ((size_t)t > fit) t = (int)fit;
    if ((int64_t)t > work) t = (int)work;
    *nt = t < 1 ? 1 : t;
    return 1;
}

/* ---- im2col / col2im for one group of one image -------------------------------------------- */

static void j_range(const gbtd_conv2d_shape *s, int64_t q, int64_t *lo, int64_t *hi)
{
    const int64_t a = s->pad - q; /* need j * stride >= a */
    *lo = a <= 0 ? 0 : (a + s->stride - 1) / s->stride;
    const int64_t b = s->w - 1 + s->pad - q; /* need j * stride <= b */
    *hi = b < 0 ? 0 : b / s->stride + 1;
    if (*hi > s->w_out) *hi = s->w_out;
    if (*lo > *hi) *lo = *hi;
}

/* col row k = (c, p, q) starts at col + k ld (ld >= hwo; ld = hwo for one image alone). */
static void im2col_ld(const conv_plan *p, const float *x, float *col, int64_t ld)
{
    const gbtd_conv2d_shape *s = &p->s;
    for (int64_t c = 0; c < p->cig; c++)
        for (int64_t pp = 0; pp < s->kh; pp++)
            for (int64_t q = 0; q < s->kw; q++) {
                float *row = col + ((c * s->kh + pp) * s->kw + q) * ld;
                int64_t lo, hi;
                j_range(s, q, &lo, &hi);
                for (int64_t i = 0; i < s->h_out; i++) {
                    float *r = row + i * s->w_out;
                    const int64_t iy = i * s->stride + pp - s->pad;
                    if (iy < 0 || iy >= s->h) {
                        memset(r, 0, sizeof(float) * (size_t)s->w_out);
                        continue;
                    }
                    const float *xr = x + (c * s->h + iy) * s->w + q - s->pad;
                    for (int64_t j = 0; j < lo; j++) r[j] = 0.0f;
                    if (s->stride == 1)
                        memcpy(r + lo, xr + lo, sizeof(float) * (size_t)(hi - lo));
                    else
                        for (int64_t j = lo; j < hi; j++) r[j] = xr[j * s->stride];
                    for (int64_t j = hi; j < s->w_out; j++) r[j] = 0.0f;
                }
            }
}

static void im2col(const conv_plan *p, const float *x, float *col) { im2col_ld(p, x, col, p->hwo); }

static void col2im_add_ld(const conv_plan *p, const float *col, int64_t ld, float *dx)
{
    const gbtd_conv2d_shape *s = &p->s;
    for (int64_t c = 0; c < p->cig; c++)
        for (int64_t pp = 0; pp < s->kh; pp++)
            for (int64_t q = 0; q < s->kw; q++) {
                const float *row = col + ((c * s->kh + pp) * s->kw + q) * ld;
                int64_t lo, hi;
                j_range(s, q, &lo, &hi);
                for (int64_t i = 0; i < s->h_out; i++) {
                    const int64_t iy = i * s->stride + pp - s->pad;
                    if (iy < 0 || iy >= s->h) continue;
                    const float *r = row + i * s->w_out;
                    float *xr = dx + (c * s->h + iy) * s->w + q - s->pad;
                    if (s->stride == 1)
                        for (int64_t j = lo; j < hi; j++) xr[j] += r[j];
                    else
                        for (int64_t j = lo; j < hi; j++) xr[j * s->stride] += r[j];
                }
            }
}

static void col2im_add(const conv_plan *p, const float *col, float *dx)
{
    col2im_add_ld(p, col, p->hwo, dx);
}

/* ---- GEMM dispatch ------------------------------------------------------------------------- */

/* C (M x N) (+)= A (M x K) B (K x N), all row-major and contiguous; transA: A stored K x M. */
static void gemm_nn(const conv_plan *p, int transA, int64_t M, int64_t N, int64_t K,
                    const float *A, const float *B, float *C, int beta0)
{
    if (p->use_blas) {
        cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, CblasNoTrans, (blasint)M,
                    (blasint)N, (blasint)K, 1.0f, A, transA ? (blasint)M : (blasint)K, B,
                    (blasint)N, beta0 ? 0.0f : 1.0f, C, (blasint)N);
    } else if (transA) {
        nn_gemm_small_nn(M, N, K, A, 1, M, B, N, C, N, beta0);
    } else {
        nn_gemm_small_nn(M, N, K, A, K, 1, B, N, C, N, beta0);
    }
}

/* C (M x N) += A (M x L) B (N x L)^T. */
static void gemm_nt(const conv_plan *p, int64_t M, int64_t N, int64_t L, const float *A,
                    const float *B, float *C)
{
    if (p->use_blas)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)M, (blasint)N, (blasint)L,
                    1.0f, A, (blasint)L, B, (blasint)L, 1.0f, C, (blasint)N);
    else
        nn_gemm_small_nt(M, N, L, A, L, B, L, C, N);
}

/* ---- depthwise ---------------------------------------------------------------------------- */

static inline __attribute__((always_inline)) void dw_fwd_plane_body(const gbtd_conv2d_shape *s,
                                                                    const float *x, const float *w,
                                                                    float bias, float *y)
{
    for (int64_t t = 0; t < s->h_out * s->w_out; t++) y[t] = bias;
    for (int64_t i = 0; i < s->h_out; i++) {
        float *yr = y + i * s->w_out;
        for (int64_t pp = 0; pp < s->kh; pp++) {
            const int64_t iy = i * s->stride + pp - s->pad;
            if (iy < 0 || iy >= s->h) continue;
            for (int64_t q = 0; q < s->kw; q++) {
                int64_t lo, hi;
                j_range(s, q, &lo, &hi);
                const float wv = w[pp * s->kw + q];
                const float *xr = x + iy * s->w + q - s->pad;
                if (s->stride == 1)
                    for (int64_t j = lo; j < hi; j++) yr[j] += wv * xr[j];
                else
                    for (int64_t j = lo; j < hi; j++) yr[j] += wv * xr[j * s->stride];
            }
        }
    }
}

/* dx_plane += conv^T(dy_plane); dw_taps += dy (*) x, for one (image, output channel). */
static inline __attribute__((always_inline)) void dw_bwd_plane_body(const gbtd_conv2d_shape *s,
                                                                    const float *x, const float *w,
                                                                    const float *dy, float *dx,
                                                                    float *dwacc)
{
    for (int64_t i = 0; i < s->h_out; i++) {
        const float *dyr = dy + i * s->w_out;
        for (int64_t pp = 0; pp < s->kh; pp++) {
            const int64_t iy = i * s->stride + pp - s->pad;
            if (iy < 0 || iy >= s->h) continue;
            for (int64_t q = 0; q < s->kw; q++) {
                int64_t lo, hi;
                j_range(s, q, &lo, &hi);
                const int64_t off = iy * s->w + q - s->pad;
                if (dwacc) {
                    const float *xr = x + off;
                    float acc = 0.0f;
                    if (s->stride == 1)
                        for (int64_t j = lo; j < hi; j++) acc += dyr[j] * xr[j];
                    else
                        for (int64_t j = lo; j < hi; j++) acc += dyr[j] * xr[j * s->stride];
                    dwacc[pp * s->kw + q] += acc;
                }
                if (dx) {
                    const float wv = w[pp * s->kw + q];
                    float *xr = dx + off;
                    if (s->stride == 1)
                        for (int64_t j = lo; j < hi; j++) xr[j] += wv * dyr[j];
                    else
                        for (int64_t j = lo; j < hi; j++) xr[j * s->stride] += wv * dyr[j];
                }
            }
        }
    }
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
__attribute__((target("avx2,fma"))) static void dw_fwd_avx2(const gbtd_conv2d_shape *s,
                                                             const float *x, const float *w,
                                                             float bias, float *y)
{
    dw_fwd_plane_body(s, x, w, bias, y);
}
__attribute__((target("avx2,fma"))) static void dw_bwd_avx2(const gbtd_conv2d_shape *s,
                                                             const float *x, const float *w,
                                                             const float *dy, float *dx,
                                                             float *dwacc)
{
    dw_bwd_plane_body(s, x, w, dy, dx, dwacc);
}
#define NN_DW_AVX2 1
#endif

static void dw_fwd_plane(const gbtd_conv2d_shape *s, const float *x, const float *w, float bias,
                         float *y, int avx2)
{
#ifdef NN_DW_AVX2
    if (avx2) {
        dw_fwd_avx2(s, x, w, bias, y);
        return;
    }
#endif
    (void)avx2;
    dw_fwd_plane_body(s, x, w, bias, y);
}

static void dw_bwd_plane(const gbtd_conv2d_shape *s, const float *x, const float *w,
                         const float *dy, float *dx, float *dwacc, int avx2)
{
#ifdef NN_DW_AVX2
    if (avx2) {
        dw_bwd_avx2(s, x, w, dy, dx, dwacc);
        return;
    }
#endif
    (void)avx2;
    dw_bwd_plane_body(s, x, w, dy, dx, dwacc);
}

/* ---- dense GEMMs over chunks of images (small maps) ---------------------------------------- */

/* Images per chunk for `nt` threads: at most p->nb, and each thread's ceil(n / nt) images split
 * into equal chunks (no short last chunk where an even split exists). */
static int64_t chunk_images(const conv_plan *p, int nt)
{
    const int64_t per = (p->s.n + nt - 1) / nt, k = (per + p->nb - 1) / p->nb;
    return (per + k - 1) / k;
}

/* The im2col matrices of images n0 .. n0 + cnt - 1 side by side: kg rows of stride ld, image j
 * in columns j hwo .. (j + 1) hwo - 1. */
static void chunk_cols(const conv_plan *p, const float *x, int64_t n0, int64_t cnt, float *col)
{
    const gbtd_conv2d_shape *s = &p->s;
    for (int64_t j = 0; j < cnt; j++) {
        const float *xn = x + (n0 + j) * s->c_in * p->hw;
        if (p->direct)
            for (int64_t c = 0; c < p->kg; c++)
                memcpy(col + c * p->ld + j * p->hwo, xn + c * p->hw, sizeof(float) * (size_t)p->hw);
        else
            im2col_ld(p, xn, col + j * p->hwo, p->ld);
    }
}

static void forward_batched(const conv_plan *p, const float *x, const float *wt, const float *b,
                            float *y, float *ws, int nt)
{
    const gbtd_conv2d_shape *s = &p->s;
    const int64_t nb = chunk_images(p, nt), chunks = (s->n + nb - 1) / nb;
    const int saved = nn_blas_single_begin(nt);
#pragma omp parallel num_threads(nt)
    {
        float *col = ws + (size_t)nn_thread_id() * p->per_thread, *Y = col + p->col_len;
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < chunks; t++) {
            const int64_t n0 = t * nb, cnt = s->n - n0 < nb ? s->n - n0 : nb;
            chunk_cols(p, x, n0, cnt, col);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)s->c_out,
                        (blasint)(cnt * p->hwo), (blasint)p->kg, 1.0f, wt, (blasint)p->kg, col,
                        (blasint)p->ld, 0.0f, Y, (blasint)p->ld);
            for (int64_t j = 0; j < cnt; j++)
                for (int64_t o = 0; o < s->c_out; o++) {
                    float *dst = y + ((n0 + j) * s->c_out + o) * p->hwo;
                    const float *src = Y + o * p->ld + j * p->hwo;
                    if (b) {
                        const float bv = b[o];
                        for (int64_t k = 0; k < p->hwo; k++) dst[k] = src[k] + bv;
                    } else {
                        memcpy(dst, src, sizeof(float) * (size_t)p->hwo);
                    }
                }
        }
    }
    nn_blas_single_end(saved);
}

/* ---- forward -------------------------------------------------------------------------------- */

int gbtd_conv2d_forward(const gbtd_conv2d_shape *s0, const float *x, const float *wt,
                        const float *b, float *y, float *ws, size_t ws_len)
{
    static const char *fn = "conv2d_forward";
    conv_plan p;
    GBTD_CHECK(plan_make(fn, s0, &p));
    NN_NONNULL(fn, x);
    NN_NONNULL(fn, wt);
    NN_NONNULL(fn, y);
    const gbtd_conv2d_shape *s = &p.s;
    const int avx2 = nn_have_avx2();
    int nt = 1;
    if (p.depthwise && dw_fast_threads(&p, ws, ws_len, s->n * s->c_in, &nt)) {
        nn_dw_forward(s, x, wt, b, y, ws, p.per_thread, nt);
        return GBTD_OK;
    }
    if (p.depthwise) {
        nt = max_threads();
        if ((int64_t)nt > s->n * s->c_out) nt = (int)(s->n * s->c_out);
        const int64_t planes = s->n * s->c_out;
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t t = 0; t < planes; t++) {
            const int64_t o = t % s->c_out, n = t / s->c_out;
            const int64_t ci = o / p.cog;
            dw_fwd_plane(s, x + (n * s->c_in + ci) * p.hw, wt + o * s->kh * s->kw, b ? b[o] : 0.0f,
                         y + t * p.hwo, avx2);
        }
        return GBTD_OK;
    }
    GBTD_CHECK(usable_threads(fn, &p, ws, ws_len, s->n * s->groups, &nt));
    if (p.wino) {
        nn_wino_forward(s, x, wt, b, y, ws, p.per_thread, nt);
        return GBTD_OK;
    }
    if (p.phase_grp) {
        nn_grp_forward(s, x, wt, b, y, ws, p.per_thread, nt);
        return GBTD_OK;
    }
    if (p.batched) {
        forward_batched(&p, x, wt, b, y, ws, nt);
        return GBTD_OK;
    }
    const int saved = nn_blas_single_begin(nt);
    const int64_t G = s->groups, items = s->n * G;
#pragma omp parallel num_threads(nt)
    {
        float *col = p.col_len ? ws + (size_t)nn_thread_id() * p.per_thread : NULL;
        /* dynamic: items are independent, and a thread held back (a busy machine) does not
         * hold the others */
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < items; t++) {
            const int64_t n = t / G, g = t % G;
            const float *xg = x + (n * s->c_in + g * p.cig) * p.hw;
            float *yg = y + (n * s->c_out + g * p.cog) * p.hwo;
            const float *B = xg;
            if (!p.direct) {
                im2col(&p, xg, col);
                B = col;
            }
            if (b)
                for (int64_t o = 0; o < p.cog; o++) {
                    const float bv = b[g * p.cog + o];
                    for (int64_t k = 0; k < p.hwo; k++) yg[o * p.hwo + k] = bv;
                }
            if (p.stream)
                nn_gemm_stream(p.cog, p.hwo, p.kg, wt, p.kg, B, p.hw, yg, p.hwo, b != NULL,
                               b == NULL);
            else
                gemm_nn(&p, 0, p.cog, p.hwo, p.kg, wt + g * p.cog * p.kg, B, yg, b == NULL);
        }
    }
    nn_blas_single_end(saved);
    return GBTD_OK;
}

/* ---- backward ------------------------------------------------------------------------------- */

static void bwd_item(const conv_plan *p, int64_t n, int64_t g, const float *x, const float *wt,
                     const float *dy, float *dx, float *dwt, float *col, int set_dx)
{
    const gbtd_conv2d_shape *s = &p->s;
    const float *xg = x + (n * s->c_in + g * p->cig) * p->hw;
    const float *dyg = dy + (n * s->c_out + g * p->cog) * p->hwo;
    const float *wg = wt + g * p->cog * p->kg;
    if (dwt) {
        const float *B = xg;
        if (!p->direct) {
            im2col(p, xg, col);
            B = col;
        }
        gemm_nt(p, p->cog, p->kg, p->hwo, dyg, B, dwt + g * p->cog * p->kg);
    }
    if (dx) {
        float *dxg = dx + (n * s->c_in + g * p->cig) * p->hw;
        if (p->stream) {
            /* the thread's transposed weights (transpose_w) at col + wt_off */
            nn_gemm_stream(p->kg, p->hwo, p->cog, col + p->wt_off, p->cog, dyg, p->hwo, dxg, p->hw,
                           !set_dx, set_dx);
        } else if (p->direct) {
            gemm_nn(p, 1, p->kg, p->hwo, p->cog, wg, dyg, dxg, set_dx);
        } else {
            gemm_nn(p, 1, p->kg, p->hwo, p->cog, wg, dyg, col, 1);
            if (set_dx) memset(dxg, 0, sizeof(float) * (size_t)(p->cig * p->hw));
            col2im_add(p, col, dxg);
        }
    }
}

/* WT (c_in x c_out) = the weights transposed (groups 1): backward-data's A for the streaming
 * GEMM. */
static void transpose_w(const conv_plan *p, const float *wt, float *WT)
{
    const int64_t co = p->s.c_out, ci = p->kg;
    for (int64_t c = 0; c < ci; c++)
        for (int64_t o = 0; o < co; o++) WT[c * co + o] = wt[o * ci + c];
}

/* Dense 1x1 stride 1, image by image: dx (+)= W^T dy and dw += dy x^T from one pass over each
 * image's 16-pixel panels (nn_gemm_stream_bwd). Each thread accumulates a private gradient (in
 * the layout nn_stream_bwd_gtrans gives), summed in thread order after. */
static void backward_fused(const conv_plan *p, const float *x, const float *wt, const float *dy,
                           float *dx, float *dw, float *ws, int nt, int set_dx)
{
    const gbtd_conv2d_shape *s = &p->s;
    const int64_t ci = s->c_in, co = s->c_out;
    const int gt = nn_stream_bwd_gtrans(ci, co);
    const size_t g_off = p->col_len + p->ybuf_len;
    for (int t = 0; t < nt; t++)
        memset(ws + (size_t)t * p->per_thread + g_off, 0, sizeof(float) * (size_t)p->wcount);
#pragma omp parallel num_threads(nt)
    {
        float *base = ws + (size_t)nn_thread_id() * p->per_thread;
        if (dx) transpose_w(p, wt, base + p->wt_off);
#pragma omp for schedule(static)
        for (int64_t n = 0; n < s->n; n++)
            nn_gemm_stream_bwd(ci, p->hwo, co, base + p->wt_off, co, dy + n * co * p->hwo, p->hwo,
                               dx ? dx + n * ci * p->hw : NULL, p->hw, !set_dx, set_dx,
                               x + n * ci * p->hw, p->hw, base + g_off, base + p->t_off);
    }
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t k = 0; k < p->wcount; k++) {
        const size_t kp = (size_t)(gt ? (k % ci) * co + k / ci : k);
        float acc = 0.0f;
        for (int t = 0; t < nt; t++) acc += ws[(size_t)t * p->per_thread + g_off + kp];
        dw[k] += acc;
    }
}

/* Backward of the chunk of images n0 .. n0 + cnt - 1 (dense, batched plan): dw += dY X^T over
 * the chunk's pixels, dx (+)= col2im(W^T dY). D holds dy of the chunk as cog x ld. */
static void bwd_chunk(const conv_plan *p, int64_t n0, int64_t cnt, const float *x, const float *wt,
                      const float *dy, float *dx, float *dw, float *col, float *D, int set_dx)
{
    const gbtd_conv2d_shape *s = &p->s;
    const int64_t cols = cnt * p->hwo;
    for (int64_t j = 0; j < cnt; j++)
        for (int64_t o = 0; o < s->c_out; o++)
            memcpy(D + o * p->ld + j * p->hwo, dy + ((n0 + j) * s->c_out + o) * p->hwo,
                   sizeof(float) * (size_t)p->hwo);
    if (dw) {
        chunk_cols(p, x, n0, cnt, col);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (blasint)s->c_out, (blasint)p->kg,
                    (blasint)cols, 1.0f, D, (blasint)p->ld, col, (blasint)p->ld, 1.0f, dw,
                    (blasint)p->kg);
    }
    if (!dx) return;
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)p->kg, (blasint)cols,
                (blasint)s->c_out, 1.0f, wt, (blasint)p->kg, D, (blasint)p->ld, 0.0f, col,
                (blasint)p->ld);
    for (int64_t j = 0; j < cnt; j++) {
        float *dxn = dx + (n0 + j) * s->c_in * p->hw;
        const float *cj = col + j * p->hwo;
        if (p->direct) {
            for (int64_t c = 0; c < s->c_in; c++) {
                float *d = dxn + c * p->hw;
                const float *r = cj + c * p->ld;
                if (set_dx)
                    memcpy(d, r, sizeof(float) * (size_t)p->hw);
                else
                    for (int64_t k = 0; k < p->hw; k++) d[k] += r[k];
            }
        } else {
            if (set_dx) memset(dxn, 0, sizeof(float) * (size_t)(s->c_in * p->hw));
            col2im_add_ld(p, cj, p->ld, dxn);
        }
    }
}

/* Threads own contiguous ranges of images, cut into chunks; each thread accumulates a private
 * weight gradient (zeroed for all nt threads first, in case the runtime starts fewer), summed
 * in thread order after: the result depends on the thread count only. */
static void backward_batched(const conv_plan *p, const float *x, const float *wt, const float *dy,
                             float *dx, float *dw, float *ws, int nt, int set_dx)
{
    const gbtd_conv2d_shape *s = &p->s;
    const int64_t nb = chunk_images(p, nt), per = (s->n + nt - 1) / nt;
    const size_t dw_off = p->col_len + p->ybuf_len;
    if (dw && nt > 1)
        for (int t = 0; t < nt; t++)
            memset(ws + (size_t)t * p->per_thread + dw_off, 0, sizeof(float) * (size_t)p->wcount);
    const int saved = nn_blas_single_begin(nt);
#pragma omp parallel num_threads(nt)
    {
        const int t = nn_thread_id();
        float *col = ws + (size_t)t * p->per_thread, *D = col + p->col_len;
        float *dwp = !dw ? NULL : nt > 1 ? col + dw_off : dw;
        /* range r of images; a team smaller than nt takes the ranges of the missing threads */
        for (int r = t; r < nt; r += team_size()) {
            const int64_t lo = (int64_t)r * per, hi = lo + per < s->n ? lo + per : s->n;
            for (int64_t n0 = lo; n0 < hi; n0 += nb)
                bwd_chunk(p, n0, hi - n0 < nb ? hi - n0 : nb, x, wt, dy, dx, dwp, col, D, set_dx);
        }
    }
    nn_blas_single_end(saved);
    if (dw && nt > 1) {
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t k = 0; k < p->wcount; k++) {
            float acc = 0.0f;
            for (int t = 0; t < nt; t++) acc += ws[(size_t)t * p->per_thread + dw_off + (size_t)k];
            dw[k] += acc;
        }
    }
}

int gbtd_conv2d_backward(const gbtd_conv2d_shape *s0, const float *x, const float *wt,
                         const float *dy, float *dx, float *dw, float *db, float *ws,
                         size_t ws_len)
{
    return nn_conv2d_backward_set(s0, x, wt, dy, dx, dw, db, ws, ws_len, 0);
}

int nn_conv2d_backward_set(const gbtd_conv2d_shape *s0, const float *x, const float *wt,
                           const float *dy, float *dx, float *dw, float *db, float *ws,
                           size_t ws_len, int set_dx)
{
    static const char *fn = "conv2d_backward";
    conv_plan p;
    GBTD_CHECK(plan_make(fn, s0, &p));
    NN_NONNULL(fn, x);
    NN_NONNULL(fn, wt);
    NN_NONNULL(fn, dy);
    const gbtd_conv2d_shape *s = &p.s;
    int nt = 1;
    const int dw_fast = p.depthwise && dw_fast_threads(&p, ws, ws_len, s->c_in, &nt);
    if (p.depthwise && !dw_fast) {
        nt = max_threads();
        if ((int64_t)nt > s->c_in) nt = (int)s->c_in;
    }
    if (!p.depthwise) GBTD_CHECK(usable_threads(fn, &p, ws, ws_len, s->n * s->groups, &nt));
    if (db) {
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t o = 0; o < s->c_out; o++) {
            double acc = 0.0;
            for (int64_t n = 0; n < s->n; n++) {
                const float *r = dy + (n * s->c_out + o) * p.hwo;
                float part = 0.0f;
                for (int64_t k = 0; k < p.hwo; k++) part += r[k];
                acc += part;
            }
            db[o] += (float)acc;
        }
    }
    if (!dx && !dw) return GBTD_OK;
    /* All but the depthwise direct loops store each dx slice themselves when set_dx. */
    const int stores_dx = !p.depthwise || dw_fast;
    if (dx && set_dx && !stores_dx) {
        memset(dx, 0, sizeof(float) * (size_t)(s->n * s->c_in * p.hw));
        set_dx = 0;
    }
    if (!dx) set_dx = 0;
    if (dw_fast) {
        nn_dw_backward(s, x, wt, dy, dx, dw, ws, p.per_thread, nt, set_dx);
        return GBTD_OK;
    }
    if (p.wino) {
        nn_wino_backward(s, x, wt, dy, dx, dw, ws, p.per_thread, nt, set_dx);
        return GBTD_OK;
    }
    if (p.phase_grp) {
        nn_grp_backward(s, x, wt, dy, dx, dw, ws, p.per_thread, nt, set_dx);
        return GBTD_OK;
    }
    if (p.depthwise) {
        const int avx2 = nn_have_avx2();
        const int64_t taps = s->kh * s->kw;
#pragma omp parallel for num_threads(nt) schedule(static)
        for (int64_t ci = 0; ci < s->c_in; ci++)
            for (int64_t o = ci * p.cog; o < (ci + 1) * p.cog; o++)
                for (int64_t n = 0; n < s->n; n++)
                    dw_bwd_plane(s, x + (n * s->c_in + ci) * p.hw, wt + o * taps,
                                 dy + (n * s->c_out + o) * p.hwo,
                                 dx ? dx + (n * s->c_in + ci) * p.hw : NULL,
                                 dw ? dw + o * taps : NULL, avx2);
        return GBTD_OK;
    }
    if (p.batched) {
        backward_batched(&p, x, wt, dy, dx, dw, ws, nt, set_dx);
        return GBTD_OK;
    }
    if (p.fused && dw) {
        backward_fused(&p, x, wt, dy, dx, dw, ws, nt, set_dx);
        return GBTD_OK;
    }
    const int64_t G = s->groups;
    const int saved = nn_blas_single_begin(nt);
    if (nt == 1) {
        if (p.stream && dx) transpose_w(&p, wt, ws + p.wt_off);
        for (int64_t n = 0; n < s->n; n++)
            for (int64_t g = 0; g < G; g++) bwd_item(&p, n, g, x, wt, dy, dx, dw, ws, set_dx);
    } else if (G >= nt) {
        /* Each thread owns whole groups: their weight gradients and input channels are its own. */
#pragma omp parallel num_threads(nt)
        {
            float *col = ws + (size_t)nn_thread_id() * p.per_thread;
#pragma omp for schedule(static)
            for (int64_t g = 0; g < G; g++)
                for (int64_t n = 0; n < s->n; n++) bwd_item(&p, n, g, x, wt, dy, dx, dw, col, set_dx);
        }
    } else {
        /* Threads split the images; each accumulates a private weight gradient, summed after.
         * All nt private buffers are zeroed first, in case the runtime starts fewer threads. */
        if (dw)
            for (int t = 0; t < nt; t++)
                memset(ws + (size_t)t * p.per_thread + p.col_len, 0, sizeof(float) * (size_t)p.wcount);
#pragma omp parallel num_threads(nt)
        {
            float *col = ws + (size_t)nn_thread_id() * p.per_thread;
            float *dwp = dw ? col + p.col_len : NULL;
            if (p.stream && dx) transpose_w(&p, wt, col + p.wt_off);
#pragma omp for schedule(static)
            for (int64_t n = 0; n < s->n; n++)
                for (int64_t g = 0; g < G; g++) bwd_item(&p, n, g, x, wt, dy, dx, dwp, col, set_dx);
        }
        if (dw) {
#pragma omp parallel for num_threads(nt) schedule(static)
            for (int64_t k = 0; k < p.wcount; k++) {
                float acc = 0.0f;
                for (int t = 0; t < nt; t++) acc += ws[(size_t)t * p.per_thread + p.col_len + (size_t)k];
                dw[k] += acc;
            }
        }
    }
    nn_blas_single_end(saved);
    return GBTD_OK;
}
