/* gbtd nn: small-GEMM kernels for grouped convolutions (see gemm_small.h). */
#include "nn/gemm_small.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define NN_X86 1
#include <immintrin.h>
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

int nn_have_avx2(void)
{
    static int have = -1;
    if (have < 0) {
        __builtin_cpu_init();
        have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return have;
}

#else
int nn_have_avx2(void) { return 0; }
#endif

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
