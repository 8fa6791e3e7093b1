/* gbtd nn: 3x3 stride-1 convolution by Winograd F(2x2, 3x3) (see conv_wino.h). */
#include <string.h>

#include "nn/conv_phase.h"
#include "nn/conv_wino.h"
#include "nn/gemm_small.h"

/* Images side by side in one set of GEMMs: enough that a GEMM spans about WG_MIN_TILES tiles
 * (one image on 28x28 maps, 4 on 14x14); narrower GEMMs run well below the kernels' speed. A
 * whole image's transforms are held at once, so maps of more than WG_MAX_TILES tiles (larger than
 * about 62x62, where V alone would pass 4 MB per thread at 64 channels) are left to the other
 * paths. */
enum { WG_MIN_TILES = 192, WG_MAX_TILES = 1024, WG_XI = 16 };

typedef struct wg_geom {
    int64_t C, K, H, W, ck;   /* ck = max(C, K): channels a buffer may hold */
    int64_t ht, wt, ws;       /* tile rows, tile columns, phase-plane row width (wt + 1) */
    int64_t ltp;              /* ht ws rounded up to 8: the phase planes' tile positions */
    int64_t lt;               /* tiles of an image, ht wt: the GEMMs' columns per image */
    int64_t lty;              /* output phase plane: ltp and 8 floats of slack */
    int64_t lpl;              /* input phase plane (padded input, stride-2 phases) */
    int64_t nb, tb;           /* images per group; the GEMMs' row stride (>= nb lt + 8) */
    int64_t off[16], ph[16];  /* element (a, q) of a tile: phase plane and offset from t */
    size_t o_p, o_y, o_v, o_m, o_t, o_w, per_thread;
} wg_geom;

static int64_t r8(int64_t v) { return (v + 7) / 8 * 8; }

static int wg_make(const gbtd_conv2d_shape *s, wg_geom *g)
{
    if (s->groups != 1 || s->kh != 3 || s->kw != 3 || s->stride != 1 || s->pad != 1) return 0;
    g->C = s->c_in;
    g->K = s->c_out;
    g->H = s->h;
    g->W = s->w;
    g->ck = g->C > g->K ? g->C : g->K;
    g->ht = (g->H + 1) / 2;
    g->wt = (g->W + 1) / 2;
    g->ws = g->wt + 1;
    g->ltp = r8(g->ht * g->ws);
    if (g->ltp > WG_MAX_TILES) return 0;
    /* The GEMMs run over the ht wt tiles of each image only. The phase planes hold a scratch
     * column of tiles (tile (r, c) sits at r ws + c), so the transforms go row by row in blocks
     * of 8 tiles, the last block of a row running past it: the input transform's spill lands
     * on the next row's (or image's) first tiles, written after it, and the output transform's
     * on the scratch column and the next row's start, or the slack after the last row (lty).
     * Against the GEMMs over all ltp positions (AMD EPYC Zen 3, 2 threads, batch 128, forward
     * + backward, medians of 20, three alternations of the two builds): 16 > 16 on 28x28
     * 1.04-1.1x, 32 > 32 on 28x28 1.04-1.1x, 64 > 64 on 14x14 (49 tiles of 56) 1.07-1.1x. */
    g->lt = g->ht * g->wt;
    g->lty = g->ltp + 8;
    /* reads reach position (ht - 1) ws + r8(wt) - 1 + ws + 1; the data fill ht + 1 rows of ws */
    const int64_t need = (g->ht - 1) * g->ws + r8(g->wt) + g->ws + 1, rows = (g->ht + 1) * g->ws;
    g->lpl = r8(need > rows ? need : rows);
    g->nb = (WG_MIN_TILES + g->lt - 1) / g->lt;
    if (g->nb > s->n) g->nb = s->n;
    /* 8 columns of slack for the last image's spill */
    g->tb = r8(g->nb * g->lt + 8);
    /* Row strides of V, M and DT that are a multiple of 16 floats ran 1.1-1.3x slower than 8
     * floats more (measured, 2 threads, batch 128, the two alternating in one process: 64
     * channels on 14x14 (224 -> 232) forward 8.4 -> 7.3 ms, backward 16.3 -> 13.8 ms; 128 on
     * 14x14 40.6 -> 31.1 and 72.9 -> 61.2 ms; 64 on 12x12 and 56x56 1.09-1.16x), while 216 on
     * 28x28 is best as it is (224 there: 1.3x slower). The GEMMs never read the extra columns. */
    if (g->tb % 16 == 0) g->tb += 8;
    for (int a = 0; a < 4; a++)
        for (int q = 0; q < 4; q++) {
            g->ph[a * 4 + q] = (a % 2) * 2 + q % 2;
            g->off[a * 4 + q] = (a / 2) * g->ws + q / 2;
        }
    /* per thread: U (16 K C), phase planes of nb images of ck channels, output phase planes of
     * as many, V and M (16 ck tb each), dy of one image transposed (h w K), the weight-gradient
     * sums (16 C K) */
    const size_t u = (size_t)r8(WG_XI * g->C * g->K);
    g->o_p = u;
    g->o_y = g->o_p + (size_t)(g->nb * g->ck * 4 * g->lpl);
    g->o_v = g->o_y + (size_t)(g->nb * g->ck * 4 * g->lty);
    g->o_m = g->o_v + (size_t)(WG_XI * g->ck * g->tb);
    g->o_t = g->o_m + (size_t)(WG_XI * g->ck * g->tb);
    g->o_w = g->o_t + (size_t)r8(g->H * g->W * g->K);
    g->per_thread = g->o_w + u;
    return 1;
}

