/* Timing of BTD iterations on the benchmark layout (not a test; built on request:
 * `ninja -C <build> tests/decomp/time_btd`). A 3 x 3 x 512 x 2048 kernel (planted BTD of 32
 * terms of rank (4, 4) plus 10 % noise, so the iterations do not stop early), R = 32 terms of
 * rank (4, 4) over modes 2 and 3. Prints seconds per ALS and NLS iteration, the GFLOP/s of the
 * large GEMMs an iteration performs (gbtd_btd_iteration_flops) and their fraction of the dgemm
 * rate measured in the same run on the iteration's main GEMM shape (4608 x 2048 x 128).
 * Usage: time_btd [C_in C_out R L iterations [als|nls]] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/blas.h"
#include "gbtd.h"

static double dgemm_rate(int64_t m, int64_t n, int64_t k, int reps)
{
    double *a = malloc((size_t)(m * k) * sizeof(double)), *b = malloc((size_t)(k * n) * sizeof(double));
    double *c = malloc((size_t)(m * n) * sizeof(double));
    for (int64_t i = 0; i < m * k; i++) a[i] = (double)(i % 7) - 3.0;
    for (int64_t i = 0; i < k * n; i++) b[i] = (double)(i % 5) - 2.0;
    double best = 1e300;
    for (int r = 0; r < reps; r++) {
        const double t0 = gbtd_wall_time();
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)m, (blasint)n, (blasint)k,
                    1.0, a, (blasint)k, b, (blasint)n, 0.0, c, (blasint)n);
        const double t = gbtd_wall_time() - t0;
        best = t < best ? t : best;
    }
    free(a);
    free(b);
    free(c);
    return 2.0 * (double)m * (double)n * (double)k / best;
}

int main(int argc, char **argv)
{
    const int64_t cin = argc > 1 ? atoll(argv[1]) : 512, cout = argc > 2 ? atoll(argv[2]) : 2048;
    const int R = argc > 3 ? atoi(argv[3]) : 32;
    const int64_t l = argc > 4 ? atoll(argv[4]) : 4;
    const int iters = argc > 5 ? atoi(argv[5]) : 5;
    const char *only = argc > 6 ? argv[6] : "";
    const int64_t sh[4] = {3, 3, cin, cout}, L[2] = {l, l};
    const int md[2] = {2, 3};
    gbtd_btd planted, est;
    gbtd_tensor x, noise;
    gbtd_rng *rng;
    gbtd_rng_alloc(1, &rng);
    if (gbtd_btd_alloc_uniform(&planted, 4, sh, 2, md, R, L) != GBTD_OK) {
        fprintf(stderr, "time_btd: %s\n", gbtd_last_error());
        return 2;
    }
    gbtd_btd_fill_normal(&planted, rng);
    gbtd_btd_reconstruct_alloc(&planted, &x);
    gbtd_tensor_alloc_like(&noise, &x);
    gbtd_tensor_fill_normal(&noise, rng, 0.0, 1.0);
    gbtd_tensor_scale(&noise, 0.1 * gbtd_tensor_norm(&x) / gbtd_tensor_norm(&noise));
    gbtd_tensor_axpy(1.0, &noise, &x);
    gbtd_rng_free(rng);
    /* The machine may be shared: each solver's time is the best of two runs, and its dgemm
     * rate the best of a measurement just before and one just after them (conservative). */
    double rate = dgemm_rate(9 * cin, cout, R * l, 5);
    printf("dgemm %lld x %lld x %lld: %.2f GFLOP/s (best of 5, before the iterations)\n",
           (long long)(9 * cin), (long long)cout, (long long)(R * l), rate * 1e-9);
    for (int s = 0; s < 2; s++) {
        if ((s == 0 && !strcmp(only, "nls")) || (s == 1 && !strcmp(only, "als"))) continue;
        if (s == 1) rate = dgemm_rate(9 * cin, cout, R * l, 5);
        gbtd_btd_opts o = gbtd_btd_opts_default();
        o.solver = s ? GBTD_BTD_NLS : GBTD_BTD_ALS;
        o.init = GBTD_BTD_INIT_RANDOM;
        o.compress = GBTD_BTD_COMPRESS_OFF; /* time iterations on the full tensor */
        o.max_iter = iters;
        o.tol = 0.0;
        o.error_tol = 0.0;
        gbtd_btd_info info;
        int64_t *ranks = malloc(sizeof(int64_t) * 2 * (size_t)R);
        for (int i = 0; i < 2 * R; i++) ranks[i] = l;
        double spi = 1e300;
        for (int rep = 0; rep < 2; rep++) {
            if (rep) {
                gbtd_decomp_info_free(&info);
                gbtd_btd_free(&est);
            }
            const int rc = gbtd_btd_decompose(&x, 2, md, R, ranks, &est, &info, &o);
            if (rc != GBTD_OK) {
                fprintf(stderr, "time_btd: %s\n", gbtd_last_error());
                return 1;
            }
            const double t = info.time_iterate / info.iterations;
            spi = t < spi ? t : spi;
        }
        free(ranks);
        const double r2 = dgemm_rate(9 * cin, cout, R * l, 5);
        rate = r2 > rate ? r2 : rate;
        const double fl = gbtd_btd_iteration_flops(&est, o.solver);
        printf("%s: %d iterations, %.4f s/iteration (init %.3f s), rel. error %.4f, "
               "%.2f GFLOP/s of level-3 work = %.0f %% of dgemm (%.2f GFLOP/s around this run)\n",
               s ? "NLS" : "ALS", info.iterations, spi, info.time_init, info.rel_error,
               fl / spi * 1e-9, 100.0 * fl / spi / rate, rate * 1e-9);
        printf("{\"case\": \"btd_%s\", \"shape\": [3, 3, %lld, %lld], \"terms\": %d, \"rank\": %lld, "
               "\"s_per_iter\": %.6f, \"gflops\": %.3f, \"dgemm_gflops\": %.3f, \"fraction\": %.4f}\n",
               s ? "nls" : "als", (long long)cin, (long long)cout, R, (long long)l, spi,
               fl / spi * 1e-9, rate * 1e-9, fl / spi / rate);
        gbtd_decomp_info_free(&info);
        gbtd_btd_free(&est);
    }
    gbtd_btd_free(&planted);
    gbtd_tensor_free(&noise);
    gbtd_tensor_free(&x);
    return 0;
}
