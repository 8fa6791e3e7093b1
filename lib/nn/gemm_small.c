/* gbtd nn: small-GEMM kernels for grouped convolutions and the streaming GEMM of 1x1 ones (see
 * gemm_small.h). */
#include <stdlib.h>

#include "nn/gemm_small.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define NN_X86 1
#include <immintrin.h>
#endif

/* The register-block kernels keep their accumulators in small arrays indexed by the row and
 * vector loops. GCC left those arrays on the stack, loading them before the K loop and storing
 * every accumulator back after each FMA inside it (12 stores per 12 FMAs: 40 % of the FMA peak
 * on an AMD EPYC, Zen 3), unless the row and vector loops are unrolled before its loop
 * optimisations run; "GCC unroll" asks for exactly that (the loops have literal trip counts at
 * every call). Measured (one core, operands in cache, 3x3 taps of 16 channels on 28x28): 35 ->
 * 66 GF/s for one block of 6 rows, 36 -> 62 GF/s for 16 rows; OpenBLAS on the same product as
 * an explicit im2col matrix: 24 and 53 GF/s. */
#if defined(__GNUC__) && !defined(__clang__)
#define NN_UNROLL(n) _Pragma(NN_STR_(GCC unroll n))
#define NN_STR_(x) #x
#else
#define NN_UNROLL(n)
#endif

static void nn_generic(int64_t M, int64_t N, int64_t K, const float *A, int64_t ars, int64_t acs,
                       const float *B, int64_t ldb, float *C, int64_t ldc, int beta0)
{
    for (int64_t m = 0; m < M; m++) {
        float *c = C + m * ldc;
        if (beta0)
            for (int64_t n = 0; n < N; n++) c[n] = 0.0f;
        for (int64_t k = 0; k < K; k++) {
            const float a = A[m * ars + k * acs];
            const float *b = B + k * ldb;
            for (int64_t n = 0; n < N; n++) c[n] += a * b[n];
        }
    }
}

static void nt_generic(int64_t M, int64_t N, int64_t L, const float *A, int64_t lda,
                       const float *B, int64_t ldb, float *C, int64_t ldc)
{
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            float acc = 0.0f;
            for (int64_t l = 0; l < L; l++) acc += A[m * lda + l] * B[n * ldb + l];
            C[m * ldc + n] += acc;
        }
}

#ifdef NN_X86

static inline int64_t clamp_row(int64_t r, int64_t last) { return r < last ? r : last; }

__attribute__((target("avx2,fma"))) static void nn_avx2(int64_t M, int64_t N, int64_t K,
                                                         const float *A, int64_t ars, int64_t acs,
                                                         const float *B, int64_t ldb, float *C,
                                                         int64_t ldc, int beta0)
{
    const int64_t N16 = N - N % 16;
    for (int64_t m0 = 0; m0 < M; m0 += 4) {
        const int64_t mr = M - m0 < 4 ? M - m0 : 4;
        const float *a0 = A + clamp_row(m0, M - 1) * ars, *a1 = A + clamp_row(m0 + 1, M - 1) * ars;
        const float *a2 = A + clamp_row(m0 + 2, M - 1) * ars, *a3 = A + clamp_row(m0 + 3, M - 1) * ars;
        float *c0 = C + clamp_row(m0, M - 1) * ldc, *c1 = C + clamp_row(m0 + 1, M - 1) * ldc;
        float *c2 = C + clamp_row(m0 + 2, M - 1) * ldc, *c3 = C + clamp_row(m0 + 3, M - 1) * ldc;
        for (int64_t n0 = 0; n0 < N16; n0 += 16) {
            __m256 x00, x01, x10, x11, x20, x21, x30, x31;
            if (beta0) {
                x00 = x01 = x10 = x11 = x20 = x21 = x30 = x31 = _mm256_setzero_ps();
            } else {
                x00 = _mm256_loadu_ps(c0 + n0); x01 = _mm256_loadu_ps(c0 + n0 + 8);
                x10 = _mm256_loadu_ps(c1 + n0); x11 = _mm256_loadu_ps(c1 + n0 + 8);
                x20 = _mm256_loadu_ps(c2 + n0); x21 = _mm256_loadu_ps(c2 + n0 + 8);
                x30 = _mm256_loadu_ps(c3 + n0); x31 = _mm256_loadu_ps(c3 + n0 + 8);
            }
            const float *b = B + n0;
            for (int64_t k = 0; k < K; k++, b += ldb) {
                const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
                const int64_t ka = k * acs;
                __m256 a = _mm256_broadcast_ss(a0 + ka);
                x00 = _mm256_fmadd_ps(a, b0, x00); x01 = _mm256_fmadd_ps(a, b1, x01);
                a = _mm256_broadcast_ss(a1 + ka);
                x10 = _mm256_fmadd_ps(a, b0, x10); x11 = _mm256_fmadd_ps(a, b1, x11);
                a = _mm256_broadcast_ss(a2 + ka);
                x20 = _mm256_fmadd_ps(a, b0, x20); x21 = _mm256_fmadd_ps(a, b1, x21);
                a = _mm256_broadcast_ss(a3 + ka);
                x30 = _mm256_fmadd_ps(a, b0, x30); x31 = _mm256_fmadd_ps(a, b1, x31);
            }
            /* Rows past M were computed from a duplicate of row M - 1 and are not stored; store
             * the higher rows first so that a duplicate never overwrites a real row. */
            if (mr > 3) { _mm256_storeu_ps(c3 + n0, x30); _mm256_storeu_ps(c3 + n0 + 8, x31); }
            if (mr > 2) { _mm256_storeu_ps(c2 + n0, x20); _mm256_storeu_ps(c2 + n0 + 8, x21); }
            if (mr > 1) { _mm256_storeu_ps(c1 + n0, x10); _mm256_storeu_ps(c1 + n0 + 8, x11); }
            _mm256_storeu_ps(c0 + n0, x00); _mm256_storeu_ps(c0 + n0 + 8, x01);
        }
    }
    if (N16 < N)
        nn_generic(M, N - N16, K, A, ars, acs, B + N16, ldb, C + N16, ldc, beta0);
}