size_t nn_wino_per_thread(const gbtd_conv2d_shape *s)
{
    wg_geom g;
    return wg_make(s, &g) ? g.per_thread : 0;
}

/* ---- transforms ------------------------------------------------------------------------------
 * F(2, 3): B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2;
 * 0 0 1], A^T = [1 1 1 0; 0 1 -1 -1]. Point xi = 4 i + j of the 4 x 4 transform domain. */

/* U = G g G^T of one 3x3 kernel g (row-major), rotated by 180 degrees first when rot. */
static void kernel_transform(const float *g0, int rot, float *u, int64_t stride)
{
    float g[9], t[4][3];
    for (int k = 0; k < 9; k++) g[k] = rot ? g0[8 - k] : g0[k];
    for (int c = 0; c < 3; c++) {
        t[0][c] = g[c];
        t[1][c] = 0.5f * (g[c] + g[3 + c] + g[6 + c]);
        t[2][c] = 0.5f * (g[c] - g[3 + c] + g[6 + c]);
        t[3][c] = g[6 + c];
    }
    for (int i = 0; i < 4; i++) {
        u[(4 * i + 0) * stride] = t[i][0];
        u[(4 * i + 1) * stride] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
        u[(4 * i + 2) * stride] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
        u[(4 * i + 3) * stride] = t[i][2];
    }
}

/* U[xi][m][n] for the GEMMs: forward, m = output k and n = input c of wt (K x C x 3 x 3);
 * backward-data (rot), m = c and n = k of the rotated kernels. */
static void weights_transform(const wg_geom *g, const float *wt, int rot, float *U)
{
    const int64_t M = rot ? g->C : g->K, N = rot ? g->K : g->C, mn = M * N;
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            const int64_t k = rot ? n : m, c = rot ? m : n;
            kernel_transform(wt + (k * g->C + c) * 9, rot, U + m * N + n, mn);
        }
}

/* b[e] = the phase plane and offset of element e = 4 a + q of a tile's 4 x 4 input, for the
 * channel whose planes start at pc. */
static inline void tap_bases(const wg_geom *g, const float *pc, const float *b[16])
{
    for (int e = 0; e < 16; e++) b[e] = pc + g->ph[e] * g->lpl + g->off[e];
}

/* V[xi][c][t] = (B^T d B)[xi] of tile t = r wt + q (at r ws + q in the planes) of the nch
 * channels of one image packed in P, for the lt tiles of the image (V points at its first column;
 * rows of tb floats). */
