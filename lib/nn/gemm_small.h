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
/* True when the AVX2 kernels are in use. */
int nn_have_avx2(void);

#endif