__attribute__((target("avx2,fma"))) static inline float hsum256(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) static void nt_avx2(int64_t M, int64_t N, int64_t L,
                                                         const float *A, int64_t lda,
                                                         const float *B, int64_t ldb, float *C,
                                                         int64_t ldc)
{
    const int64_t L8 = L - L % 8;
    for (int64_t m0 = 0; m0 < M; m0 += 4) {
        const float *a[4];
        for (int r = 0; r < 4; r++) a[r] = A + clamp_row(m0 + r, M - 1) * lda;
        for (int64_t n0 = 0; n0 < N; n0 += 3) {
            const float *b0 = B + clamp_row(n0, N - 1) * ldb, *b1 = B + clamp_row(n0 + 1, N - 1) * ldb;
            const float *b2 = B + clamp_row(n0 + 2, N - 1) * ldb;
            __m256 s00 = _mm256_setzero_ps(), s01 = s00, s02 = s00, s10 = s00, s11 = s00, s12 = s00;
            __m256 s20 = s00, s21 = s00, s22 = s00, s30 = s00, s31 = s00, s32 = s00;
            for (int64_t l = 0; l < L8; l += 8) {
                const __m256 v0 = _mm256_loadu_ps(b0 + l), v1 = _mm256_loadu_ps(b1 + l);
                const __m256 v2 = _mm256_loadu_ps(b2 + l);
                __m256 u = _mm256_loadu_ps(a[0] + l);
                s00 = _mm256_fmadd_ps(u, v0, s00); s01 = _mm256_fmadd_ps(u, v1, s01); s02 = _mm256_fmadd_ps(u, v2, s02);
                u = _mm256_loadu_ps(a[1] + l);
                s10 = _mm256_fmadd_ps(u, v0, s10); s11 = _mm256_fmadd_ps(u, v1, s11); s12 = _mm256_fmadd_ps(u, v2, s12);
                u = _mm256_loadu_ps(a[2] + l);
                s20 = _mm256_fmadd_ps(u, v0, s20); s21 = _mm256_fmadd_ps(u, v1, s21); s22 = _mm256_fmadd_ps(u, v2, s22);
                u = _mm256_loadu_ps(a[3] + l);
                s30 = _mm256_fmadd_ps(u, v0, s30); s31 = _mm256_fmadd_ps(u, v1, s31); s32 = _mm256_fmadd_ps(u, v2, s32);
            }
            float t[4][3] = {{hsum256(s00), hsum256(s01), hsum256(s02)},
                             {hsum256(s10), hsum256(s11), hsum256(s12)},
                             {hsum256(s20), hsum256(s21), hsum256(s22)},
                             {hsum256(s30), hsum256(s31), hsum256(s32)}};
            const float *bb[3] = {b0, b1, b2};
            for (int r = 0; r < 4 && m0 + r < M; r++)
                for (int c = 0; c < 3 && n0 + c < N; c++) {
                    float acc = t[r][c];
                    for (int64_t l = L8; l < L; l++) acc += a[r][l] * bb[c][l];
                    C[(m0 + r) * ldc + n0 + c] += acc;
                }
        }
    }
}

/* One rank-1 step of an MR x 8 NV register block: s[r][v] += a[r lda] b[8 v .. 8 v + 7]. */
__attribute__((target("avx2,fma"))) static inline __attribute__((always_inline)) void
rank1_step(const int MR, const int NV, const float *a, int64_t lda, const float *b, __m256 s[6][4])
{
    __m256 bv[4];
    NN_UNROLL(8)
    for (int v = 0; v < NV; v++) bv[v] = _mm256_loadu_ps(b + 8 * v);
    NN_UNROLL(8)
    for (int r = 0; r < MR; r++) {
        const __m256 av = _mm256_broadcast_ss(a + r * lda);
        NN_UNROLL(8)
        for (int v = 0; v < NV; v++) s[r][v] = _mm256_fmadd_ps(av, bv[v], s[r][v]);
    }
}

/* acc[r][v] += sum over k1 < K1, t < KT of A[r lda + k1 KT + t] B[k1 bstride + boff[t] + 8 v ..]
 * with KT a literal. */
__attribute__((target("avx2,fma"))) static inline __attribute__((always_inline)) void
conv_taps(const int MR, const int NV, const int KT, int64_t K1, const float *A, int64_t lda,
          const float *B, int64_t bstride, const int64_t *boff, __m256 acc[6][4])
{
    int64_t o[4];
    NN_UNROLL(4)
    for (int t = 0; t < KT; t++) o[t] = boff[t];
    NN_UNROLL(2)
    for (int64_t k1 = 0; k1 < K1; k1++) {
        const float *bk = B + k1 * bstride, *ak = A + k1 * KT;
        NN_UNROLL(4)
        for (int t = 0; t < KT; t++) rank1_step(MR, NV, ak + t, lda, bk + o[t], acc);
    }
}

/* One register block of the implicit GEMM: MR rows of C times NV vectors of 8 columns, over all
 * K1 K2 rows of B. MR and NV are literals at every call (the loops unroll, the accumulators
 * stay in registers). */
__attribute__((target("avx2,fma"))) static inline __attribute__((always_inline)) void
conv_block(const int MR, const int NV, int64_t K1, int64_t K2, const float *A, int64_t lda,
           const float *B, int64_t bstride, const int64_t *boff, float *C, int64_t ldc, int beta0)
{
    __m256 acc[6][4];
    NN_UNROLL(8)
    for (int r = 0; r < MR; r++)
        NN_UNROLL(8)
        for (int v = 0; v < NV; v++)
            acc[r][v] = beta0 ? _mm256_setzero_ps() : _mm256_loadu_ps(C + r * ldc + 8 * v);
    /* Few taps (a plain GEMM for Winograd, the phases of a stride-2 backward-data): the offsets
     * in registers and the tap loop unrolled. GCC kept the generic nested loop's counters and
     * pointers on the stack, reloading them for every k1: at K2 = 1 that made Winograd's GEMMs
     * 1.45-1.6x slower forward and 1.3-1.4x backward (AMD EPYC, Zen 3). */
    if (K2 == 1) {
        conv_taps(MR, NV, 1, K1, A, lda, B, bstride, boff, acc);
    } else if (K2 == 2) {
        conv_taps(MR, NV, 2, K1, A, lda, B, bstride, boff, acc);
    } else if (K2 == 4) {
        conv_taps(MR, NV, 4, K1, A, lda, B, bstride, boff, acc);
    } else {
        for (int64_t k1 = 0; k1 < K1; k1++) {
            const float *bk = B + k1 * bstride, *ak = A + k1 * K2;
            for (int64_t k2 = 0; k2 < K2; k2++) rank1_step(MR, NV, ak + k2, lda, bk + boff[k2], acc);
        }
    }
    NN_UNROLL(8)
    for (int r = 0; r < MR; r++)
        NN_UNROLL(8)
        for (int v = 0; v < NV; v++) _mm256_storeu_ps(C + r * ldc + 8 * v, acc[r][v]);
}

#define CONV_BLOCK_FN(MR, NV)                                                                    \
    __attribute__((target("avx2,fma"))) static void conv_block_##MR##_##NV(                      \
        int64_t K1, int64_t K2, const float *A, int64_t lda, const float *B, int64_t bstride,    \
        const int64_t *boff, float *C, int64_t ldc, int beta0)                                   \
    {                                                                                            \
        conv_block(MR, NV, K1, K2, A, lda, B, bstride, boff, C, ldc, beta0);                     \
    }