static inline __attribute__((always_inline)) void
input_transform_body(const wg_geom *g, int64_t nch, const float *P, float *V)
{
    const int64_t tb = g->tb, xs = nch * tb;
    for (int64_t c = 0; c < nch; c++) {
        const float *b[16];
        tap_bases(g, P + c * 4 * g->lpl, b);
        for (int64_t t = 0; t < g->lt; t++) {
            const int64_t i = (t / g->wt) * g->ws + t % g->wt; /* its plane position */
            float *v = V + c * tb + t;
            float e[4][4];
            for (int a = 0; a < 4; a++) {
                const float d0 = b[4 * a][i], d1 = b[4 * a + 1][i];
                const float d2 = b[4 * a + 2][i], d3 = b[4 * a + 3][i];
                e[a][0] = d0 - d2;
                e[a][1] = d1 + d2;
                e[a][2] = d2 - d1;
                e[a][3] = d1 - d3;
            }
            for (int q = 0; q < 4; q++) {
                v[(0 + q) * xs] = e[0][q] - e[2][q];
                v[(4 + q) * xs] = e[1][q] + e[2][q];
                v[(8 + q) * xs] = e[2][q] - e[1][q];
                v[(12 + q) * xs] = e[1][q] - e[3][q];
            }
        }
    }
}

/* Yp[k][a b][t] = (A^T M A)[a][b] + bias[k] for the tiles of one image (M points at its first
 * column): the output tile in the stride-2 phase planes (pad 0) of channel k, for
 * nn_phase_unpack. */
static inline __attribute__((always_inline)) void
output_transform_body(const wg_geom *g, int64_t nch, const float *M, const float *bias, float *Yp)
{
    const int64_t tb = g->tb, xs = nch * tb;
    const int64_t ly = g->lty;
    for (int64_t k = 0; k < nch; k++) {
        const float bk = bias ? bias[k] : 0.0f;
        float *y = Yp + k * 4 * ly;
        for (int64_t t = 0; t < g->lt; t++) {
            const int64_t i = (t / g->wt) * g->ws + t % g->wt; /* its plane position */
            const float *m = M + k * tb + t;
            float f[4][2];
            for (int r = 0; r < 4; r++) {
                const float m0 = m[(4 * r) * xs], m1 = m[(4 * r + 1) * xs];
                const float m2 = m[(4 * r + 2) * xs], m3 = m[(4 * r + 3) * xs];
                f[r][0] = m0 + m1 + m2;
                f[r][1] = m1 - m2 - m3;
            }
            y[0 * ly + i] = f[0][0] + f[1][0] + f[2][0] + bk;
            y[1 * ly + i] = f[0][1] + f[1][1] + f[2][1] + bk;
            y[2 * ly + i] = f[1][0] - f[2][0] - f[3][0] + bk;
            y[3 * ly + i] = f[1][1] - f[2][1] - f[3][1] + bk;
        }
    }
}

/* Tile t = r wt + q of the dy transform: its top-left pixel in DYT, and whether the second row
 * and column exist. */
static inline const float *dy_tile(const wg_geom *g, const float *DYT, int64_t t, int *r1,
                                   int *c1)
{
    const int64_t ti = t / g->wt, tj = t % g->wt, r = 2 * ti, c = 2 * tj;
    *r1 = r + 1 < g->H;
    *c1 = c + 1 < g->W;
    return DYT + (r * g->W + c) * g->K;
}

/* DT[xi][t][k] = (A dy A^T)[xi] of the 2x2 dy tile t of one image (DT points at its first
 * row; rows of K floats), from its dy transposed (pixel, channel); zero for the rows and columns
 * past the map. */
static inline __attribute__((always_inline)) void
dy_transform_body(const wg_geom *g, const float *DYT, float *DT)
{
    const int64_t K = g->K, xs = g->tb * K;
    for (int64_t t = 0; t < g->lt; t++) {
        int r1, c1;
        float *out = DT + t * K;
        const float *p00 = dy_tile(g, DYT, t, &r1, &c1);
        const float *p01 = c1 ? p00 + K : NULL;
        const float *p10 = r1 ? p00 + g->W * K : NULL;
        const float *p11 = r1 && c1 ? p00 + (g->W + 1) * K : NULL;
        for (int64_t k = 0; k < K; k++) {
            const float d00 = p00[k], d01 = p01 ? p01[k] : 0.0f;
            const float d10 = p10 ? p10[k] : 0.0f, d11 = p11 ? p11[k] : 0.0f;
            /* columns: (d0, d0 + d1, d0 - d1, -d1) for each row, then the same down the rows */
            const float e0[4] = {d00, d00 + d01, d00 - d01, -d01};
            const float e1[4] = {d10, d10 + d11, d10 - d11, -d11};
            for (int j = 0; j < 4; j++) {
                out[(0 + j) * xs + k] = e0[j];
                out[(4 + j) * xs + k] = e0[j] + e1[j];
                out[(8 + j) * xs + k] = e0[j] - e1[j];
                out[(12 + j) * xs + k] = -e1[j];
            }
        }
    }
}

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define WG_X86 1
#include <immintrin.h>

