/* gbtd nn: register-blocked single-precision GEMM kernels for the small matrices of grouped
 * convolutions (a few output channels per group, long spatial dimension), where a call into
 * OpenBLAS per (image, group) would cost more in overhead than in arithmetic. All accumulate
 * into C unless `beta0` asks to overwrite it. AVX2/FMA when the CPU has it, plain loops otherwise. */
#ifndef GBTD_NN_GEMM_SMALL_H
#define GBTD_NN_GEMM_SMALL_H

#include <stdint.h>

/* C[M x N] (+)= A B, A(m, k) = A[m * ars + k * acs] (so ars = K, acs = 1 is row-major A and
 * ars = 1, acs = M is A stored transposed), B row-major K x N with row stride ldb. */
void nn_gemm_small_nn(int64_t M, int64_t N, int64_t K, const float *A, int64_t ars, int64_t acs,
                      const float *B, int64_t ldb, float *C, int64_t ldc, int beta0);
/* C[M x N] += A B^T, A row-major M x L (row stride lda), B row-major N x L (row stride ldb). */
void nn_gemm_small_nt(int64_t M, int64_t N, int64_t L, const float *A, int64_t lda,
                      const float *B, int64_t ldb, float *C, int64_t ldc);
/* Implicit-im2col GEMMs for convolutions on padded planes: row k = (k1, k2) of B is the
 * contiguous vector B + k1 * bstride + boff[k2] (a plane k1 shifted by the offset of tap k2).
 *   conv_nn: C[M x N] (+)= A B, A(m, k1 K2 + k2) = A[m * lda + k1 * K2 + k2];
 *   conv_nt: C[m, n1 N2 + n2] += sum_{l < L} A[m * lda + l] B[n1 * bstride + boff[n2] + l].
 * Register blocks of up to 6 x 16 (6 rows, two AVX2 vectors) or 4 x 24, columns outermost so
 * that a block of B stays in L1 while every row block of A passes over it. */
void nn_gemm_conv_nn(int64_t M, int64_t N, int64_t K1, int64_t K2, const float *A, int64_t lda,
                     const float *B, int64_t bstride, const int64_t *boff, float *C, int64_t ldc,
                     int beta0);
void nn_gemm_conv_nt(int64_t M, int64_t N1, int64_t N2, int64_t L, const float *A, int64_t lda,
                     const float *B, int64_t bstride, const int64_t *boff, float *C, int64_t ldc);
/* C[m1 M2 + m2, n] += sum_{k < K} A[m1 astride + aoff[m2] + k] B[k ldb + n]: the weight gradient
 * of a convolution as a GEMM over the long pixel dimension, with B = dy transposed (pixels x
 * output channels), so no horizontal sums are needed. Vectorised when N is a multiple of 8. */
void nn_gemm_conv_tn(int64_t M1, int64_t M2, int64_t N, int64_t K, const float *A,
                     int64_t astride, const int64_t *aoff, const float *B, int64_t ldb, float *C,
                     int64_t ldc);
/* The GEMM of a 1x1 convolution for one image, C[M x N] = A B (accumulate: C += A B), A row-major
 * M x K (row stride lda: the weights, or their transpose for backward-data), B the K input planes
 * of N pixels, rows ldb apart, read in place. Panels of 16 columns: every block of up to 6 rows of
 * A passes over a panel while it sits in L1, and the next panel's K lines (K separate streams,
 * more than the hardware prefetchers follow) are prefetched during those blocks. With stream
 * (and not accumulate), C goes out with non-temporal stores where it is 32-byte aligned: a
 * convolution's output is read back from memory anyway, and this skips reading each line before
 * it is overwritten and the zeroing pass of a beta = 0 sgemm. Single-threaded. */
void nn_gemm_stream(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B,
                    int64_t ldb, float *C, int64_t ldc, int accumulate, int stream);
/* The backward of a 1x1 convolution for one image in one pass over its panels of 16 pixels:
 * C (M x N) = or += A B exactly as nn_gemm_stream (A the transposed weights, M = c_in, K = c_out,
 * B = dy; C = NULL: no input gradient), and the weight gradient from the same panels while they
 * are in L1, X being the M input planes (rows ldx apart): with nn_stream_bwd_gtrans(M, K) == 0,
 * G (K x M, row stride M: the weights' own layout) += B X^T, else G (M x K, row stride K) += X B^T
 * (the side of the gradient's vectors is the smaller one, transposed panel by panel into T,
 * 16 x M or 16 x K floats). The fast path needs N a multiple of 16 and that side a multiple of 8;
 * otherwise portable loops. Single-threaded. */
void nn_gemm_stream_bwd(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                        const float *B, int64_t ldb, float *C, int64_t ldc, int accumulate,
                        int stream, const float *X, int64_t ldx, float *G, float *T);
int nn_stream_bwd_gtrans(int64_t M, int64_t K);
/* True when the AVX2 kernels are in use: the CPU has AVX2 and FMA and the environment variable
 * GBTD_NN_NO_SIMD is unset or "0" (set, it selects the portable loops, which the tests run too). */
int nn_have_avx2(void);
/* True when AVX-512F and VL are in use as well (GBTD_NN_NO_AVX512 unset): masked 8-float loads
 * and stores through mask registers, far cheaper than AVX2's vmaskmov on some CPUs. */
int nn_have_avx512vl(void);

#endif