#define CONV_BLOCK_ROW(NV)                                                                       \
    CONV_BLOCK_FN(1, NV) CONV_BLOCK_FN(2, NV) CONV_BLOCK_FN(3, NV) CONV_BLOCK_FN(4, NV)          \
    CONV_BLOCK_FN(5, NV) CONV_BLOCK_FN(6, NV)
CONV_BLOCK_ROW(1)
CONV_BLOCK_ROW(2)
CONV_BLOCK_ROW(3)
CONV_BLOCK_ROW(4)

typedef void (*conv_block_fn)(int64_t, int64_t, const float *, int64_t, const float *, int64_t,
                              const int64_t *, float *, int64_t, int);
/* conv_blocks[NV - 1][MR - 1] */
static const conv_block_fn conv_blocks[4][6] = {
    {conv_block_1_1, conv_block_2_1, conv_block_3_1, conv_block_4_1, conv_block_5_1, conv_block_6_1},
    {conv_block_1_2, conv_block_2_2, conv_block_3_2, conv_block_4_2, conv_block_5_2, conv_block_6_2},
    {conv_block_1_3, conv_block_2_3, conv_block_3_3, conv_block_4_3, conv_block_5_3, conv_block_6_3},
    {conv_block_1_4, conv_block_2_4, conv_block_3_4, conv_block_4_4, conv_block_5_4, conv_block_6_4},
};

static void conv_nn_generic(int64_t M, int64_t N, int64_t K1, int64_t K2, const float *A,
                            int64_t lda, const float *B, int64_t bstride, const int64_t *boff,
                            float *C, int64_t ldc, int beta0);

/* AVX-512 twin of conv_block: vectors of 16 columns, the same register budget in blocks. */
__attribute__((target("avx512f,avx2,fma"))) static inline __attribute__((always_inline)) void
conv_block16(const int MR, const int NV, int64_t K1, int64_t K2, const float *A, int64_t lda,
             const float *B, int64_t bstride, const int64_t *boff, float *C, int64_t ldc,
             int beta0)
{
    __m512 acc[8][3];
    NN_UNROLL(8)
    for (int r = 0; r < MR; r++)
        NN_UNROLL(8)
        for (int v = 0; v < NV; v++)
            acc[r][v] = beta0 ? _mm512_setzero_ps() : _mm512_loadu_ps(C + r * ldc + 16 * v);
    for (int64_t k1 = 0; k1 < K1; k1++) {
        const float *bk = B + k1 * bstride, *ak = A + k1 * K2;
        for (int64_t k2 = 0; k2 < K2; k2++) {
            const float *b = bk + boff[k2];
            __m512 bv[3];
            NN_UNROLL(8)
            for (int v = 0; v < NV; v++) bv[v] = _mm512_loadu_ps(b + 16 * v);
            NN_UNROLL(8)
            for (int r = 0; r < MR; r++) {
                const __m512 a = _mm512_set1_ps(ak[r * lda + k2]);
                NN_UNROLL(8)
                for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(a, bv[v], acc[r][v]);
            }
        }
    }
    NN_UNROLL(8)
    for (int r = 0; r < MR; r++)
        NN_UNROLL(8)
        for (int v = 0; v < NV; v++) _mm512_storeu_ps(C + r * ldc + 16 * v, acc[r][v]);
}

#define CONV_BLOCK16_FN(MR, NV)                                                                  \
    __attribute__((target("avx512f,avx2,fma"))) static void conv_block16_##MR##_##NV(            \
        int64_t K1, int64_t K2, const float *A, int64_t lda, const float *B, int64_t bstride,    \
        const int64_t *boff, float *C, int64_t ldc, int beta0)                                   \
    {                                                                                            \
        conv_block16(MR, NV, K1, K2, A, lda, B, bstride, boff, C, ldc, beta0);                   \
    }
#define CONV_BLOCK16_ROW(NV)                                                                     \
    CONV_BLOCK16_FN(1, NV) CONV_BLOCK16_FN(2, NV) CONV_BLOCK16_FN(3, NV) CONV_BLOCK16_FN(4, NV)  \
    CONV_BLOCK16_FN(5, NV) CONV_BLOCK16_FN(6, NV) CONV_BLOCK16_FN(7, NV) CONV_BLOCK16_FN(8, NV)
CONV_BLOCK16_ROW(1)
CONV_BLOCK16_ROW(2)
CONV_BLOCK16_ROW(3)

/* conv_blocks16[NV - 1][MR - 1] */
static const conv_block_fn conv_blocks16[3][8] = {
    {conv_block16_1_1, conv_block16_2_1, conv_block16_3_1, conv_block16_4_1, conv_block16_5_1,
     conv_block16_6_1, conv_block16_7_1, conv_block16_8_1},
    {conv_block16_1_2, conv_block16_2_2, conv_block16_3_2, conv_block16_4_2, conv_block16_5_2,
     conv_block16_6_2, conv_block16_7_2, conv_block16_8_2},
    {conv_block16_1_3, conv_block16_2_3, conv_block16_3_3, conv_block16_4_3, conv_block16_5_3,
     conv_block16_6_3, conv_block16_7_3, conv_block16_8_3},
};

/* Row blocks of at most mrmax rows, as even as possible (32 rows in blocks of 6: 6 6 5 5 5 5). */
static void row_split(int64_t M, int mrmax, int *nblk, int *base, int *extra)
{
    *nblk = (int)((M + mrmax - 1) / mrmax);
    *base = (int)(M / *nblk);
    *extra = (int)(M % *nblk); /* the first `extra` blocks get base + 1 rows */
}

static int use_avx512(void);

static void conv_nn_avx2(int64_t M, int64_t N, int64_t K1, int64_t K2, const float *A,
                         int64_t lda, const float *B, int64_t bstride, const int64_t *boff,
                         float *C, int64_t ldc, int beta0)
{
    int64_t n0 = 0;
    if (use_avx512()) {
        /* blocks of up to 8 rows x 2 vectors of 16 (16 of 32 zmm accumulators), or 4 x 3 */
        const int mrmax = M >= 5 ? 8 : (int)M, nv = mrmax >= 5 ? 2 : 3;
        int nblk, base, extra;
        row_split(M, mrmax, &nblk, &base, &extra);
        const int64_t nb = 16 * nv, N16 = N - N % 16;
        for (int v = nv; n0 < N16; n0 += 16 * v) {
            v = n0 + nb <= N16 ? nv : (int)((N16 - n0) / 16);
            int64_t m0 = 0;
            for (int bi = 0; bi < nblk; bi++) {
                const int r = base + (bi < extra);
                conv_blocks16[v - 1][r - 1](K1, K2, A + m0 * lda, lda, B + n0, bstride, boff,
                                            C + m0 * ldc + n0, ldc, beta0);
                m0 += r;
            }
        }
    }
    /* AVX2: rows per block and vectors per block, at most 12 accumulators */
    const int mrmax = M >= 6 ? 6 : (int)M;
    const int nv = mrmax >= 5 ? 2 : mrmax >= 3 ? 3 : 4;
    int nblk, base, extra;
    row_split(M, mrmax, &nblk, &base, &extra);
    const int64_t nb = 8 * nv, N8 = N - N % 8;
    for (int v = nv; n0 < N8; n0 += 8 * v) {
        v = n0 + nb <= N8 ? nv : (int)((N8 - n0) / 8);
        int64_t m0 = 0;
        for (int bi = 0; bi < nblk; bi++) {
            const int r = base + (bi < extra);
            conv_blocks[v - 1][r - 1](K1, K2, A + m0 * lda, lda, B + n0, bstride, boff,
                                      C + m0 * ldc + n0, ldc, beta0);
            m0 += r;
        }
    }
    if (N8 < N)
        conv_nn_generic(M, N - N8, K1, K2, A, lda, B + N8, bstride, boff, C + N8, ldc, beta0);
}