__attribute__((target("avx2,fma"))) static void input_transform_avx2(const wg_geom *g, int64_t nch,
                                                                      const float *P, float *V)
{
    const int64_t tb = g->tb, xs = nch * tb;
    for (int64_t c = 0; c < nch; c++) {
        const float *b[16];
        tap_bases(g, P + c * 4 * g->lpl, b);
        for (int64_t tr = 0; tr < g->ht; tr++)
            for (int64_t tq = 0; tq < g->wt; tq += 8) {
                /* tiles (tr, tq .. tq + 7): plane positions from i, columns from v */
                const int64_t i = tr * g->ws + tq;
                float *v = V + c * tb + tr * g->wt + tq;
                __m256 e[4][4];
                for (int a = 0; a < 4; a++) {
                    const __m256 d0 = _mm256_loadu_ps(b[4 * a] + i);
                    const __m256 d1 = _mm256_loadu_ps(b[4 * a + 1] + i);
                    const __m256 d2 = _mm256_loadu_ps(b[4 * a + 2] + i);
                    const __m256 d3 = _mm256_loadu_ps(b[4 * a + 3] + i);
                    e[a][0] = _mm256_sub_ps(d0, d2);
                    e[a][1] = _mm256_add_ps(d1, d2);
                    e[a][2] = _mm256_sub_ps(d2, d1);
                    e[a][3] = _mm256_sub_ps(d1, d3);
                }
                for (int q = 0; q < 4; q++) {
                    _mm256_storeu_ps(v + (0 + q) * xs, _mm256_sub_ps(e[0][q], e[2][q]));
                    _mm256_storeu_ps(v + (4 + q) * xs, _mm256_add_ps(e[1][q], e[2][q]));
                    _mm256_storeu_ps(v + (8 + q) * xs, _mm256_sub_ps(e[2][q], e[1][q]));
                    _mm256_storeu_ps(v + (12 + q) * xs, _mm256_sub_ps(e[1][q], e[3][q]));
                }
            }
    }
}

__attribute__((target("avx2,fma"))) static void output_transform_avx2(const wg_geom *g,
                                                                       int64_t nch, const float *M,
                                                                       const float *bias, float *Yp)
{
    const int64_t tb = g->tb, xs = nch * tb, lt = g->lty;
    for (int64_t k = 0; k < nch; k++) {
        float *y = Yp + k * 4 * lt;
        const __m256 bk = _mm256_set1_ps(bias ? bias[k] : 0.0f);
        for (int64_t tr = 0; tr < g->ht; tr++)
            for (int64_t tq = 0; tq < g->wt; tq += 8) {
                /* tiles (tr, tq .. tq + 7): columns from m, plane positions from i */
                const int64_t i = tr * g->ws + tq;
                const float *m = M + k * tb + tr * g->wt + tq;
                __m256 f0[4], f1[4];
                for (int r = 0; r < 4; r++) {
                    const __m256 m0 = _mm256_loadu_ps(m + (4 * r) * xs);
                    const __m256 m1 = _mm256_loadu_ps(m + (4 * r + 1) * xs);
                    const __m256 m2 = _mm256_loadu_ps(m + (4 * r + 2) * xs);
                    const __m256 m3 = _mm256_loadu_ps(m + (4 * r + 3) * xs);
                    f0[r] = _mm256_add_ps(_mm256_add_ps(m0, m1), m2);
                    f1[r] = _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3);
                }
                const __m256 o0 = _mm256_add_ps(_mm256_add_ps(f0[0], f0[1]), f0[2]);
                const __m256 o1 = _mm256_add_ps(_mm256_add_ps(f1[0], f1[1]), f1[2]);
                const __m256 o2 = _mm256_sub_ps(_mm256_sub_ps(f0[1], f0[2]), f0[3]);
                const __m256 o3 = _mm256_sub_ps(_mm256_sub_ps(f1[1], f1[2]), f1[3]);
                _mm256_storeu_ps(y + i, _mm256_add_ps(o0, bk));
                _mm256_storeu_ps(y + lt + i, _mm256_add_ps(o1, bk));
                _mm256_storeu_ps(y + 2 * lt + i, _mm256_add_ps(o2, bk));
                _mm256_storeu_ps(y + 3 * lt + i, _mm256_add_ps(o3, bk));
            }
    }
}

