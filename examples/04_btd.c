/* 04_btd: block term decomposition (BTD) of a convolution kernel over its channel modes — the
 * ResNeXt reading of the paper: R terms of rank (d, d), each a 1x1 reduce (C_in x d), a 3x3
 * core on d channels (one group of a grouped conv) and a 1x1 expand (C_out x d).
 * Build: cc 04_btd.c $(pkg-config --cflags --libs gbtd) */
#include <math.h>
#include <stdio.h>

#include "gbtd.h"

#define TRY(expr)                                                                                 \
    do {                                                                                          \
        if ((expr) != GBTD_OK) {                                                                  \
            fprintf(stderr, "%s: %s\n", #expr, gbtd_last_error());                                \
            return 1;                                                                             \
        }                                                                                         \
    } while (0)

int main(void)
{
    gbtd_set_threads(1);
    gbtd_rng *rng;
    TRY(gbtd_rng_alloc(42, &rng));

    /* A 3 x 3 x 64 x 96 kernel K[h, w, i, o] made of 8 groups of width 4 (a ResNeXt unit
     * without its nonlinearities), plus 1 % noise. */
    const int64_t shape[4] = {3, 3, 64, 96}, d[2] = {4, 4};
    const int modes[2] = {2, 3}; /* C_in and C_out; the 3 x 3 spatial modes stay full */
    const int R = 8;
    gbtd_btd planted, est;
    gbtd_tensor k, noise;
    TRY(gbtd_btd_alloc_uniform(&planted, 4, shape, 2, modes, R, d));
    gbtd_btd_fill_normal(&planted, rng);
    TRY(gbtd_btd_reconstruct_alloc(&planted, &k));
    TRY(gbtd_tensor_alloc_like(&noise, &k));
    gbtd_tensor_fill_normal(&noise, rng, 0.0, 1.0);
    const double nu = 0.01;
    gbtd_tensor_axpy(nu * gbtd_tensor_norm(&k) / gbtd_tensor_norm(&noise), &noise, &k);
    printf("kernel 3x3x64x96, %lld weights; planted: %d terms of rank (4, 4) + 1 %% noise\n",
           (long long)gbtd_tensor_numel(&k), R);

    /* Fit with both solvers; ranks are given per term (R x 2). */
    int64_t ranks[2 * 8];
    for (int i = 0; i < 2 * R; i++) ranks[i] = 4;
    const char *names[2] = {"NLS (Gauss-Newton)", "ALS"};
    for (int s = 0; s < 2; s++) {
        gbtd_btd_opts opts = gbtd_btd_opts_default();
        opts.solver = s ? GBTD_BTD_ALS : GBTD_BTD_NLS;
        opts.tol = 1e-12;
        gbtd_btd_info info;
        TRY(gbtd_btd_decompose(&k, 2, modes, R, ranks, &est, &info, &opts));
        double angle;
        TRY(gbtd_btd_subspace_angles(&planted, &est, &angle, NULL, NULL));
        printf("%s: rel. error %.4f (noise level %.4f), planted blocks within 0.05 rad: %s\n",
               names[s], info.rel_error, nu / sqrt(1.0 + nu * nu), angle < 0.05 ? "yes" : "no");
        if (s == 0) {
            const int64_t p = gbtd_btd_num_params(&est);
            printf("  parameters %lld (dense %lld), compression %.2fx\n", (long long)p,
                   (long long)gbtd_tensor_numel(&k), (double)gbtd_tensor_numel(&k) / (double)p);
            printf("  term 0: reduce %lldx%lld, core %lldx%lldx%lldx%lld, expand %lldx%lld\n",
                   (long long)est.factors[0].shape[0], (long long)est.factors[0].shape[1],
                   (long long)est.cores[0].shape[0], (long long)est.cores[0].shape[1],
                   (long long)est.cores[0].shape[2], (long long)est.cores[0].shape[3],
                   (long long)est.factors[1].shape[0], (long long)est.factors[1].shape[1]);
        }
        gbtd_decomp_info_free(&info);
        gbtd_btd_free(&est);
    }

    /* R = 1 with the same total width is Tucker-2 (a wide ResNet bottleneck): one term of rank
     * (32, 32) contains the 8 groups as the special case of a block-diagonal core, so its error
     * is no higher, at 2.3 times the parameters. */
    const int64_t wide[2] = {32, 32};
    gbtd_btd_info info;
    TRY(gbtd_btd_decompose(&k, 2, modes, 1, wide, &est, &info, NULL));
    printf("R = 1, rank (32, 32): rel. error %.4f, parameters %lld\n", info.rel_error,
           (long long)gbtd_btd_num_params(&est));
    gbtd_decomp_info_free(&info);
    gbtd_btd_free(&est);

    gbtd_btd_free(&planted);
    gbtd_tensor_free(&noise);
    gbtd_tensor_free(&k);
    gbtd_rng_free(rng);
    return 0;
}