__attribute__((target("avx2,fma"))) static void conv_nt_avx2(int64_t M, int64_t N1, int64_t N2,
                                                              int64_t L, const float *A,
                                                              int64_t lda, const float *B,
                                                              int64_t bstride,
                                                              const int64_t *boff, float *C,
                                                              int64_t ldc)
{
    const int64_t N = N1 * N2, L8 = L - L % 8;
    for (int64_t n0 = 0; n0 < N; n0 += 3) {
        const float *bb[3];
        for (int c = 0; c < 3; c++) {
            const int64_t n = clamp_row(n0 + c, N - 1);
            bb[c] = B + (n / N2) * bstride + boff[n % N2];
        }
        for (int64_t m0 = 0; m0 < M; m0 += 4) {
            const float *a[4];
            for (int r = 0; r < 4; r++) a[r] = A + clamp_row(m0 + r, M - 1) * lda;
            __m256 s00 = _mm256_setzero_ps(), s01 = s00, s02 = s00, s10 = s00, s11 = s00, s12 = s00;
            __m256 s20 = s00, s21 = s00, s22 = s00, s30 = s00, s31 = s00, s32 = s00;
            for (int64_t l = 0; l < L8; l += 8) {
                const __m256 v0 = _mm256_loadu_ps(bb[0] + l), v1 = _mm256_loadu_ps(bb[1] + l);
                const __m256 v2 = _mm256_loadu_ps(bb[2] + l);
                __m256 u = _mm256_loadu_ps(a[0] + l);
                s00 = _mm256_fmadd_ps(u, v0, s00); s01 = _mm256_fmadd_ps(u, v1, s01); s02 = _mm256_fmadd_ps(u, v2, s02);
                u = _mm256_loadu_ps(a[1] + l);
                s10 = _mm256_fmadd_ps(u, v0, s10); s11 = _mm256_fmadd_ps(u, v1, s11); s12 = _mm256_fmadd_ps(u, v2, s12);
                u = _mm256_loadu_ps(a[2] + l);
                s20 = _mm256_fmadd_ps(u, v0, s20); s21 = _mm256_fmadd_ps(u, v1, s21); s22 = _mm256_fmadd_ps(u, v2, s22);
                u = _mm256_loadu_ps(a[3] + l);
                s30 = _mm256_fmadd_ps(u, v0, s30); s31 = _mm256_fmadd_ps(u, v1, s31); s32 = _mm256_fmadd_ps(u, v2, s32);
            }
            float t[4][3] = {{hsum256(s00), hsum256(s01), hsum256(s02)},
                             {hsum256(s10), hsum256(s11), hsum256(s12)},
                             {hsum256(s20), hsum256(s21), hsum256(s22)},
                             {hsum256(s30), hsum256(s31), hsum256(s32)}};
            for (int r = 0; r < 4 && m0 + r < M; r++)
                for (int c = 0; c < 3 && n0 + c < N; c++) {
                    float acc = t[r][c];
                    for (int64_t l = L8; l < L; l++) acc += a[r][l] * bb[c][l];
                    C[(m0 + r) * ldc + n0 + c] += acc;
                }
        }
    }
}

/* AVX-512F kernels: only when the CPU has them, AVX2 is on, and GBTD_NN_NO_AVX512 is unset. */
static int use_avx512(void)
{
    static int have = -1;
    if (have < 0) {
        const char *off = getenv("GBTD_NN_NO_AVX512");
        __builtin_cpu_init();
        have = nn_have_avx2() && __builtin_cpu_supports("avx512f") &&
               !(off && off[0] && !(off[0] == '0' && off[1] == 0));
    }
    return have;
}

int nn_have_avx512vl(void)
{
    static int have = -1;
    if (have < 0) {
        __builtin_cpu_init();
        have = use_avx512() && __builtin_cpu_supports("avx512vl");
    }
    return have;
}

/* conv_tn register blocks: MR rows (each its own pointer into the planes) x NV vectors. */
__attribute__((target("avx512f,avx2,fma"))) static inline __attribute__((always_inline)) void
tn_block16(const int MR, const int NV, const float *const *a, int64_t K, const float *B,
           int64_t ldb, float *C, int64_t ldc)
{
    __m512 acc[8][2];
    NN_UNROLL(8)
    for (int r = 0; r < MR; r++)
        NN_UNROLL(8)
        for (int v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k++) {
        __m512 bv[2];
        NN_UNROLL(8)
        for (int v = 0; v < NV; v++) bv[v] = _mm512_loadu_ps(B + k * ldb + 16 * v);
        NN_UNROLL(8)
        for (int r = 0; r < MR; r++) {
            const __m512 av = _mm512_set1_ps(a[r][k]);
            NN_UNROLL(8)
            for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
        }
    }
    NN_UNROLL(8)
    for (int r = 0; r < MR; r++)
        NN_UNROLL(8)
        for (int v = 0; v < NV; v++)
            _mm512_storeu_ps(C + r * ldc + 16 * v,
                             _mm512_add_ps(_mm512_loadu_ps(C + r * ldc + 16 * v), acc[r][v]));
}