/* Channels eight at a time (K a multiple of 8), the same sums as dy_transform_body. */
__attribute__((target("avx2,fma"))) static void dy_transform_avx2(const wg_geom *g,
                                                                   const float *DYT, float *DT)
{
    const int64_t K = g->K, xs = g->tb * K;
    if (K % 8) {
        dy_transform_body(g, DYT, DT);
        return;
    }
    const __m256 z = _mm256_setzero_ps();
    for (int64_t t = 0; t < g->lt; t++) {
        int r1, c1;
        float *out = DT + t * K;
        const float *p00 = dy_tile(g, DYT, t, &r1, &c1);
        for (int64_t k = 0; k < K; k += 8) {
            const __m256 d00 = _mm256_loadu_ps(p00 + k);
            const __m256 d01 = c1 ? _mm256_loadu_ps(p00 + K + k) : z;
            const __m256 d10 = r1 ? _mm256_loadu_ps(p00 + g->W * K + k) : z;
            const __m256 d11 = r1 && c1 ? _mm256_loadu_ps(p00 + (g->W + 1) * K + k) : z;
            const __m256 e0[4] = {d00, _mm256_add_ps(d00, d01), _mm256_sub_ps(d00, d01), _mm256_sub_ps(z, d01)};
            const __m256 e1[4] = {d10, _mm256_add_ps(d10, d11), _mm256_sub_ps(d10, d11), _mm256_sub_ps(z, d11)};
            for (int j = 0; j < 4; j++) {
                _mm256_storeu_ps(out + (0 + j) * xs + k, e0[j]);
                _mm256_storeu_ps(out + (4 + j) * xs + k, _mm256_add_ps(e0[j], e1[j]));
                _mm256_storeu_ps(out + (8 + j) * xs + k, _mm256_sub_ps(e0[j], e1[j]));
                _mm256_storeu_ps(out + (12 + j) * xs + k, _mm256_sub_ps(z, e1[j]));
            }
        }
    }
}
#endif

/* DYT[p][k] = dy[k][p] (K x hw to hw x K). */
static void transpose_body(const float *dy, int64_t K, int64_t hw, float *DYT)
{
    for (int64_t p = 0; p < hw; p++)
        for (int64_t k = 0; k < K; k++) DYT[p * K + k] = dy[k * hw + p];
}