__attribute__((target("avx2,fma"))) static inline __attribute__((always_inline)) void
tn_block8(const int MR, const int NV, const float *const *a, int64_t K, const float *B,
          int64_t ldb, float *C, int64_t ldc)
{
    __m256 acc[8][2];
    NN_UNROLL(8)
    for (int r = 0; r < MR; r++)
        NN_UNROLL(8)
        for (int v = 0; v < NV; v++) acc[r][v] = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; k++) {
        __m256 bv[2];
        NN_UNROLL(8)
        for (int v = 0; v < NV; v++) bv[v] = _mm256_loadu_ps(B + k * ldb + 8 * v);
        NN_UNROLL(8)
        for (int r = 0; r < MR; r++) {
            const __m256 av = _mm256_broadcast_ss(a[r] + k);
            NN_UNROLL(8)
            for (int v = 0; v < NV; v++) acc[r][v] = _mm256_fmadd_ps(av, bv[v], acc[r][v]);
        }
    }
    NN_UNROLL(8)
    for (int r = 0; r < MR; r++)
        NN_UNROLL(8)
        for (int v = 0; v < NV; v++)
            _mm256_storeu_ps(C + r * ldc + 8 * v,
                             _mm256_add_ps(_mm256_loadu_ps(C + r * ldc + 8 * v), acc[r][v]));
}

typedef void (*tn_block_fn)(const float *const *, int64_t, const float *, int64_t, float *,
                            int64_t);
#define TN_FN(W, MR, NV)                                                                         \
    __attribute__((target("avx512f,avx2,fma"))) static void tn_##W##_##MR##_##NV(               \
        const float *const *a, int64_t K, const float *B, int64_t ldb, float *C, int64_t ldc)    \
    {                                                                                            \
        tn_block##W(MR, NV, a, K, B, ldb, C, ldc);                                               \
    }
#define TN_ROW(W, NV)                                                                            \
    TN_FN(W, 1, NV) TN_FN(W, 2, NV) TN_FN(W, 3, NV) TN_FN(W, 4, NV) TN_FN(W, 5, NV)              \
    TN_FN(W, 6, NV) TN_FN(W, 7, NV) TN_FN(W, 8, NV)
TN_ROW(16, 1)
TN_ROW(16, 2)
#undef TN_FN
#define TN_FN(W, MR, NV)                                                                         \
    __attribute__((target("avx2,fma"))) static void tn_##W##_##MR##_##NV(                       \
        const float *const *a, int64_t K, const float *B, int64_t ldb, float *C, int64_t ldc)    \
    {                                                                                            \
        tn_block##W(MR, NV, a, K, B, ldb, C, ldc);                                               \
    }
TN_ROW(8, 1)
TN_ROW(8, 2)
#define TN_TABLE(W, NV)                                                                          \
    {tn_##W##_1_##NV, tn_##W##_2_##NV, tn_##W##_3_##NV, tn_##W##_4_##NV,                         \
     tn_##W##_5_##NV, tn_##W##_6_##NV, tn_##W##_7_##NV, tn_##W##_8_##NV}
static const tn_block_fn tn16[2][8] = {TN_TABLE(16, 1), TN_TABLE(16, 2)};
static const tn_block_fn tn8[2][8] = {TN_TABLE(8, 1), TN_TABLE(8, 2)};

/* Vectorised conv_tn; returns 0 (nothing done) when N is not a multiple of 8. */
static int conv_tn_simd(int64_t M1, int64_t M2, int64_t N, int64_t K, const float *A,
                        int64_t astride, const int64_t *aoff, const float *B, int64_t ldb,
                        float *C, int64_t ldc)
{
    const int wide = use_avx512() && N % 16 == 0;
    if (!wide && N % 8) return 0;
    const int vw = wide ? 16 : 8;
    const int64_t M = M1 * M2;
    for (int64_t n0 = 0; n0 < N;) {
        /* two vectors per block where they fit; then 8 (AVX-512) or 6 (AVX2) rows of them */
        const int nv = N - n0 >= 2 * vw ? 2 : 1;
        const int mrmax = wide ? 8 : (nv == 2 ? 6 : 8);
        for (int64_t m0 = 0; m0 < M; m0 += mrmax) {
            const int mr = M - m0 < mrmax ? (int)(M - m0) : mrmax;
            const float *a[8];
            for (int r = 0; r < mr; r++) {
                const int64_t m = m0 + r;
                a[r] = A + (m / M2) * astride + aoff[m % M2];
            }
            const tn_block_fn f = wide ? tn16[nv - 1][mr - 1] : tn8[nv - 1][mr - 1];
            f(a, K, B + n0, ldb, C + m0 * ldc + n0, ldc);
        }
        n0 += nv * vw;
    }
    return 1;
}

int nn_have_avx2(void)
{
    static int have = -1;
    if (have < 0) {
        const char *off = getenv("GBTD_NN_NO_SIMD");
        __builtin_cpu_init();
        have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               !(off && off[0] && !(off[0] == '0' && off[1] == 0));
    }
    return have;
}

#else
int nn_have_avx2(void) { return 0; }
int nn_have_avx512vl(void) { return 0; }
#endif

static void conv_nn_generic(int64_t M, int64_t N, int64_t K1, int64_t K2, const float *A,
                            int64_t lda, const float *B, int64_t bstride, const int64_t *boff,
                            float *C, int64_t ldc, int beta0)
{
    for (int64_t m = 0; m < M; m++) {
        float *c = C + m * ldc;
        if (beta0)
            for (int64_t n = 0; n < N; n++) c[n] = 0.0f;
        for (int64_t k1 = 0; k1 < K1; k1++)
            for (int64_t k2 = 0; k2 < K2; k2++) {
                const float a = A[m * lda + k1 * K2 + k2];
                const float *b = B + k1 * bstride + boff[k2];
                for (int64_t n = 0; n < N; n++) c[n] += a * b[n];
            }
    }
}

static void conv_nt_generic(int64_t M, int64_t N1, int64_t N2, int64_t L, const float *A,
                            int64_t lda, const float *B, int64_t bstride, const int64_t *boff,
                            float *C, int64_t ldc)
{
    for (int64_t m = 0; m < M; m++)
        for (int64_t n1 = 0; n1 < N1; n1++)
            for (int64_t n2 = 0; n2 < N2; n2++) {
                const float *a = A + m * lda, *b = B + n1 * bstride + boff[n2];
                float acc = 0.0f;
                for (int64_t l = 0; l < L; l++) acc += a[l] * b[l];
                C[m * ldc + n1 * N2 + n2] += acc;
            }
}

void nn_gemm_conv_nn(int64_t M, int64_t N, int64_t K1, int64_t K2, const float *A, int64_t lda,
                     const float *B, int64_t bstride, const int64_t *boff, float *C, int64_t ldc,
                     int beta0)
{
    if (M <= 0 || N <= 0) return;
#ifdef NN_X86
    if (nn_have_avx2()) {
        conv_nn_avx2(M, N, K1, K2, A, lda, B, bstride, boff, C, ldc, beta0);
        return;
    }
#endif
    conv_nn_generic(M, N, K1, K2, A, lda, B, bstride, boff, C, ldc, beta0);
}

void nn_gemm_conv_tn(int64_t M1, int64_t M2, int64_t N, int64_t K, const float *A,
                     int64_t astride, const int64_t *aoff, const float *B, int64_t ldb, float *C,
                     int64_t ldc)
{
    if (M1 <= 0 || M2 <= 0 || N <= 0) return;
#ifdef NN_X86
    if (nn_have_avx2() && conv_tn_simd(M1, M2, N, K, A, astride, aoff, B, ldb, C, ldc)) return;
#endif
    for (int64_t m1 = 0; m1 < M1; m1++)
        for (int64_t m2 = 0; m2 < M2; m2++) {
            const float *a = A + m1 * astride + aoff[m2];
            float *c = C + (m1 * M2 + m2) * ldc;
            for (int64_t k = 0; k < K; k++) {
                const float av = a[k], *b = B + k * ldb;
                for (int64_t n = 0; n < N; n++) c[n] += av * b[n];
            }
        }
}

void nn_gemm_conv_nt(int64_t M, int64_t N1, int64_t N2, int64_t L, const float *A, int64_t lda,
                     const float *B, int64_t bstride, const int64_t *boff, float *C, int64_t ldc)
{
    if (M <= 0 || N1 <= 0 || N2 <= 0) return;
#ifdef NN_X86
    if (nn_have_avx2()) {
        /* AVX2 even where AVX-512 exists: with L of a few hundred, the per-output horizontal
         * sums of 16-wide accumulators cost more than the wider FMAs save (measured). */
        conv_nt_avx2(M, N1, N2, L, A, lda, B, bstride, boff, C, ldc);
        return;
    }
#endif
    conv_nt_generic(M, N1, N2, L, A, lda, B, bstride, boff, C, ldc);
}

void nn_gemm_small_nn(int64_t M, int64_t N, int64_t K, const float *A, int64_t ars, int64_t acs,
                      const float *B, int64_t ldb, float *C, int64_t ldc, int beta0)
{
    if (M <= 0 || N <= 0) return;
#ifdef NN_X86
    if (nn_have_avx2()) {
        nn_avx2(M, N, K, A, ars, acs, B, ldb, C, ldc, beta0);
        return;
    }
#endif
    nn_generic(M, N, K, A, ars, acs, B, ldb, C, ldc, beta0);
}

void nn_gemm_small_nt(int64_t M, int64_t N, int64_t L, const float *A, int64_t lda,
                      const float *B, int64_t ldb, float *C, int64_t ldc)
{
    if (M <= 0 || N <= 0) return;
#ifdef NN_X86
    if (nn_have_avx2()) {
        nt_avx2(M, N, L, A, lda, B, ldb, C, ldc);
        return;
    }
#endif
    nt_generic(M, N, L, A, lda, B, ldb, C, ldc);
}

/* ---- the streaming GEMM of 1x1 convolutions (nn_gemm_stream, gemm_small.h) ---------------- */

#ifdef NN_X86
/* MR rows x NV vectors of 8 columns over all K: C = A B (acc: C += A B; nt: non-temporal
 * stores, C 32-byte aligned). The literal MR, NV, acc and nt unroll every loop (the
 * accumulators stay in registers, see gemm_small.c). Meanwhile npf lines of the next panel are
 * prefetched, one row of B (ldb apart, touched at the panel's first and last float, which may
 * straddle two lines) every `every` steps of the K loop. */
__attribute__((target("avx2,fma"))) static inline __attribute__((always_inline)) void
stream_block(const int MR, const int NV, const int acc, const int nt, int64_t K, const float *A,
             int64_t lda, const float *B, int64_t ldb, float *C, int64_t ldc, const float *pf,
             int64_t npf, int64_t every)
{
    __m256 s[6][4];
    NN_UNROLL(8)
    for (int r = 0; r < MR; r++)
        NN_UNROLL(8)
        for (int v = 0; v < NV; v++) s[r][v] = _mm256_setzero_ps();
    if (acc && npf > 0) /* the same rows of the next panel of C, read when that panel is done */
        NN_UNROLL(8)
        for (int r = 0; r < MR; r++) {
            _mm_prefetch((const char *)(C + r * ldc + 16), _MM_HINT_T0);
            _mm_prefetch((const char *)(C + r * ldc + 31), _MM_HINT_T0);
        }
    int64_t due = every;
    for (int64_t k = 0; k < K; k++) {
        if (npf > 0 && --due == 0) {
            _mm_prefetch((const char *)pf, _MM_HINT_T0);
            _mm_prefetch((const char *)(pf + 15), _MM_HINT_T0);
            pf += ldb;
            npf--;
            due = every;
        }
        rank1_step(MR, NV, A + k, lda, B + k * ldb, s);
    }
    NN_UNROLL(8)
    for (int r = 0; r < MR; r++)
        NN_UNROLL(8)
        for (int v = 0; v < NV; v++) {
            float *c = C + r * ldc + 8 * v;
            const __m256 x = acc ? _mm256_add_ps(_mm256_loadu_ps(c), s[r][v]) : s[r][v];
            if (nt)
                _mm256_stream_ps(c, x);
            else
                _mm256_storeu_ps(c, x);
        }
}

typedef void (*stream_fn)(int64_t, const float *, int64_t, const float *, int64_t, float *,
                          int64_t, const float *, int64_t, int64_t);
#define STREAM_FN(MR, NV, ACC, NT)                                                               \
    __attribute__((target("avx2,fma"))) static void stream_##MR##_##NV##_##ACC##NT(              \
        int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb, float *C,           \
        int64_t ldc, const float *pf, int64_t npf, int64_t every)                                \
    {                                                                                            \
        stream_block(MR, NV, ACC, NT, K, A, lda, B, ldb, C, ldc, pf, npf, every);                \
    }
#define STREAM_ROWS(NV, ACC, NT)                                                                 \
    STREAM_FN(1, NV, ACC, NT) STREAM_FN(2, NV, ACC, NT) STREAM_FN(3, NV, ACC, NT)                \
    STREAM_FN(4, NV, ACC, NT) STREAM_FN(5, NV, ACC, NT) STREAM_FN(6, NV, ACC, NT)