#ifdef WG_X86
/* Blocks of 8 x 8 transposed in registers; the ragged edges element by element. */
__attribute__((target("avx2,fma"))) static void transpose_avx2(const float *dy, int64_t K,
                                                                int64_t hw, float *DYT)
{
    const int64_t K8 = K - K % 8, P8 = hw - hw % 8;
    for (int64_t k0 = 0; k0 < K8; k0 += 8)
        for (int64_t p0 = 0; p0 < P8; p0 += 8) {
            __m256 r[8], t[8];
            for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(dy + (k0 + i) * hw + p0);
            for (int i = 0; i < 8; i += 2) {
                t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
                t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
            }
            for (int i = 0; i < 8; i += 4) {
                r[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
                r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
                r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
                r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
            }
            /* r0..r3: columns 0, 1, 2, 3 of rows 0-3 (low half) and 4-7 of them (high half);
             * r4..r7 the same for rows 4-7 */
            for (int i = 0; i < 4; i++) {
                _mm256_storeu_ps(DYT + (p0 + i) * K + k0, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
                _mm256_storeu_ps(DYT + (p0 + i + 4) * K + k0, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
            }
        }
    for (int64_t p = P8; p < hw; p++)
        for (int64_t k = 0; k < K; k++) DYT[p * K + k] = dy[k * hw + p];
    for (int64_t p = 0; p < P8; p++)
        for (int64_t k = K8; k < K; k++) DYT[p * K + k] = dy[k * hw + p];
}
#endif

/* The AVX2 version of a kernel where the CPU has it, else its portable body. */
#ifdef WG_X86
#define WG_PICK(avx2, fn) ((avx2) ? fn##_avx2 : fn##_body)
#else
#define WG_PICK(avx2, fn) fn##_body
#endif

/* ---- a group of images ------------------------------------------------------------------------
 * nimg (<= nb) images of nin planes each, in a row in memory from `in`: out (nout planes each) =
 * conv(in) through the transformed weights at the start of the thread's workspace W
 * (16 x nout x nin); all their tiles side by side in one GEMM per point. */

static void group_conv(const wg_geom *g, int avx2, int64_t nimg, int64_t nin, int64_t nout,
                       const float *in, const float *bias, float *out, float *W, int set)
{
    static const int64_t zero_off[1] = {0};
    const float *U = W;
    float *P = W + g->o_p, *Yp = W + g->o_y, *V = W + g->o_v, *M = W + g->o_m;
    const int64_t hw = g->H * g->W, T = nimg * g->lt, pl = 4 * g->lpl, yl = 4 * g->lty;
    for (int64_t j = 0; j < nimg; j++) {
        float *Pj = P + j * g->ck * pl;
        for (int64_t c = 0; c < nin; c++)
            nn_phase_pack(2, 1, g->H, g->W, g->ws, g->lpl, in + (j * nin + c) * hw, Pj + c * pl);
        WG_PICK(avx2, input_transform)(g, nin, Pj, V + j * g->lt);
    }
    /* The GEMMs run over T rounded up to 8 columns (the kernels' tails of fewer than 8 columns
     * are scalar loops): the extra columns of V, past the last tile (tb leaves room), are zeroed
     * over whatever the transforms' spill left there; their outputs are never read. */
    const int64_t T8 = (T + 7) / 8 * 8;
    if (T8 > T)
        for (int64_t row = 0; row < WG_XI * nin; row++)
            memset(V + row * g->tb + T, 0, sizeof(float) * (size_t)(T8 - T));
    for (int xi = 0; xi < WG_XI; xi++)
        nn_gemm_conv_nn(nout, T8, nin, 1, U + xi * nout * nin, nin, V + xi * nin * g->tb, g->tb,
                        zero_off, M + xi * nout * g->tb, g->tb, 1);
    for (int64_t j = 0; j < nimg; j++) {
        float *Yj = Yp + j * g->ck * yl;
        WG_PICK(avx2, output_transform)(g, nout, M + j * g->lt, bias, Yj);
        for (int64_t k = 0; k < nout; k++)
            nn_phase_unpack(2, 0, g->H, g->W, g->ws, g->lty, Yj + k * yl, out + (j * nout + k) * hw,
                            set);
    }
}

void nn_wino_forward(const gbtd_conv2d_shape *s, const float *x, const float *wt, const float *b,
                     float *y, float *ws, size_t per_thread, int nt)
{
    wg_geom g;
    wg_make(s, &g);
    const int avx2 = nn_have_avx2();
    const int64_t hw = g.H * g.W, ngroups = (s->n + g.nb - 1) / g.nb;
#pragma omp parallel num_threads(nt)
    {
        float *U = ws + (size_t)nn_thread_id() * per_thread, *P = U + g.o_p;
        /* the phase planes' padding is zero and stays so: packing writes data positions only */
        memset(P, 0, sizeof(float) * (g.o_y - g.o_p));
        weights_transform(&g, wt, 0, U);
#pragma omp for schedule(dynamic, 1)
        for (int64_t q = 0; q < ngroups; q++) {
            const int64_t n0 = q * g.nb, cnt = s->n - n0 < g.nb ? s->n - n0 : g.nb;
            group_conv(&g, avx2, cnt, g.C, g.K, x + n0 * g.C * hw, b, y + n0 * g.K * hw, U, 1);
        }
    }
}

void nn_wino_backward(const gbtd_conv2d_shape *s, const float *x, const float *wt,
                      const float *dy, float *dx, float *dw, float *ws, size_t per_thread,
                      int nt, int set_dx)
{
    static const int64_t zero_off[1] = {0};
    wg_geom g;
    wg_make(s, &g);
    const int avx2 = nn_have_avx2();
    const int64_t hw = g.H * g.W, C = g.C, K = g.K, ck = C * K;
    const int64_t ngroups = (s->n + g.nb - 1) / g.nb, pl = 4 * g.lpl;
    /* every thread's sums zeroed here, in case the runtime starts fewer threads than nt */
    if (dw)
        for (int t = 0; t < nt; t++)
            memset(ws + (size_t)t * per_thread + g.o_w, 0, sizeof(float) * (size_t)(WG_XI * ck));
#pragma omp parallel num_threads(nt)
    {
        float *U = ws + (size_t)nn_thread_id() * per_thread, *P = U + g.o_p;
        float *V = U + g.o_v, *DT = U + g.o_m, *DYT = U + g.o_t, *MW = U + g.o_w;
        memset(P, 0, sizeof(float) * (g.o_y - g.o_p));
        if (dx) weights_transform(&g, wt, 1, U);
        /* static: each thread's weight-gradient sums run over the same images in the same order
         * on every call with this thread count */
#pragma omp for schedule(static)
        for (int64_t q = 0; q < ngroups; q++) {
            const int64_t n0 = q * g.nb, cnt = s->n - n0 < g.nb ? s->n - n0 : g.nb;
            if (dx)
                group_conv(&g, avx2, cnt, K, C, dy + n0 * K * hw, NULL, dx + n0 * C * hw, U, set_dx);
            if (!dw) continue;
            for (int64_t j = 0; j < cnt; j++) {
                const float *xn = x + (n0 + j) * C * hw;
                for (int64_t c = 0; c < C; c++)
                    nn_phase_pack(2, 1, g.H, g.W, g.ws, g.lpl, xn + c * hw, P + c * pl);
                WG_PICK(avx2, input_transform)(&g, C, P, V + j * g.lt);
                /* dy transposed to (pixel, channel): the dy transform reads channels in a row */
                WG_PICK(avx2, transpose)(dy + (n0 + j) * K * hw, K, hw, DYT);
                WG_PICK(avx2, dy_transform)(&g, DYT, DT + j * g.lt * K);
            }
            /* MW[xi] (C x K) += V[xi] (C x T) DT[xi] (T x K) */
            for (int xi = 0; xi < WG_XI; xi++)
                nn_gemm_conv_tn(C, 1, K, cnt * g.lt, V + xi * C * g.tb, g.tb, zero_off,
                                DT + xi * g.tb * K, K, MW + xi * ck, K);
        }
    }
    if (!dw) return;
    /* dW[k][c] = G^T (sum over threads of MW[.][c][k]) G, G^T = [1 1/2 1/2 0; 0 1/2 -1/2 0;
     * 0 1/2 1/2 1] */
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t e = 0; e < ck; e++) {
        const int64_t c = e / K, k = e % K;
        float m[4][4], t[3][4];
        for (int xi = 0; xi < WG_XI; xi++) {
            float acc = 0.0f;
            for (int th = 0; th < nt; th++) acc += ws[(size_t)th * per_thread + g.o_w + (size_t)(xi * ck + e)];
            m[xi / 4][xi % 4] = acc;
        }
        for (int j = 0; j < 4; j++) {
            t[0][j] = m[0][j] + 0.5f * (m[1][j] + m[2][j]);
            t[1][j] = 0.5f * (m[1][j] - m[2][j]);
            t[2][j] = 0.5f * (m[1][j] + m[2][j]) + m[3][j];
        }
        float *d = dw + (k * C + c) * 9;
        for (int p = 0; p < 3; p++) {
            d[p * 3 + 0] += t[p][0] + 0.5f * (t[p][1] + t[p][2]);
            d[p * 3 + 1] += 0.5f * (t[p][1] - t[p][2]);
            d[p * 3 + 2] += 0.5f * (t[p][1] + t[p][2]) + t[p][3];
        }
    }
}