STREAM_ROWS(2, 0, 0)
STREAM_ROWS(2, 0, 1)
STREAM_ROWS(2, 1, 0)
STREAM_ROWS(1, 0, 0)
#define STREAM_TABLE(NV, ACC, NT)                                                                \
    {stream_1_##NV##_##ACC##NT, stream_2_##NV##_##ACC##NT, stream_3_##NV##_##ACC##NT,            \
     stream_4_##NV##_##ACC##NT, stream_5_##NV##_##ACC##NT, stream_6_##NV##_##ACC##NT}
/* [variant][MR - 1]: 16 columns stored, streamed, added; 8 columns stored (to a scratch block) */
static const stream_fn stream_blocks[4][6] = {STREAM_TABLE(2, 0, 0), STREAM_TABLE(2, 0, 1),
                                              STREAM_TABLE(2, 1, 0), STREAM_TABLE(1, 0, 0)};

/* One panel of 16 columns of C = A B (variant: stream_blocks' first index), every row block of
 * A passing over it; with next, the following panel's K lines of B are prefetched meanwhile,
 * `per` of them per row block, one every `every` steps of its K loop. */
__attribute__((target("avx2,fma"))) static void stream_panel(int64_t M, int64_t K, const float *A,
                                                             int64_t lda, const float *bj,
                                                             int64_t ldb, float *cj, int64_t ldc,
                                                             int variant, int next)
{
    /* row blocks of at most 6, as even as M allows (32 rows: 6 6 5 5 5 5, not 6 x 5 + 2) */
    const int64_t nrb = (M + 5) / 6, base = M / nrb, extra = M % nrb;
    const int64_t per = (K + nrb - 1) / nrb, every = per ? K / per : 1;
    int64_t r0 = 0, k0 = 0;
    for (int64_t rb = 0; rb < nrb; rb++) {
        const int64_t mr = base + (rb < extra);
        const int64_t npf = !next ? 0 : K - k0 < per ? K - k0 : per;
        stream_blocks[variant][mr - 1](K, A + r0 * lda, lda, bj, ldb, cj + r0 * ldc, ldc,
                                       bj + 16 + k0 * ldb, npf, every);
        r0 += mr;
        k0 += per;
        if (k0 > K) k0 = K;
    }
}

/* C (+)= A B, N >= 8: panels of 16 columns, then the N % 16 left in blocks of 8. */
__attribute__((target("avx2,fma"))) static void
stream_avx2(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
            int64_t ldb, float *C, int64_t ldc, int accumulate, int stream)
{
    /* row blocks of at most 6, as even as M allows (32 rows: 6 6 5 5 5 5, not 6 x 5 + 2) */
    const int64_t nrb = (M + 5) / 6, base = M / nrb, extra = M % nrb;
    const int nt = stream && !accumulate && ((uintptr_t)C & 31) == 0 && ldc % 8 == 0;
    const int variant = accumulate ? 2 : nt ? 1 : 0;
    const int64_t panels = N / 16;
    for (int64_t j = 0; j < panels; j++)
        stream_panel(M, K, A, lda, B + 16 * j, ldb, C + 16 * j, ldc, variant, j + 1 < panels);
    /* The last N % 16 columns: blocks of 8 into a scratch block (the final one ending at column
     * N, overlapping columns already done), then copied or added where not yet written. */
    int64_t n0 = panels * 16;
    while (n0 < N) {
        const int64_t c0 = N - n0 >= 8 ? n0 : N - 8, c1 = c0 + 8 < N ? c0 + 8 : N;
        float tmp[6 * 8];
        int64_t r0 = 0;
        for (int64_t rb = 0; rb < nrb; rb++) {
            const int64_t mr = base + (rb < extra);
            stream_blocks[3][mr - 1](K, A + r0 * lda, lda, B + c0, ldb, tmp, 8, B, 0, 1);
            for (int64_t r = 0; r < mr; r++)
                for (int64_t c = n0; c < c1; c++) {
                    float *d = C + (r0 + r) * ldc + c;
                    *d = accumulate ? *d + tmp[r * 8 + c - c0] : tmp[r * 8 + c - c0];
                }
            r0 += mr;
        }
        n0 = c1;
    }
    if (nt) _mm_sfence();
}
#endif

void nn_gemm_stream(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                    int64_t ldb, float *C, int64_t ldc, int accumulate, int stream)
{
    if (M <= 0 || N <= 0) return;
#ifdef NN_X86
    if (nn_have_avx2() && N >= 8) {
        stream_avx2(M, N, K, A, lda, B, ldb, C, ldc, accumulate, stream);
        return;
    }
#endif
    (void)stream;
    nn_generic(M, N, K, A, lda, 1, B, ldb, C, ldc, !accumulate); /* the portable loop */
}

/* ---- the backward of a 1x1 convolution from one pass over its panels (gemm_small.h) -------- */

#ifdef NN_X86
/* G[MR x 8 NV] += A[MR x 16] BT[16 x 8 NV]: a rank-16 update of a block of the weight gradient,
 * A's rows lda apart (a panel of dy or x, in place), BT the other panel transposed. */
__attribute__((target("avx2,fma"))) static inline __attribute__((always_inline)) void
gacc_block(const int MR, const int NV, const float *A, int64_t lda, const float *BT, int64_t ldbt,
           float *G, int64_t ldg)
{
    __m256 s[6][4];
    NN_UNROLL(8)
    for (int r = 0; r < MR; r++)
        NN_UNROLL(8)
        for (int v = 0; v < NV; v++) s[r][v] = _mm256_loadu_ps(G + r * ldg + 8 * v);
    NN_UNROLL(16)
    for (int k = 0; k < 16; k++) rank1_step(MR, NV, A + k, lda, BT + k * ldbt, s);
    NN_UNROLL(8)
    for (int r = 0; r < MR; r++)
        NN_UNROLL(8)
        for (int v = 0; v < NV; v++) _mm256_storeu_ps(G + r * ldg + 8 * v, s[r][v]);
}

typedef void (*gacc_fn)(const float *, int64_t, const float *, int64_t, float *, int64_t);
#define GACC_FN(MR, NV)                                                                          \
    __attribute__((target("avx2,fma"))) static void gacc_##MR##_##NV(                            \
        const float *A, int64_t lda, const float *BT, int64_t ldbt, float *G, int64_t ldg)       \
    {                                                                                            \
        gacc_block(MR, NV, A, lda, BT, ldbt, G, ldg);                                            \
    }
#define GACC_ROWS(NV)                                                                            \
    GACC_FN(1, NV) GACC_FN(2, NV) GACC_FN(3, NV) GACC_FN(4, NV) GACC_FN(5, NV) GACC_FN(6, NV)
GACC_ROWS(2)
GACC_ROWS(1)
GACC_FN(1, 4) GACC_FN(2, 4) GACC_FN(3, 4)
static const gacc_fn gacc_wide[3] = {gacc_1_4, gacc_2_4, gacc_3_4};
/* [NV - 1][MR - 1] */
static const gacc_fn gacc_blocks[2][6] = {
    {gacc_1_1, gacc_2_1, gacc_3_1, gacc_4_1, gacc_5_1, gacc_6_1},
    {gacc_1_2, gacc_2_2, gacc_3_2, gacc_4_2, gacc_5_2, gacc_6_2}};

/* T[16 x R] = the R x 16 panel P (rows ldp apart) transposed, R a multiple of 8: 8 x 8 blocks
 * through unpack and shuffle steps. */
__attribute__((target("avx2,fma"))) static void panel_t16(int64_t R, const float *P, int64_t ldp,
                                                          float *T)
{
    for (int64_t r0 = 0; r0 < R; r0 += 8)
        for (int h = 0; h < 2; h++) {
            __m256 v[8], t[8];
            NN_UNROLL(8)
            for (int i = 0; i < 8; i++) v[i] = _mm256_loadu_ps(P + (r0 + i) * ldp + 8 * h);
            NN_UNROLL(4)
            for (int i = 0; i < 4; i++) {
                t[2 * i] = _mm256_unpacklo_ps(v[2 * i], v[2 * i + 1]);
                t[2 * i + 1] = _mm256_unpackhi_ps(v[2 * i], v[2 * i + 1]);
            }
            /* t[0] = a0 b0 a1 b1 | a4 b4 a5 b5, t[1] = a2 b2 a3 b3 | a6 b6 a7 b7, ... */
            NN_UNROLL(2)
            for (int i = 0; i < 2; i++) {
                const __m256 p = t[4 * i], q = t[4 * i + 1], u = t[4 * i + 2], w = t[4 * i + 3];
                v[4 * i] = _mm256_shuffle_ps(p, u, 0x44);     /* a0 b0 c0 d0 | a4 b4 c4 d4 */
                v[4 * i + 1] = _mm256_shuffle_ps(p, u, 0xEE); /* a1 b1 c1 d1 | a5 .. */
                v[4 * i + 2] = _mm256_shuffle_ps(q, w, 0x44); /* a2 .. | a6 .. */
                v[4 * i + 3] = _mm256_shuffle_ps(q, w, 0xEE); /* a3 .. | a7 .. */
            }
            /* v[0..3]: rows 0-3 (columns 0-3 | 4-7), v[4..7]: rows 4-7 */
            NN_UNROLL(4)
            for (int i = 0; i < 4; i++) {
                const __m256 lo = _mm256_permute2f128_ps(v[i], v[4 + i], 0x20);
                const __m256 hi = _mm256_permute2f128_ps(v[i], v[4 + i], 0x31);
                _mm256_storeu_ps(T + (8 * h + i) * R + r0, lo);
                _mm256_storeu_ps(T + (8 * h + 4 + i) * R + r0, hi);
            }
        }
}

/* G[GM x GN] += A[GM x 16] BT[16 x GN] in blocks of up to 6 rows (as even as GM allows) and 16
 * columns (GN a multiple of 8), prefetching npf lines from pf (ldpf apart) along the way. */
__attribute__((target("avx2,fma"))) static void gacc_panel(int64_t GM, int64_t GN, const float *A,
                                                           int64_t lda, const float *BT, float *G,
                                                           const float *pf, int64_t ldpf,
                                                           int64_t npf)
{
    /* GN a multiple of 32: blocks of 3 rows x 32 columns (3 broadcasts and 4 loads per 12
     * FMAs); otherwise 6 x 16, and 6 x 8 for the last 8 columns */
    const int wide = GN % 32 == 0;
    const int64_t mrmax = wide ? 3 : 6, cw = wide ? 32 : 16;
    const int64_t nrb = (GM + mrmax - 1) / mrmax, base = GM / nrb, extra = GM % nrb;
    const int64_t blocks = nrb * ((GN + cw - 1) / cw), per = (npf + blocks - 1) / blocks;
    int64_t r0 = 0;
    for (int64_t rb = 0; rb < nrb; rb++) {
        const int64_t mr = base + (rb < extra);
        for (int64_t c0 = 0; c0 < GN; c0 += cw) {
            for (int64_t i = 0; i < per && npf > 0; i++, npf--, pf += ldpf) {
                _mm_prefetch((const char *)pf, _MM_HINT_T0);
                _mm_prefetch((const char *)(pf + 15), _MM_HINT_T0);
            }
            const gacc_fn f = wide ? gacc_wide[mr - 1] : gacc_blocks[GN - c0 >= 16][mr - 1];
            f(A + r0 * lda, lda, BT + c0, GN, G + r0 * GN + c0, GN);
        }
        r0 += mr;
    }
}
#endif

static void stream_bwd_generic(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                               const float *B, int64_t ldb, float *C, int64_t ldc, int accumulate,
                               const float *X, int64_t ldx, float *G, int gtrans)
{
    if (C) nn_generic(M, N, K, A, lda, 1, B, ldb, C, ldc, !accumulate);
    /* G (K x M) += B X^T, or G^T (M x K) += X B^T */
    for (int64_t o = 0; o < K; o++)
        for (int64_t c = 0; c < M; c++) {
            float acc = 0.0f;
            for (int64_t n = 0; n < N; n++) acc += B[o * ldb + n] * X[c * ldx + n];
            G[gtrans ? c * K + o : o * M + c] += acc;
        }
}

int nn_stream_bwd_gtrans(int64_t M, int64_t K)
{
    return !(M <= K && M % 8 == 0);
}

void nn_gemm_stream_bwd(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                        const float *B, int64_t ldb, float *C, int64_t ldc, int accumulate,
                        int stream, const float *X, int64_t ldx, float *G, float *T)
{
    if (M <= 0 || N <= 0 || K <= 0) return;
    const int gtrans = nn_stream_bwd_gtrans(M, K);
#ifdef NN_X86
    if (nn_have_avx2() && N % 16 == 0 && (gtrans ? K : M) % 8 == 0) {
        /* dx for a panel (stream_avx2 on its 16 columns), then the panel's rank-16 update of the
         * gradient while both panels are in L1; the next panel's x lines are prefetched during
         * the update (its dy lines during the dx blocks, as in stream_avx2). Without dx, the
         * update prefetches both. */
        const int nt = stream && !accumulate && C && ((uintptr_t)C & 31) == 0 && ldc % 8 == 0;
        const int variant = accumulate ? 2 : nt ? 1 : 0;
        const int64_t panels = N / 16;
        for (int64_t j = 0; j < panels; j++) {
            const float *bj = B + 16 * j, *xj = X + 16 * j;
            const int last = j + 1 == panels;
            if (C) stream_panel(M, K, A, lda, bj, ldb, C + 16 * j, ldc, variant, !last);
            if (gtrans) {
                panel_t16(K, bj, ldb, T);
                gacc_panel(M, K, xj, ldx, T, G, xj + 16, ldx, last ? 0 : M);
            } else {
                panel_t16(M, xj, ldx, T);
                gacc_panel(K, M, bj, ldb, T, G, xj + 16, ldx, last ? 0 : M);
            }
            if (!C && !last)
                for (int64_t k = 0; k < K; k++) {
                    _mm_prefetch((const char *)(bj + 16 + k * ldb), _MM_HINT_T0);
                    _mm_prefetch((const char *)(bj + 31 + k * ldb), _MM_HINT_T0);
                }
        }
        if (nt) _mm_sfence();
        return;
    }
#endif
    (void)stream;
    (void)T;
    stream_bwd_generic(M, N, K, A, lda, B, ldb, C, ldc, accumulate, X, ldx, G, gtrans);
}
